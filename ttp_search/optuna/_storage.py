"""What ttp_search keeps on Optuna trials, and how it reads a study's state back.

Everything lives in trial user attributes (visible in optuna-dashboard), so several processes
sharing one SQLite or PostgreSQL storage see the same budgets, clocks and predictions.
"""

from __future__ import annotations

import datetime

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ttp_search.engine import TrialCurve
from ttp_search.engine.clock import StudyClock
from ttp_search.engine.planning import band_arrays
from ttp_search.optuna._private import write_user_attr

# The keys are public (ttp_search.optuna.keys); re-exported for the package's modules.
from ttp_search.optuna.keys import (
    BUDGET,
    BUDGET_GIVEN,
    CLOCK,
    DECISION,
    FAIL_REASON,
    PLAN,
    PREFIX,
    PRUNE_REASON,
    SCHEDULE,
    TARGET_REACHED,
    TRAIN_LOSS,
    fixed_params,
    plan_of,
)

__all__ = [
    "BUDGET",
    "BUDGET_GIVEN",
    "CLOCK",
    "DECISION",
    "FAIL_REASON",
    "PLAN",
    "PREFIX",
    "PRUNE_REASON",
    "SCHEDULE",
    "TARGET_REACHED",
    "TRAIN_LOSS",
    "elapsed_since",
    "fixed_params",
    "plan_of",
    "set_attr",
    "set_cached_attr",
    "study_start",
    "study_time_left",
    "trial_curve",
]


def set_attr(study: optuna.Study, trial: FrozenTrial, key: str, value) -> None:
    """Write a user attribute of a trial the pruner was handed (through the storage only)."""
    write_user_attr(study, trial, key, value)


def set_cached_attr(study: optuna.Study, trial: FrozenTrial, key: str, value) -> None:
    """Write a user attribute of the running trial whose own cache ``trial`` is (what
    ``sample_relative`` is handed), keeping that cache in step as ``Trial.set_user_attr``
    does, so the objective's ``trial.user_attrs`` show it at once."""
    write_user_attr(study, trial, key, value)
    trial.user_attrs[key] = value


def now() -> datetime.datetime:
    return datetime.datetime.now()


def elapsed_since(start: datetime.datetime | None) -> float | None:
    if start is None:
        return None
    return max((now() - start).total_seconds(), 0.0)


def study_start(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> float | None:
    """When the study's first trial started (a ``time.time()``), shared by every worker."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    return min(starts).timestamp() if starts else None


def study_time_left(
    study: optuna.Study, study_budget_s: float | None, trials: list[FrozenTrial] | None = None
) -> float | None:
    """Seconds left of a study budget counted from its first trial's start (shared by workers).

    ``trials``: the study's trials when the caller has already read them from storage.
    """
    if study_budget_s is None:
        return None
    return StudyClock(study_budget_s).time_left(study_start(study, trials))


def trial_curve(trial: FrozenTrial, *, measure_now: bool = False) -> TrialCurve:
    """The decision core's view of an Optuna trial."""
    items = sorted(trial.intermediate_values.items())
    steps = np.array([s for s, _ in items], dtype=np.float64)
    values = np.array([v for _, v in items], dtype=np.float64)
    attrs = trial.user_attrs
    plan = plan_of(trial)
    elapsed = recent = None
    clock = attrs.get(CLOCK)
    if steps.size:
        if clock and clock.get("step") == int(steps[-1]):
            elapsed = float(clock["elapsed_s"])
            prev_step = clock.get("prev_step")
            if prev_step is not None and prev_step < steps[-1]:
                recent = (elapsed - float(clock["prev_elapsed_s"])) / (steps[-1] - prev_step)
        elif measure_now:
            # Plain ``trial.report`` stores no clock: the trial's age is the best we have.
            elapsed = elapsed_since(trial.datetime_start)
    decision = attrs.get(DECISION) or {}
    pred = None
    if decision.get("predicted_final") is not None:
        pred = (
            decision["predicted_final"],
            decision["predicted_low"],
            decision["predicted_high"],
        )
    finished = trial.state == TrialState.COMPLETE
    train = attrs.get(TRAIN_LOSS) or []
    final = None
    if finished and trial.value is not None:
        # The objective's return value is the trial's result, even if it differs from
        # the last report (say, a test score after the last validation report).
        final = float(trial.value)
    budget = attrs.get(BUDGET)
    return TrialCurve(
        steps=steps,
        values=values,
        budget_steps=float(budget) if budget else None,
        schedule=attrs.get(SCHEDULE, "constant"),
        elapsed_s=elapsed,
        predicted_step_s=plan.get("step_s"),
        recent_step_s=recent,
        finished=finished,
        pruned=trial.state == TrialState.PRUNED,
        train_steps=[step for step, _ in train] if train else None,
        train_losses=[loss for _, loss in train] if train else None,
        final=final,
        predicted_final=pred,
        label=trial.number,
        band=band_arrays(plan.get("band")),
    )
