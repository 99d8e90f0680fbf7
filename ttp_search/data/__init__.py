"""Offline data: MNIST-1D (generated procedurally), digits (bundled with scikit-learn), and
ttp_search's own learning-curve data set (``learning_curves.json.gz``, made by
``scripts/make_curves.py``)."""

from ttp_search.data.curves import CurveRun, load_curves
from ttp_search.data.datasets import digits, mnist1d

__all__ = ["CurveRun", "digits", "load_curves", "mnist1d"]
