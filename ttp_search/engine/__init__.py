"""Decision core and budget planning shared by the Optuna and Ray adapters."""

from ttp_search.engine.decision import SCHEDULES, Decision, DecisionCore, TrialCurve
from ttp_search.engine.planning import BudgetPlanner, TrialPlan

__all__ = ["SCHEDULES", "BudgetPlanner", "Decision", "DecisionCore", "TrialCurve", "TrialPlan"]
