"""The rules both pruning adapters apply around the decision core, in one options object:
which reports are judged, and the budget a trial without one is judged at."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ttp_search._checks import check_int, check_positive_seconds
from ttp_search.curves import DEFAULT_FEATURES, StudyPredictor
from ttp_search.engine.decision import Decision, DecisionCore, Direction, TrialCurve

STUDY_MIN_TRIALS = 10  # finished trials at a fraction before the study's predictor speaks


@dataclass(frozen=True)
class DecisionOptions:
    """Everything TTPPruner and TTPScheduler take beside the direction, validated once,
    and the rules both apply around the core: which reports are judged, and the budget of
    a trial that has none.

    ``interval_steps`` and ``n_warmup_steps`` mean what they mean in Optuna's pruners: a
    report is judged when it is the first at or after a step ``n_warmup_steps + k *
    interval_steps``; ``default_budget_steps`` is the budget of trials without one (default:
    the longest completed trial's last step; with none completed, the trial's own step).
    """

    threshold: float = 0.05
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 5
    min_points: int = 3
    study_budget_s: float | None = None
    value_range: tuple[float, float] | None = None
    default_budget_steps: int | None = None
    margin: float = 0.0
    peer_percentile: float | None = 50.0
    band_tolerance: float | None = 0.5
    #: Curve features of the study-informed predictor (``ttp_search.curves.features``);
    #: ``None``: every curve extrapolated on its own, as before ttp_search 0.3.
    study_features: tuple[str, ...] | None = DEFAULT_FEATURES
    # One predictor and one core per direction, kept so what is read from ended trials is
    # read once (not init fields: `dataclasses.replace` gives a copy its own).
    _predictors: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    _cores: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    _budgeted: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_int("interval_steps", self.interval_steps, 1)
        check_positive_seconds("study_budget_s", self.study_budget_s)
        check_default_budget(self.default_budget_steps)
        self.core("minimize")  # the core validates its own options

    def core(self, direction: Direction) -> DecisionCore:
        """The decision core for ``direction``, kept: it keeps what it read from ended trials."""
        core = self._cores.get(direction)
        if core is None:
            core = self._cores[direction] = self._new_core(direction)
        return core

    def _new_core(self, direction: Direction) -> DecisionCore:
        return DecisionCore(
            direction,
            threshold=self.threshold,
            n_startup_trials=self.n_startup_trials,
            n_warmup_steps=self.n_warmup_steps,
            n_min_trials=self.n_min_trials,
            min_points=self.min_points,
            value_range=self.value_range,
            margin=self.margin,
            peer_percentile=self.peer_percentile,
            band_tolerance=self.band_tolerance,
            predictor=self.predictor(direction),
        )

    def predictor(self, direction: Direction) -> StudyPredictor | None:
        """The study-informed predictor for ``direction`` (``None`` without features)."""
        if self.study_features is None:
            return None
        model = self._predictors.get(direction)
        if model is None:
            model = self._predictors[direction] = StudyPredictor(
                direction,
                features=self.study_features,
                # Fewer finished examples than this cannot resolve a 5% chance (the
                # conformal floor is 1 / (k + 1)): the trial's own extrapolation decides.
                min_trials=max(self.n_startup_trials, STUDY_MIN_TRIALS),
                value_range=self.value_range,
            )
        return model

    def should_judge(self, steps: Sequence[float], value: float) -> bool:
        """Judge the latest report (steps so far, its value)? Always a non-finite one."""
        if not math.isfinite(value):
            return True
        step = float(steps[-1])
        if step < self.n_warmup_steps:
            return False
        # The first report at or after the latest pruning step is judged, as in Optuna.
        mark = (step - self.n_warmup_steps) // self.interval_steps * self.interval_steps
        mark += self.n_warmup_steps
        return not any(mark <= s < step for s in steps[:-1])

    def budget_for(self, trial: TrialCurve, others: Sequence[TrialCurve]) -> float | None:
        """The budget ``trial`` is judged at: its own, ``default_budget_steps``, else the
        longest completed trial's last step (a trial without a budget is assumed to run as
        long as completed ones), else ``None`` (judged at its current step)."""
        if trial.budget_steps is not None:
            return trial.budget_steps
        if self.default_budget_steps is not None:
            return float(self.default_budget_steps)
        done = [c.last_step for c in others if c.finished and c.steps.size]
        return max(done) if done else None

    def judge(
        self,
        direction: Direction,
        trial: TrialCurve,
        others: Sequence[TrialCurve],
        time_left_s: float | None,
    ) -> Decision:
        """The decision for ``trial``'s latest report (budget filled in by the rule above)."""
        budget = self.budget_for(trial, others)
        if budget != trial.budget_steps:
            trial = replace(trial, budget_steps=budget)
        return self.core(direction).decide(
            trial, self._with_budgets(others), time_left_s=time_left_s
        )

    def _with_budgets(self, others: Sequence[TrialCurve]) -> list[TrialCurve]:
        """``others``, a completed trial without a budget given its last step as one (it ran
        to it: peers are compared at the same fraction of theirs). The copies are kept, the
        same object for the same trial at every decision, so the core's reads of ended
        trials are reused rather than made again."""
        kept, out = {}, []
        for c in others:
            if c.finished and c.budget_steps is None and c.steps.size:
                pair = self._budgeted.get(id(c))
                if pair is None or pair[0] is not c:
                    pair = (c, replace(c, budget_steps=c.last_step))
                kept[id(c)] = pair
                c = pair[1]
            out.append(c)
        self._budgeted.clear()  # only the trials of this decision: bounded by the study
        self._budgeted.update(kept)
        return out


def check_default_budget(default_budget_steps: object) -> float | None:
    """``default_budget_steps`` of the adapters: ``None`` or an integer >= 1."""
    if default_budget_steps is None:
        return None
    return float(check_int("default_budget_steps", default_budget_steps, 1))
