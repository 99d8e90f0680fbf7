"""ttp_search: training-time-aware hyperparameter and architecture search."""

__version__ = "0.1.0"
