"""Curves engine: early ranking (TSE, LCGA) and extrapolation with intervals."""

from ttp_search.curves.extrapolate import Extrapolation, extrapolate, linear_decay_schedule
from ttp_search.curves.features import FEATURES, PartialCurve, curve_features
from ttp_search.curves.lcga import SUMMARIES, LCGAFit, lcga
from ttp_search.curves.rank import ESTIMATORS, rank
from ttp_search.curves.study import DEFAULT_FEATURES, StudyPrediction, StudyPredictor
from ttp_search.curves.tse import epoch_means, tse

__all__ = [
    "DEFAULT_FEATURES",
    "ESTIMATORS",
    "FEATURES",
    "SUMMARIES",
    "Extrapolation",
    "LCGAFit",
    "PartialCurve",
    "StudyPrediction",
    "StudyPredictor",
    "curve_features",
    "epoch_means",
    "extrapolate",
    "lcga",
    "linear_decay_schedule",
    "rank",
    "tse",
]
