"""Baselines the layer-time model must beat, fitted on the same calibration networks.

* :class:`FlopLinearModel`: ``t = a·FLOPs + b`` (Justus et al. report ~400% error for it).
* :class:`RooflineModel`: ``t = FLOPs/(peak·u) + bytes/(bandwidth·u)`` with peak FLOP/s and
  bandwidth measured on the device and one utilisation ``u`` fitted.

Both price a traced step (forward + backward); neither knows about optimizers or overhead,
which is the point of comparing against them.
"""

from __future__ import annotations

import math

import numpy as np

from ttp_search.cost.calibrate import CalibrationData
from ttp_search.cost.model import _relative_nnls
from ttp_search.cost.trace import StepTrace


class FlopLinearModel:
    """Step seconds as a linear function of the step's FLOPs."""

    def fit(self, data: CalibrationData) -> FlopLinearModel:
        flops = np.array([n.flops for n in data.nets])
        A = np.column_stack([flops, np.ones_like(flops)])
        self.coef_ = _relative_nnls(A, np.asarray(data.net_time))
        return self

    def predict_trace(self, trace: StepTrace) -> float:
        return float(self.coef_[0] * trace.flops + self.coef_[1])


class RooflineModel:
    """Step seconds from FLOPs at measured peak and bytes at measured bandwidth, over ``u``."""

    def fit(self, data: CalibrationData) -> RooflineModel:
        self.peak_flops_ = data.peak_flops
        self.bandwidth_ = data.bandwidth
        raw = np.array([self._raw(n.flops, n.bytes) for n in data.nets])
        # Median log-ratio: a robust single utilisation factor.
        self.utilisation_ = math.exp(float(np.median(np.log(raw / np.asarray(data.net_time)))))
        return self

    def _raw(self, flops: float, nbytes: float) -> float:
        return flops / self.peak_flops_ + nbytes / self.bandwidth_

    def predict_trace(self, trace: StepTrace) -> float:
        return self._raw(trace.flops, trace.bytes) / self.utilisation_
