"""The study's clock: one rule for how much of a study time budget is left, for every adapter."""

from __future__ import annotations

import time

from ttp_search._checks import check_positive_seconds


class StudyClock:
    """Seconds left of ``study_budget_s``, counted from the study's start.

    The start is the first trial's start wherever the study's trials are shared (Optuna's
    storage, so every worker agrees), or the moment the adapter first saw a trial (Ray, in
    the driver). Checkpoints keep the elapsed time, so a restored experiment goes on
    counting where it stopped.
    """

    def __init__(self, study_budget_s: float | None = None) -> None:
        self.study_budget_s = check_positive_seconds("study_budget_s", study_budget_s)
        self.started_at: float | None = None

    def start(self, at: float | None = None) -> None:
        """Start counting (at ``at``, a ``time.time()``), unless already started."""
        if self.started_at is None:
            self.started_at = time.time() if at is None else float(at)

    def time_left(self, started_at: float | None = None) -> float | None:
        """Seconds left (negative once spent); ``None`` without a budget. ``started_at``
        overrides the clock's own start (the first trial's start read from storage)."""
        if self.study_budget_s is None:
            return None
        start = self.started_at if started_at is None else started_at
        if start is None:
            return self.study_budget_s
        return self.study_budget_s - (time.time() - start)

    def elapsed(self) -> float | None:
        return None if self.started_at is None else time.time() - self.started_at

    def state(self) -> dict:
        return {"study_budget_s": self.study_budget_s, "elapsed_s": self.elapsed()}

    def restore(self, state: dict) -> None:
        if self.study_budget_s is None:
            self.study_budget_s = state.get("study_budget_s")
        elapsed = state.get("elapsed_s")
        self.started_at = None if elapsed is None else time.time() - elapsed
