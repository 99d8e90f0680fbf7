"""Features of a partial learning curve, read at a fraction of the trial's own budget.

Trials of one study differ in budget and schedule, so two curves are only comparable where
each has used the same share of its budget: every feature here is read at ``fraction`` of the
curve's budget (values linearly interpolated between reports). ``StudyPredictor`` regresses
final values on them.

* ``observed``: the value at the fraction; ``best``: the best value up to it; ``recent``:
  the mean of the reports over the last tenth of the budget seen (noise averaged out);
* ``slope``: the value's change over the second half of what is seen (``v(φ) − v(φ/2)``);
* ``log_budget``: the budget's log, in steps;
* ``rate_left``: the share of the schedule's summed learning rate still to come (a
  linear-decay run has most of its late gain ahead of it even when its rate is small);
* ``extrapolated``: the single-curve extrapolation to the budget (``extrapolate``);
* ``tse``, ``tse_e``, ``tse_ema``: training speed estimation of the training losses reported
  up to the fraction, as a mean per step (Ru et al. 2021); the last tenth of the budget seen
  for TSE-E, a per-report decay of 0.9 for TSE-EMA;
* ``lcga_slope``, ``lcga_asymptote``: the LCGA hyperbola's final slope (per budget) and
  asymptote, fitted to the training losses (Zhao et al. 2022).

Training-loss features are ``nan`` for a curve without training losses; the predictor then
leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ttp_search.curves.extrapolate import extrapolate
from ttp_search.curves.lcga import lcga
from ttp_search.errors import InvalidInputError

FEATURES = (
    "observed",
    "best",
    "recent",
    "slope",
    "log_budget",
    "rate_left",
    "extrapolated",
    "tse",
    "tse_e",
    "tse_ema",
    "lcga_slope",
    "lcga_asymptote",
)
TRAINING_LOSS_FEATURES = frozenset({"tse", "tse_e", "tse_ema", "lcga_slope", "lcga_asymptote"})
_RATE_GRID = 257  # points of the schedule's summed rate; plenty for a share to 3 digits


@dataclass(frozen=True)
class PartialCurve:
    """What the features are read from: reports of one trial and its budget.

    ``rate`` is the learning rate relative to its start as a function of the step
    (``None``: constant); ``train_steps``/``train_losses`` are optional training losses.
    """

    steps: np.ndarray
    values: np.ndarray
    budget: float
    rate: Callable[[np.ndarray], np.ndarray] | None = None
    train_steps: np.ndarray | None = None
    train_losses: np.ndarray | None = None

    @cached_property
    def key(self) -> tuple:
        """What the curve's features depend on, hashable: a cache key, built once per curve
        (a finished trial's curve is kept, and read at every decision of the study)."""
        return (
            self.budget,
            self.steps.tobytes(),
            self.values.tobytes(),
            None if self.train_losses is None else self.train_losses.size,
        )

    def value_at(self, step: float) -> float:
        return float(np.interp(step, self.steps, self.values))

    def upto(self, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values reported up to ``fraction`` of the budget, ending exactly there
        (the value there interpolated between reports)."""
        at = fraction * self.budget
        seen = self.steps <= at
        steps, values = self.steps[seen], self.values[seen]
        if steps.size == 0 or steps[-1] < at:
            steps, values = np.r_[steps, at], np.r_[values, self.value_at(at)]
        return steps, values

    def reaches(self, fraction: float) -> bool:
        return self.steps.size > 0 and self.steps[-1] >= fraction * self.budget * (1 - 1e-9)


def curve_features(
    curve: PartialCurve,
    fraction: float,
    names: Sequence[str],
    *,
    direction: str = "minimize",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """The features ``names`` of ``curve`` read at ``fraction`` of its budget."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise InvalidInputError(f"unknown curve feature {unknown[0]!r}; expected one of {FEATURES}")
    if not 0 < fraction <= 1 or not curve.reaches(fraction):
        raise InvalidInputError(
            f"fraction {fraction!r} is not in (0, 1] or past the curve's last report "
            f"(step {curve.steps[-1] if curve.steps.size else None} of {curve.budget:g})"
        )
    at = fraction * curve.budget
    steps, values = curve.upto(fraction)
    sign = 1.0 if direction == "minimize" else -1.0
    out = []
    for name in names:
        if name == "observed":
            out.append(values[-1])
        elif name == "best":
            out.append(sign * float(np.min(sign * values)))
        elif name == "recent":
            out.append(float(values[steps >= at - 0.1 * curve.budget].mean()))
        elif name == "slope":
            out.append(values[-1] - curve.value_at(at / 2))
        elif name == "log_budget":
            out.append(math.log(curve.budget))
        elif name == "rate_left":
            out.append(_rate_left(curve, fraction))
        elif name == "extrapolated":
            out.append(_extrapolated(curve, steps, values, direction, value_range))
        else:
            out.append(_training_feature(curve, at, name))
    return np.asarray(out, dtype=np.float64)


def _rate_left(curve: PartialCurve, fraction: float) -> float:
    if curve.rate is None:
        return 1.0 - fraction
    grid = np.linspace(0.0, curve.budget, _RATE_GRID)
    rate = np.maximum(np.asarray(curve.rate(grid), dtype=np.float64), 0.0)
    total = np.cumsum(np.r_[0.0, 0.5 * (rate[1:] + rate[:-1])])
    if total[-1] <= 0:
        return 1.0 - fraction
    return float(1.0 - np.interp(fraction * curve.budget, grid, total) / total[-1])


def _extrapolated(curve, steps, values, direction, value_range) -> float:
    est = extrapolate(
        steps,
        values,
        curve.budget,
        direction=direction,
        lr_schedule=curve.rate,
        value_range=value_range,
    )
    return est.mean


def _training_feature(curve: PartialCurve, at: float, name: str) -> float:
    if curve.train_losses is None or curve.train_steps is None:
        return math.nan
    keep = curve.train_steps <= at
    losses, steps = curve.train_losses[keep], curve.train_steps[keep]
    if losses.size == 0:
        return math.nan
    if name == "tse":
        return float(losses.mean())
    if name == "tse_e":
        return float(losses[steps >= at - 0.1 * curve.budget].mean())
    if name == "tse_ema":
        weights = 0.9 ** np.arange(losses.size - 1, -1, -1, dtype=np.float64)
        return float((weights * losses).sum() / weights.sum())
    if losses.size < 8 or np.any(losses < 0):
        return math.nan
    fit = lcga(steps, losses)
    if name == "lcga_slope":
        return float(fit.slope(steps[-1])) * curve.budget
    return fit.beta3
