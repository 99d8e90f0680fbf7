"""Optuna components: a cost-aware pruner and sampler, per-trial budgets, timed reports,
and what every study repeats (suggesting from a space, the training loop, the trials
table, the plots and the end-of-run report).

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
from ttp_search.optuna._storage import study_time_left
from ttp_search.optuna.console import StudyProgress
from ttp_search.optuna.pruner import TTPPruner
from ttp_search.optuna.results import (
    learning_curves,
    print_report,
    save_plots,
    study_summary,
    trials_dataframe,
)
from ttp_search.optuna.sampler import CostAwareSampler
from ttp_search.optuna.studies import open_study
from ttp_search.optuna.training import run_training, suggest

__all__ = [
    "CostAwareSampler",
    "StudyProgress",
    "TTPPruner",
    "get_budget",
    "keys",
    "learning_curves",
    "linear_decay_lr",
    "open_study",
    "print_report",
    "prune_reason",
    "record_failures",
    "record_target_reached",
    "report",
    "run_training",
    "save_plots",
    "set_budget",
    "study_summary",
    "study_time_left",
    "suggest",
    "trials_dataframe",
]
