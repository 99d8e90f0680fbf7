"""The one place where continue/stop is decided; the Optuna and Ray adapters only translate.

A trial is judged where it will end, not where it is: its partial curve is extrapolated to its
own step budget (under its own learning-rate schedule), and the probability that it ends
better than the incumbent decides. The incumbent is the best completed trial, or a running
trial whose pessimistic end (the worse end of its interval) already beats that. Independently,
a trial whose predicted cost to finish exceeds what is left of the study's time budget stops.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from ttp_search._checks import (
    check_int,
    check_real,
    check_value_range,
)
from ttp_search.budget.schedule import KINDS, ScheduleLike, as_schedule, rate_of
from ttp_search.curves import PartialCurve, StudyPrediction, StudyPredictor, extrapolate
from ttp_search.engine.ended import EndedTrials
from ttp_search.errors import InvalidInputError

Direction = Literal["minimize", "maximize"]


class ValueRangeWarning(UserWarning):
    """Reported values fall outside the ``value_range`` the pruner or scheduler was given."""


SCHEDULES = KINDS  # the schedule names every engine knows


def running_incumbent_value(
    low: float | None, high: float | None, best: float | None, direction: Direction
) -> float | None:
    """A running trial's pessimistic predicted end (the worse end of ``[low, high]``) when it
    is finite and better than the finished trials' ``best``: what makes it the incumbent.
    ``None`` otherwise (also while nothing has finished)."""
    pessimistic = high if direction == "minimize" else low
    if best is None or pessimistic is None or not math.isfinite(pessimistic):
        return None
    better = pessimistic < best if direction == "minimize" else pessimistic > best
    return pessimistic if better else None


@dataclass
class TrialCurve:
    """What the core knows of one trial: its reported curve, budget, schedule and clock."""

    steps: np.ndarray
    values: np.ndarray
    budget_steps: float | None = None
    # A schedule name, a budget.Schedule (warm-up included), its dict form, or a callable.
    schedule: ScheduleLike = "constant"
    elapsed_s: float | None = None
    predicted_step_s: float | None = None
    # Seconds per step between the two latest reports: free of start-up time, so the cost
    # of the remaining steps is not overstated early on.
    recent_step_s: float | None = None
    finished: bool = False
    # The latest prediction stored for a running trial (mean, low, high), to avoid refitting.
    predicted_final: tuple[float, float, float] | None = None
    # The adapter's name for the trial (an Optuna trial number, a Ray trial id): decisions
    # say which trial they were compared with.
    label: int | str | None = None
    # A predicted curve for this configuration (steps, low, high), e.g. from the linearized
    # SDE: a trial whose observed value leaves it in the bad direction is stopped.
    band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    # A completed trial's result (the objective's return value, which can differ from its
    # last report, say a test score after the last validation report).
    final: float | None = None
    # A trial stopped early: a censored example for the study-informed predictor.
    pruned: bool = False
    # Training losses reported beside the values (steps, losses), for TSE/LCGA features.
    train_steps: np.ndarray | None = None
    train_losses: np.ndarray | None = None
    _partial: PartialCurve | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.float64).ravel()
        self.values = np.asarray(self.values, dtype=np.float64).ravel()
        if self.steps.shape != self.values.shape:
            raise InvalidInputError(
                f"steps ({self.steps.size}) and values ({self.values.size}) differ in length"
            )
        as_schedule(self.schedule)  # refuses an unknown name, naming it
        if (self.train_steps is None) != (self.train_losses is None):
            raise InvalidInputError("train_steps and train_losses go together")
        if self.train_steps is not None:
            self.train_steps = np.asarray(self.train_steps, dtype=np.float64).ravel()
            self.train_losses = np.asarray(self.train_losses, dtype=np.float64).ravel()
            if self.train_steps.shape != self.train_losses.shape:
                raise InvalidInputError("train_steps and train_losses differ in length")

    def partial(self, budget: float) -> PartialCurve:
        """The curve as the study-informed predictor reads it, at ``budget`` steps (kept:
        adapters keep a finished trial's curve, so this is built once per trial)."""
        cached = self._partial
        if cached is not None and cached.budget == float(budget) and cached.steps is self.steps:
            return cached
        train = self.train_steps is not None and self.train_steps.size > 0
        self._partial = PartialCurve(
            self.steps,
            self.values,
            float(budget),
            rate=rate_of(self.schedule, float(budget)),
            train_steps=self.train_steps if train else None,
            train_losses=self.train_losses if train else None,
        )
        return self._partial

    def cost(self) -> float | None:
        """Seconds this trial has used (measured, else steps times its step seconds)."""
        if self.elapsed_s is not None:
            return float(self.elapsed_s)
        step_s = self.step_seconds()
        return None if step_s is None else self.last_step * step_s

    @property
    def result(self) -> float | None:
        """The value a finished trial ended with: ``final``, else its last report."""
        if self.final is not None:
            return float(self.final)
        return float(self.values[-1]) if self.values.size else None

    @property
    def last_step(self) -> float:
        return float(self.steps[-1]) if self.steps.size else 0.0

    def step_seconds(self) -> float | None:
        """Seconds per step: measured recently, else over the whole run, else predicted."""
        if self.recent_step_s is not None and self.recent_step_s > 0:
            return self.recent_step_s
        if self.elapsed_s is not None and self.last_step > 0 and self.elapsed_s > 0:
            return self.elapsed_s / self.last_step
        return self.predicted_step_s


class Rule(str, enum.Enum):
    """The rule behind a :class:`Decision`; ``prune`` says which way it went."""

    NO_REPORTS = "no_reports"
    NON_FINITE = "non_finite"  # reported NaN or inf: stop
    STUDY_TIME = "study_time"  # cannot finish in the study's time left: stop
    AT_BUDGET = "at_budget"  # at its budget: nothing left to save
    OUTSIDE_BAND = "outside_band"  # left its predicted band: stop
    STARTUP = "startup"  # too few completed trials to judge
    WARMUP = "warmup"  # not past n_warmup_steps
    FEW_POINTS = "few_points"  # fewer than min_points reports
    NO_INCUMBENT = "no_incumbent"  # nothing completed to compare with
    MAY_BEAT = "may_beat"  # P(ends better than the incumbent) >= threshold
    AHEAD_OF_PEERS = "ahead_of_peers"  # unlikely to win, but ahead of its peers
    WORTH_FINISHING = "worth_finishing"  # unlikely, but cheaper per chance than a new trial
    NOT_WORTH_COST = "not_worth_cost"  # a new trial buys more chance per second: stop
    UNLIKELY = "unlikely"  # P(ends better) < threshold, cost unknown: stop


@dataclass(frozen=True)
class Decision:
    """The core's answer at one report, stored with the trial by the adapters."""

    prune: bool
    reason: str
    predicted_final: float | None = None
    predicted_low: float | None = None
    predicted_high: float | None = None
    prob_better: float | None = None
    incumbent: float | None = None
    remaining_cost_s: float | None = None
    extra: dict = field(default_factory=dict)
    # Which rule decided (the reason is its human wording).
    rule: Rule | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        out["rule"] = None if self.rule is None else self.rule.value
        return out


class DecisionCore:
    """Decide continue/stop for a trial from its curve, its budget and the other trials.

    Args:
        direction: ``"minimize"`` or ``"maximize"`` the reported value.
        threshold: stop when P(the trial ends better than the incumbent) is below this.
        n_startup_trials: never stop before this many trials have completed.
        n_warmup_steps: never stop a trial before it has reported this step (as in Optuna's
            pruners: a report at step ``n_warmup_steps`` may be pruned).
        n_min_trials: the peers (trials that reached the same fraction of their budget) the
            ``peer_percentile`` guard needs before it speaks (Optuna's ``n_min_trials``).
        min_points: reports needed before the curve is extrapolated at all.
        value_range: what the value can be (``(0, 1)`` for accuracies), used to bound fits.
        margin: a trial is kept while it may end within ``margin`` of the incumbent, so
            configurations as good as the best up to noise are not stopped.
        peer_percentile: a safeguard against overconfident extrapolation: a trial ahead of
            this percentile of its peers, each read at the same fraction of its own budget,
            is kept whatever its extrapolation says (``None``: the extrapolation alone).
        band_tolerance: a trial with a predicted band (``TrialCurve.band``) is stopped once
            past warm-up when its latest value is worse than the band's bad edge by more
            than this fraction of the edge (``None``: bands are ignored).
        predictor: the study-informed predictor of a trial's final value (fitted anew at
            each decision on the finished and pruned trials; its feature cache is kept);
            ``None``: each curve is extrapolated on its own.

    The stop rule weighs cost. A trial that may still end within ``margin`` of the
    incumbent (P >= ``threshold``) is never stopped. One that probably will not is still
    kept while its chance per second of its remaining cost beats what a new trial buys:
    the share of the study's finished trials that ended within ``margin`` of the incumbent,
    per second a finished trial cost on average.
    """

    def __init__(
        self,
        direction: Direction = "minimize",
        *,
        threshold: float = 0.05,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        n_min_trials: int = 5,
        min_points: int = 3,
        value_range: tuple[float, float] | None = None,
        margin: float = 0.0,
        peer_percentile: float | None = 50.0,
        band_tolerance: float | None = 0.5,
        predictor: StudyPredictor | None = None,
    ) -> None:
        if predictor is not None and predictor.direction != direction:
            raise InvalidInputError(
                f"the predictor's direction {predictor.direction!r} is not {direction!r}"
            )
        self.predictor = predictor
        self._ended: EndedTrials | None = None  # kept while the same trials have ended
        if band_tolerance is not None:
            band_tolerance = check_real("band_tolerance", band_tolerance, low=0.0)
        self.band_tolerance = band_tolerance
        if direction not in ("minimize", "maximize"):
            raise InvalidInputError(
                f"direction must be 'minimize' or 'maximize', got {direction!r}"
            )
        threshold = check_real("threshold", threshold, low=0.0, high=1.0, high_open=True)
        n_startup_trials = check_int("n_startup_trials", n_startup_trials, 0)
        n_warmup_steps = check_int("n_warmup_steps", n_warmup_steps, 0)
        self.n_min_trials = check_int("n_min_trials", n_min_trials, 1)
        min_points = check_int("min_points", min_points, 1)
        value_range = check_value_range(value_range)
        self.margin = check_real("margin", margin, low=0.0)
        if peer_percentile is not None:
            peer_percentile = check_real("peer_percentile", peer_percentile, low=0.0, high=100.0)
        self.peer_percentile = 101.0 if peer_percentile is None else peer_percentile
        self.direction = direction
        self.threshold = threshold
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.min_points = min_points
        self.value_range = value_range
        self._sign = 1.0 if direction == "minimize" else -1.0

    def better(self, a: float, b: float) -> bool:
        return self._sign * a < self._sign * b

    def incumbent(self, others: Sequence[TrialCurve]) -> tuple[float | None, int, object]:
        """Best final value among finished trials (or a confidently better running one).

        Returns the value, how many finished trials were compared, and the label of the
        trial the value belongs to.
        """
        return self._incumbent(self.ended_trials(others), others)

    def _incumbent(
        self, ended: EndedTrials, others: Sequence[TrialCurve]
    ) -> tuple[float | None, int, object]:
        best_trial = ended.best
        best = best_trial.result if best_trial is not None else None
        label = best_trial.label if best_trial is not None else None
        for t in others:
            if t.finished or t.pruned or t.predicted_final is None:
                continue
            _, low, high = t.predicted_final
            pessimistic = running_incumbent_value(low, high, best, self.direction)
            if pessimistic is not None:
                best, label = pessimistic, t.label
        return best, len(ended.done), label

    @property
    def best_result(self) -> float | None:
        """The best finished result the latest decision saw (``None``: none yet)."""
        best = None if self._ended is None else self._ended.best
        return None if best is None else best.result

    def ended_trials(self, others: Sequence[TrialCurve]) -> EndedTrials:
        """The finished and pruned trials among ``others``, with what was read from them
        (kept while the same trial objects have ended)."""
        ended = [t for t in others if t.finished or t.pruned]
        if self._ended is None or not self._ended.holds(ended):
            self._ended = EndedTrials(ended, self._sign)
        return self._ended

    def predict(self, trial: TrialCurve):
        """Extrapolate the trial to its budget; ``None`` when there is too little to go on."""
        if trial.steps.size < self.min_points:
            return None
        budget = trial.budget_steps if trial.budget_steps else trial.last_step
        budget = max(float(budget), trial.last_step)
        schedule = rate_of(trial.schedule, budget)
        return extrapolate(
            trial.steps,
            trial.values,
            budget,
            direction=self.direction,
            lr_schedule=schedule,
            value_range=self._range_for(trial.values),
        )

    def estimate(self, trial: TrialCurve, others: Sequence[TrialCurve]):
        """The trial's predicted final value: from the study's finished trials where enough
        of them reach its fraction of the budget, else (or mixed with) its own extrapolation;
        ``None`` when there is too little to go on."""
        return self._estimate(trial, self.ended_trials(others))

    def _estimate(self, trial: TrialCurve, ended: EndedTrials):
        if self.predictor is None or not trial.budget_steps:
            return self.predict(trial)
        budget = max(float(trial.budget_steps), trial.last_step)
        at = self.predictor.grid_fraction(trial.last_step / budget)
        if at is None:
            return self.predict(trial)
        reach, model = ended.study_fit(self.predictor, at)
        if model is None:
            return self.predict(trial)
        # The trial's own extrapolation is the fallback while few trials have finished; after
        # that ``decide`` asks it for a second opinion before a stop.
        fallback = None
        if reach < 2 * self.predictor.min_trials:
            fallback = self.predict(trial)
            if fallback is None:
                return None
        return model.predict(trial.partial(budget), fallback=fallback)

    def second_opinion(self, trial: TrialCurve, est, bar: float):
        """``est`` with the trial's own extrapolation as a second opinion (P(better) the
        larger of the two), so a trial either model cannot yet tell from ``bar`` is kept;
        asked only before a stop, since it cannot turn a keep into a stop."""
        if not isinstance(est, StudyPrediction) or est.weight < 1:
            return est
        own = self.predict(trial)
        return est if own is None else replace(est, second_opinion=own)

    def _range_for(self, values: np.ndarray) -> tuple[float, float] | None:
        """``value_range``, unless the trial's values leave it (then ``None``, with a warning).

        Clipping a loss near 2 into ``(0, 1)``, or an accuracy in percent into it, would turn
        every prediction into the range's edge and no trial would ever be pruned; a curve
        outside the range is extrapolated unbounded instead.
        """
        if self.value_range is None:
            return None
        lo, hi = self.value_range
        slack = 0.01 * (hi - lo)
        if np.all((values >= lo - slack) & (values <= hi + slack)):
            return self.value_range
        warnings.warn(
            f"reported values fall outside value_range={self.value_range}: the range is "
            "ignored for such trials (is the metric a loss, or in percent?)",
            ValueRangeWarning,
            stacklevel=2,
        )
        return None

    def decide(
        self,
        trial: TrialCurve,
        others: Sequence[TrialCurve],
        *,
        time_left_s: float | None = None,
    ) -> Decision:
        """Continue or stop ``trial``, with the reason, its predicted end and cost."""
        if trial.steps.size == 0:
            return Decision(False, "no reports yet", rule=Rule.NO_REPORTS)
        last = float(trial.values[-1])
        if not math.isfinite(last):
            return Decision(
                True,
                f"reported a non-finite value ({last}) at step {trial.last_step:g}",
                rule=Rule.NON_FINITE,
            )
        if trial.steps.size > 1 and np.any(np.diff(trial.steps) <= 0):
            raise InvalidInputError("a trial's report steps must be strictly increasing")

        # Every decision says what it was compared with (across workers on a shared storage).
        ended = self.ended_trials(others)
        best, n_done, best_label = self._incumbent(ended, others)
        seen = {"n_completed": n_done}
        if best_label is not None:
            seen["incumbent_trial"] = best_label
        if trial.budget_steps is not None:
            seen["budget_steps"] = float(trial.budget_steps)  # the budget it was judged at
        remaining = None
        step_s = trial.step_seconds()
        if trial.budget_steps is not None and step_s is not None:
            remaining = max(trial.budget_steps - trial.last_step, 0.0) * step_s
        if trial.budget_steps is not None and trial.last_step >= trial.budget_steps:
            return Decision(
                False,
                "at its budget: nothing left to save",
                remaining_cost_s=0.0,
                extra=seen,
                rule=Rule.AT_BUDGET,
            )
        spent = time_left_s is not None and time_left_s <= 0
        if spent or (time_left_s is not None and remaining is not None and remaining > time_left_s):
            why = (
                f"the study's time budget is spent ({-time_left_s:.3g} s over)"
                if spent
                else f"cannot finish in the study's time budget: needs {remaining:.3g} s, "
                f"{time_left_s:.3g} s left"
            )
            return Decision(True, why, remaining_cost_s=remaining, extra=seen, rule=Rule.STUDY_TIME)

        outside = self.outside_band(trial)
        if outside is not None:
            return Decision(
                True, outside, remaining_cost_s=remaining, extra=seen, rule=Rule.OUTSIDE_BAND
            )
        if n_done < self.n_startup_trials:
            return Decision(
                False,
                f"startup: {n_done} of {self.n_startup_trials} trials completed",
                remaining_cost_s=remaining,
                extra=seen,
                rule=Rule.STARTUP,
            )
        if trial.last_step < self.n_warmup_steps:
            return Decision(
                False,
                f"warm-up until step {self.n_warmup_steps}",
                remaining_cost_s=remaining,
                extra=seen,
                rule=Rule.WARMUP,
            )
        est = self._estimate(trial, ended)
        if est is None:
            return Decision(
                False,
                f"fewer than {self.min_points} reports",
                remaining_cost_s=remaining,
                extra=seen,
                rule=Rule.FEW_POINTS,
            )
        fields = dict(
            predicted_final=est.mean,
            predicted_low=est.low,
            predicted_high=est.high,
            incumbent=best,
            remaining_cost_s=remaining,
            extra=seen,
        )
        if best is None:
            return Decision(
                False, "no completed trial to compare with", rule=Rule.NO_INCUMBENT, **fields
            )
        bar = best + self._sign * self.margin  # a little worse than the incumbent
        p = est.prob_better_than(bar)
        if p >= self.threshold:
            return self._may_beat(p, bar, fields)
        peer_rank = self._peer_rank(trial, ended, others)
        if peer_rank is not None and peer_rank >= self.peer_percentile / 100.0:
            return Decision(
                False,
                f"P(ends better than {bar:.4g}) = {p:.3f}, but ahead of "
                f"{100 * peer_rank:.0f}% of trials at the same fraction of their budgets",
                prob_better=p,
                rule=Rule.AHEAD_OF_PEERS,
                **fields,
            )
        new_trial = ended.new_trial_rate(bar)
        weighed = new_trial is not None and remaining is not None and remaining > 0
        if weighed:
            chance = est.chance_better_than(bar)  # the guard is the cautious one
            words = (
                f"{chance:.3g} in {remaining:.3g} s vs a new trial's {new_trial[0]:.3g} "
                f"in {new_trial[1]:.3g} s"
            )
            if chance / remaining >= new_trial[0] / new_trial[1]:
                return Decision(
                    False,
                    f"P(ends better than {bar:.4g}) = {p:.3f} < {self.threshold:g}, but "
                    f"finishing it is worth more per second: {words}",
                    prob_better=p,
                    rule=Rule.WORTH_FINISHING,
                    **fields,
                )
        # Only a stop is left. The trial's own extrapolation may still doubt it; it is asked
        # here, not earlier, because it is the costliest part of a decision and can only
        # keep a trial the rules above would stop.
        est = self.second_opinion(trial, est, bar)
        p = est.prob_better_than(bar)
        if p >= self.threshold:
            return self._may_beat(p, bar, fields)
        unlikely = f"P(ends better than {bar:.4g}) = {p:.3f} < {self.threshold:g}"
        predicted = (
            f"predicted {est.mean:.4g} [{est.low:.4g}, {est.high:.4g}] at step "
            f"{trial.budget_steps or trial.last_step:g}"
        )
        if weighed:
            return Decision(
                True,
                f"{unlikely}; a new trial is worth more per second ({words}); {predicted}",
                prob_better=p,
                rule=Rule.NOT_WORTH_COST,
                **fields,
            )
        return Decision(
            True, f"{unlikely}; {predicted}", prob_better=p, rule=Rule.UNLIKELY, **fields
        )

    def _may_beat(self, p: float, bar: float, fields: dict) -> Decision:
        return Decision(
            False,
            f"P(ends better than {bar:.4g}) = {p:.3f}",
            prob_better=p,
            rule=Rule.MAY_BEAT,
            **fields,
        )

    def new_trial_rate(
        self, others: Sequence[TrialCurve], bar: float
    ) -> tuple[float, float] | None:
        """What a new trial buys: (chance it ends beating ``bar``, seconds it costs), from
        the study's finished and pruned trials (a pruned trial counts as a miss); ``None``
        when none has a cost."""
        return self.ended_trials(others).new_trial_rate(bar)

    def outside_band(self, trial: TrialCurve) -> str | None:
        """Why the trial has left its predicted band in the bad direction, or ``None``."""
        if self.band_tolerance is None or trial.band is None:
            return None
        if trial.last_step < self.n_warmup_steps or trial.steps.size < self.min_points:
            return None
        steps, low, high = (np.asarray(a, dtype=np.float64) for a in trial.band)
        if steps.size == 0 or trial.last_step > steps[-1]:
            return None
        at = trial.last_step
        lo, hi = float(np.interp(at, steps, low)), float(np.interp(at, steps, high))
        value = float(trial.values[-1])
        edge = hi if self.direction == "minimize" else lo
        slack = self.band_tolerance * abs(edge)
        if self.better(edge + self._sign * slack, value):
            return (
                f"observed {value:.4g} at step {at:g} is outside the predicted band "
                f"[{lo:.4g}, {hi:.4g}] by more than {self.band_tolerance:.0%}"
            )
        return None

    def peer_rank(self, trial: TrialCurve, others: Sequence[TrialCurve]) -> float | None:
        """Share of other trials this one is ahead of, each read at the same budget fraction.

        Trials with different budgets and schedules are compared where each has used the
        same share of its own budget (linearly interpolated between reports); ``None`` when
        fewer than ``n_min_trials`` peers have got that far.
        """
        return self._peer_rank(trial, self.ended_trials(others), others)

    def _peer_rank(
        self, trial: TrialCurve, ended: EndedTrials, others: Sequence[TrialCurve]
    ) -> float | None:
        if not trial.budget_steps:
            return None
        frac = trial.last_step / trial.budget_steps
        mine = float(trial.values[-1])
        peers = list(ended.peers.values_at(frac))
        for t in others:
            if t.finished or t.pruned or not t.budget_steps or t.steps.size == 0:
                continue
            at = frac * t.budget_steps
            if t.steps[-1] < at or not np.all(np.isfinite(t.values)):
                continue
            peers.append(float(np.interp(at, t.steps, t.values)))
        if len(peers) < max(self.n_min_trials, 1):
            return None
        return float(np.mean(self._sign * mine < self._sign * np.asarray(peers)))
