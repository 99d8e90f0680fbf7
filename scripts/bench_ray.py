"""Benchmark TTPScheduler against Ray Tune's schedulers by replaying recorded curves (make bench-ray).

The replay set, orders and metrics of `bench_pruners.py`, fed through the TrialScheduler API:
each run is a trial added with ``on_trial_add``, each recorded epoch a result dict
(``val_acc``, ``training_iteration`` = epoch, ``ttp_step``, ``ttp_budget_steps``,
``ttp_schedule``, ``time_total_s``) passed to ``on_trial_result`` as Tune would; STOP ends the
trial there, and a finished run goes to ``on_trial_complete``. Trials run one after another,
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

from ttp_search.data import CurveRun, load_curves
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

    def __init__(self, trial_id: str, budget_steps: int):
        self.trial_id = trial_id
        self.config = {"ttp_budget_steps": budget_steps}
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


def replay(runs: list[CurveRun], order: np.ndarray, scheduler: TrialScheduler) -> pd.DataFrame:
    controller, rows = _Controller(), []
    for n, i in enumerate(order):
        run = runs[i]
        trial = _ReplayTrial(f"t{n}", int(run.budget_steps))
        controller.trials.append(trial)
        scheduler.on_trial_add(controller, trial)
        steps = run.epoch_steps()
        seconds = np.cumsum(np.diff(np.r_[0, steps]) * run.step_time_s)
        stopped_at = None
        for e, (step, acc) in enumerate(zip(steps, run.val_acc, strict=True)):
            result = {
                "val_acc": float(acc),
                "training_iteration": e + 1,
                "ttp_step": int(step),
                "ttp_budget_steps": int(run.budget_steps),
                "ttp_schedule": run.config.get("schedule", "constant"),
                "time_total_s": float(seconds[e]),
                "trial_id": trial.trial_id,
            }
            trial.last_result = result
            if e == len(steps) - 1:
                break
            action = scheduler.on_trial_result(controller, trial, result)
            if action in (TrialScheduler.STOP, TrialScheduler.PAUSE):
                stopped_at = e
                break
        if stopped_at is None:
            scheduler.on_trial_complete(controller, trial, trial.last_result)
            used, done = float(seconds[-1]), True
        else:
            used, done = float(seconds[stopped_at]), False
        trial.status = Trial.TERMINATED
        rows.append(
            {"run": run.run_id, "final": run.final_val_acc, "completed": done, "seconds": used}
        )
    return pd.DataFrame(rows)


def replay_table(space: str, orders: int, seed: int) -> pd.DataFrame:
    runs = load_curves(space=space)
    max_epochs = max(r.epochs for r in runs)
    rng = np.random.default_rng(seed)  # the same orders as bench_pruners.py
    perms = [rng.permutation(len(runs)) for _ in range(orders)]
    names = list(schedulers(max_epochs))
    rows = []
    for o, name in tqdm([(o, n) for o in range(orders) for n in names], desc=f"replay {space}"):
        log = replay(runs, perms[o], schedulers(max_epochs)[name])
        rows.append({"order": o, "scheduler": name, **metrics(log, runs)})
    per_order = pd.DataFrame(rows)
    summary = per_order.groupby("scheduler", sort=False).agg(
        median_s_to_near_best=("to_near_best_s", "median"),
        never_near_best=("to_near_best_s", lambda s: int(np.isinf(s).sum())),
        best_at_25pct=("best_at_25pct", "mean"),
        best_at_50pct=("best_at_50pct", "mean"),
        final_best=("final_best", "mean"),
        orders_with_top5_stopped=("top5_pruned", lambda s: int((s > 0).sum())),
        compute_share=("total_s", "mean"),
    )
    summary["compute_share"] /= per_order.full_s.iloc[0]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--live", action="store_true", help="also run studies/ray_nas.py once")
    parser.add_argument("--live-budget", type=float, default=120.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    lines = []
    for space in ("nas", "hpo"):
        summary = replay_table(space, args.orders, args.seed)
        ttp = summary.loc["TTPScheduler"]
        others = summary.drop(index=["TTPScheduler", "FIFOScheduler"])
        best_name = others.median_s_to_near_best.idxmin()
        speedup = others.loc[best_name].median_s_to_near_best / ttp.median_s_to_near_best
        lines += [
            f"### Ray replay, {space.upper()} half ({args.orders} orders)",
            "",
            summary.round(4).to_markdown(),
            "",
            f"TTPScheduler: {ttp.median_s_to_near_best:.0f} s to within {TOLERANCE:.1%} of the "
            f"best vs {others.loc[best_name].median_s_to_near_best:.0f} s for {best_name} "
            f"({speedup:.2f}x; target ≥ 2x); top-5 stopped in "
            f"{int(ttp.orders_with_top5_stopped)} of {args.orders} orders (target ≤ 1).",
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
