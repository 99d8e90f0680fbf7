"""Open a study the way every worker of a distributed search should: create or join it,
with heartbeats, surviving workers that start at the same moment."""

from __future__ import annotations

import random
import time

import optuna
from optuna.storages import RDBStorage

from ttp_search._checks import check_int, check_real


def open_study(
    storage: str,
    study_name: str,
    *,
    direction: str = "minimize",
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    heartbeat_s: float = 0.0,
    attempts: int = 5,
) -> optuna.Study:
    """Create the study ``study_name`` at the database URL ``storage``, or join it.

    With ``heartbeat_s > 0`` each running trial sends a heartbeat; a trial silent for three
    beats (its worker died) is failed by the next worker to start a trial and retried once
    with the same parameters. Workers started together on a fresh database race to create
    its tables (PostgreSQL answers the loser with a unique-violation error): opening is
    retried up to ``attempts`` times, after a short random wait.

    Example:
        .. code-block:: python

            study = open_study("sqlite:///search.db", "nas", direction="maximize")
    """
    heartbeat_s = check_real("heartbeat_s", heartbeat_s, low=0.0)
    attempts = check_int("attempts", attempts, 1)
    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=study_name,
                storage=_storage(storage, heartbeat_s),
                load_if_exists=True,
                direction=direction,
                sampler=sampler,
                pruner=pruner,
            )
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
    raise AssertionError("unreachable")


def _storage(url: str, heartbeat_s: float) -> str | RDBStorage:
    if heartbeat_s <= 0:
        return url
    return RDBStorage(
        url,
        heartbeat_interval=max(1, round(heartbeat_s)),
        grace_period=max(3, round(3 * heartbeat_s)),
        **_retry_stale_trials_once(),
    )


def _retry_stale_trials_once() -> dict:
    """RDBStorage's option that re-queues a trial whose worker died (renamed in Optuna 4.9)."""
    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback

        return {"failed_trial_callback": RetryFailedTrialCallback(max_retry=1)}
    return {"heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=1)}
