"""Decision core shared by the Optuna and Ray adapters."""

from ttp_search.engine.decision import SCHEDULES, Decision, DecisionCore, TrialCurve

__all__ = ["SCHEDULES", "Decision", "DecisionCore", "TrialCurve"]
