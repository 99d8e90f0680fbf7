"""Helpers for a Ray Tune trainable: its budget, its linear-decay schedule, its reports."""

from __future__ import annotations

from typing import Any

import torch
from ray import tune

from ttp_search._checks import check_int, check_real
from ttp_search.budget import LinearDecayLR
from ttp_search.budget.schedule import stored
from ttp_search.errors import InvalidInputError
from ttp_search.ray.scheduler import (
    BUDGET_KEY,
    ELAPSED_KEY,
    SCHEDULE_KEY,
    STEP_KEY,
    TARGET_REACHED_KEY,
    TRAIN_LOSS_KEY,
)


def budget_steps(config: dict[str, Any], default: int | None = None) -> int:
    """The trial's step budget from its config (set by CostAwareSearcher), or ``default``."""
    value = config.get(BUDGET_KEY, default)
    if value is None:
        raise InvalidInputError(
            f"config has no {BUDGET_KEY!r}: wrap the searcher in CostAwareSearcher or pass default="
        )
    return check_int(BUDGET_KEY, value, 1)


def linear_decay_lr(
    config: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int = 0,
    final_lr: float = 0.0,
) -> LinearDecayLR:
    """A LinearDecayLR ending at the config's budget; later reports say the schedule is linear."""
    scheduler = LinearDecayLR(
        optimizer, budget_steps(config), warmup_steps=warmup_steps, final_lr=final_lr
    )
    config[SCHEDULE_KEY] = stored(scheduler.schedule())
    return scheduler


def report(
    metrics: dict[str, Any],
    step: int,
    config: dict[str, Any],
    checkpoint=None,
    *,
    elapsed_s: float | None = None,
    target_reached_step: int | None = None,
    train_loss: float | None = None,
) -> None:
    """``ray.tune.report`` plus the fields TTPScheduler and CostAwareSearcher read: step,
    budget, schedule, the seconds of training so far (``elapsed_s``; without it Ray's
    ``time_total_s``, which counts the trainable's start-up too, times the steps), (once
    the search's training target is reached) the first step at which it was, and the
    training loss beside the metric (``train_loss``, for the TSE/LCGA features)."""
    step = check_int("step", step, 0)
    extra = {STEP_KEY: step, SCHEDULE_KEY: config.get(SCHEDULE_KEY, "constant")}
    if BUDGET_KEY in config:
        extra[BUDGET_KEY] = config[BUDGET_KEY]
    if elapsed_s is not None:
        extra[ELAPSED_KEY] = check_real("elapsed_s", elapsed_s, low=0.0)
    if target_reached_step is not None:
        extra[TARGET_REACHED_KEY] = check_int("target_reached_step", target_reached_step, 1)
    if train_loss is not None:
        extra[TRAIN_LOSS_KEY] = check_real("train_loss", train_loss)
    tune.report({**metrics, **extra}, checkpoint=checkpoint)
