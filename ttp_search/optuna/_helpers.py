"""Helpers an objective calls: its step budget, timed reports, its linear-decay schedule,
and a wrapper that records why a trial failed."""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Callable

import optuna
import torch

from ttp_search._checks import check_int, check_real
from ttp_search.budget import LinearDecayLR
from ttp_search.budget.schedule import ScheduleLike, stored
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import keys
from ttp_search.optuna._private import cached_trial, trial_id
from ttp_search.optuna._storage import elapsed_since

_logger = logging.getLogger("ttp_search")


def set_budget(trial: optuna.Trial, steps: int, schedule: ScheduleLike | None = None) -> None:
    """Set the trial's total steps, in the same unit as the steps passed to :func:`report`.

    ``schedule`` is the learning-rate schedule the budget runs under: a name
    (``"linear"``, ``"cosine"``, ``"step"``, ``"constant"``) or a
    :class:`~ttp_search.budget.Schedule` with warm-up (what :func:`linear_decay_lr` records
    for you), so the pruner extrapolates the curve under that schedule, expecting the late
    drop in loss as the rate goes to 0.
    """
    trial.set_user_attr(keys.BUDGET, check_int("steps", steps, 1))
    if schedule is not None:
        trial.set_user_attr(keys.SCHEDULE, stored(schedule))


def get_budget(trial: optuna.Trial, default: int | None = None) -> int:
    """The trial's step budget: set by :func:`set_budget` or assigned by CostAwareSampler.

    With a :class:`CostAwareSampler` the budget is for the parameters the trial has when
    this is called (call it after the suggestions the cost depends on; a cost function that
    needs a parameter not suggested yet raises :class:`~ttp_search.errors.MissingParameterError`).
    The first call fixes the budget: later calls return the same number. A configuration
    predicted over the per-trial cap or the study's remaining time raises
    :class:`optuna.TrialPruned` with the reason, so it never runs; once the study's time
    budget is spent, the study is also stopped (``study.stop()``) with a log line. Without a
    budget, ``default`` is returned (and stored), or an error raised.
    """
    from ttp_search.optuna.sampler import CostAwareSampler

    sampler = trial.study.sampler
    attrs = trial.storage.get_trial_user_attrs(trial_id(trial))
    if isinstance(sampler, CostAwareSampler) and not attrs.get(keys.BUDGET_GIVEN):
        # The trial's own cached copy, so its user_attrs show the plan at once.
        sampler.assign_budget(trial.study, cached_trial(trial), trial.params)
        attrs = trial.storage.get_trial_user_attrs(trial_id(trial))
    plan = attrs.get(keys.PLAN) or {}
    if plan.get("study_spent"):
        stop_study(trial.study, plan.get("note") or plan.get("reason", ""))
    if plan and not plan.get("feasible"):
        raise optuna.TrialPruned(plan.get("reason"))
    if attrs.get(keys.BUDGET) is not None:
        if not attrs.get(keys.BUDGET_GIVEN):
            trial.set_user_attr(keys.BUDGET_GIVEN, True)
        return int(attrs[keys.BUDGET])
    if default is None:
        raise InvalidInputError(
            f"trial {trial.number} has no step budget: call set_budget(trial, steps), "
            "use CostAwareSampler, or pass default="
        )
    set_budget(trial, default)
    return check_int("default", default, 1)


def prune_reason(trial: optuna.Trial) -> str | None:
    """Why the pruner stopped this running trial (read from the storage, where the pruner
    writes it), e.g. ``raise optuna.TrialPruned(prune_reason(trial))``."""
    return trial.storage.get_trial_user_attrs(trial_id(trial)).get(keys.PRUNE_REASON)


def stop_study(study: optuna.Study, why: str) -> None:
    """Stop ``study.optimize`` after the running trials (its time budget is spent).

    Outside ``optimize`` (ask-and-tell) there is no loop to stop: the caller sees the
    pruned trial and its reason, and the log line says the budget is spent.
    """
    _logger.warning("ttp_search: stopping the study %r: %s", study.study_name, why)
    try:
        study.stop()
    except RuntimeError:
        pass  # not inside study.optimize


