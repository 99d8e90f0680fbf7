"""Loader for ttp_search's learning-curve data set (see ``scripts/make_curves.py``)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ttp_search.errors import InvalidInputError

DEFAULT_PATH = Path(__file__).with_name("learning_curves.json.gz")


@dataclass(frozen=True)
class CurveRun:
    """One training run: its configuration and everything recorded while it trained."""

    run_id: str
    space: str  # "nas" (shared recipe, architectures vary) or "hpo" (recipe and budget vary)
    config: dict
    steps_per_epoch: int
    budget_steps: int
    train_loss: np.ndarray  # per step
    val_loss: np.ndarray  # per epoch
    val_acc: np.ndarray  # per epoch
    step_time_s: np.ndarray  # mean seconds per step, per epoch
    final_val_acc: float
    final_val_loss: float

    @property
    def epochs(self) -> int:
        return len(self.val_acc)

    def epoch_steps(self) -> np.ndarray:
        """The step at the end of each epoch (the x of ``val_loss``/``val_acc``)."""
        return np.minimum(np.arange(1, self.epochs + 1) * self.steps_per_epoch, self.budget_steps)


def load_curves(path: str | Path | None = None, space: str | None = None) -> list[CurveRun]:
    """All runs of the data set, or those of one ``space`` ("nas" or "hpo")."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if space not in (None, "nas", "hpo"):
        raise InvalidInputError(f"space must be 'nas', 'hpo' or None, got {space!r}")
    if not path.exists():
        raise InvalidInputError(
            f"learning-curve data set {path} is missing; build it with `python scripts/make_curves.py`"
        )
    try:
        with gzip.open(path, "rt") as handle:
            payload = json.load(handle)
        runs = _runs(payload)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(
            f"{path} is not a learning-curve data set ({type(err).__name__}: {err}); "
            "rebuild it with `python scripts/make_curves.py`"
        ) from err
    return [r for r in runs if space is None or r.space == space]


def _runs(payload: dict) -> list[CurveRun]:
    return [
        CurveRun(
            run_id=r["run_id"],
            space=r["space"],
            config=r["config"],
            steps_per_epoch=int(r["steps_per_epoch"]),
            budget_steps=int(r["budget_steps"]),
            train_loss=np.asarray(r["train_loss"], dtype=np.float64),
            val_loss=np.asarray(r["val_loss"], dtype=np.float64),
            val_acc=np.asarray(r["val_acc"], dtype=np.float64),
            step_time_s=np.asarray(r["step_time_s"], dtype=np.float64),
            final_val_acc=float(r["final_val_acc"]),
            final_val_loss=float(r["final_val_loss"]),
        )
        for r in payload["runs"]
    ]
