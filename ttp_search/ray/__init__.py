"""Ray Tune components on the same decision core as the Optuna ones.

.. code-block:: python

    from ttp_search.ray import TTPScheduler, CostAwareSearcher, linear_decay_lr, report
"""

from ttp_search.ray.results import print_report, results_dataframe
from ttp_search.ray.scheduler import TTPScheduler
from ttp_search.ray.searcher import CostAwareSearcher
from ttp_search.ray.trainable import budget_steps, linear_decay_lr, report

__all__ = [
    "CostAwareSearcher",
    "TTPScheduler",
    "budget_steps",
    "linear_decay_lr",
    "print_report",
    "report",
    "results_dataframe",
]
