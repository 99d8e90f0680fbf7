"""How alike two configurations are, for calibrating a study's predictions locally."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution


def similarity(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    distributions: Mapping[str, BaseDistribution],
    bandwidth: float = 0.25,
) -> float:
    """A Gaussian kernel between two configurations, in (0, 1].

    A numeric parameter is placed on [0, 1] across its distribution's range (in logs for a
    log distribution) and differs by its distance over ``bandwidth``; a categorical (or any
    other) parameter differs by 1 when the values differ; a parameter one side lacks counts
    as differing. ``exp(−Σ d² / 2)``: 1 for the same configuration.
    """
    total = 0.0
    for name in set(a) | set(b):
        if name not in a or name not in b:
            total += 1.0
            continue
        dist = distributions.get(name)
        if isinstance(dist, FloatDistribution | IntDistribution) and dist.high > dist.low:
            total += ((_unit(a[name], dist) - _unit(b[name], dist)) / bandwidth) ** 2
        elif a[name] != b[name]:
            total += 1.0
    return math.exp(-0.5 * total)


def _unit(value: float, dist: FloatDistribution | IntDistribution) -> float:
    if dist.log:
        return (math.log(value) - math.log(dist.low)) / (math.log(dist.high) - math.log(dist.low))
    return (value - dist.low) / (dist.high - dist.low)
