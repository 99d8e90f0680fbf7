"""One learning-rate schedule type for every engine: the SDE simulates it, the curve
extrapolation runs on its cumulative rate, the decision core and both adapters carry it.

A schedule is a shape over a budget of ``total`` steps, as a factor of the initial rate:
``constant``; ``linear`` (decay to ``final_fraction`` at the budget, :class:`LinearDecayLR`);
``cosine`` (``CosineAnnealingLR`` with ``T_max`` = the budget); ``step`` (``MultiStepLR``,
milestones at 50% and 75%, gamma 0.1); each after an optional linear warm-up of
``warmup_steps`` (as :class:`LinearDecayLR` warms up); or any callable of the step numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ttp_search._checks import check_int, check_real
from ttp_search.errors import InvalidInputError

KINDS = ("constant", "linear", "cosine", "step")
RateFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule's shape (see the module docstring).

    Example:
        >>> Schedule("linear", warmup_steps=2).factors(6).round(3).tolist()
        [0.333, 0.667, 1.0, 0.75, 0.5, 0.25]
    """

    kind: str = "constant"
    warmup_steps: int = 0
    final_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(
                f"unknown schedule {self.kind!r}: use one of {KINDS}, a Schedule or a callable"
            )
        object.__setattr__(self, "warmup_steps", check_int("warmup_steps", self.warmup_steps, 0))
        object.__setattr__(
            self,
            "final_fraction",
            check_real("final_fraction", self.final_fraction, low=0.0, high=1.0),
        )

    def rate(self, total: float) -> RateFn:
        """The factor at each step (0-based) of a run of ``total`` steps, as a function."""
        total = check_real("total", total, low=0.0, low_open=True)
        warm, final = float(self.warmup_steps), self.final_fraction

        def fn(k: np.ndarray) -> np.ndarray:
            k = np.asarray(k, dtype=np.float64)
            span = max(total - warm, 1e-12)
            frac = np.clip((k - warm) / span, 0.0, 1.0)
            if self.kind == "constant":
                shape = np.ones_like(k)
            elif self.kind == "linear":
                shape = final + (1.0 - final) * (1.0 - frac)
            elif self.kind == "cosine":
                shape = final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * frac))
            else:  # milestones at whole steps, as MultiStepLR's int milestones
                half, three_quarters = warm + math.floor(span * 0.5), warm + math.floor(span * 0.75)
                shape = np.where(k < half, 1.0, np.where(k < three_quarters, 0.1, 0.01))
            return np.where(k < warm, (k + 1.0) / (warm + 1.0), shape)

        return fn

    def factors(self, steps: int) -> np.ndarray:
        """The factor of each of ``steps`` steps, the budget being ``steps``."""
        return self.rate(steps)(np.arange(steps, dtype=np.float64))

    def to_dict(self) -> dict:
        """A JSON form (what Optuna attributes and Ray configs hold)."""
        return {
            "kind": self.kind,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
        }


ScheduleLike = str | dict | Schedule | RateFn


def as_schedule(value: ScheduleLike | None) -> Schedule | RateFn:
    """A :class:`Schedule` from a name, its dict form, a Schedule, or a callable as is
    (``None`` is constant)."""
    if value is None:
        return Schedule()
    if isinstance(value, Schedule) or callable(value):
        return value
    if isinstance(value, str):
        return Schedule(value)
    if isinstance(value, dict):
        try:
            return Schedule(**value)
        except TypeError:
            raise InvalidInputError(f"not a schedule: {value!r}") from None
    raise InvalidInputError(f"not a schedule: {value!r}")


def rate_of(value: ScheduleLike | None, total: float) -> RateFn | None:
    """The relative-rate function over a budget of ``total`` steps; ``None`` for a constant
    rate (what the curve extrapolation takes as "no schedule")."""
    schedule = as_schedule(value)
    if callable(schedule) and not isinstance(schedule, Schedule):
        return schedule
    if schedule.kind == "constant" and schedule.warmup_steps == 0:
        return None
    return schedule.rate(total)


def stored(value: ScheduleLike | None) -> str | dict:
    """The JSON form of a schedule to store: its name when it is a plain named one."""
    schedule = as_schedule(value)
    if not isinstance(schedule, Schedule):
        raise InvalidInputError("a callable schedule cannot be stored: pass a Schedule")
    if schedule.warmup_steps == 0 and schedule.final_fraction == 0.0:
        return schedule.kind
    return schedule.to_dict()
