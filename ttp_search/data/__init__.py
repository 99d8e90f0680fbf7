"""Offline data: MNIST-1D (generated procedurally), digits (bundled with scikit-learn), a
small pretrained fine-tuning task made from the digits, and
ttp_search's own learning-curve data set (``learning_curves.json.gz``, made by
``scripts/make_curves.py``)."""

from ttp_search.data.curves import CurveRun, load_curves
from ttp_search.data.datasets import digits, mnist1d
from ttp_search.data.finetuning import FinetuningTask, digits_finetuning

__all__ = ["CurveRun", "FinetuningTask", "digits", "digits_finetuning", "load_curves", "mnist1d"]
