"""Benchmark the fine-tuning pipeline end to end (make bench-pipeline).

Runs `studies/finetune_search.py` with the full pipeline (SDE steps x layer time, budgets to
the target, band pruning) and with TPE + MedianPruner and TPE + HyperbandPruner at a fixed
budget per trial, same wall-clock budget, several seeds, one after another on this machine.
Reports:

* for every pipeline trial that reached the target: predicted vs measured seconds to the
  target, split into the steps error (SDE x the study's learnt scale, and the raw SDE) and
  the step-time error (the layer-time model x the study's learnt ratio, and the raw model);
* the search: seconds from the study's start until a trial first reached the target;
* the predictions' cost (Jacobians, SDE, pricing, GP) as a share of the study's wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "studies"))
import finetune_search
from bench_cost_model import write_section

ROOT = Path(__file__).resolve().parents[1]

METHODS = ("ttp", "tpe+median", "tpe+hyperband")


def run_all(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, summaries = [], []
    runs = [(m, s) for s in range(args.seeds) for m in METHODS]
    for method, seed in tqdm(runs, desc="studies"):
        out = args.out / f"{method}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh study, not the last run's
        argv = ["--method", method, "--seed", str(seed), "--budget", str(args.budget)]
        argv += ["--out", str(out), "--study-name", f"bench-{method}-s{seed}-{args.tag}"]
        argv += ["--fixed-steps", str(args.fixed_steps), "--target", str(args.target)]
        finetune_search.main(argv)
        df = pd.read_csv(out / "trials.csv")
        df["method"], df["seed"] = method, seed
        trials.append(df)
        summaries.append(json.loads((out / "summary.json").read_text()))
    return pd.concat(trials, ignore_index=True), pd.DataFrame(summaries)


def accuracy(trials: pd.DataFrame) -> pd.DataFrame:
    """Errors of the pipeline's per-trial predictions (trials that reached the target)."""
    t = trials[(trials.method == "ttp") & trials.measured_steps.notna()]
    t = t[t.predicted_steps.notna() & t.measured_step_s.notna()]
    err = {
        "steps (SDE x ratio learnt so far)": t.predicted_steps / t.measured_steps,
        "steps (raw SDE)": t.sde_steps / t.measured_steps,
        "step time (model x ratio learnt so far)": t.predicted_step_s / t.measured_step_s,
        "step time (raw layer-time model)": t.model_step_s.fillna(t.predicted_step_s)
        / t.measured_step_s,
        "seconds to target (total)": t.predicted_seconds_to_target / t.measured_seconds_to_target,
    }
    rows = []
    for name, ratio in err.items():
        ape = (ratio - 1).abs()
        rows.append(
            {
                "quantity": name,
                "trials": len(ape),
                "median_error": float(ape.median()) if len(ape) else np.nan,
                "within_25%": float((ape <= 0.25).mean()) if len(ape) else np.nan,
                "median_ratio_pred/meas": float(ratio.median()) if len(ape) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def search(summaries: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, part in summaries.groupby("method", sort=False):
        ttt = part.time_to_target_s
        rows.append(
            {
                "method": method,
                "seeds": len(part),
                "reached_in": int(ttt.notna().sum()),
                "median_time_to_target_s": float(ttt.fillna(np.inf).median()),
                "times_s": ", ".join("never" if pd.isna(v) else f"{v:.0f}" for v in ttt),
                "trials": float(part.trials.mean()),
                "prediction_share": float((part.prediction_s / part.wall_s).mean()),
            }
        )
    return pd.DataFrame(rows)


def plot(trials: pd.DataFrame, summaries: pd.DataFrame, path: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    t = trials[(trials.method == "ttp") & trials.measured_seconds_to_target.notna()]
    t = t[t.predicted_seconds_to_target.notna()]
    a.scatter(t.measured_seconds_to_target, t.predicted_seconds_to_target, label="SDE x ratio")
    raw = t.sde_steps * t.model_step_s.fillna(t.predicted_step_s)
    a.scatter(t.measured_seconds_to_target, raw, marker="x", label="raw SDE x raw step time")
    if len(t):
        lo = min(t.measured_seconds_to_target.min(), raw.min()) / 1.5
        hi = max(t.measured_seconds_to_target.max(), raw.max()) * 1.5
        a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    a.set(xscale="log", yscale="log", xlabel="measured s to target", ylabel="predicted s")
    a.set_title("Per trial: seconds to the target")
    a.legend()
    for i, (_method, part) in enumerate(summaries.groupby("method", sort=False)):
        vals = part.time_to_target_s.fillna(part.budget_s.max() * 1.05)
        b.scatter([i] * len(vals), vals, s=40)
    b.set_xticks(range(summaries.method.nunique()), summaries.method.unique())
    b.axhline(summaries.budget_s.max(), c="k", ls=":", lw=0.8, label="budget (above: never)")
    b.set(ylabel="seconds until a trial reached the target", title="The search, per seed")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=150.0, help="seconds per study")
    parser.add_argument("--fixed-steps", type=int, default=1500, help="the baselines' budget")
    parser.add_argument("--target", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pipeline")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    trials, summaries = run_all(args)
    trials.to_csv(ROOT / "docs" / "bench_pipeline_trials.csv", index=False)
    summaries.to_csv(ROOT / "docs" / "bench_pipeline_runs.csv", index=False)
    acc, srch = accuracy(trials), search(summaries)
    plot(trials, summaries, ROOT / "docs" / "bench_pipeline.png")
    acc_md = acc.to_markdown(index=False, floatfmt=".3f")
    srch_md = srch.to_markdown(index=False, floatfmt=".3f")
    print(acc_md, "\n", srch_md, sep="\n")
    total = acc[acc.quantity == "seconds to target (total)"].iloc[0]
    ttp = srch[srch.method == "ttp"].iloc[0]
    best_base = srch[srch.method != "ttp"].median_time_to_target_s.min()
    findings = [
        f"- Seconds to the target per trial: median error {total.median_error:.1%}, "
        f"{total['within_25%']:.0%} within 25% over {total.trials} trials "
        f"(targets: <= 20% and >= 70%: "
        f"{'met' if total.median_error <= 0.2 and total['within_25%'] >= 0.7 else 'not met'}).",
        f"- The search: pipeline {ttp.median_time_to_target_s:.0f} s median to the target vs "
        f"{best_base:.0f} s for the best baseline (target: at most half: "
        f"{'met' if ttp.median_time_to_target_s <= best_base / 2 else 'not met'}).",
        f"- Predictions cost {ttp.prediction_share:.1%} of the pipeline studies' wall time "
        f"(target < 10%: {'met' if ttp.prediction_share < 0.1 else 'not met'}).",
    ]
    print("\n".join(findings))
    if not args.no_write:
        body = (
            "## Fine-tuning pipeline (`make bench-pipeline`)\n\n"
            f"`studies/finetune_search.py`, {args.seeds} seeds x 3 methods, "
            f"{args.budget:.0f} s each, one worker, 1 thread, 2-core CPU. Target: "
            f"{args.target:g} x the initial training loss (MSE) of the LP-FT CNN on digits "
            f"5-9 (16x16). Baselines train every trial {args.fixed_steps} steps with the same "
            "linear-decay recipe. Per-trial rows: `docs/bench_pipeline_trials.csv`; plot: "
            "`docs/bench_pipeline.png`.\n\n"
            "Per trial (pipeline trials that reached the target), ratio predicted/measured:\n\n"
            f"{acc_md}\n\nThe search (time until a trial first reached the target):\n\n"
            f"{srch_md}\n\n" + "\n".join(findings) + "\n"
        )
        write_section(ROOT / "BENCHMARKS.md", "bench-pipeline", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
