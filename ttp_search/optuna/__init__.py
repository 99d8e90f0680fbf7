"""Optuna components: a cost-aware pruner and sampler, per-trial budgets, timed reports.

.. code-block:: python

    from ttp_search.optuna import TTPPruner, CostAwareSampler, set_budget, report
"""

from ttp_search.optuna import keys
from ttp_search.optuna._helpers import (
    get_budget,
    linear_decay_lr,
    prune_reason,
    record_failures,
    record_target_reached,
    report,
    set_budget,
)
from ttp_search.optuna.pruner import TTPPruner
from ttp_search.optuna.sampler import CostAwareSampler
from ttp_search.optuna.studies import open_study

__all__ = [
    "CostAwareSampler",
    "TTPPruner",
    "get_budget",
    "keys",
    "linear_decay_lr",
    "open_study",
    "prune_reason",
    "record_failures",
    "record_target_reached",
    "report",
    "set_budget",
]
