"""Cost engine: predict seconds per training step from a model's layers (Justus et al. 2018)."""

from ttp_search.cost.baselines import FlopLinearModel, RooflineModel
from ttp_search.cost.cache import cache_dir, calibration_path, device_fingerprint
from ttp_search.cost.calibrate import CalibrationData, collect_calibration
from ttp_search.cost.model import (
    DEFAULT_CALIBRATION_S,
    LayerTimeModel,
    StepTimePrediction,
    UnsupportedOpWarning,
)
from ttp_search.cost.step import OPTIMIZERS, MeasuredStep, measure_step_time
from ttp_search.cost.trace import StepTrace, trace_training_step

__all__ = [
    "DEFAULT_CALIBRATION_S",
    "OPTIMIZERS",
    "CalibrationData",
    "FlopLinearModel",
    "LayerTimeModel",
    "MeasuredStep",
    "RooflineModel",
    "StepTimePrediction",
    "StepTrace",
    "UnsupportedOpWarning",
    "cache_dir",
    "calibration_path",
    "collect_calibration",
    "device_fingerprint",
    "measure_step_time",
    "trace_training_step",
]
