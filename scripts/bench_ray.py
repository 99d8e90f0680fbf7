"""Benchmark TTPScheduler against Ray Tune's schedulers by replaying recorded curves (make bench-ray).

The curve sets, draws, orders and metrics of `bench_pruners.py` (MNIST-1D NAS and HPO halves,
DeBERTa and DeBERTaV3 on MultiNLI from ``../shared/curves`` when present), fed through the
TrialScheduler API: each run is a trial added with ``on_trial_add``, each recorded report a
result dict (``val_acc``, ``training_iteration`` = report, ``ttp_step``, ``ttp_budget_steps``,
``ttp_schedule``, ``time_total_s`` = compute so far) passed to ``on_trial_result`` as Tune
would; STOP ends the trial there, and a finished run goes to ``on_trial_complete``. Trials run one after another,
so HyperBandScheduler's PAUSE (wait for the rest of the bracket) cannot be resumed here: it is
counted as a stop, which is what it becomes when the bracket never fills.

``--live`` adds one run of ``studies/ray_nas.py`` (in its own process).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section
from bench_pruners import TOLERANCE, metrics
from curve_sets import (
    DIAGNOSED_SETS,
    HELD_OUT_SETS,
    SHARED,
    TUNING_SETS,
    RecordedTrial,
    available,
    load_set,
    missing,
)

from ttp_search.ray import TTPScheduler

ROOT = Path(__file__).resolve().parents[1]


def schedulers(max_epochs: int) -> dict[str, TrialScheduler]:
    common = {"metric": "val_acc", "mode": "max"}
    return {
        "TTPScheduler": TTPScheduler(
            n_startup_trials=5, value_range=(0.0, 1.0), margin=TOLERANCE, **common
        ),
        "FIFOScheduler": FIFOScheduler(),
        "ASHAScheduler": ASHAScheduler(
            time_attr="training_iteration", max_t=max_epochs, grace_period=1, **common
        ),
        "HyperBandScheduler": HyperBandScheduler(
            time_attr="training_iteration", max_t=max_epochs, **common
        ),
        "MedianStoppingRule": MedianStoppingRule(
            time_attr="training_iteration", grace_period=1, min_samples_required=5, **common
        ),
    }


class _ReplayTrial:
    """What schedulers read of a Tune Trial (hashable by identity, as Trial is)."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id = trial_id
        self.config = config
        self.status = Trial.RUNNING
        self.evaluated_params: dict = {}
        self.last_result: dict = {}


class _Controller:
    """The little of TuneController the schedulers call during a sequential replay."""

    def __init__(self):
        self.trials = []

    def get_trials(self):
        return self.trials

    def get_live_trials(self):
        return [t for t in self.trials if t.status in (Trial.RUNNING, Trial.PENDING)]

    def stop_trial(self, trial):
        trial.status = Trial.TERMINATED

    def pause_trial(self, trial, should_checkpoint=True):
        trial.status = Trial.PAUSED


def replay(trials: list[RecordedTrial], scheduler: TrialScheduler) -> pd.DataFrame:
    """Feed the trials through one scheduler in their order; one row per trial (the rows
    bench_pruners.metrics reads)."""
    controller, rows = _Controller(), []
    for n, run in enumerate(trials):
        config = {"ttp_budget_steps": int(run.budget), "ttp_schedule": run.schedule}
        trial = _ReplayTrial(f"t{n}", config)
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
        compute = run.compute_at()
        stopped_at = None
        for e, (step, acc) in enumerate(zip(run.steps, run.values, strict=True)):
            result = {
                "val_acc": float(acc),
                "training_iteration": e + 1,
                "ttp_step": int(step),
                **config,
                "time_total_s": float(compute[e]),
                "trial_id": trial.trial_id,
            }
            trial.last_result = result
            if e == run.steps.size - 1:
                break
            action = scheduler.on_trial_result(controller, trial, result)
            if action in (TrialScheduler.STOP, TrialScheduler.PAUSE):
                stopped_at = e
                break
        if stopped_at is None:
            scheduler.on_trial_complete(controller, trial, trial.last_result)
        trial.status = Trial.TERMINATED
        used = float(compute[-1 if stopped_at is None else stopped_at])
        rows.append(
            {"run": run.name, "final": run.final, "completed": stopped_at is None, "seconds": used}
        )
    return pd.DataFrame(rows)


