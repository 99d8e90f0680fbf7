"""What ttp_search keeps on Optuna trials, and how it reads a study's state back.

Everything lives in trial user attributes (visible in optuna-dashboard), so several processes
sharing one SQLite or PostgreSQL storage see the same budgets, clocks and predictions.
"""

from __future__ import annotations

import datetime
import math

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ttp_search.engine import TrialCurve
from ttp_search.engine.planning import band_arrays

PREFIX = "ttp:"
BUDGET = PREFIX + "budget_steps"
SCHEDULE = PREFIX + "schedule"
# {"elapsed_s", "step", "prev_elapsed_s", "prev_step"}: one write per report.
CLOCK = PREFIX + "clock"
PREDICTED_STEP = PREFIX + "predicted_step_s"
PREDICTED_STEP_LOW = PREFIX + "predicted_step_low_s"
PREDICTED_STEP_HIGH = PREFIX + "predicted_step_high_s"
MODEL_STEP = PREFIX + "model_step_s"  # the cost model's step time, before calibration
STEP_TIME_RATIO = PREFIX + "step_time_ratio"  # predicted_step_s / model_step_s
PREDICTED_SECONDS = PREFIX + "predicted_seconds"
PREDICTED_LOW = PREFIX + "predicted_low"
PREDICTED_HIGH = PREFIX + "predicted_high"
SAMPLER_NOTE = PREFIX + "sampler"
INFEASIBLE = PREFIX + "infeasible"
DECISION = PREFIX + "decision"
PRUNE_REASON = PREFIX + "prune_reason"
FAIL_REASON = PREFIX + "fail_reason"
BAND = PREFIX + "band"  # {"step": [...], "low": [...], "high": [...]}: a predicted curve
TARGET_STEPS = PREFIX + "predicted_target_steps"  # [steps, low, high] to the training target
PREDICTED_CROSSING = PREFIX + "predicted_crossing_step"  # steps_fn model's, before scaling
STEPS_SCALE = PREFIX + "steps_scale"  # measured / predicted ratio applied to this trial
STEPS_RATIO = PREFIX + "steps_ratio"  # the study's measured / predicted ratio, unclipped
TARGET_REACHED = PREFIX + "target_reached_step"  # first step the target was reached
PRICED_PARAMS = PREFIX + "priced_params"  # the parameters the stored plan was made for
BUDGET_GIVEN = PREFIX + "budget_given"  # get_budget handed out the budget: the plan is final
STUDY_SPENT = PREFIX + "study_time_spent"  # why the sampler found the study's time spent


def set_attr(study: optuna.Study, trial: FrozenTrial, key: str, value) -> None:
    """Write a user attribute on a trial seen as a FrozenTrial (pruner and sampler hooks)."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)
    # Keep the caller's cached copy in step: inside a running Trial this object is the
    # cache its ``user_attrs`` reads from.
    trial.user_attrs[key] = value


def fixed_params(trial: FrozenTrial) -> dict:
    """The values ``study.enqueue_trial`` fixed for this trial (Optuna keeps them in the
    system attribute ``fixed_params``, which it reads the same way in ``Trial``)."""
    return dict(trial.system_attrs.get("fixed_params") or {})


def now() -> datetime.datetime:
    return datetime.datetime.now()


def elapsed_since(start: datetime.datetime | None) -> float | None:
    if start is None:
        return None
    return max((now() - start).total_seconds(), 0.0)


def study_time_left(
    study: optuna.Study, time_budget_s: float | None, trials: list[FrozenTrial] | None = None
) -> float | None:
    """Seconds left of a study budget counted from its first trial's start (shared by workers).

    ``trials``: the study's trials when the caller has already read them from storage.
    """
    if time_budget_s is None:
        return None
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    if not starts:
        return float(time_budget_s)
    return float(time_budget_s) - (now() - min(starts)).total_seconds()


def trial_curve(trial: FrozenTrial, *, measure_now: bool = False) -> TrialCurve:
    """The decision core's view of an Optuna trial."""
    items = sorted(trial.intermediate_values.items())
    steps = np.array([s for s, _ in items], dtype=np.float64)
    values = np.array([v for _, v in items], dtype=np.float64)
    attrs = trial.user_attrs
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
    if finished and trial.value is not None and math.isfinite(trial.value):
        # The objective's return value is the trial's result, even if it differs from
        # the last report (say, a test score after the last validation report).
        steps = np.append(steps, steps[-1] + 1 if steps.size else 0.0)
        values = np.append(values, trial.value)
    budget = attrs.get(BUDGET)
    return TrialCurve(
        steps=steps,
        values=values,
        budget_steps=float(budget) if budget else None,
        schedule=attrs.get(SCHEDULE, "constant"),
        elapsed_s=elapsed,
        predicted_step_s=attrs.get(PREDICTED_STEP),
        recent_step_s=recent,
        finished=finished,
        predicted_final=pred,
        label=trial.number,
        band=band_arrays(attrs.get(BAND)),
    )
