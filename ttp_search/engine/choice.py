"""Which of several affordable proposals to run: expected improvement per predicted second."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern, WhiteKernel

from ttp_search._checks import check_int, check_real
from ttp_search.engine.space import Space, encode


@dataclass(frozen=True)
class Completed:
    """A completed trial as the choice sees it: its configuration and final value."""

    params: Mapping[str, Any]
    value: float


class ExpectedImprovementPerSecond:
    """Score proposals by a Gaussian process's expected improvement over the best completed
    value per predicted second of their budget (Snoek et al. 2012), ``cost_exponent``
    setting how much cost weighs.

    Until ``n_startup_trials`` trials have completed (at least 2) the first affordable
    proposal runs: the base sampler's own choice. Past ``max_gp_points`` completed trials
    the GP is fitted on the best half and the most recent rest (its cost grows with the
    cube of the points). ``seed`` fixes the GP's optimiser restarts, so the same history
    gives the same choice in any process.
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 5,
        cost_exponent: float = 1.0,
        max_gp_points: int = 200,
        seed: int | None = None,
    ) -> None:
        self.n_startup_trials = check_int("n_startup_trials", n_startup_trials, 0)
        self.cost_exponent = check_real("cost_exponent", cost_exponent, low=0.0)
        self.max_gp_points = check_int("max_gp_points", max_gp_points, 2)
        self._rng = np.random.default_rng(seed)

    def in_startup(self, n_completed: int) -> bool:
        return n_completed < max(self.n_startup_trials, 2)

    def reseed(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(
        self,
        proposals: Sequence[Mapping[str, Any]],
        seconds: Sequence[float],
        completed: Sequence[Completed],
        space: Space,
        *,
        minimize: bool = True,
    ) -> tuple[int, str]:
        """The index of the proposal to run, and why."""
        if self.in_startup(len(completed)) or not space:
            return 0, "base sampler's proposal (startup)"
        sign = 1.0 if minimize else -1.0
        done = list(completed)
        if len(done) > self.max_gp_points:
            # Fit on the best half and the most recent half, which is where expected
            # improvement is decided, so a 1,000-trial study stays fast.
            order = sorted(range(len(done)), key=lambda i: sign * done[i].value)
            best = order[: self.max_gp_points // 2]
            chosen = set(best)
            recent = [i for i in reversed(range(len(done))) if i not in chosen]
            done = [done[i] for i in best + recent[: self.max_gp_points - len(best)]]
        X = np.array([encode(c.params, space) for c in done])
        y = sign * np.array([c.value for c in done])  # lower is better from here on
        gp = GaussianProcessRegressor(
            Matern(length_scale=np.full(X.shape[1], 0.3), length_scale_bounds=(1e-2, 1e2), nu=2.5)
            + WhiteKernel(1e-2, (1e-6, 1.0)),
            normalize_y=True,
            random_state=int(self._rng.integers(2**31)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X, y)
        mu, sd = gp.predict(np.array([encode(p, space) for p in proposals]), return_std=True)
        sd = np.maximum(sd, 1e-12)
        z = (y.min() - mu) / sd
        ei = sd * (z * norm.cdf(z) + norm.pdf(z))
        cost = np.asarray(seconds, dtype=np.float64)
        score = ei / np.maximum(cost, 1e-9) ** self.cost_exponent
        i = int(np.argmax(score))
        rank = int((cost < cost[i]).sum()) + 1
        n = len(proposals)
        return i, (
            f"best of {n} by EI per second^{self.cost_exponent:g}: EI {ei[i]:.3g}, "
            f"{cost[i]:.1f} s (cost rank {rank} of {n})"
        )
