"""The engine every adapter shares: the planner (what runs, for how long) and the decision
core (continue or stop), with the parts they are composed of."""

from ttp_search.engine.calibration import Calibrator, Observation
from ttp_search.engine.choice import Completed, ExpectedImprovementPerSecond
from ttp_search.engine.clock import StudyClock
from ttp_search.engine.decision import (
    SCHEDULES,
    Decision,
    DecisionCore,
    Rule,
    TrialCurve,
    ValueRangeWarning,
)
from ttp_search.engine.judging import DecisionOptions
from ttp_search.engine.planner import History, Planner, PlanRecord
from ttp_search.engine.planning import BudgetPlanner, Limit, TrialPlan
from ttp_search.engine.space import Categorical, Numeric

__all__ = [
    "SCHEDULES",
    "BudgetPlanner",
    "Calibrator",
    "Categorical",
    "Completed",
    "Decision",
    "DecisionCore",
    "DecisionOptions",
    "ExpectedImprovementPerSecond",
    "History",
    "Limit",
    "Numeric",
    "Observation",
    "PlanRecord",
    "Planner",
    "Rule",
    "StudyClock",
    "TrialCurve",
    "TrialPlan",
    "ValueRangeWarning",
]
