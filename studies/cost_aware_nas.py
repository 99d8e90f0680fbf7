"""Cost-aware architecture + hyperparameter search on bundled data (run by `make demo`).

A CNN's depth, width and kernel size, the batch size and the learning rate are searched with
Optuna. Before a trial runs, CostAwareSampler prices its training step with the layer-time
model, refuses configurations that cannot run within the caps, prefers expected improvement
per predicted second, and gives each trial a step budget; the trial trains with a linear-decay
schedule that ends exactly at that budget. TTPPruner stops trials that will not end better
than the best (judged at each trial's own budget) or cannot finish in the time left.

Copy this file and change `build_model`, `SEARCH_SPACE` and `load_data` for your own search.

Several workers: run the same command in several shells (or machines) with one storage URL
and one study name, e.g. ``--storage postgresql+psycopg://user:pw@host/db --study-name nas``;
the time budget is counted from the study's first trial, so the workers share it. Workers on
one machine calibrate the cost model once (the first takes a lock, the others load its
result). Each trial sends a heartbeat (``--heartbeat``): a worker that dies mid-trial leaves a
trial that the next worker marks failed and retries once, so no trial is left running.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn
from torch.nn import functional as F

from ttp_search.cost import LayerTimeModel
from ttp_search.data import digits, mnist1d
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    get_budget,
    keys,
    linear_decay_lr,
    prune_reason,
    record_failures,
    report,
)
from ttp_search.optuna import open_study as ttp_open_study

SEARCH_SPACE = {
    "depth": IntDistribution(1, 4),
    "width": IntDistribution(8, 96, log=True),
    "kernel": CategoricalDistribution([3, 5]),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "lr": FloatDistribution(3e-3, 0.3, log=True),
}
REPORTS_PER_TRIAL = 12
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def load_data(name: str) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val); digits are (n, 1, 8, 8), MNIST-1D (n, 1, 40)."""
    if name == "digits":
        return digits()
    return mnist1d(num_samples=4000)


