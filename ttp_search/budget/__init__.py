"""Budget engine: step budgets and budget-aware linear-decay schedules (Li et al. 2020)."""

from ttp_search.budget.conversions import (
    StepBudget,
    steps_for_budget,
    steps_for_fraction,
    steps_for_model_budget,
)
from ttp_search.budget.schedule import Schedule
from ttp_search.budget.schedules import LinearDecayLR

__all__ = [
    "LinearDecayLR",
    "Schedule",
    "StepBudget",
    "steps_for_budget",
    "steps_for_fraction",
    "steps_for_model_budget",
]
