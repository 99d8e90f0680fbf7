"""What the decision core reads from trials that will not report again, read once.

A study of 1,000 trials asks the same questions of its finished and pruned trials at every
report of every running trial: which is the incumbent, what its peers showed at this fraction
of their budgets, what the study-informed predictor learns from them at this grid point, what
a new trial buys. Those trials do not change, and adapters keep their curve objects, so the
answers are kept on one :class:`EndedTrials` until another trial ends. Each answer is the one
the plain computation over the same trials gives, to the bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ttp_search.curves import StudyPredictor
from ttp_search.curves.stack import CurveStack, same_objects

if TYPE_CHECKING:
    from ttp_search.engine.decision import TrialCurve


class PeerTable:
    """Ended trials' reports, read at a fraction of each trial's budget: those with a budget
    and finite values, as ``np.interp`` reads them."""

    def __init__(self, trials: Sequence[TrialCurve]) -> None:
        usable = [
            t for t in trials if t.budget_steps and t.steps.size and np.all(np.isfinite(t.values))
        ]
        self._stack = CurveStack(
            [t.steps for t in usable], [t.values for t in usable], [t.budget_steps for t in usable]
        )

    def values_at(self, fraction: float) -> np.ndarray:
        """Each trial's value at ``fraction`` of its budget, for those that got there."""
        stack = self._stack
        return stack.values_at(fraction)[stack.last >= fraction * stack.budgets]


class EndedTrials:
    """The finished and pruned trials of one decision, and what the core reads from them.

    ``sign`` is 1 when minimising, -1 when maximising. Kept by the core while the same trial
    objects (in the same order) come back; :meth:`holds` tells.
    """

    def __init__(self, trials: Sequence[TrialCurve], sign: float) -> None:
        self.trials = tuple(trials)
        self.sign = sign
        self._fits: dict[float, tuple[int, StudyPredictor | None]] = {}

    def holds(self, trials: Sequence[TrialCurve]) -> bool:
        return same_objects(self.trials, trials)

    @cached_property
    def done(self) -> list[TrialCurve]:
        """Finished trials with a finite result (the incumbent's candidates, the predictor's
        examples)."""
        return [
            t
            for t in self.trials
            if t.finished and t.result is not None and math.isfinite(t.result)
        ]

    @cached_property
    def best(self) -> TrialCurve | None:
        """The first finished trial with the best result."""
        if not self.done:
            return None
        results = np.array([t.result for t in self.done], dtype=np.float64)
        return self.done[int(np.argmin(self.sign * results))]

    @cached_property
    def peers(self) -> PeerTable:
        return PeerTable(self.trials)

    def study_fit(self, predictor: StudyPredictor, at: float) -> tuple[int, StudyPredictor | None]:
        """How many finished trials reach grid point ``at``, and ``predictor`` fitted there on
        them and the pruned ones (``None`` while fewer than its ``min_trials`` reach it)."""
        found = self._fits.get(at)
        if found is None:
            curves = self._finished_curves
            reach = predictor.count_reaching(curves, at)
            model = None
            if reach >= predictor.min_trials:
                pruned = [
                    t.partial(t.budget_steps) for t in self.trials if t.pruned and t.budget_steps
                ]
                model = copy.copy(predictor)  # fitted state per grid point; caches shared
                model.fit(curves, [t.result for t in self.done], at, pruned=pruned)
            found = self._fits[at] = (reach, model)
        return found

    @cached_property
    def _finished_curves(self) -> tuple:
        # A tuple: the predictor recognises the same one at once, without 1,000 checks.
        return tuple(t.partial(t.budget_steps or t.last_step) for t in self.done)

    @cached_property
    def _new_trial_stats(self) -> tuple[int, float | None, np.ndarray]:
        ended = [t for t in self.trials if t.steps.size]
        costs = [c for c in (t.cost() for t in ended) if c is not None and c > 0]
        signed = self.sign * np.array(
            [t.result for t in ended if t.finished and t.result is not None], dtype=np.float64
        )
        return len(ended), float(np.mean(costs)) if costs else None, signed

    def new_trial_rate(self, bar: float) -> tuple[float, float] | None:
        """(chance a new trial ends no worse than ``bar``, seconds it costs), from the ended
        trials (a pruned trial counts as a miss); ``None`` when none has a cost."""
        n_ended, mean_cost, signed = self._new_trial_stats
        if mean_cost is None:
            return None
        hits = int(np.count_nonzero(~(self.sign * bar < signed)))
        # Laplace's rule keeps an unlucky or a lucky start from reading as 0 or 1.
        return (hits + 1) / (n_ended + 2), mean_cost