def build_model(params: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """A plain CNN: ``depth`` conv-BN-ReLU blocks, width doubling every other block."""
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if len(input_shape) == 3 else (nn.Conv1d, nn.BatchNorm1d)
    pool = nn.AdaptiveAvgPool2d(1) if len(input_shape) == 3 else nn.AdaptiveAvgPool1d(1)
    layers, channels = [], input_shape[0]
    for i in range(params["depth"]):
        out = params["width"] * 2 ** (i // 2)
        layers += [
            conv(channels, out, params["kernel"], padding=params["kernel"] // 2),
            bn(out),
            nn.ReLU(),
        ]
        channels = out
    layers += [pool, nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def suggest(trial: optuna.Trial) -> dict:
    out = {}
    for name, dist in SEARCH_SPACE.items():
        if isinstance(dist, CategoricalDistribution):
            out[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            out[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            out[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train()
    return acc


def train_step(model, opt, sched, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, float]:
    """One SGD step; returns the batch loss and the seconds of forward, loss, backward and
    update, timed like the cost model's prediction (batch indexing excluded)."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(xb), yb)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    seconds = time.perf_counter() - t0
    return loss.item(), seconds


def make_objective(data, progress, task, study_start, budget_s, max_steps, cost_model):
    x_train, y_train, x_val, y_val = data
    input_shape, n_classes = tuple(x_train.shape[1:]), int(y_train.max()) + 1

    def model_for(params):
        return build_model(params, input_shape, n_classes)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial)
        trial.set_user_attr("worker", WORKER)
        # Priced before running; a configuration over a cap raises TrialPruned here.
        steps = get_budget(trial, default=max_steps)
        if keys.PLAN not in trial.user_attrs:  # a baseline sampler: priced for the table only
            pred = cost_model.predict(
                model_for(params), input_shape, params["batch_size"], "momentum"
            )
            trial.set_user_attr(
                keys.PLAN, {"step_s": pred.step_time_s, "model_step_s": pred.step_time_s}
            )
        torch.manual_seed(trial.number)
        model = build_model(params, input_shape, n_classes)
        opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
        sched = linear_decay_lr(trial, opt)
        gen = torch.Generator().manual_seed(trial.number)
        every = max(1, math.ceil(steps / REPORTS_PER_TRIAL))
        train_s, acc = 0.0, 0.0
        perm, pos = torch.randperm(len(y_train), generator=gen), 0
        for step in range(1, steps + 1):
            if pos + params["batch_size"] > len(perm):
                perm, pos = torch.randperm(len(y_train), generator=gen), 0
            idx = perm[pos : pos + params["batch_size"]]
            pos += params["batch_size"]
            loss, seconds = train_step(model, opt, sched, x_train[idx], y_train[idx])
            train_s += seconds
            if step % every == 0 or step == steps:
                acc = accuracy(model, x_val, y_val) if math.isfinite(loss) else math.nan
                trial.set_user_attr("measured_step_s", train_s / step)
                trial.set_user_attr("steps_run", step)
                report(trial, acc, step, elapsed_s=train_s)
                progress.update(task, completed=min(time.time() - study_start, budget_s))
                why = None
                if time.time() - study_start > budget_s:
                    why = "the study's time budget ran out"
                elif trial.should_prune():
                    why = prune_reason(trial) or (
                        f"{type(trial.study.pruner).__name__} at step {step}"
                    )
                if why:
                    trial.set_user_attr("ttp:prune_reason", why)
                    raise optuna.TrialPruned(why)
        return acc

    return objective


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        a, plan = t.user_attrs, keys.plan_of(t)
        steps_run = a.get("steps_run", 0)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                **t.params,
                "budget_steps": a.get("ttp:budget_steps"),
                "steps_run": steps_run,
                "predicted_step_s": plan.get("step_s"),
                "model_step_s": plan.get("model_step_s", plan.get("step_s")),
                "measured_step_s": a.get("measured_step_s"),
                "predicted_seconds": plan.get("seconds"),
                "predicted_low": plan.get("seconds_low"),
                "predicted_high": plan.get("seconds_high"),
                "measured_seconds": a.get("measured_step_s", math.nan) * steps_run
                if steps_run
                else 0.0,
                "value": t.value
                if t.value is not None
                else (t.intermediate_values[t.last_step] if t.last_step is not None else None),
                "prune_reason": a.get("ttp:prune_reason")
                or (plan.get("reason") if plan and not plan.get("feasible", True) else None)
                or a.get("ttp:fail_reason"),
            }
        )
    return pd.DataFrame(rows)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(curves: list[tuple[list, list, bool]], df: pd.DataFrame, out: Path) -> list[Path]:
    """The three plots; ``curves`` holds (steps, values, pruned) per trial."""
    paths = []
    ran = df[df.measured_step_s.notna()]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    err = np.vstack(
        [
            ran.predicted_step_s - ran.predicted_low / ran.budget_steps,
            ran.predicted_high / ran.budget_steps - ran.predicted_step_s,
        ]
    )
    ax.errorbar(
        ran.measured_step_s * 1e3, ran.predicted_step_s * 1e3, yerr=err * 1e3, fmt="o", ms=4
    )
    lims = [
        min(ran.measured_step_s.min(), ran.predicted_step_s.min()) * 800,
        max(ran.measured_step_s.max(), ran.predicted_step_s.max()) * 1250,
    ]
    ax.plot(lims, lims, "k--", lw=0.8, label="predicted = measured")
    ax.set(xscale="log", yscale="log", xlabel="measured ms / step", ylabel="predicted ms / step")
    ax.set_title("Cost: predicted before running vs measured")
    ax.legend()
    paths.append(_save(fig, out / "predicted_vs_measured_cost.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    done = df[df.state == "COMPLETE"].sort_values("measured_seconds")
    pruned = df[(df.state == "PRUNED") & (df.steps_run > 0)]
    ax.scatter(done.measured_seconds, done.value, label="completed")
    ax.scatter(pruned.measured_seconds, pruned.value, marker="x", c="C3", label="pruned (at stop)")
    front = done[done.value >= done.value.cummax()]
    ax.step(front.measured_seconds, front.value, where="post", c="k", lw=1, label="Pareto front")
    ax.set(xlabel="training seconds", ylabel="validation accuracy", title="Accuracy vs cost")
    ax.legend()
    paths.append(_save(fig, out / "accuracy_vs_cost.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for steps, vals, pruned in curves:
        if len(steps) == 0:
            continue
        ax.plot(steps, vals, c="C3" if pruned else "C0", alpha=0.6, lw=1)
        if pruned:
            ax.plot(steps[-1], vals[-1], "x", c="C3")
    ax.set(xlabel="step", ylabel="validation accuracy", title="Learning curves (x = pruned)")
    ax.set_ylim(0, 1)
    paths.append(_save(fig, out / "learning_curves.png"))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", help="any Optuna storage URL (default: SQLite in --out)")
    parser.add_argument(
        "--study-name",
        help="workers with the same storage and name join one study "
        "(default: a new study, cost_aware_nas-<date>-<time>)",
    )
    parser.add_argument("--budget", type=float, default=180.0, help="study seconds (all workers)")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (budget / 8)")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--out", type=Path, help="default studies/out/<study name>/")
    parser.add_argument(
        "--calibration-budget",
        type=float,
        default=60.0,
        help="seconds to calibrate the cost model when this machine has no cached calibration",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument(
        "--n-trials", type=int, help="stop this worker after this many trials (default: budget)"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        help="seconds between a running trial's heartbeats; a trial silent for 3 heartbeats "
        "is marked failed and retried once (0: off)",
    )
    parser.add_argument(
        "--method",
        choices=("ttp", "tpe+median", "tpe+hyperband"),
        default="ttp",
        help="ttp components, or a plain Optuna baseline (for the benchmark)",
    )
    args = parser.parse_args(argv)
    args.study_name = args.study_name or time.strftime("cost_aware_nas-%Y%m%d-%H%M%S")
    out = args.out or Path(__file__).parent / "out" / args.study_name
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    console = Console()
    # Small models: threads cost more than they give, and workers share the cores. The cost
    # model is calibrated per thread count, so predictions match what training uses.
    torch.set_num_threads(args.threads)

    console.rule(f"cost-aware NAS on {args.data}: {args.budget:.0f} s budget")
    cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
    console.print(
        f"cost model: {'calibrated by this worker' if cost_model.calibrated_here else 'loaded'}"
        f" ({cost_model.path})"
    )
    data = load_data(args.data)
    input_shape, n_classes = tuple(data[0].shape[1:]), int(data[1].max()) + 1
    if args.method == "ttp":
        sampler = CostAwareSampler(
            optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=6),
            cost_fn=lambda p: build_model(p, input_shape, n_classes),
            input_shape=input_shape,
            batch_size="batch_size",
            optimizer="momentum",
            cost_model=cost_model,
            trial_budget_s=args.trial_budget or args.budget / 8,
            study_budget_s=args.budget,
            max_steps=args.max_steps,
            min_steps=50,
            search_space=SEARCH_SPACE,
            n_startup_trials=6,
            seed=args.seed,
        )
        pruner = TTPPruner(
            n_startup_trials=4, time_budget_s=args.budget, value_range=(0.0, 1.0), margin=0.005
        )
    else:
        # Baselines for the benchmark: what a user writes without ttp_search; every trial
        # trains max_steps (same recipe, linear decay) and is priced only for the table.
        sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=6)
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=4)
            if args.method == "tpe+median"
            else optuna.pruners.HyperbandPruner()
        )
    study, study_start = open_study(
        storage, args.study_name, args.heartbeat, "maximize", sampler, pruner
    )
    left = args.budget - (time.time() - study_start)
    if left <= 0:
        console.print(f"study {args.study_name!r} has used its {args.budget:.0f} s budget")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("starting", total=args.budget)

        def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            states = [t.state for t in study.trials]
            best = study.best_value if TrialState.COMPLETE in states else float("nan")
            progress.update(
                task,
                completed=min(time.time() - study_start, args.budget),
                description=f"trials {len(states)} | pruned {states.count(TrialState.PRUNED)}"
                f" | best acc {best:.3f}",
            )

        if left > 0:
            study.optimize(
                record_failures(
                    make_objective(
                        data, progress, task, study_start, args.budget, args.max_steps, cost_model
                    )
                ),
                timeout=left,
                n_trials=args.n_trials,
                callbacks=[on_trial_end],
                catch=(RuntimeError,),
            )

    df = trials_table(study)
    curves = [
        (
            sorted(t.intermediate_values),
            [v for _, v in sorted(t.intermediate_values.items())],
            t.state == TrialState.PRUNED,
        )
        for t in study.trials
    ]
    summarize(console, df, curves, out, f"{args.study_name}: {len(df)} trials")
    console.print(f"storage: {storage}")
    return 0


def open_study(
    url: str, name: str, heartbeat: float, direction: str, sampler, pruner
) -> tuple[optuna.Study, float]:
    """Create or join the study ``name`` at ``url`` (heartbeats when ``heartbeat > 0``).
    Returns the study and the time of its first trial's start (now for a new study): the
    clock every worker shares."""
    study = ttp_open_study(
        url, name, direction=direction, sampler=sampler, pruner=pruner, heartbeat_s=heartbeat
    )
    starts = [t.datetime_start for t in study.trials if t.datetime_start]
    return study, (min(starts).timestamp() if starts else time.time())


def summarize(console: Console, df: pd.DataFrame, curves, out: Path, title: str) -> None:
    """Write trials.csv, print the table and the cost-prediction error, save the plots."""
    df.to_csv(out / "trials.csv", index=False)
    if df.empty:
        console.print(f"no trial ran; trials: {out / 'trials.csv'}")
        return
    table = Table(title=title)
    for col in (
        "#",
        "state",
        "depth",
        "width",
        "k",
        "bs",
        "lr",
        "budget",
        "pred ms",
        "meas ms",
        "acc",
    ):
        table.add_column(col, no_wrap=True)
    table.add_column("why pruned", no_wrap=True, overflow="ellipsis", max_width=70)
    for r in df.itertuples():
        table.add_row(
            str(r.number),
            r.state,
            str(r.depth),
            str(r.width),
            str(r.kernel),
            str(r.batch_size),
            f"{r.lr:.3g}",
            str(r.budget_steps),
            _ms(r.predicted_step_s),
            _ms(r.measured_step_s),
            "" if r.value is None or pd.isna(r.value) else f"{r.value:.3f}",
            "" if pd.isna(r.prune_reason) else str(r.prune_reason),
        )
    Console(width=max(console.width, 160)).print(table)
    ran = df[df.measured_step_s.notna() & df.predicted_step_s.notna()]
    if len(ran):
        ape = (ran.predicted_step_s / ran.measured_step_s - 1).abs()
        model = ran.model_step_s if "model_step_s" in ran else ran.predicted_step_s
        raw = (model / ran.measured_step_s - 1).abs()
        console.print(
            f"step-time prediction: median error {100 * ape.median():.1f}% over {len(ran)} trials "
            f"(layer-time model alone, before the study's calibration: {100 * raw.median():.1f}%)"
        )
        for path in plot(curves, df, out):
            console.print(f"plot: {path}")
    console.print(f"trials: {out / 'trials.csv'}")


def _ms(x) -> str:
    return "" if x is None or pd.isna(x) else f"{1e3 * x:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
