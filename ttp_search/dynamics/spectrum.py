"""From a subset of n samples to the full data set of N: extrapolating the Gram spectrum.

On n samples the function-space Gram's top eigenvalues (per sample, ``λ_k / n``) have already
converged to the full data set's; what moves with n is *where the residual's energy sits*. A
residual the n-sample cannot resolve is spread over all its ``n·C`` directions, fast ones
included, so a subset predicts training that is too fast (measured on the LP-FT CNN of
``make bench-steps``: steps to 25% of the initial loss at n = 128 / 256 / 512 are
0.07-0.14 / 0.2-0.4 / 0.65-0.8 of the N = 675 answer).

The model here: at each residual-energy quantile q (the direction below which a fraction q of
the residual's energy lies), the curvature ``κ_q`` moves as a power of n. Its exponent is
measured inside the subset itself, between random halves (n/2) and the whole (n), averaged
over a few halvings; the Gram of a half is a sub-block of the Gram already computed, so no
further Jacobian is needed. Each direction's eigenvalue is then scaled by
``(N / n) ** exponent(q)`` at its own quantile. See BENCHMARKS.md (bench-steps) for
how the error moves with n with and without it.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

# Energy quantiles at which the curvature's exponent in n is measured.
_GRID = np.linspace(0.0, 1.0, 201)[1:-1]
# Per doubling of n, a curvature quantile may shrink at most 2**-4: a guard against the
# sampling noise of the last few directions, well outside the -0.3 to -2 measured on data.
_MIN_SLOPE = -4.0


def _log_curvature_at_quantiles(gram: np.ndarray, residual: np.ndarray) -> np.ndarray:
    lam, U = np.linalg.eigh(gram)
    order = np.argsort(lam)[::-1]
    lam, U = np.clip(lam[order], 1e-300, None), U[:, order]
    energy = (U.T @ residual) ** 2
    cum = np.cumsum(energy) / energy.sum()
    return np.interp(_GRID, cum, np.log(lam / len(residual)))


def energy_quantiles(U: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Each eigen-direction's residual-energy quantile (the midpoint of its share)."""
    energy = (U.T @ residual) ** 2
    total = energy.sum()
    return (np.cumsum(energy) - 0.5 * energy) / total


def curvature_exponents(
    gram: np.ndarray, residual: np.ndarray, C: int, *, halvings: int = 4, seed: int = 0
) -> np.ndarray:
    """Exponent of ``κ_q ∝ n**exponent`` at each quantile of ``_GRID`` (all ≤ 0).

    ``gram`` is the ``(n·C, n·C)`` Gram of n samples (sample-major), ``residual`` the
    ``(n·C,)`` residual whose energy defines the quantiles (``f0 − Y`` for MSE, the softmax
    residual for cross-entropy).
    """
    n = len(residual) // C
    whole = _log_curvature_at_quantiles(gram, residual)
    rng = np.random.default_rng(seed)
    halves = []
    for _ in range(halvings):
        idx = np.sort(rng.permutation(n)[: n // 2])
        rows = (idx[:, None] * C + np.arange(C)).ravel()
        halves.append(_log_curvature_at_quantiles(gram[np.ix_(rows, rows)], residual[rows]))
    per_doubling = (whole - np.mean(halves, axis=0)) / np.log(2)  # log2 κ_q(n) / κ_q(n/2)
    # Slower directions move more with n: a non-increasing fit in q averages the sampling
    # noise out instead of letting a clip at 0 turn it into a bias.
    fit = IsotonicRegression(increasing=False).fit_transform(_GRID, per_doubling)
    return np.clip(fit, _MIN_SLOPE, 0.0)


def extrapolation_factors(
    gram: np.ndarray,
    U: np.ndarray,
    residual: np.ndarray,
    C: int,
    num_data: int,
    *,
    halvings: int = 4,
    seed: int = 0,
) -> np.ndarray:
    """Factor for each eigen-direction (columns of ``U``) that carries its eigenvalue from the
    n samples of ``gram`` to ``num_data`` samples; ones when there is nothing to extrapolate."""
    n = len(residual) // C
    if num_data <= n or n < 8 or not np.any(residual):
        return np.ones(U.shape[1])
    exponents = curvature_exponents(gram, residual, C, halvings=halvings, seed=seed)
    q = energy_quantiles(U, residual)
    return (num_data / n) ** np.interp(q, _GRID, exponents)
