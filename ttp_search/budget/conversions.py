"""Budgets in the units a search thinks in: seconds, steps, fractions of a schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ttp_search._checks import check_int, check_real
from ttp_search.errors import InvalidInputError

#: More steps than any training run takes (2**53, where floats stop counting exactly): a
#: budget above it comes from a step time that is not a real one (1e-320 s, say).
MAX_BUDGET_STEPS = 2**53


def _positive(name: str, value: object) -> float:
    return check_real(name, value, low=0.0, low_open=True)


def steps_within(time_s: float, step_time_s: float) -> int:
    """Whole steps of ``step_time_s`` that fit in ``time_s`` (both > 0), saturating at
    :data:`MAX_BUDGET_STEPS` (the quotient would overflow to inf for a step of 1e-320 s)."""
    # A hair of tolerance so 10 s / 0.1 s is 100 steps, not 99 from rounding.
    steps = time_s / step_time_s * (1 + 1e-12)
    return MAX_BUDGET_STEPS if not steps < MAX_BUDGET_STEPS else math.floor(steps)


def check_budget_steps(steps: int, step_time_s: float) -> int:
    """Refuse a budget that saturated :func:`steps_within`: its step time is not real."""
    if steps >= MAX_BUDGET_STEPS:
        raise InvalidInputError(
            f"step_time_s {step_time_s!r} is too small to be a step time: the budget would "
            "hold more than 2**53 steps"
        )
    return steps


def steps_for_budget(trial_budget_s: float, step_time_s: float) -> int:
    """Whole steps that fit in ``trial_budget_s`` at ``step_time_s`` per step (at least 0)."""
    budget = _positive("trial_budget_s", trial_budget_s)
    step = _positive("step_time_s", step_time_s)
    return check_budget_steps(steps_within(budget, step), step)


def steps_for_fraction(fraction: float, reference_steps: int) -> int:
    """Steps in ``fraction`` of a reference schedule of ``reference_steps`` (at least 1)."""
    frac = _positive("fraction", fraction)
    reference_steps = check_int("reference_steps", reference_steps, 1)
    return max(1, round(frac * reference_steps))


@dataclass(frozen=True)
class StepBudget:
    """Steps that fit in a time budget, with the interval the step-time prediction carries."""

    steps: int
    low: int  # if steps run at the slow end of the interval
    high: int  # if steps run at the fast end
    step_time_s: float
    trial_budget_s: float


def steps_for_model_budget(
    trial_budget_s: float,
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    optimizer: str = "sgd",
    *,
    cost_model=None,
) -> StepBudget:
    """Ask the layer-time model how many training steps of ``model`` fit in the budget.

    ``cost_model`` is a calibrated :class:`~ttp_search.cost.LayerTimeModel`; by default the
    cached calibration of this device is loaded.
    """
    from ttp_search.cost import LayerTimeModel

    budget = _positive("trial_budget_s", trial_budget_s)
    ltm = cost_model if cost_model is not None else LayerTimeModel.load()
    pred = ltm.predict(model, input_shape, batch_size, optimizer)
    return StepBudget(
        steps=steps_for_budget(budget, pred.step_time_s),
        low=steps_for_budget(budget, pred.high_s),
        high=steps_for_budget(budget, pred.low_s),
        step_time_s=pred.step_time_s,
        trial_budget_s=budget,
    )
