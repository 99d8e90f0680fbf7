"""What a study's finished trials say about its predictions: measured vs predicted steps
to the target and seconds per step, and how alike two configurations are, so each
prediction is calibrated on the trials most like it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ttp_search.optuna import _storage as keys

#: A clock over fewer steps says more about warm-up (allocation, lazy initialisation) than
#: about the step time.
MIN_TIMED_STEPS = 20
#: A completed trial that ran its whole budget short of the target needed more than its
#: budget: it enters with this many budgets, a lower bound.
SHORT_OF_TARGET = 1.25


def steps_pairs(trials: list[FrozenTrial]) -> list[tuple]:
    """(predicted, measured steps to the target, params, distributions) of the trials that
    have a predicted crossing and either reached the target or completed short of it."""
    pairs = []
    for t in trials:
        a = t.user_attrs
        if not a.get(keys.PREDICTED_CROSSING):
            continue
        if keys.TARGET_REACHED in a:
            measured = a[keys.TARGET_REACHED]
        elif t.state == TrialState.COMPLETE and a.get(keys.BUDGET):
            measured = SHORT_OF_TARGET * a[keys.BUDGET]
        else:
            continue
        pairs.append((a[keys.PREDICTED_CROSSING], measured, t.params, t.distributions))
    return pairs


def step_time_pairs(trials: list[FrozenTrial]) -> list[tuple]:
    """(model, measured seconds per step, params, distributions) of the trials whose clock
    covers enough steps."""
    pairs = []
    for t in trials:
        model_s, clock = t.user_attrs.get(keys.MODEL_STEP), t.user_attrs.get(keys.CLOCK)
        if not model_s or not clock or clock.get("step", 0) < MIN_TIMED_STEPS:
            continue
        measured = clock["elapsed_s"] / clock["step"]
        if measured > 0:
            pairs.append((float(model_s), measured, t.params, t.distributions))
    return pairs


def similarity(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    bandwidth: float = 0.25,
    mismatch: float = 1.0,
) -> float:
    """A Gaussian kernel between two configurations, in (0, 1].

    A numeric parameter is placed on [0, 1] across its distribution's range (in logs for a
    log distribution) and differs by its distance over ``bandwidth``; a categorical (or any
    other) parameter adds ``mismatch`` (a squared distance) when the values differ; a
    parameter one side lacks counts as differing. ``exp(−Σ d² / 2)``: 1 for the same configuration.
    """
    total = 0.0
    for name in set(a) | set(b):
        if name not in a or name not in b:
            total += mismatch
            continue
        dist = distributions.get(name)
        if isinstance(dist, FloatDistribution | IntDistribution) and dist.high > dist.low:
            total += ((_unit(a[name], dist) - _unit(b[name], dist)) / bandwidth) ** 2
        elif a[name] != b[name]:
            total += mismatch
    return math.exp(-0.5 * total)


def _unit(value: float, dist: FloatDistribution | IntDistribution) -> float:
    if dist.log:
        return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
    return (value - dist.low) / (dist.high - dist.low)
