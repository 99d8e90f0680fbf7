"""Benchmark the fine-tuning pipeline end to end (make bench-pipeline).

Runs `studies/finetune_search.py` (in its own process, as a user runs it) with the full
pipeline (SDE steps x layer time, budgets to the target, band pruning), and this script's own
baselines on the same task (`ttp_search.data.digits_finetuning`, same search space and
recipe): TPE + MedianPruner and TPE + HyperbandPruner at a fixed budget per trial, the same
wall-clock budget, several seeds, one after another on this machine.
Reports:

* for every pipeline trial that reached the target: predicted vs measured seconds to the
  target, split into the steps error (SDE x the study's learnt scale, and the raw SDE) and
  the step-time error (the layer-time model x the study's learnt ratio, and the raw model);
* the search: seconds from the study's start until a trial first reached the target;
* the predictions' cost (Jacobians, SDE, pricing, GP) as a share of the study's wall time.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section

from ttp_search.data import digits_finetuning
from ttp_search.optuna import keys, run_training, suggest, trials_dataframe

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "finetune_search.py"
METHODS = ("ttp", "tpe+median", "tpe+hyperband")
# The study's space and blocks, restated: the baselines search exactly what the study does.
SPACE = {
    "lr": FloatDistribution(1e-3, 0.5, log=True),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "momentum": CategoricalDistribution([0.0, 0.5, 0.9]),
    "weight_decay": CategoricalDistribution([0.0, 1e-4, 1e-3]),
    "tune": CategoricalDistribution(["head", "dense+head", "all"]),
}
TUNED = {"head": ["head"], "dense+head": ["dense", "head"], "all": ["convs", "dense", "head"]}


def run_ttp(seed: int, args, out: Path, name: str) -> tuple[optuna.Study, float]:
    """The study as a user runs it; returns it and the seconds its predictions took."""
    cmd = [sys.executable, str(STUDY), "--seed", str(seed), "--study-budget", str(args.budget)]
    cmd += ["--out", str(out), "--study-name", name, "--target", str(args.target)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    seconds = sum(
        float(m)
        for m in re.findall(
            r"(?:Jacobians per block: \w[\w ]* in|predictions took) ([\d.]+) s", text
        )
    )
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}"), seconds


def run_baseline(method: str, seed: int, args, out: Path, name: str) -> optuna.Study:
    """What a user writes without ttp_search: TPE, Optuna's pruner, fixed steps."""
    task = digits_finetuning(seed)
    net, x, y = task.model, task.inputs, task.targets
    target = args.target * F.mse_loss(net(x), y).item()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3)
        if method == "tpe+median"
        else optuna.pruners.HyperbandPruner()
    )
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{out / 'study.db'}", direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5), pruner=pruner,
    )  # fmt: skip

    def objective(trial):
        p = suggest(trial, SPACE)
        torch.manual_seed(trial.number)
        model = copy.deepcopy(net)
        keep = [q for b in TUNED[p["tune"]] for q in task.blocks[b]]
        for n, q in model.named_parameters():
            q.requires_grad_(any(n.startswith(k) for k in keep))
        opt = torch.optim.SGD(
            [q for q in model.parameters() if q.requires_grad],
            lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
        )  # fmt: skip
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=args.fixed_steps)
        loader = DataLoader(TensorDataset(x, y), batch_size=p["batch_size"], shuffle=True,
                            drop_last=True)  # fmt: skip

        def step(batch):
            loss = F.mse_loss(model(batch[0]), batch[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

        def loss():
            with torch.no_grad():
                return max(F.mse_loss(model(x), y).item(), target)

        return run_training(trial, step, loss, loader, steps=args.fixed_steps, n_reports=40,
                            reached=lambda v: v <= target)  # fmt: skip

    study.optimize(objective, timeout=args.budget, catch=(RuntimeError,))
    return study


def table(study: optuna.Study) -> pd.DataFrame:
    """The trials table plus what this benchmark scores: the raw SDE's crossing and the
    predicted and measured seconds to the target (a trial stops when it reaches it)."""
    df = trials_dataframe(study)
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start).timestamp()
    df["sde_steps"] = [keys.plan_of(t).get("crossing") for t in trials]
    df["predicted_seconds_to_target"] = df.predicted_target_steps * df.predicted_step_s
    reached = df.measured_target_steps.notna()
    df["measured_seconds_to_target"] = df.measured_seconds.where(reached)
    df["reached_after_s"] = [
        t.datetime_complete.timestamp() - start if r and t.datetime_complete else np.nan
        for t, r in zip(trials, reached, strict=True)
    ]
    return df


def run_all(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials, summaries = [], []
    runs = [(m, s) for s in range(args.seeds) for m in METHODS]
    for method, seed in tqdm(runs, desc="studies"):
        out = args.out / f"{method}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh study, not the last run's
        out.mkdir(parents=True)
        name, wall = f"bench-{method}-s{seed}-{args.tag}", time.time()
        if method == "ttp":
            study, prediction_s = run_ttp(seed, args, out, name)
        else:
            study, prediction_s = run_baseline(method, seed, args, out, name), 0.0
        df = table(study)
        df["method"], df["seed"] = method, seed
        trials.append(df)
        summaries.append(
            {
                "method": method,
                "seed": seed,
                "budget_s": args.budget,
                "trials": len(df),
                "time_to_target_s": df.reached_after_s.min(),
                "prediction_s": prediction_s,
                "wall_s": time.time() - wall,
            }
        )
    return pd.concat(trials, ignore_index=True), pd.DataFrame(summaries)


def accuracy(trials: pd.DataFrame) -> pd.DataFrame:
    """Errors of the pipeline's per-trial predictions (trials that reached the target)."""
    t = trials[(trials.method == "ttp") & trials.measured_target_steps.notna()]
    t = t[t.predicted_target_steps.notna() & t.measured_step_s.notna()]
    err = {
        "steps (SDE x ratio learnt so far)": t.predicted_target_steps / t.measured_target_steps,
        "steps (raw SDE)": t.sde_steps / t.measured_target_steps,
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
    if len(t):  # a log axis needs a point to scale
        a.set(xscale="log", yscale="log")
    a.set(xlabel="measured s to target", ylabel="predicted s")
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
    docs = args.out if args.no_write else ROOT / "docs"
    trials.to_csv(docs / "bench_pipeline_trials.csv", index=False)
    summaries.to_csv(docs / "bench_pipeline_runs.csv", index=False)
    acc, srch = accuracy(trials), search(summaries)
    plot(trials, summaries, docs / "bench_pipeline.png")
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
