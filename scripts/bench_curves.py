"""Benchmark early ranking, extrapolation and budget-aware schedules (make bench-curves).

Uses the learning-curve data set (ttp_search/data/learning_curves.json.gz):
1. Ranking: Spearman ρ, Kendall τ and top-5 recall against the final validation accuracy,
   at 10/25/50% of each run's own budget, for TSE, TSE-E, TSE-EMA, LCGA, validation accuracy
   at the same point, and the extrapolated final validation accuracy; NAS and HPO halves.
2. Extrapolation: median absolute % error of the predicted final validation accuracy and the
   coverage of its 80% interval, at 10/25/50%; latency of one call on a 200-point curve.
3. Budget-aware schedules (Li et al. 2020, Table 3 on our data): one model, budgets
   10/25/50/100% of a reference schedule x constant/step/cosine/linear x 3 seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import kendalltau, spearmanr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train import train
from bench_cost_model import write_section
from make_curves import HPO_ARCH, build_cnn

from ttp_search.curves import SUMMARIES, extrapolate, lcga, linear_decay_schedule, tse
from ttp_search.data import CurveRun, load_curves, mnist1d
from ttp_search.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.10, 0.25, 0.50)
WORST = 1e9
KEYS = (
    "tse",
    "tse_e",
    "tse_ema",
    "lcga",
    "val_acc",
    "extrapolated",
    "extrapolated_loss",
)  # score of a diverged run: ranked last by every estimator (lower is better)


def _cut(run: CurveRun, fraction: float) -> tuple[np.ndarray, int]:
    """Per-step losses in the first ``fraction`` of the run's own budget, and whole epochs seen."""
    n = max(2, int(round(fraction * run.budget_steps)))
    epochs = max(1, n // run.steps_per_epoch)
    return run.train_loss[:n], epochs


def _lr_of(run: CurveRun):
    if run.config.get("schedule") == "linear":
        return linear_decay_schedule(run.budget_steps)
    return None


def scores(run: CurveRun, fraction: float, lcga_summary: str) -> dict:
    """Every estimator's score for one run at one fraction; lower is better for all."""
    losses, epochs = _cut(run, fraction)
    if not np.all(np.isfinite(losses)):
        return {k: WORST for k in KEYS}
    spe = run.steps_per_epoch
    out = {
        "tse": tse(losses, "tse", steps_per_epoch=spe),
        "tse_e": tse(losses, "tse_e", steps_per_epoch=spe),
        "tse_ema": tse(losses, "tse_ema", steps_per_epoch=spe),
        "val_acc": -run.val_acc[epochs - 1],
    }
    try:
        out["lcga"] = lcga(np.arange(losses.size), losses, burn_in=0.1).summary(lcga_summary)
    except InvalidInputError:
        out["lcga"] = WORST
    est = extrapolate(
        run.epoch_steps()[:epochs],
        run.val_acc[:epochs],
        run.budget_steps,
        direction="maximize",
        lr_schedule=_lr_of(run),
        value_range=(0.0, 1.0),
    )
    out["extrapolated"] = -est.mean
    out["_est"] = est
    # The final training loss, extrapolated from the per-step losses (many more points).
    out["extrapolated_loss"] = extrapolate(
        np.arange(losses.size),
        losses,
        run.budget_steps,
        lr_schedule=_lr_of(run),
        value_range=(0.0, float(np.max(losses))),
    ).mean
    return out


def ranking_table(runs: list[CurveRun], lcga_summary: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    truth = np.array([r.final_val_acc for r in runs])
    true_top = set(np.argsort(-truth)[:5])
    rows, ext = [], []
    for frac in FRACTIONS:
        per_run = [scores(r, frac, lcga_summary) for r in runs]
        for key in KEYS:
            s = np.array([p[key] for p in per_run])
            rho = spearmanr(-s, truth).statistic
            tau = kendalltau(-s, truth).statistic
            top = len(true_top & set(np.argsort(s)[:5])) / 5
            rows.append(
                {
                    "fraction": frac,
                    "estimator": key,
                    "spearman": rho,
                    "kendall": tau,
                    "top5_recall": top,
                }
            )
        for run, p in zip(runs, per_run, strict=True):
            est = p.get("_est")
            if est is None:
                continue
            ext.append(
                {
                    "fraction": frac,
                    "run": run.run_id,
                    "truth": run.final_val_acc,
                    "pred": est.mean,
                    "low": est.low,
                    "high": est.high,
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(ext)


def lcga_choice(runs: list[CurveRun]) -> pd.DataFrame:
    """Spearman ρ of every LCGA summary (both signs) at 25%: measured, not assumed."""
    truth = np.array([r.final_val_acc for r in runs])
    rows = []
    for name in SUMMARIES:
        vals = []
        for r in runs:
            losses, _ = _cut(r, 0.25)
            try:
                vals.append(
                    lcga(np.arange(losses.size), losses).summary(name)
                    if np.all(np.isfinite(losses))
                    else np.nan
                )
            except InvalidInputError:
                vals.append(np.nan)
        v = np.array(vals)
        ok = np.isfinite(v)
        rows.append(
            {"summary": name, "spearman_lower_better": spearmanr(-v[ok], truth[ok]).statistic}
        )
    return pd.DataFrame(rows)


def schedules_table(seeds: int = 3, reference_epochs: int = 30) -> pd.DataFrame:
    data = mnist1d()
    steps_per_epoch = math.ceil(len(data[1]) / 64)
    rows = []
    jobs = [
        (b, s, seed)
        for b in (0.10, 0.25, 0.50, 1.0)
        for s in ("constant", "step", "cosine", "linear")
        for seed in range(seeds)
    ]
    for budget, sched, seed in tqdm(jobs, desc="schedules"):
        torch.manual_seed(seed)
        steps = max(1, round(budget * reference_epochs * steps_per_epoch))
        rec = train(
            build_cnn(HPO_ARCH),
            data,
            lr=0.05,
            batch_size=64,
            total_steps=steps,
            schedule=sched,
            weight_decay=5e-4,
            seed=seed,
        )
        rows.append({"budget": budget, "schedule": sched, "seed": seed, "val_acc": rec.val_acc[-1]})
    return pd.DataFrame(rows)


def extrapolation_latency() -> float:
    rng = np.random.default_rng(0)
    k = np.arange(1, 201, dtype=float)
    y = 0.4 + 1.0 / (1 + k / 30) + rng.normal(0, 0.03, k.size)
    extrapolate(k, y, 2000)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        extrapolate(k, y, 2000)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plot_extrapolation(runs: list[CurveRun], path: Path) -> None:
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    picks = runs[:3] + [r for r in runs if r.space == "hpo"][:3]
    for ax, run in zip(axes.ravel(), picks, strict=False):
        x = run.epoch_steps()
        ax.plot(x, run.val_acc, "k.-", lw=0.8, label="measured val acc")
        for frac, color in zip(FRACTIONS, ("C0", "C1", "C2"), strict=True):
            epochs = max(1, int(round(frac * run.budget_steps)) // run.steps_per_epoch)
            est = extrapolate(
                x[:epochs],
                run.val_acc[:epochs],
                run.budget_steps,
                direction="maximize",
                lr_schedule=_lr_of(run),
                value_range=(0.0, 1.0),
            )
            ax.errorbar(
                [run.budget_steps * (1 + 0.02 * FRACTIONS.index(frac))],
                [est.mean],
                yerr=[[est.mean - est.low], [est.high - est.mean]],
                fmt="o",
                color=color,
                label=f"from {frac:.0%}",
            )
        ax.set(title=f"{run.run_id} ({run.config.get('schedule')})", xlabel="step")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        "Final validation accuracy extrapolated from 10/25/50% of the budget (80% intervals)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _findings(table: pd.DataFrame, space: str) -> str:
    """One sentence per fact the issue asks about, computed from the table, not written by hand."""
    rho = table.pivot(index="estimator", columns="fraction", values="spearman")
    out = []
    for frac in FRACTIONS:
        ext, val = rho.loc["extrapolated", frac], rho.loc["val_acc", frac]
        verdict = "≥" if ext >= val else "<"
        out.append(f"at {frac:.0%}: extrapolated ρ {ext:.3f} {verdict} val_acc ρ {val:.3f}")
    backwards = [f"{k} at {f:.0%}" for k in rho.index for f in FRACTIONS if rho.loc[k, f] < 0]
    weak = [
        f"{k} at {f:.0%} (ρ {rho.loc[k, f]:.2f})"
        for k in ("tse", "tse_e", "tse_ema", "lcga")
        for f in FRACTIONS
        if 0 <= rho.loc[k, f] < 0.3
    ]
    text = f"{space.upper()}: " + "; ".join(out) + ". "
    text += "Backwards (ρ < 0): " + (", ".join(backwards) or "none") + ". "
    text += "Nearly uninformative (0 ≤ ρ < 0.3): " + (", ".join(weak) or "none") + "."
    return text


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--skip-schedules",
        action="store_true",
        help="reuse docs/bench_curves_schedules.csv instead of training the schedule grid",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = []
    all_runs = load_curves()
    choice = lcga_choice(load_curves(space="nas"))
    best = choice.sort_values("spearman_lower_better", ascending=False).iloc[0]["summary"]
    lines += [
        "LCGA summary chosen on the NAS half at 25% (Spearman ρ, lower score = better run):",
        "",
        choice.round(3).to_markdown(index=False),
        "",
        f"Chosen: `{best}`.",
        "",
    ]
    for space in ("nas", "hpo"):
        runs = load_curves(space=space)
        table, ext = ranking_table(runs, best)
        pivot = table.pivot(
            index="estimator", columns="fraction", values=["spearman", "kendall", "top5_recall"]
        )
        lines += [
            f"### Ranking, {space.upper()} half ({len(runs)} runs)",
            "",
            pivot.round(3).to_markdown(),
            "",
        ]
        lines += _findings(table, space), ""
        ext["ape"] = (ext.pred - ext.truth).abs() / ext.truth
        ext["covered"] = (ext.low <= ext.truth) & (ext.truth <= ext.high)
        summ = ext.groupby("fraction").agg(
            median_ape=("ape", "median"), coverage_80=("covered", "mean")
        )
        lines += [
            f"Extrapolated final validation accuracy, {space.upper()} half:",
            "",
            summ.round(3).to_markdown(),
            "",
        ]
    lines += [
        f"Extrapolation latency, 200-point curve: median {1e3 * extrapolation_latency():.2f} ms per call.",
        "",
    ]
    sched_csv = ROOT / "docs" / "bench_curves_schedules.csv"
    sched = None
    if not args.skip_schedules:
        sched = schedules_table()
        sched_csv.parent.mkdir(parents=True, exist_ok=True)
        sched.to_csv(sched_csv, index=False)
    elif sched_csv.exists():
        sched = pd.read_csv(sched_csv)  # the last full run's training results
    if sched is not None:
        pv = sched.groupby(["schedule", "budget"]).val_acc.agg(["mean", "std"]).unstack("budget")
        lines += [
            "### Budget-aware schedules (Li et al. 2020, Table 3 on MNIST-1D)",
            "",
            "Validation accuracy, mean (std) over 3 seeds; budget as a fraction of a 30-epoch reference.",
            "",
            pv.round(3).to_markdown(),
            "",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        img = ROOT / "docs" / "bench_curves_extrapolation.png"
        plot_extrapolation(all_runs, img)
        write_section(
            ROOT / "BENCHMARKS.md", "bench-curves", body + f"\n![extrapolation](docs/{img.name})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
