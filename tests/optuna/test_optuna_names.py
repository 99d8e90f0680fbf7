"""Options named like Optuna's mean what Optuna means: the reports TTPPruner judges are the
reports MedianPruner judges for the same n_warmup_steps and interval_steps."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from ttp_search.engine import DecisionOptions

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _median_judges(steps: list[int], warmup: int, interval: int) -> list[bool]:
    """At which reports MedianPruner judges: with a peer at 0 at every step and this trial
    at 10, it prunes exactly when it judges."""
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=0, n_warmup_steps=warmup, interval_steps=interval, n_min_trials=1
    )
    study = optuna.create_study(pruner=pruner)
    peer = study.ask()
    for s in range(max(steps) + 1):
        peer.report(0.0, s)
    study.tell(peer, 0.0)
    trial = study.ask()
    judged = []
    for s in steps:
        trial.report(10.0, s)
        judged.append(trial.should_prune())
    return judged


@pytest.mark.parametrize(("warmup", "interval"), [(0, 1), (5, 1), (0, 3), (4, 5), (10, 7)])
def test_judged_reports_match_median_pruner(warmup, interval):
    rng = np.random.default_rng(warmup * 31 + interval)
    for _ in range(5):
        steps = sorted(set(rng.integers(0, 60, size=20).tolist()))
        options = DecisionOptions(n_warmup_steps=warmup, interval_steps=interval)
        ours = [options.should_judge(steps[: i + 1], 1.0) for i in range(len(steps))]
        assert ours == _median_judges(steps, warmup, interval), steps
