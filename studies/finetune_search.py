"""Cost-aware fine-tuning search: reach a target training loss at the least cost (make finetune).

A small CNN is pretrained on digits 0-4 and a fresh head is linear-probed on digits 5-9 (LP-FT;
cached in the ttp_search cache after the first run). The search tunes the learning rate, batch
size, momentum, weight decay and which blocks to fine-tune (the head, the head and the dense
layer, or everything) to bring the training loss on digits 5-9 to ``--target`` times its
initial value.

Before a trial runs, its cost is predicted end to end: the linearized SDE (one Jacobian pass
per block for the whole study, cached and shared by workers) gives the steps to the target
loss with an interval, the layer-time model the seconds per step; the trial's step budget is
the predicted steps times ``1 + --margin`` (capped by the study's time left) and it trains
with a linear-decay schedule that ends exactly there. CostAwareSampler runs the configuration
with the most expected improvement per predicted second and never one predicted not to reach
the target within ``--trial-budget``; TTPPruner stops a trial whose loss leaves the SDE's
predicted band in the bad direction, or that will not end better than the best.

The objective is the final training loss clipped at the target (every trial that reaches
the target is as good; cost decides among them), and a trial ends as soon as it reaches the
target. When the SDE proves optimistic (trials end their budgets short of the target) later
budgets are lengthened by the study's measured/predicted ratio (the plan's ``steps_scale``).

``--method tpe+median`` / ``tpe+hyperband`` run what a user writes without ttp_search: TPE and
Optuna's pruner, every trial ``--fixed-steps`` steps (same recipe). trials.csv has
``predicted_steps`` (the first step at which the trial's predicted curve reaches the target,
after the study's scale) and ``measured_steps`` (the same, measured; empty if never), the raw
SDE steps, and the predicted and measured seconds to the target. ``summary.json`` has the
time to the first trial that reached the target and the seconds spent on predictions.
"""

from __future__ import annotations

import argparse
import copy
import functools
import io
import json
import math
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_aware_nas as nas

from ttp_search.cost import LayerTimeModel
from ttp_search.cost.cache import atomic_write_bytes, cache_dir
from ttp_search.data import digits
from ttp_search.dynamics import BlockGrams
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    get_budget,
    keys,
    linear_decay_lr,
    prune_reason,
    record_failures,
    record_target_reached,
    report,
)

SEARCH_SPACE = {
    "lr": FloatDistribution(1e-3, 0.5, log=True),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "momentum": CategoricalDistribution([0.0, 0.5, 0.9]),
    "weight_decay": CategoricalDistribution([0.0, 1e-4, 1e-3]),
    "tune": CategoricalDistribution(["head", "dense+head", "all"]),
}
#: Block -> parameter-name prefixes of ``model()``; ``tune`` choices -> blocks trained.
BLOCKS = {"convs": ["0.0.", "0.2."], "dense": ["0.6."], "head": ["1."]}
TUNED = {"head": ["head"], "dense+head": ["dense", "head"], "all": ["convs", "dense", "head"]}
REPORTS_PER_TRIAL = 12


def model() -> nn.Module:
    body = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
    )
    return nn.Sequential(body, nn.Linear(64, 5))