def replay_table(name: str, orders: int, seed: int, size: int | None, shared: Path):
    """Every scheduler on one curve set, the draws and orders of bench_pruners.py."""
    everything = load_set(name, shared)
    rng = np.random.default_rng(seed)
    draws = [rng.permutation(len(everything))[: size or len(everything)] for _ in range(orders)]
    max_epochs = max(t.steps.size for t in everything)
    names = list(schedulers(max_epochs))
    rows = []
    for o, sched in tqdm([(o, n) for o in range(orders) for n in names], desc=f"replay {name}"):
        trials = [everything[i] for i in draws[o]]
        log = replay(trials, schedulers(max_epochs)[sched])
        rows.append({"order": o, "scheduler": sched, **metrics(log, trials)})
    per_order = pd.DataFrame(rows)
    return per_order.groupby("scheduler", sort=False).agg(
        median_compute_to_near_best=("to_near_best", "median"),
        never_near_best=("to_near_best", lambda s: int(np.isinf(s).sum())),
        best_at_25pct=("best_at_25pct", "mean"),
        best_at_50pct=("best_at_50pct", "mean"),
        final_best=("final_best", "mean"),
        orders_with_top5_stopped=("top5_pruned", lambda s: int((s > 0).sum())),
        compute_share=("compute_share", "mean"),
    )


def _verdict(summary: pd.DataFrame, orders: int) -> str:
    ttp = summary.loc["TTPScheduler"]
    others = summary.drop(index=["TTPScheduler", "FIFOScheduler"])
    best_name = others.median_compute_to_near_best.idxmin()
    best = others.loc[best_name].median_compute_to_near_best
    return (
        f"TTPScheduler reaches within {TOLERANCE:.1%} of the best after "
        f"{ttp.median_compute_to_near_best:.3f} of the no-stopping compute (median) vs "
        f"{best:.3f} for {best_name} ({ttp.median_compute_to_near_best / best:.2f}x); no "
        f"near-best configuration completed in {int(ttp.never_near_best)} of {orders} orders; "
        f"a top-5 configuration stopped in {int(ttp.orders_with_top5_stopped)} of {orders}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sets", nargs="+", default=[*TUNING_SETS, *DIAGNOSED_SETS, *HELD_OUT_SETS]
    )
    parser.add_argument("--study-size", type=int, default=120, help="DeBERTa trials per order")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--live", action="store_true", help="also run studies/ray_nas.py once")
    parser.add_argument("--live-budget", type=float, default=120.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    lines = []
    for name in args.sets:
        if not available(name, args.shared):
            print(missing(name, args.shared))
            continue
        size = None if not name.startswith("deberta") else args.study_size
        summary = replay_table(name, args.orders, args.seed, size, args.shared)
        split = "held out" if name in HELD_OUT_SETS else "tuning set"
        split = "diagnosed on" if name in DIAGNOSED_SETS else split
        drawn = f"{size} trials drawn per order" if size else "every trial, shuffled"
        lines += [
            f"### Ray replay, {name} ({split}; {args.orders} orders, {drawn})",
            "",
            summary.round(4).to_markdown(),
            "",
            _verdict(summary, args.orders),
            "",
        ]
    if args.live:
        # Run the study as a user runs it (a process of its own), not as an import.
        out = ROOT / "results" / "bench-ray-live"
        cmd = [sys.executable, str(ROOT / "studies" / "ray_nas.py"), "--out", str(out)]
        cmd += ["--study-budget", str(args.live_budget), "--name", "live"]
        subprocess.run(cmd, check=True)
        df = pd.read_csv(out / "trials.csv")
        ran = df[df.measured_step_s.notna()]
        ape = (ran.predicted_step_s / ran.measured_step_s - 1).abs().median()
        done = df[df.state == "COMPLETE"]
        lines += [
            f"### Live Ray study, {args.live_budget:.0f} s on local Ray (2 CPUs)",
            "",
            f"{len(df)} trials, {len(done)} completed, {int((df.state == 'PRUNED').sum())} "
            f"stopped by TTPScheduler; best validation accuracy {done.value.max():.4f}; "
            f"step-time prediction median error {100 * ape:.1f}%.",
            "",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section(ROOT / "BENCHMARKS.md", "bench-ray", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
