"""What SGD run is predicted: checked hyperparameters and the learning-rate schedule's factors."""

from __future__ import annotations

import numpy as np

from ttp_search._checks import check_int, check_real
from ttp_search.budget.schedule import Schedule as BudgetSchedule
from ttp_search.budget.schedule import ScheduleLike, as_schedule
from ttp_search.errors import InvalidInputError

Schedule = ScheduleLike  # a name, a budget.Schedule or a callable of the steps

#: The longest run predict_curve and steps_to_loss simulate (one step at a time).
MAX_SIMULATED_STEPS = 10_000_000


def schedule_factors(schedule: ScheduleLike, steps: int) -> np.ndarray:
    """Learning-rate factor of each of ``steps`` steps (``η_t / η``): a schedule name, a
    :class:`~ttp_search.budget.Schedule` (warm-up included) or a callable of the steps."""
    k = np.arange(steps, dtype=np.float64)
    shape = as_schedule(schedule)
    if isinstance(shape, BudgetSchedule):
        return shape.factors(steps)
    out = np.asarray(shape(k), dtype=np.float64)
    if out.shape != k.shape or not np.all(np.isfinite(out)) or np.any(out < 0):
        raise InvalidInputError("a schedule callable must map steps to factors >= 0")
    return out


def check_hyperparameters(
    lr, batch_size, momentum=0.0, weight_decay=0.0, steps=1, decay="standard"
) -> None:
    """Validate SGD hyperparameters (before any Jacobian is computed, so bad input fails fast)."""
    check_real("lr", lr, low=0.0, low_open=True)
    check_int("batch_size", batch_size, 1)
    check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    check_real("weight_decay", weight_decay, low=0.0)
    # Every step is simulated (and its learning rate held in an array): a bound, not a wait.
    check_int("steps", steps, 1, MAX_SIMULATED_STEPS)
    if decay not in ("standard", "to_init"):
        raise InvalidInputError(f"decay must be 'standard' or 'to_init', got {decay!r}")
