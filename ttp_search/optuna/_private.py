"""Every private Optuna attribute ttp_search touches, each with why; nothing else reaches in.

Optuna's sampler and pruner hooks are handed ``FrozenTrial`` objects and a ``Study``, and
Optuna has no public call that writes a user attribute for a FrozenTrial, so the storage is
reached through the study. Each function is tested through the adapters' tests.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study):
    """``study._storage``: the only way to write a user attribute of a FrozenTrial handed to
    ``sample_relative`` or ``prune`` (``Trial.set_user_attr`` needs the live Trial)."""
    return study._storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """``trial._trial_id``: the storage's key of a trial (its number is per study only)."""
    return trial._trial_id


def cached_trial(trial: optuna.Trial) -> FrozenTrial:
    """``Trial._cached_frozen_trial``: the running trial's own cache, which Optuna hands to
    ``sample_relative`` and which ``trial.user_attrs`` and ``trial.params`` read. The sampler
    keeps it in step with what it writes (as ``Trial.set_user_attr`` does), and
    :func:`~ttp_search.optuna.report` reads the steps reported so far from it without a
    storage round trip."""
    return trial._cached_frozen_trial


def write_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Write through the storage only (the FrozenTrial a pruner gets is Optuna's: "take a
    copy before modifying")."""
    storage_of(study).set_trial_user_attr(trial_id(trial), key, value)
