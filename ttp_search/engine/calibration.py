"""Calibration of a prediction by the finished trials most like the configuration priced.

Both of the engine's predictions are corrected this way: the steps to a training target
(the linearized SDE's absolute counts can be off by a factor that moves with the
configuration) and the seconds per step (the layer-time model's error belongs to the
configuration's ops on this machine). One mechanism, two priors: the steps ratio is shrunk
toward the study's median ratio, the step-time ratio toward the model itself (ratio 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ttp_search._checks import check_real
from ttp_search.engine.space import Space, similarity
from ttp_search.errors import InvalidInputError

#: A clock over fewer steps says more about warm-up (allocation, lazy initialisation) than
#: about the step time.
MIN_TIMED_STEPS = 20
#: A completed trial that ran its whole budget short of the target needed more than its
#: budget: it enters with this many budgets, a lower bound.
SHORT_OF_TARGET = 1.25


@dataclass(frozen=True)
class Observation:
    """What one finished trial says about a prediction: predicted and measured values of the
    same quantity (steps to the target, or seconds per step) and its configuration."""

    predicted: float
    measured: float
    params: Mapping[str, Any] = field(default_factory=dict)


class Calibrator:
    """measured / predicted for a configuration, from the observations of finished trials.

    Each observation is weighted by :func:`~ttp_search.engine.space.similarity` of its
    configuration to the one priced (restricted to ``params`` when given; ``bandwidth``
    ``None``: every observation counts alike), the weighted geometric mean of the ratios is
    shrunk toward the ``prior`` as if it were ``prior_weight`` more observations, and the
    result clipped to ``[lower, upper]``.

    Args:
        prior: ``"median"`` (the study-wide median ratio; 1.0 until ``min_pairs``
            observations) or ``"model"`` (ratio 1: trust the model until trials say otherwise).
        bandwidth: kernel width on each numeric parameter's unit range, or ``None``.
        mismatch: the squared distance a differing categorical adds (9: three bandwidths,
            weight exp(−4.5): a different architecture says little about this one).
        params: the parameter names that move this prediction (``None``: all).
        bounds: ``(lower, upper)`` clip of the ratio.
    """

    def __init__(
        self,
        prior: Literal["median", "model"] = "median",
        *,
        bandwidth: float | None = 0.25,
        mismatch: float = 1.0,
        params: Sequence[str] | None = None,
        bounds: tuple[float, float] = (0.05, 20.0),
        min_pairs: int = 2,
        prior_weight: float = 1.0,
    ) -> None:
        if prior not in ("median", "model"):
            raise InvalidInputError(f"prior must be 'median' or 'model', got {prior!r}")
        if bandwidth is not None:
            bandwidth = check_real("bandwidth", bandwidth, low=0.0, low_open=True)
        if isinstance(params, str) or not (
            params is None or all(isinstance(name, str) for name in params)
        ):
            raise InvalidInputError(f"params must be parameter names or None, got {params!r}")
        self.prior, self.bandwidth = prior, bandwidth
        self.mismatch = check_real("mismatch", mismatch, low=0.0)
        self.params = None if params is None else tuple(params)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.min_pairs, self.prior_weight = int(min_pairs), float(prior_weight)

    def _view(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.params is None:
            return params
        return {k: params[k] for k in self.params if k in params}

    def ratio(
        self,
        observations: Sequence[Observation],
        params: Mapping[str, Any] | None,
        space: Space,
        *,
        lower: float | None = None,
    ) -> float:
        """The calibrated ratio for ``params`` (``None``: the unweighted, study-wide one).

        ``lower`` overrides the lower clip (budgets are only lengthened: a trial that stops
        at its target wastes nothing of a long budget, one too short wastes itself).
        """
        kept = [o for o in observations if 0 < o.predicted < math.inf and 0 < o.measured < math.inf]
        ratios = np.array([o.measured / o.predicted for o in kept], dtype=np.float64)
        low, high = self.bounds
        low = low if lower is None else lower
        if self.prior == "median":
            if len(ratios) < self.min_pairs:
                return 1.0
            prior = float(np.median(ratios))
        else:
            if not len(ratios):
                return 1.0
            prior = 1.0
        if params is None or self.bandwidth is None:
            if self.prior == "median":
                return float(np.clip(prior, low, high))
            weights = np.ones(len(ratios))
        else:
            mine = self._view(params)
            weights = np.array(
                [
                    similarity(mine, self._view(o.params), space, self.bandwidth, self.mismatch)
                    for o in kept
                ]
            )
        total = float(weights.sum()) + self.prior_weight
        if total <= 0:
            return float(np.clip(prior, low, high))
        log_mean = (float(weights @ np.log(ratios)) + self.prior_weight * math.log(prior)) / total
        return float(np.clip(math.exp(log_mean), low, high))


def steps_calibrator(bandwidth: float | None = 0.25) -> Calibrator:
    """The steps-to-target calibration: shrunk toward the study's median ratio."""
    return Calibrator("median", bandwidth=bandwidth, bounds=(0.05, 20.0), min_pairs=2)


def step_time_calibrator(
    bandwidth: float | None = 0.25, params: Sequence[str] | None = None
) -> Calibrator:
    """The seconds-per-step calibration: shrunk toward the model, a differing categorical
    counting as three bandwidths."""
    return Calibrator("model", bandwidth=bandwidth, mismatch=9.0, params=params, bounds=(0.2, 5.0))