def images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits at 16x16 (upsampled), labels 0-9."""
    x, y, _, _ = digits()
    return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False), y


def pretrained(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Backbone pretrained on digits 0-4, head probed (MSE) on 5-9; cached after the first run.

    Returns the model and the fine-tuning set (inputs, one-hot targets).
    """
    x, y = images()
    x_ft, y_ft = x[y >= 5], F.one_hot(y[y >= 5] - 5, 5).float()
    path = cache_dir() / f"finetune_backbone_digits16_s{seed}.pt"
    net = model()
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return net, x_ft, y_ft
    torch.manual_seed(seed)
    pre = nn.Sequential(net[0], nn.Linear(64, 5))
    src = y < 5
    opt = torch.optim.SGD(pre.parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):
        idx = torch.randint(int(src.sum()), (64,))
        loss = F.cross_entropy(pre(x[src][idx]), y[src][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        feats = net[0](x_ft)
    head_opt = torch.optim.SGD(net[1].parameters(), lr=0.1, momentum=0.9)
    for _ in range(200):  # linear probe: fine-tuning starts from a trained head (LP-FT)
        idx = torch.randint(len(y_ft), (64,))
        loss = F.mse_loss(net[1](feats[idx]), y_ft[idx])
        head_opt.zero_grad()
        loss.backward()
        head_opt.step()
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return net, x_ft, y_ft


def trainable(net: nn.Module, tune: str) -> nn.Module:
    """``net`` with only the blocks of ``tune`` trainable (a copy)."""
    net = copy.deepcopy(net)
    keep = [p for b in TUNED[tune] for p in BLOCKS[b]]
    for name, param in net.named_parameters():
        param.requires_grad_(any(name.startswith(p) for p in keep))
    return net


class Predictor:
    """The pipeline's predictions: SDE steps to the target and the predicted band; the time
    the sampler spends (pricing, SDE, GP) is counted in ``seconds``."""

    def __init__(self, grams: BlockGrams, target: float, max_steps: int, extrapolate: bool = False):
        self.grams, self.target, self.max_steps = grams, target, max_steps
        self.extrapolate = extrapolate
        self.seconds = 0.0
        self._sde = {}

    def time(self, obj, method: str) -> None:
        """Count the time spent in ``obj.method`` as prediction time."""
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(obj, method, timed)

    def sde(self, tune: str):
        if tune not in self._sde:
            self._sde[tune] = self.grams.sde(TUNED[tune], extrapolate=self.extrapolate)
        return self._sde[tune]

    @staticmethod
    def hyper(p: dict) -> dict:
        return dict(
            lr=p["lr"], batch_size=p["batch_size"], momentum=p["momentum"],
            weight_decay=p["weight_decay"],
        )  # fmt: skip

    def steps(self, p: dict) -> tuple[float, float, float]:
        sde = self.sde(p["tune"])
        hyper = self.hyper(p)
        batch_size = hyper.pop("batch_size")  # the bound holds for any batch
        run = dict(schedule="linear", max_steps=self.max_steps)
        if sde.surely_unreachable(self.target, **hyper, **run):
            return math.inf, math.inf, math.inf  # hopeless: skip the budget search
        est = sde.steps_to_loss(self.target, **hyper, batch_size=batch_size, **run)
        return est.steps, est.low, est.high

    def band(self, p: dict, steps: int) -> dict:
        curve = self.sde(p["tune"]).predict_curve(
            **self.hyper(p), steps=steps, schedule="linear", points=60
        )
        hit = curve.step[curve.loss <= self.target]
        return {
            "step": curve.step,
            "low": curve.loss_low,
            "high": curve.loss_high,
            "crossing": float(hit.iloc[0]) if len(hit) else None,
        }


def make_objective(net, x, y, target, fixed_steps, study_start, budget_s, progress, task):
    def full_loss(m: nn.Module) -> float:
        with torch.no_grad():
            return F.mse_loss(m(x), y).item()

    def objective(trial: optuna.Trial) -> float:
        p = {
            "lr": trial.suggest_float("lr", 1e-3, 0.5, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
            "momentum": trial.suggest_categorical("momentum", [0.0, 0.5, 0.9]),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-4, 1e-3]),
            "tune": trial.suggest_categorical("tune", ["head", "dense+head", "all"]),
        }
        steps = get_budget(trial, default=fixed_steps)
        torch.manual_seed(trial.number)
        m = trainable(net, p["tune"])
        params = [q for q in m.parameters() if q.requires_grad]
        opt = torch.optim.SGD(
            params, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"]
        )
        sched = linear_decay_lr(trial, opt)
        gen = torch.Generator().manual_seed(trial.number)
        every = max(1, math.ceil(steps / REPORTS_PER_TRIAL))
        train_s, reached, loss = 0.0, None, full_loss(m)
        perm, pos = torch.randperm(len(y), generator=gen), 0
        for step in range(1, steps + 1):
            if pos + p["batch_size"] > len(perm):
                perm, pos = torch.randperm(len(y), generator=gen), 0
            idx = perm[pos : pos + p["batch_size"]]
            pos += p["batch_size"]
            t0 = time.perf_counter()
            batch_loss = F.mse_loss(m(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            sched.step()
            train_s += time.perf_counter() - t0
            # The target is checked on the full training loss, often enough to place the
            # first crossing within a few percent of the budget.
            check = step % max(1, steps // 50) == 0 or step == steps
            if check or step % every == 0:
                loss = full_loss(m)
                if reached is None and loss <= target:
                    reached = step
                    record_target_reached(trial, step)
                    trial.set_user_attr("measured_seconds", train_s)
                    trial.set_user_attr("reached_at", time.time())
                    trial.set_user_attr("measured_step_s", train_s / step)
                    trial.set_user_attr("steps_run", step)
                    # The goal is met: more steps would be paid for nothing.
                    report(trial, clipped(loss), step, elapsed_s=train_s)
                    return clipped(loss)
            if step % every == 0 or step == steps:
                trial.set_user_attr("measured_step_s", train_s / step)
                trial.set_user_attr("steps_run", step)
                report(trial, clipped(loss), step, elapsed_s=train_s)
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
        return clipped(loss)

    def clipped(loss: float) -> float:
        # The goal is the target, not the lowest loss: every trial that reaches it is as good
        # (cost decides among them), so the pruners compare trials against the target.
        return max(loss, target) if math.isfinite(loss) else math.nan

    return objective


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.trials:
        a, plan = t.user_attrs, keys.plan_of(t)
        target = plan.get("target_steps") or [None, None, None]
        step_s = plan.get("step_s")
        scale = plan.get("steps_scale") or 1.0
        ratio = plan.get("steps_ratio") or scale
        crossing = plan.get("crossing")
        # The SDE's crossing, calibrated by what the study had measured when it was planned.
        predicted = crossing * ratio if crossing is not None else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                **t.params,
                "budget_steps": a.get("ttp:budget_steps"),
                "steps_run": a.get("steps_run", 0),
                # Steps at which the target is first reached within the trial's budget:
                # predicted (SDE x the study's measured/predicted ratio so far) and measured.
                "predicted_steps": predicted,
                "measured_steps": a.get("ttp:target_reached_step"),
                "sde_steps": crossing,
                "steps_scale": scale,
                "steps_ratio": ratio,
                "budget_target_steps": target[0],
                "budget_target_low": target[1],
                "budget_target_high": target[2],
                # The step time the plan used (the layer-time model's, calibrated on the
                # study's measured trials) and the model's own.
                "predicted_step_s": step_s,
                "model_step_s": plan.get("model_step_s"),
                "measured_step_s": a.get("measured_step_s"),
                "predicted_seconds_to_target": predicted * step_s
                if predicted is not None and step_s
                else None,
                "measured_seconds_to_target": a.get("measured_seconds"),
                "predicted_seconds": plan.get("seconds"),
                "predicted_low": plan.get("seconds_low"),
                "predicted_high": plan.get("seconds_high"),
                "measured_seconds": (a.get("measured_step_s") or 0.0) * a.get("steps_run", 0),
                "reached_at": a.get("reached_at"),
                "started_at": t.datetime_start.timestamp() if t.datetime_start else None,
                "value": t.value
                if t.value is not None
                else (t.intermediate_values[t.last_step] if t.last_step is not None else None),
                "prune_reason": a.get("ttp:prune_reason")
                or (plan.get("reason") if plan and not plan.get("feasible", True) else None)
                or a.get("ttp:fail_reason"),
            }
        )
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, curves, target: float, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    hit = df.dropna(subset=["predicted_seconds_to_target", "measured_seconds_to_target"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if len(hit):
        ax.scatter(hit.measured_seconds_to_target, hit.predicted_seconds_to_target)
        lims = [
            min(hit.measured_seconds_to_target.min(), hit.predicted_seconds_to_target.min()) / 1.5,
            max(hit.measured_seconds_to_target.max(), hit.predicted_seconds_to_target.max()) * 1.5,
        ]
        ax.plot(lims, lims, "k--", lw=0.8, label="predicted = measured")
        ax.legend()
    ax.set(xscale="log", yscale="log", xlabel="measured s to target", ylabel="predicted s")
    ax.set_title("Seconds to the target loss: SDE steps x layer time")
    paths.append(nas._save(fig, out / "predicted_vs_measured_seconds.png"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for steps, vals, pruned, band in curves:
        if len(steps) == 0:
            continue
        (line,) = ax.plot(steps, vals, c="C3" if pruned else "C0", alpha=0.7, lw=1)
        if band:
            ax.fill_between(band["step"], band["low"], band["high"], color=line.get_color(),
                            alpha=0.08)  # fmt: skip
    ax.axhline(target, c="k", ls="--", lw=0.8, label="target")
    ax.set(xlabel="step", ylabel="training loss (MSE)", yscale="log")
    ax.set_title("Training loss (red: pruned) with the SDE's predicted band")
    ax.legend()
    paths.append(nas._save(fig, out / "loss_curves.png"))
    return paths


def summarize(console: Console, df: pd.DataFrame, curves, target, out: Path, title: str) -> None:
    df.to_csv(out / "trials.csv", index=False)
    table = Table(title=title)
    for col in ("#", "state", "tune", "lr", "bs", "mom", "wd", "budget", "pred steps",
                "meas steps", "pred s", "meas s", "loss"):  # fmt: skip
        table.add_column(col, no_wrap=True)
    table.add_column("why", no_wrap=True, overflow="ellipsis", max_width=60)
    fmt = lambda v, f="{:.3g}": "" if v is None or pd.isna(v) else f.format(v)  # noqa: E731
    for r in df.itertuples():
        table.add_row(
            str(r.number), r.state, str(getattr(r, "tune", "")), fmt(getattr(r, "lr", None)),
            fmt(getattr(r, "batch_size", None)), fmt(getattr(r, "momentum", None)),
            fmt(getattr(r, "weight_decay", None)), fmt(r.budget_steps, "{:.0f}"),
            fmt(r.predicted_steps, "{:.0f}"), fmt(r.measured_steps, "{:.0f}"),
            fmt(r.predicted_seconds_to_target), fmt(r.measured_seconds_to_target),
            fmt(r.value, "{:.4f}"), "" if pd.isna(r.prune_reason) else str(r.prune_reason),
        )  # fmt: skip
    Console(width=max(console.width, 170)).print(table)
    for path in plot(df, curves, target, out):
        console.print(f"plot: {path}")
    console.print(f"trials: {out / 'trials.csv'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", help="any Optuna storage URL (default: SQLite in --out)")
    parser.add_argument("--study-name", help="workers with one storage and name share a study")
    parser.add_argument("--budget", type=float, default=120.0, help="study seconds (all workers)")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (budget / 4)")
    parser.add_argument("--target", type=float, default=0.25, help="target = this x initial loss")
    parser.add_argument("--margin", type=float, default=0.1, help="budget = predicted x (1+m)")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--fixed-steps", type=int, default=600, help="baselines' budget")
    parser.add_argument("--num-samples", type=int, default=256, help="samples for the SDE")
    parser.add_argument(
        "--extrapolate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="carry the SDE's spectrum from --num-samples to the whole fine-tuning set. Off "
        "by default: on these small CNNs the linearized model on all samples is about 2x "
        "slower than real SGD (BENCHMARKS.md, bench-steps), which would rule out most "
        "configurations before the study has measured anything; the study calibrates the "
        "SDE's steps on its own trials either way",
    )
    parser.add_argument("--n-trials", type=int, help="stop this worker after this many trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--calibration-budget", type=float, default=60.0)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="0: off")
    parser.add_argument("--out", type=Path, help="default studies/out/<study name>/")
    parser.add_argument("--method", choices=("ttp", "tpe+median", "tpe+hyperband"), default="ttp")
    args = parser.parse_args(argv)
    args.study_name = args.study_name or time.strftime("finetune-%Y%m%d-%H%M%S")
    out = args.out or Path(__file__).parent / "out" / args.study_name
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    console = Console()
    torch.set_num_threads(args.threads)
    wall_start = time.time()

    console.rule(f"cost-aware fine-tuning search ({args.method}): {args.budget:.0f} s budget")
    net, x, y = pretrained(args.seed)
    initial = F.mse_loss(net(x), y).item()
    target = args.target * initial
    console.print(
        f"fine-tuning set: {len(y)} digits 5-9; loss {initial:.4f} -> target {target:.4f}"
    )
    prediction_s = 0.0
    if args.method == "ttp":
        cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
        t0 = time.perf_counter()
        grams = BlockGrams.load_or_compute(
            net, x, y, BLOCKS, loss="mse", num_samples=args.num_samples, seed=args.seed
        )
        grams_s = time.perf_counter() - t0
        how = "computed by this worker" if grams.computed_here else "loaded"
        console.print(f"Jacobians per block: {how} in {grams_s:.1f} s ({grams.path})")
        prediction_s += grams_s
        predictor = Predictor(grams, target, args.max_steps, args.extrapolate)

        @functools.cache
        def step_time(tune: str, batch_size: int):
            # A step's cost depends only on what is trained and the batch: price each pair once.
            return cost_model.predict(trainable(net, tune), x.shape[1:], batch_size, "momentum")

        sampler = CostAwareSampler(
            optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=5),
            cost_fn=lambda p: step_time(p["tune"], p["batch_size"]),
            trial_budget_s=args.trial_budget or args.budget / 4,
            study_budget_s=args.budget,
            max_steps=args.max_steps,
            min_steps=10,
            search_space=SEARCH_SPACE,
            n_startup_trials=5,
            n_candidates=2,  # each proposal costs an SDE budget search (~0.2 s)
            seed=args.seed,
            steps_fn=predictor.steps,
            steps_margin=args.margin,
            band_fn=predictor.band,
            step_time_params=("tune", "batch_size"),  # what step_time() depends on
        )
        pruner = TTPPruner(n_startup_trials=3, time_budget_s=args.budget, band_tolerance=0.5)
        predictor.time(sampler, "sample_relative")  # pricing, the SDE and the GP, all counted
    else:
        predictor = None
        sampler = optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=5)
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=3)
            if args.method == "tpe+median"
            else optuna.pruners.HyperbandPruner()
        )
    study, study_start = nas.open_study(
        storage, args.study_name, args.heartbeat, "minimize", sampler, pruner
    )
    left = args.budget - (time.time() - study_start)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("starting", total=args.budget)

        def on_trial_end(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            trials = study.trials
            hits = sum("ttp:target_reached_step" in t.user_attrs for t in trials)
            progress.update(
                task,
                completed=min(time.time() - study_start, args.budget),
                description=f"trials {len(trials)} | reached target {hits}",
            )

        if left > 0:
            study.optimize(
                record_failures(
                    make_objective(
                        net,
                        x,
                        y,
                        target,
                        args.fixed_steps,
                        study_start,
                        args.budget,
                        progress,
                        task,
                    )
                ),
                timeout=left,
                n_trials=args.n_trials,
                callbacks=[on_trial_end],
                catch=(RuntimeError,),
            )
    if predictor is not None:
        prediction_s += predictor.seconds
    df = trials_table(study)
    curves = [
        (
            sorted(t.intermediate_values),
            [v for _, v in sorted(t.intermediate_values.items())],
            t.state == TrialState.PRUNED,
            keys.plan_of(t).get("band"),
        )
        for t in study.trials
    ]
    summarize(console, df, curves, target, out, f"{args.study_name}: {len(df)} trials")
    reached = df.reached_at.dropna()
    summary = {
        "method": args.method,
        "seed": args.seed,
        "budget_s": args.budget,
        "initial_loss": initial,
        "target_loss": target,
        "trials": len(df),
        "reached": int(df.measured_steps.notna().sum()),
        "time_to_target_s": float(reached.min() - study_start) if len(reached) else None,
        "training_s": float(df.measured_seconds.sum()),
        "prediction_s": prediction_s,
        "wall_s": time.time() - wall_start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    first = summary["time_to_target_s"]
    console.print(
        f"target reached by {summary['reached']} of {len(df)} trials; first after "
        f"{'never' if first is None else f'{first:.1f} s'}; predictions took "
        f"{prediction_s:.1f} s of {summary['wall_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
