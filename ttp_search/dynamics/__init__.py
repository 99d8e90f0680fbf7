"""Dynamics engine: steps to a target loss without training (linearized SDE)."""

from ttp_search.dynamics.blocks import BlockGrams
from ttp_search.dynamics.estimate import StepsEstimate
from ttp_search.dynamics.hyperparameters import schedule_factors
from ttp_search.dynamics.jacobian import sketched_gram, sketched_jacobian, weight_direction
from ttp_search.dynamics.linearity import LinearityCheck
from ttp_search.dynamics.model_error import ModelErrorInterval
from ttp_search.dynamics.sde import LinearizedSDE
from ttp_search.dynamics.target import StepsToTarget

__all__ = [
    "BlockGrams",
    "LinearityCheck",
    "LinearizedSDE",
    "ModelErrorInterval",
    "StepsEstimate",
    "StepsToTarget",
    "schedule_factors",
    "sketched_gram",
    "sketched_jacobian",
    "weight_direction",
]
