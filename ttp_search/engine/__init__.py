"""Decision core and budget planning shared by the Optuna and Ray adapters."""

from ttp_search.engine.decision import (
    SCHEDULES,
    Decision,
    DecisionCore,
    Rule,
    TrialCurve,
    ValueRangeWarning,
)
from ttp_search.engine.planning import BudgetPlanner, Limit, TrialPlan

__all__ = [
    "SCHEDULES",
    "BudgetPlanner",
    "Decision",
    "DecisionCore",
    "Limit",
    "Rule",
    "TrialCurve",
    "TrialPlan",
    "ValueRangeWarning",
]
