"""What every objective repeats: suggest its parameters from a declared space, and train for
its step budget with timed reports, pruning and an early finish at the target."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ttp_search._checks import check_int
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import keys
from ttp_search.optuna._helpers import get_budget, prune_reason, record_target_reached, report


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Suggest every parameter of ``space`` (the ``search_space`` dict you also give
    :class:`CostAwareSampler`) and return them as a dict, in the space's order.

    Example:
        >>> import optuna
        >>> from optuna.distributions import FloatDistribution, IntDistribution
        >>> space = {"depth": IntDistribution(1, 4), "lr": FloatDistribution(1e-3, 1, log=True)}
        >>> trial = optuna.create_study().ask()
        >>> sorted(suggest(trial, space))
        ['depth', 'lr']
    """
    params = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(
                name, dist.low, dist.high, step=dist.step, log=dist.log
            )
        elif isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(
                name, dist.low, dist.high, step=dist.step, log=dist.log
            )
        else:
            raise InvalidInputError(
                f"parameter {name!r}: {type(dist).__name__} is not an Optuna distribution "
                "(use FloatDistribution, IntDistribution or CategoricalDistribution)"
            )
    return params


def _forever(batches: Iterable):
    """Batches epoch after epoch (a DataLoader reshuffles on each new iteration)."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise InvalidInputError("batches is empty: it yields no batch to train on")


def run_training(
    trial: optuna.Trial,
    train_step: Callable[[Any], Any],
    evaluate: Callable[[], float],
    batches: Iterable,
    *,
    steps: int | None = None,
    n_reports: int = 12,
    reached: Callable[[float], bool] | None = None,
) -> float:
    """Train ``trial`` for its step budget and return the last value of ``evaluate()``.

    ``train_step(batch)`` runs one training step on the next batch of ``batches`` (taken
    again from the start when it runs out, so a DataLoader gives epochs); only these calls
    are timed, which is what the cost model predicts and what the study's calibration
    compares with. Every ``steps / n_reports`` steps ``evaluate()`` is reported with
    :func:`~ttp_search.optuna.report` (value, step, training seconds), and the trial is
    pruned, with the pruner's reason (kept as ``keys.PRUNE_REASON``), when the pruner says
    so. With ``reached``, the trial ends as soon as ``reached(value)`` holds: the step is
    recorded as the trial's target step and no more steps are paid for.

    ``steps`` defaults to :func:`~ttp_search.optuna.get_budget` (the sampler's budget).
    The worker running the trial is recorded as ``keys.WORKER``.
    """
    steps = get_budget(trial) if steps is None else check_int("steps", steps, 1)
    trial.set_user_attr(keys.WORKER, f"{socket.gethostname()}:{os.getpid()}")
    every = max(1, math.ceil(steps / check_int("n_reports", n_reports, 1)))
    train_s, value = 0.0, math.nan
    source = _forever(batches)
    for step in range(1, steps + 1):
        batch = next(source)
        start = time.perf_counter()
        train_step(batch)
        train_s += time.perf_counter() - start
        if step % every and step != steps:
            continue
        value = float(evaluate())
        report(trial, value, step, elapsed_s=train_s)
        if reached is not None and math.isfinite(value) and reached(value):
            record_target_reached(trial, step)
            return value
        if trial.should_prune():
            why = prune_reason(trial)
            if why is None:  # another pruner: say which, as TTPPruner would
                why = f"{type(trial.study.pruner).__name__} pruned at step {step}"
                trial.set_user_attr(keys.PRUNE_REASON, why)
            raise optuna.TrialPruned(why)
    return value
