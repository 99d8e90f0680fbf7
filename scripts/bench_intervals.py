"""The SDE's steps intervals against real fine-tuning, widened by model error measured on the
other backbones (make bench-intervals).

Reads the per-level rows bench-fidelity wrote (``docs/bench_fidelity_resnet{D}.csv``: the
real network fine-tuned with BatchNorm frozen, and the SDE's steps with its own 80% interval)
and scores each backbone's intervals three ways, leave-one-backbone-out:

* the SDE's own interval (its simulated runs' spread: sampling noise only);
* that interval widened by :class:`ttp_search.dynamics.ModelErrorInterval`, fitted on the
  other backbones' levels (conformalized, in log steps);
* the baseline: the SDE's point times the 10th and 90th percentiles of real / predicted
  steps on the other backbones (the interval a rule of thumb from past runs would give).

Levels the real fine-tuning never reached within its run, and levels the SDE calls
unreachable, have no step count to cover and are left out (the linearity check flags them).
Real steps were read every 5 steps. "Trusted" levels are those the SDE calls stable and whose
linearity check holds; "all" are every reached level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section

from ttp_search.dynamics import ModelErrorInterval

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 0.8


def load(csv_dir: Path, depths: list[int], schedule: str = "constant") -> pd.DataFrame:
    """The reached levels of bench-fidelity's runs at ``schedule`` (empty when none was run)."""
    mode = "" if schedule == "constant" else f"{schedule}_"
    frames = []
    for depth in depths:
        path = csv_dir / f"bench_fidelity_{mode}resnet{depth}.csv"
        if path.exists():
            frames.append(pd.read_csv(path))
        elif schedule == "constant":
            raise SystemExit(f"{path} is missing: run `make bench-fidelity` (--depth {depth})")
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows["backbone"] = rows.backbone.str.split(" ").str[0]  # "resnet20 (linear decay)"
    rows["trusted"] = rows.stable.astype(bool) & (rows.check_holds == True)  # noqa: E712
    reached = np.isfinite(rows.real_steps) & np.isfinite(rows.sde_steps)
    return rows[reached].reset_index(drop=True)


def _median(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)) if values.size else float("nan")


def covered(real: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    return float(np.mean((low <= real) & (real <= high))) if real.size else float("nan")


def score(references: pd.DataFrame, scored: pd.DataFrame, held_out: str, scope: str) -> dict:
    """``held_out``'s levels in ``scored``, with intervals fitted on the other backbones'
    levels in ``references``."""
    if scope == "trusted":
        references, scored = references[references.trusted], scored[scored.trusted]
    train = references[references.backbone != held_out]
    test = scored[scored.backbone == held_out]
    error = ModelErrorInterval(LEVEL).fit(
        list(zip(train.sde_steps, train.sde_low, train.sde_high, strict=True)), train.real_steps
    )
    widened = np.array(
        [error.bounds(lo, hi) for lo, hi in zip(test.sde_low, test.sde_high, strict=True)]
    ).reshape(-1, 2)
    ratios = np.log(train.real_steps / train.sde_steps)
    tail = (1 - LEVEL) / 2
    rule = test.sde_steps.to_numpy()[:, None] * np.exp(np.quantile(ratios, [tail, 1 - tail]))
    real = test.real_steps.to_numpy()
    return {
        "held_out": held_out,
        "levels": scope,
        "n": len(test),
        "references": error.n_references_,
        "margin_log": error.margin_,
        "own_coverage": covered(real, test.sde_low.to_numpy(), test.sde_high.to_numpy()),
        "widened_coverage": covered(real, widened[:, 0], widened[:, 1]),
        "rule_coverage": covered(real, rule[:, 0], rule[:, 1]),
        "own_width": _median(test.sde_high / test.sde_low),
        "widened_width": _median(widened[:, 1] / widened[:, 0]),
        "rule_width": _median(rule[:, 1] / rule[:, 0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv-dir", default=str(ROOT / "docs"))
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 32, 44])
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    rows = load(Path(args.csv_dir), args.depths)
    table = pd.DataFrame(
        [
            score(rows, rows, backbone, scope)
            for scope in ("trusted", "all")
            for backbone in sorted(rows.backbone.unique())
        ]
    )
    text = table.to_markdown(index=False, floatfmt=".2f")
    print(text)
    # Runs under the budget-aware linear decay, scored with the constant-rate references:
    # the model error carried to a schedule it was not fitted on.
    decayed = load(Path(args.csv_dir), args.depths, "linear")
    decayed_text = ""
    if len(decayed):
        other = pd.DataFrame(
            [
                score(rows, decayed, backbone, scope)
                for scope in ("trusted", "all")
                for backbone in sorted(decayed.backbone.unique())
            ]
        )
        decayed_text = (
            "\n\nRuns under a linear decay to 0 at the run's end (bench-fidelity "
            "`--schedule linear`), scored with the constant-rate references of the other "
            "backbones:\n\n" + other.to_markdown(index=False, floatfmt=".2f")
        )
        print(decayed_text)
    in_band = table.widened_coverage.between(0.7, 0.9)
    verdict = (
        f"widened {LEVEL:.0%} intervals within 70-90% coverage on {int(in_band.sum())} of "
        f"{len(table)} (backbone, levels) rows; the SDE's own on "
        f"{int(table.own_coverage.between(0.7, 0.9).sum())}, the rule of thumb on "
        f"{int(table.rule_coverage.between(0.7, 0.9).sum())}"
    )
    print(verdict)
    if not args.no_write:
        body = (
            "## Intervals with model error, leave-one-backbone-out (`make bench-intervals`)\n\n"
            "Each backbone's levels scored with intervals fitted on the other backbones only "
            "(bench-fidelity's rows, BatchNorm frozen; real steps read every 5 steps). "
            "`own`: the SDE's 80% interval (its simulated runs); `widened`: that interval "
            "widened by `ModelErrorInterval` (conformal margin in log steps, `margin_log`); "
            "`rule`: the SDE's point times the 10th/90th percentiles of real/predicted on the "
            "other backbones. Width: median high/low.\n\n"
            f"{text}\n\nTarget 70-90% coverage on every backbone: {verdict}.{decayed_text}\n"
        )
        write_section(ROOT / "BENCHMARKS.md", "bench-intervals", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
