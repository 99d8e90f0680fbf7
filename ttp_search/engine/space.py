"""A search space the engine can reason about without Optuna or Ray: numeric ranges and
categorical choices, each configuration placed in the unit cube."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Numeric:
    """A number in ``[low, high]``, on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def unit(self, value: float) -> float:
        """``value`` on [0, 1] across the range (0 when the range is a single point)."""
        lo, hi, v = float(self.low), float(self.high), float(value)
        if self.log:
            lo, hi, v = math.log(lo), math.log(hi), math.log(v)
        return (v - lo) / (hi - lo) if hi > lo else 0.0


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``."""

    choices: tuple

    def unit(self, value: Any) -> float:
        index = self.choices.index(value) if value in self.choices else 0
        return index / max(len(self.choices) - 1, 1)


Dimension = Numeric | Categorical
Space = Mapping[str, Dimension]


def encode(params: Mapping[str, Any], space: Space) -> list[float]:
    """The configuration as a point of the unit cube, one coordinate per dimension."""
    return [dim.unit(params[name]) for name, dim in space.items()]


def similarity(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    space: Space,
    bandwidth: float = 0.25,
    mismatch: float = 1.0,
) -> float:
    """A Gaussian kernel between two configurations, in (0, 1].

    A numeric parameter is placed on [0, 1] across its range and differs by its distance
    over ``bandwidth``; a categorical (or unknown) parameter adds ``mismatch`` (a squared
    distance) when the values differ; a parameter one side lacks counts as differing.
    ``exp(−Σ d² / 2)``: 1 for the same configuration.
    """
    total = 0.0
    for name in set(a) | set(b):
        if name not in a or name not in b:
            total += mismatch
            continue
        dim = space.get(name)
        if isinstance(dim, Numeric) and dim.high > dim.low:
            total += ((dim.unit(a[name]) - dim.unit(b[name])) / bandwidth) ** 2
        elif a[name] != b[name]:
            total += mismatch
    return math.exp(-0.5 * total)


def observed_space(configs: list[Mapping[str, Any]]) -> dict[str, Dimension]:
    """A space read off configurations when no distributions are known (Ray searchers):
    numbers span what was seen (log scale when positive and over a decade apart), anything
    else is categorical."""
    space: dict[str, Dimension] = {}
    names = sorted({k for c in configs for k in c})
    for name in names:
        values = [c[name] for c in configs if name in c]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric and values:
            lo, hi = float(min(values)), float(max(values))
            space[name] = Numeric(lo, hi, log=lo > 0 and hi > 10 * lo)
        else:
            space[name] = Categorical(tuple(dict.fromkeys(map(_hashable, values))))
    return space


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)
