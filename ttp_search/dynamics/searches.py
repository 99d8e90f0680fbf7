"""Searches over predicted runs: the steps (or the shortest budget) to a target loss or
accuracy, and the crossings within a fixed budget.

``StepSearches`` is the part of :class:`~ttp_search.dynamics.LinearizedSDE` that reads
answers off predicted curves; it asks the SDE for those curves (``predict_curve``, ``_curve``),
for its checks (``_check``, ``check_linearity``) and for the edge of stability
(``edge_ratio``), and knows nothing of how they are computed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from ttp_search.dynamics.estimate import StepsEstimate, check_target_loss, first_hits
from ttp_search.dynamics.hyperparameters import Schedule, schedule_factors
from ttp_search.errors import InvalidInputError

# Budget searches resolve the mean's crossing to 1/32 of the budget (inside any sensible
# safety margin), the band's edges to 1/8.
_RESOLUTION = {"loss": 32, "loss_low": 8, "loss_high": 8}


class StepSearches:
    """Steps to targets, read off the curves the SDE predicts (mixed into LinearizedSDE)."""

    def steps_to_loss(
        self,
        target: float,
        *,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        max_steps: int = 100_000,
        check_linearity: bool = False,
    ) -> StepsEstimate:
        """First step at which the predicted loss is at or below ``target``.

        With ``schedule="linear"`` (or cosine/step) the answer is the shortest budget T whose
        schedule, decaying to its end at T, ends at or below the target. ``low``/``high`` are
        the steps at which the 80% band's low and high edges reach it. ``math.inf`` when the
        target is not reached within ``max_steps`` (a legitimate answer, not an error).
        ``check_linearity``: also evaluate the network at the weights the prediction reaches
        (:meth:`check_linearity`, about one backward and two forward passes over the samples)
        and put the result in ``estimate.linearity``.
        """
        check_target_loss(target)
        hyper = dict(lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
        if self.surely_unreachable(
            target,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            schedule=schedule,
            decay=decay,
            max_steps=max_steps,
        ):
            # A simulated minibatch run would otherwise go all the way to max_steps to learn
            # what a bound says in a few vector operations.
            self._check(lr, batch_size, momentum, weight_decay, max_steps, decay)
            never = dict.fromkeys(_RESOLUTION, math.inf)
            return self._estimate(
                never, target, lr, momentum, weight_decay, schedule, decay, max_steps
            )
        estimate = self._steps_to(
            lambda df, col: df[col] <= target,
            target,
            *hyper.values(),
            schedule,
            decay,
            max_steps,
            stop={"stop_below": target},
        )
        return self._checked(estimate, hyper, schedule, decay) if check_linearity else estimate

    def steps_to_losses(
        self,
        targets: Sequence[float],
        *,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        max_steps: int = 100_000,
        check_linearity: bool = False,
    ) -> list[StepsEstimate]:
        """:meth:`steps_to_loss` for each of several targets, the same estimates.

        At a constant rate with simulated minibatches (either loss, batch smaller than the
        samples) one run, read at every step until its band is below the lowest target,
        answers every target: a prediction for three levels costs about one. Otherwise each
        target gets its own search.
        """
        targets = list(targets)
        for target in targets:
            check_target_loss(target)
        hyper = dict(lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
        shared = schedule == "constant" and self._simulates(batch_size)
        if not shared or len(targets) < 2:
            return [
                self.steps_to_loss(
                    t,
                    **hyper,
                    schedule=schedule,
                    decay=decay,
                    max_steps=max_steps,
                    check_linearity=check_linearity,
                )
                for t in targets
            ]
        self._check(lr, batch_size, momentum, weight_decay, max_steps, decay)
        df = self._every_step(*hyper.values(), decay, max_steps, {"stop_below": min(targets)})
        out = []
        for t in targets:
            found = first_hits(df, lambda df, col, t=t: df[col] <= t)
            estimate = self._estimate(
                found, t, lr, momentum, weight_decay, schedule, decay, max_steps
            )
            out.append(
                self._checked(estimate, hyper, schedule, decay) if check_linearity else estimate
            )
        return out

    def crossings(
        self,
        targets: Sequence[float],
        *,
        steps: int,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        every: int = 1,
    ) -> list[StepsEstimate]:
        """The steps at which one run with a budget of ``steps`` first reaches each target.

        :meth:`steps_to_loss` answers "how long a budget reaches the target"; this answers
        "when, within this budget, is each target passed": the schedule decays over
        ``steps`` (a trial whose budget is fixed, e.g. by the budget-aware linear decay), and
        the predicted run is read every ``every`` steps (the crossings are multiples of it,
        as a real run logged that often would show them). ``low``/``high`` are where the 80%
        band's edges pass the target; ``math.inf`` when not within the run.
        ``check_linearity(steps, ...)`` checks the weights the run ends at.
        """
        targets = list(targets)
        for target in targets:
            check_target_loss(target)
        if not (isinstance(every, numbers.Integral) and 1 <= every <= steps):
            raise InvalidInputError(f"every must be an integer in [1, steps], got {every!r}")
        hyper = dict(lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
        curve = self.predict_curve(
            **hyper, steps=steps, schedule=schedule, decay=decay, points=steps // every + 1
        )
        out = []
        for t in targets:
            found = first_hits(curve, lambda df, col, t=t: df[col] <= t)
            out.append(self._estimate(found, t, lr, momentum, weight_decay, schedule, decay, steps))
        return out

    def _checked(self, estimate: StepsEstimate, hyper: dict, schedule, decay) -> StepsEstimate:
        """``estimate`` with the linearity check at its crossing (none when never reached)."""
        if not (math.isfinite(estimate.steps) and estimate.steps > 0):
            return estimate
        check = self.check_linearity(int(estimate.steps), **hyper, schedule=schedule, decay=decay)
        return replace(estimate, linearity=check)

    def steps_to_accuracy(
        self,
        target: float,
        *,
        lr: float,
        batch_size: int,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        schedule: Schedule = "constant",
        decay: str = "standard",
        max_steps: int = 100_000,
    ) -> StepsEstimate:
        """First step at which the predicted training accuracy reaches ``target`` (CE only)."""
        if self.loss != "ce":
            raise InvalidInputError("accuracy needs class labels: use loss='ce'")
        if not 0 <= target <= 1:
            raise InvalidInputError(f"target accuracy must be in [0, 1], got {target!r}")
        return self._steps_to(
            lambda df, col: df["accuracy"] >= target,
            target,
            lr,
            batch_size,
            momentum,
            weight_decay,
            schedule,
            decay,
            max_steps,
            stop={"stop_at_accuracy": target},
        )

    def _steps_to(self, reached, target, lr, bs, mom, wd, schedule, decay, max_steps, stop=None):
        self._check(lr, bs, mom, wd, max_steps, decay)
        found = {}
        if schedule == "constant" and self._simulates(bs):
            # Simulated minibatches: reading the loss costs far less than a step, so one run
            # read at every step gives each crossing exactly (the two-pass search below
            # would simulate the steps to the crossing twice).
            found = first_hits(self._every_step(lr, bs, mom, wd, decay, max_steps, stop), reached)
        elif schedule == "constant":
            grid = np.unique(np.linspace(0, max_steps, min(400, max_steps + 1)).round().astype(int))
            eta = np.full(max_steps, float(lr))
            coarse = self._curve(eta, bs, mom, wd, decay, grid, stop)
            # Read each crossing off at single-step resolution, evaluating the curve only
            # between the coarse grid point before it and the one at it: a constant-rate
            # curve's prefix does not depend on how long the run is.
            steps = coarse.step.to_numpy()
            fine = [np.array([0])]
            for col in ("loss", "loss_low", "loss_high"):
                hit = np.flatnonzero(reached(coarse, col).to_numpy())
                if hit.size and hit[0] > 0:
                    fine.append(np.arange(steps[hit[0] - 1] + 1, steps[hit[0]] + 1))
            grid = np.unique(np.concatenate(fine))
            df = coarse
            if grid[-1] > 0:
                df = self._curve(eta[: int(grid[-1])], bs, mom, wd, decay, grid)
            found = first_hits(df, reached)
        elif self.loss == "mse" and not self._simulates(bs):
            found = self._shortest_budgets(reached, lr, bs, mom, wd, schedule, decay, max_steps)
        else:
            # One run of budget T gives the end of all three curves: the three searches
            # share their runs, and the band's edges need less resolution than the mean.
            ends: dict[int, pd.DataFrame] = {}

            def end(T: int) -> pd.DataFrame:
                if T not in ends:
                    df = self.predict_curve(lr, bs, mom, wd, T, schedule, decay=decay, points=2)
                    ends[T] = df.iloc[[-1]]
                return ends[T]

            for col, resolution in _RESOLUTION.items():
                found[col] = self._shortest_budget(
                    lambda T, col=col: bool(reached(end(T), col).iloc[0]), max_steps, resolution
                )
        return self._estimate(found, target, lr, mom, wd, schedule, decay, max_steps)

    def _every_step(self, lr, bs, mom, wd, decay, max_steps, stop) -> pd.DataFrame:
        """The constant-rate curve read at every step, until ``stop`` (see :meth:`_curve`)."""
        eta = np.full(max_steps, float(lr))
        return self._curve(eta, bs, mom, wd, decay, np.arange(max_steps + 1), stop)

    def _estimate(self, found, target, lr, mom, wd, schedule, decay, max_steps) -> StepsEstimate:
        # The band's low edge reaches a loss target first; for accuracy only the mean exists.
        low, high = sorted((found["loss_low"], found["loss_high"]))
        peak = lr * float(schedule_factors(schedule, min(max_steps, 100_000)).max())
        return StepsEstimate(
            found["loss"],
            min(low, found["loss"]),
            max(high, found["loss"]),
            float(target),
            decay,
            stable=self.edge_ratio(peak, mom, wd) <= 1.0,
        )

    def _shortest_budgets(self, reached, lr, bs, mom, wd, schedule, decay, max_steps) -> dict:
        """Shortest budget whose schedule ends at the target, for the mean and both band
        edges (MSE): the longest budget first, then a geometric grid up to ``max_steps``,
        then bisection inside the bracket of each curve's first success."""
        found = {col: math.inf for col in _RESOLUTION}
        ends: dict[int, dict] = {}

        def end(T: int) -> dict:
            if T not in ends:
                eta = lr * schedule_factors(schedule, T)
                mean, low, high = self._mse_run(eta, [T], bs, mom, wd, decay)
                ends[T] = {"loss": mean[0], "loss_low": low[0], "loss_high": high[0]}
            return ends[T]

        # When even the longest budget ends short of the target, so does every shorter one
        # (the common case among proposals).
        watch = [col for col in _RESOLUTION if reached(end(max_steps), col)]
        grid = np.unique(np.round(np.geomspace(1, max_steps, 12)).astype(int))
        lower = 0
        for T in grid.tolist():
            for col in watch:
                if math.isinf(found[col]) and reached(end(T), col):
                    lo, hi = lower, T
                    while hi - lo > max(1, T // _RESOLUTION[col]):
                        mid = (lo + hi) // 2
                        lo, hi = (lo, mid) if mid >= 1 and reached(end(mid), col) else (mid, hi)
                    found[col] = float(hi)
            if all(math.isfinite(found[col]) for col in watch):
                break
            lower = T
        return found

    @staticmethod
    def _shortest_budget(ok, max_steps: int, resolution: int) -> float:
        """Smallest budget T whose schedule ends at the target (``ok(T)``), to 1/resolution."""
        if not ok(max_steps):
            return math.inf
        lo, hi = 0, max_steps  # ok(hi) holds; find the smallest such budget by bisection
        while hi - lo > max(1, hi // resolution):
            mid = (lo + hi) // 2
            if mid >= 1 and ok(mid):
                hi = mid
            else:
                lo = mid
        return float(hi)
