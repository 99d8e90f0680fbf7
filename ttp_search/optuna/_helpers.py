"""Helpers an objective calls: its step budget, timed reports, and its linear-decay schedule."""

from __future__ import annotations

import math

import optuna
import torch

from ttp_search.budget import LinearDecayLR
from ttp_search.budget.schedules import check_int
from ttp_search.engine import SCHEDULES
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import _storage as keys


def set_budget(trial: optuna.Trial, steps: int, schedule: str | None = None) -> None:
    """Set the trial's total steps, in the same unit as the steps passed to :func:`report`.

    ``schedule="linear"`` says the learning rate decays linearly to 0 at ``steps`` (what
    :func:`linear_decay_lr` records for you), so the pruner expects the late drop in loss.
    """
    trial.set_user_attr(keys.BUDGET, check_int("steps", steps, 1))
    if schedule is not None:
        if schedule not in SCHEDULES:
            raise InvalidInputError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        trial.set_user_attr(keys.SCHEDULE, schedule)


def get_budget(trial: optuna.Trial, default: int | None = None) -> int:
    """The trial's step budget: set by :func:`set_budget` or assigned by CostAwareSampler.

    With a :class:`CostAwareSampler` the configuration is priced when this is first called
    (after the objective's suggestions); a configuration predicted over the per-trial cap or
    the study's remaining time raises :class:`optuna.TrialPruned` with the reason, so it
    never runs. Without a budget, ``default`` is returned (and stored), or an error raised.
    """
    from ttp_search.optuna.sampler import CostAwareSampler

    sampler = trial.study.sampler
    attrs = trial.storage.get_trial_user_attrs(trial._trial_id)
    if keys.BUDGET not in attrs and keys.INFEASIBLE not in attrs:
        if isinstance(sampler, CostAwareSampler):
            sampler.assign_budget(trial.study, trial._cached_frozen_trial, trial.params)
            attrs = trial.storage.get_trial_user_attrs(trial._trial_id)
    if keys.INFEASIBLE in attrs:
        raise optuna.TrialPruned(attrs[keys.INFEASIBLE])
    if keys.BUDGET in attrs:
        return int(attrs[keys.BUDGET])
    if default is None:
        raise InvalidInputError(
            f"trial {trial.number} has no step budget: call set_budget(trial, steps), "
            "use CostAwareSampler, or pass default="
        )
    set_budget(trial, default)
    return check_int("default", default, 1)


def report(trial: optuna.Trial, value: float, step: int, elapsed_s: float | None = None) -> None:
    """Like ``trial.report``, and record the seconds the trial has run so far.

    ``elapsed_s`` defaults to the time since the trial started. Steps must increase; a
    non-finite ``value`` is reported as is (the pruner then stops the trial and says why).
    """
    step = check_int("step", step, 0)
    reported = trial._cached_frozen_trial.intermediate_values
    last = max(reported) if reported else None
    if last is not None and step <= last:
        raise InvalidInputError(
            f"step {step} is not after the last reported step {last}: steps must increase"
        )
    if elapsed_s is None:
        elapsed_s = keys.elapsed_since(trial.datetime_start) or 0.0
    if not isinstance(elapsed_s, (int, float)) or not math.isfinite(elapsed_s) or elapsed_s < 0:
        raise InvalidInputError(f"elapsed_s must be a finite number >= 0, got {elapsed_s!r}")
    trial.report(float(value), step)
    previous = trial.user_attrs
    if keys.ELAPSED in previous:
        trial.set_user_attr(keys.ELAPSED_PREV, previous[keys.ELAPSED])
        trial.set_user_attr(keys.ELAPSED_PREV_STEP, previous[keys.ELAPSED_STEP])
    trial.set_user_attr(keys.ELAPSED, float(elapsed_s))
    trial.set_user_attr(keys.ELAPSED_STEP, step)


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
    trial.set_user_attr(keys.SCHEDULE, "linear")
    return LinearDecayLR(optimizer, total, warmup_steps=warmup_steps, final_lr=final_lr)
