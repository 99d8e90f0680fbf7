"""The SDE's steps interval widened by its model error, measured on reference fine-tunings.

:class:`~ttp_search.dynamics.LinearizedSDE`'s interval is the spread of its simulated runs:
the sampling noise of SGD on the *linearized* network. A real fine-tuning also differs from
its linearization, by more than that spread on real backbones (BENCHMARKS.md, "Intervals with
model error"), so the interval alone covers too little. This widens it by what reference
fine-tunings measured, as conformalized quantile regression does (Romano, Patterson and
Candès 2019), in log steps: each reference scores how far its real step count fell outside
the interval predicted for it (0 inside), and the ``⌈level · (n + 1)⌉``-th smallest of the
``n`` scores is the margin added on both sides. References exchangeable with the run
predicted give coverage of at least ``level``; references from other backbones or tasks
(leave-one-backbone-out in the benchmark) are the honest test of whether they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ttp_search._checks import check_real
from ttp_search.dynamics.estimate import StepsEstimate
from ttp_search.errors import InvalidInputError


class ModelErrorInterval:
    """Widen a steps interval ``[low, high]`` to ``[low · e^−m, high · e^m]``, with the margin
    ``m`` fitted on reference fine-tunings.

    Args:
        level: the coverage aimed at (the SDE's own interval is an 80% one).

    ``fit`` takes what the SDE predicted for each reference (a :class:`StepsEstimate` or a
    ``(steps, low, high)`` tuple) and the steps the real fine-tuning took. References the
    fine-tuning never reached (``inf``: a censored count says nothing about the width) or the
    SDE called unreachable are left out: the stability flag and the linearity check are what
    speak for such configurations. With too few references to promise ``level``
    (``⌈level · (n + 1)⌉ > n``, fewer than 4 at 80%) the margin is ``inf``.

    Example:
        >>> model_error = ModelErrorInterval().fit(
        ...     [(20, 18, 24), (40, 35, 44), (60, 50, 66), (30, 27, 33), (50, 45, 55)],
        ...     [25, 40, 80, 30, 45],
        ... )
        >>> round(model_error.margin_, 3)  # log steps: 60 -> 80 lay outside [50, 66]
        0.192
        >>> [round(x, 1) for x in model_error.bounds(30.0, 40.0)]
        [24.8, 48.5]
    """

    def __init__(self, level: float = 0.8) -> None:
        self.level = check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)

    def fit(
        self,
        predicted: Sequence[StepsEstimate | tuple[float, float, float]],
        measured: Sequence[float],
    ) -> ModelErrorInterval:
        if len(predicted) != len(measured):
            raise InvalidInputError(
                f"{len(predicted)} predictions but {len(measured)} measured step counts"
            )
        bounds = np.array([_interval(p) for p in predicted], dtype=np.float64).reshape(-1, 2)
        real = np.asarray(measured, dtype=np.float64).reshape(-1)
        if np.any(np.isnan(real)) or np.any(real <= 0):
            raise InvalidInputError("measured steps must be positive (inf: never reached)")
        usable = np.isfinite(real) & np.all(np.isfinite(bounds), axis=1) & (bounds[:, 0] > 0)
        low, high, real = bounds[usable, 0], bounds[usable, 1], real[usable]
        #: Each usable reference's log-distance outside its predicted interval (0 inside).
        self.scores_ = np.maximum(np.log(low / real), np.log(real / high)).clip(min=0.0)
        self.n_references_ = int(self.scores_.size)
        rank = math.ceil(self.level * (self.n_references_ + 1))
        self.margin_ = (
            float(np.sort(self.scores_)[rank - 1]) if rank <= self.n_references_ else math.inf
        )
        return self

    def bounds(self, low: float, high: float) -> tuple[float, float]:
        """``[low, high]`` widened by the fitted margin."""
        if not hasattr(self, "margin_"):
            raise InvalidInputError("ModelErrorInterval.bounds called before fit")
        if math.isinf(self.margin_):
            return 0.0, math.inf
        factor = math.exp(self.margin_)
        return low / factor, high * factor

    def widen(self, estimate: StepsEstimate) -> StepsEstimate:
        """``estimate`` with its interval widened (the point and the flags unchanged)."""
        low, high = self.bounds(estimate.low, estimate.high)
        return replace(estimate, low=low, high=high)


def _interval(predicted: StepsEstimate | tuple[float, float, float]) -> tuple[float, float]:
    if isinstance(predicted, StepsEstimate):
        return predicted.low, predicted.high
    try:
        _, low, high = predicted
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"a prediction is a StepsEstimate or (steps, low, high), got {predicted!r}"
        ) from None
    if low > high:
        raise InvalidInputError(f"a predicted interval has low {low} > high {high}")
    return float(low), float(high)
