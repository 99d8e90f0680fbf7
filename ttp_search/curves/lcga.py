"""Learning-curve gradient analysis (Zhao, Frey, Gadepally et al. 2022).

The step-level training loss of the first epochs is fitted with a non-negative hyperbola

    L̂(k) = 1 / (β1 + β2·k) + β3,     β1, β2, β3 ≥ 0,

whose derivatives are analytic with ``u = β1 + β2·k``:

    L̂′(k) = −β2 / u²,     L̂″(k) = 2·β2² / u³,     L̂′/√L̂″ = −1/√(2u).

Trials are ranked by summaries of ``L̂′`` and ``L̂′/√L̂″`` after a burn-in. Note that
``L̂′/√L̂″`` ignores the asymptote β3 entirely. Training elasticity
``ε(k) = L̂′(k)·k / L̂(k)`` (from economics) says how much relative loss one more relative
step of training buys; when ``|ε|`` is small, training longer buys little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

from ttp_search.curves._validate import as_curve
from ttp_search.errors import InvalidInputError

SUMMARIES = ("mean_slope", "final_slope", "mean_ratio", "final_ratio", "asymptote", "fit_final")


def _hyperbola(k, b1, b2, b3):
    return 1.0 / (b1 + b2 * k) + b3


@dataclass(frozen=True)
class LCGAFit:
    """The fitted hyperbola and the summaries used to rank trials (lower ranks better)."""

    beta1: float
    beta2: float
    beta3: float
    steps: np.ndarray  # the steps after burn-in the summaries are taken over

    def loss(self, k) -> np.ndarray:
        return _hyperbola(np.asarray(k, dtype=np.float64), self.beta1, self.beta2, self.beta3)

    def slope(self, k) -> np.ndarray:
        u = self.beta1 + self.beta2 * np.asarray(k, dtype=np.float64)
        return -self.beta2 / u**2

    def curvature(self, k) -> np.ndarray:
        u = self.beta1 + self.beta2 * np.asarray(k, dtype=np.float64)
        return 2 * self.beta2**2 / u**3

    def ratio(self, k) -> np.ndarray:
        """``L̂′/√L̂″ = −1/√(2u)``."""
        u = self.beta1 + self.beta2 * np.asarray(k, dtype=np.float64)
        return -1.0 / np.sqrt(2 * np.maximum(u, 1e-300))

    def elasticity(self, k) -> np.ndarray:
        """``ε(k) = L̂′(k)·k / L̂(k)``: relative loss change per relative step change (≤ 0)."""
        k = np.asarray(k, dtype=np.float64)
        return self.slope(k) * k / self.loss(k)

    def summary(self, name: str) -> float:
        """One ranking score; every score is oriented so that lower means a better trial.

        ``mean_slope``/``final_slope``: the (negative) slope — steeper descent ranks better.
        ``mean_ratio``/``final_ratio``: ``L̂′/√L̂″``, likewise. ``asymptote``: β3.
        ``fit_final``: the fitted loss at the last observed step.
        """
        k = self.steps
        values = {
            "mean_slope": lambda: float(np.mean(self.slope(k))),
            "final_slope": lambda: float(self.slope(k[-1])),
            "mean_ratio": lambda: float(np.mean(self.ratio(k))),
            "final_ratio": lambda: float(self.ratio(k[-1])),
            "asymptote": lambda: self.beta3,
            "fit_final": lambda: float(self.loss(k[-1])),
        }
        if name not in values:
            raise InvalidInputError(f"unknown LCGA summary {name!r}; expected one of {SUMMARIES}")
        return values[name]()


def lcga(steps, losses, *, burn_in: float = 0.1) -> LCGAFit:
    """Fit the non-negative hyperbola to step-level training losses after a burn-in.

    ``burn_in`` is the fraction of the observed steps (from the start) left out of the fit:
    the first steps of training are dominated by initialisation, not by the architecture.
    """
    s, v = as_curve(steps, losses, min_points=4)
    if not 0 <= burn_in < 1:
        raise InvalidInputError(f"burn_in must be in [0, 1), got {burn_in!r}")
    keep = s >= s[0] + burn_in * (s[-1] - s[0])
    s, v = s[keep], v[keep]
    if s.size < 3:
        raise InvalidInputError("fewer than 3 points left after burn-in")
    if np.any(v < 0):
        raise InvalidInputError("LCGA fits losses, which must be >= 0")
    floor = max(0.0, float(v.min()) * 0.5)
    start = max(float(v[: max(1, v.size // 10)].mean()) - floor, 1e-6)
    end = max(float(v[-max(1, v.size // 10) :].mean()) - floor, 1e-6)
    b1 = 1.0 / start
    b2 = max((1.0 / end - b1) / max(s[-1], 1.0), 1e-9)
    try:
        (b1, b2, b3), _ = curve_fit(
            _hyperbola,
            s,
            v,
            p0=(b1, b2, floor),
            bounds=(0.0, np.inf),
            maxfev=2000,
        )
    except (RuntimeError, ValueError):
        b3 = floor  # keep the moment-matched start: a flat or erratic curve still gets scored
    return LCGAFit(float(b1), float(b2), float(b3), s)
