"""Where a TTPPruner decision's time goes, part by part, at bench-load's scale.

Fills a SQLite study as bench-load does (completed trials with a budget and a linear schedule),
then runs trials report by report with the pruner and times each part of every decision: the
storage read of the trials, the decision core (and inside it the study-informed predictor's
fit and prediction and the peer read), and the decision record's write. The parts are timed by
wrapping the functions for this run only; the wrappers add a few microseconds per call.

    python scripts/profile_decision.py --trials 1000 --reports 100 --running 10
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import fill, time_pruning

from ttp_search.curves import StudyPredictor
from ttp_search.engine.decision import DecisionCore
from ttp_search.engine.ended import EndedTrials
from ttp_search.engine.judging import DecisionOptions
from ttp_search.optuna import TTPPruner
from ttp_search.optuna import _storage as storage

#: (owner, attribute, label): the parts timed, outermost first.
PARTS = [
    (TTPPruner, "prune", "TTPPruner.prune (all of it)"),
    (optuna.Study, "get_trials", "  storage read (study.get_trials)"),
    (DecisionOptions, "judge", "  decision core (DecisionOptions.judge)"),
    (EndedTrials, "study_fit", "    predictor fit at the grid point"),
    (StudyPredictor, "predict", "    predictor prediction and interval"),
    (DecisionCore, "_peer_rank", "    peers at the same budget fraction"),
    (storage, "set_attr", "  storage write (decision record)"),
]


def timed(times: list[float], function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--running", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/profile.db"
        study = optuna.create_study(study_name="profile", storage=url, direction="maximize")
        fill(study, args.trials - args.running, args.reports, args.seed)
        study = optuna.load_study(
            study_name="profile", storage=url, pruner=TTPPruner(value_range=(0.0, 1.0))
        )
        times: dict[str, list[float]] = {label: [] for _, _, label in PARTS}
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in PARTS]
        try:
            for owner, name, label in PARTS:
                setattr(owner, name, timed(times[label], getattr(owner, name)))
            time_pruning(study, args.running, args.reports, args.seed)
        finally:
            for owner, name, function in originals:
                setattr(owner, name, function)
    rows = [
        {
            "part": label,
            "calls": len(t),
            "median_ms": float(np.median(t)) * 1e3 if t else float("nan"),
            "mean_ms": float(np.mean(t)) * 1e3 if t else float("nan"),
        }
        for label, t in times.items()
    ]
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
