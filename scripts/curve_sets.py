"""The recorded curve sets the ranking and pruning benchmarks replay, in one shape.

* ``nas``, ``hpo``: the project's MNIST-1D halves (``ttp_search.data.load_curves``); compute is
  seconds, training losses are reported per step.
* ``deberta``, ``deberta-v3``: random-search fine-tuning of DeBERTa / DeBERTaV3-base on
  MultiNLI from ``../shared/curves`` (see ``../shared/DATA.md``): validation accuracy (matched)
  every 1,000 steps; budgets 1-4 epochs; linear warm-up then, as assumed here, linear decay to
  zero at the trial's own budget. No timestamps: compute is steps × batch size.

Which sets chose the design and its constants, and which are held out, is fixed here once.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ttp_search.budget.schedule import Schedule
from ttp_search.curves import PartialCurve
from ttp_search.data import load_curves

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TUNING_SETS = ("nas", "deberta")  # features, grid and constants were chosen on these
# "hpo" was held out until its first pruning replay; the failure found there was diagnosed on
# it, so it now stands with the tuning sets. "hpo-fresh" replaced it: 48 new HPO runs of the
# same recipe, never looked at before the final runs (built by FRESH_COMMAND, not committed).
DIAGNOSED_SETS = ("hpo",)
HELD_OUT_SETS = ("hpo-fresh", "deberta-v3")
FRESH = ROOT / "results" / "hpo_fresh.json.gz"
FRESH_COMMAND = f"python scripts/make_curves.py --nas 0 --hpo 48 --seed 7 --out {FRESH}"
_DEBERTA_FILES = {
    "deberta": "deberta-base_tuning.results.jsonl.gz",
    "deberta-v3": "deberta-v3-base_tuning.results.jsonl.gz",
}


@dataclass(frozen=True)
class RecordedTrial:
    """One recorded trial: its reports, budget, schedule, compute per step and final value."""

    name: str
    steps: np.ndarray
    values: np.ndarray  # accuracies, higher is better
    budget: int
    schedule: Schedule
    compute_per_step: np.ndarray  # per report interval (seconds, or examples)
    final: float
    epoch_steps: int
    train_steps: np.ndarray | None = None
    train_losses: np.ndarray | None = None
    config: dict = field(default_factory=dict)  # the searched hyperparameters

    def compute_at(self) -> np.ndarray:
        """Compute used up to each report."""
        return np.cumsum(np.diff(np.r_[0.0, self.steps]) * self.compute_per_step)

    def curve(self, upto: int | None = None) -> PartialCurve:
        """The trial as the predictor sees it after ``upto`` reports (all by default)."""
        k = self.steps.size if upto is None else upto
        train = None
        if self.train_steps is not None:
            train = self.train_steps <= self.steps[k - 1]
        return PartialCurve(
            self.steps[:k],
            self.values[:k],
            float(self.budget),
            rate=self.schedule.rate(float(self.budget))
            if self.schedule.kind != "constant"
            else None,
            train_steps=None if train is None else self.train_steps[train],
            train_losses=None if train is None else self.train_losses[train],
        )


def available(name: str, shared: Path = SHARED) -> bool:
    if name == "hpo-fresh":
        return FRESH.exists()
    return name in ("nas", "hpo") or (shared / "curves" / _DEBERTA_FILES[name]).exists()


def missing(name: str, shared: Path = SHARED) -> str:
    """Why a set is skipped, and what would bring it."""
    if name == "hpo-fresh":
        return f"skipping hpo-fresh: {FRESH} is missing; build it with `{FRESH_COMMAND}` (~8 min)"
    return f"skipping {name}: its file is not under {shared}/curves (see ../shared/DATA.md)"


def load_set(name: str, shared: Path = SHARED) -> list[RecordedTrial]:
    """The trials of one set; a missing DeBERTa file raises ``FileNotFoundError`` naming it."""
    if name in ("nas", "hpo"):
        return [_mnist1d(r) for r in load_curves(space=name)]
    if name == "hpo-fresh":
        return [_mnist1d(r) for r in load_curves(FRESH, space="hpo")]
    path = shared / "curves" / _DEBERTA_FILES[name]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (see ../shared/DATA.md for its source)")
    with gzip.open(path, "rt") as handle:
        return [_deberta(json.loads(line), i) for i, line in enumerate(handle)]


def _mnist1d(run) -> RecordedTrial:
    steps = run.epoch_steps().astype(np.float64)
    train_steps = np.arange(1, run.train_loss.size + 1, dtype=np.float64)
    return RecordedTrial(
        name=run.run_id,
        steps=steps,
        values=run.val_acc,
        budget=int(run.budget_steps),
        schedule=Schedule(run.config.get("schedule", "constant")),
        compute_per_step=run.step_time_s,
        final=float(run.final_val_acc),
        epoch_steps=int(run.steps_per_epoch),
        train_steps=train_steps,
        train_losses=run.train_loss,
        config=dict(run.config),
    )


def _deberta(record: dict, index: int) -> RecordedTrial:
    curve = np.asarray(record["learning_curves"]["matched"], dtype=np.float64)
    steps, values = curve[:, 0], curve[:, 1]
    keep = np.r_[True, np.diff(steps) > 0]  # the last report can repeat the budget's step
    steps, values = steps[keep], values[keep]
    budget = int(record["total_model_steps"])
    epochs = int(record["num_train_epochs"])
    return RecordedTrial(
        name=f"{index:04d}",
        steps=steps,
        values=values,
        budget=budget,
        schedule=Schedule("linear", warmup_steps=int(record["warmup_steps"])),
        compute_per_step=np.full(steps.size, float(record["train_batch_size"])),
        final=float(values[-1]),
        epoch_steps=max(budget // epochs, 1),
        config={
            key: record[key]
            for key in (
                "learning_rate",
                "train_batch_size",
                "num_train_epochs",
                "warmup_steps",
                "cls_drop_out",
            )
        },
    )