def report(
    trial: optuna.Trial,
    value: float,
    step: int,
    elapsed_s: float | None = None,
    *,
    train_loss: float | None = None,
) -> None:
    """Like ``trial.report``, and record the seconds the trial has run so far.

    ``elapsed_s`` defaults to the time since the trial started. Steps must increase; a
    non-finite ``value`` is reported as is (the pruner then stops the trial and says why).
    ``train_loss``: the training loss at this step (e.g. the mean over the steps since the
    last report), kept as ``keys.TRAIN_LOSS`` for the training-loss features (TSE, LCGA).
    """
    step = check_int("step", step, 0)
    reported = cached_trial(trial).intermediate_values
    last = max(reported) if reported else None
    if last is not None and step <= last:
        raise InvalidInputError(
            f"step {step} is not after the last reported step {last}: steps must increase"
        )
    if elapsed_s is None:
        elapsed_s = elapsed_since(trial.datetime_start) or 0.0
    elapsed_s = check_real("elapsed_s", elapsed_s, low=0.0)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"value must be a number, got {value!r}")
    if train_loss is not None:
        train_loss = check_real("train_loss", train_loss)
    trial.report(float(value), step)
    if train_loss is not None:
        losses = list(trial.user_attrs.get(keys.TRAIN_LOSS) or [])
        trial.set_user_attr(keys.TRAIN_LOSS, [*losses, [step, train_loss]])
    clock = {"elapsed_s": float(elapsed_s), "step": step}
    previous = trial.user_attrs.get(keys.CLOCK)
    # The previous report's clock gives the recent step rate; a clock copied from another
    # trial (a retry inherits user attributes) does not belong to this trial's last report.
    if previous and last is not None and previous.get("step") == last:
        clock["prev_elapsed_s"], clock["prev_step"] = previous["elapsed_s"], previous["step"]
    trial.set_user_attr(keys.CLOCK, clock)


def linear_decay_lr(
    trial: optuna.Trial,
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int = 0,
    final_lr: float = 0.0,
) -> LinearDecayLR:
    """A :class:`LinearDecayLR` that ends exactly at the trial's budget (Li et al. 2020).

    Call ``scheduler.step()`` once per step; the schedule is recorded on the trial so the
    pruner extrapolates its curve knowing the loss will drop as the learning rate goes to 0.
    """
    total = get_budget(trial)
    scheduler = LinearDecayLR(optimizer, total, warmup_steps=warmup_steps, final_lr=final_lr)
    trial.set_user_attr(keys.SCHEDULE, stored(scheduler.schedule()))
    return scheduler


def record_failures(objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
    """Wrap an objective so a failed trial says why, in the study's storage.

    Optuna fails a trial whose objective raises or returns NaN but only logs the reason, which
    is lost with the worker's log. The wrapper stores it as the user attribute
    ``ttp:fail_reason`` (``"ValueError: ..."``, ``"returned nan"``) and then lets Optuna fail
    the trial as usual; ``optuna.TrialPruned`` passes through untouched.

    Example:
        .. code-block:: python

            study.optimize(record_failures(objective), n_trials=20, catch=(ValueError,))
    """

    @functools.wraps(objective)
    def wrapped(trial: optuna.Trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            trial.set_user_attr(keys.FAIL_REASON, f"{type(err).__name__}: {err}"[:1000])
            raise
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, numbers.Real) and math.isnan(v):
                trial.set_user_attr(keys.FAIL_REASON, "returned nan")
        return value

    return wrapped


def record_target_reached(trial: optuna.Trial, step: int) -> None:
    """Record the first step at which the trial reached the search's training target.

    With a ``steps_fn`` in :class:`CostAwareSampler`, the ratio of these steps to the
    predicted ones over finished trials rescales later budgets. Later calls are ignored.
    """
    step = check_int("step", step, 1)
    if keys.TARGET_REACHED not in trial.user_attrs:
        trial.set_user_attr(keys.TARGET_REACHED, step)
