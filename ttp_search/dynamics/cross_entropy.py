"""The full-batch cross-entropy run of the linearized dynamics, in discrete steps.

In function space the linearized network's outputs are ``f = f0 + U z`` (``Θ = U Λ Uᵀ``);
PyTorch's SGD on the weights moves them exactly as

    v ← m v + Λ Uᵀ ∇_f L(f) + ω (d + z),    z ← z − η_t v

(heavy-ball momentum ``m``, weight decay ``ω`` toward 0 with ``d = Uᵀ J w0``, or toward w0
with ``d = 0``). This is that iteration on the full-batch gradient, step by step, so the
overshoot of directions too sharp for the step is reproduced, not smoothed away as a
continuous-time ODE does. Once every direction is slow (``η λ_k h_k / (1 − m)`` below
``SETTLE``, ``h_k`` the loss's curvature along it, and the momentum's transient has died),
steps are taken several at a time with the quasi-static velocity ``v = grad / (1 − m)``:
then the discrete and continuous dynamics agree to that tolerance, and long runs cost a
few hundred iterations instead of one per step. Minibatches are simulated instead
(:mod:`ttp_search.dynamics.simulation`).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

#: A direction whose rate η λ h / (1 − m) is below this moves like the continuous-time
#: limit to within it per step; then several steps are taken at once.
SETTLE = 0.02


def direction_curvatures(p: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``h_k = U_kᵀ H U_k``: the mean cross-entropy's curvature along each eigen-direction
    (``H`` the per-sample softmax Hessians ``diag p_i − p_i p_iᵀ`` over n), for the softmax
    outputs ``p`` (n, C) and the eigenvectors ``M`` (n, C, r)."""
    pm = np.einsum("ic,ick->ik", p, M)
    return (np.einsum("ic,ick->k", p, M * M) - np.einsum("ik,ik->k", pm, pm)) / p.shape[0]


def ce_run(
    eta: np.ndarray,
    read: np.ndarray,
    U: np.ndarray,
    lam: np.ndarray,
    f0: np.ndarray,
    Y: np.ndarray,
    drift: np.ndarray,
    *,
    momentum: float,
    wd: float,
    stop_below: float | None = None,
    stop_at_accuracy: float | None = None,
) -> np.ndarray:
    """Run the schedule ``eta`` full-batch and read at the sorted steps ``read`` (within
    ``len(eta)``).

    ``U``: (n·C, r) eigenvectors, ``lam``: (r,) eigenvalues, ``f0``/``Y``: (n, C) outputs
    and one-hot targets, ``drift``: (r,) the weight-decay direction in the eigenbasis.
    Returns (len(read), 2): the training loss and accuracy. ``stop_below``: return at the
    first read whose loss is at or below it (the rows after are NaN); ``stop_at_accuracy``:
    at the first read whose accuracy is at or above it.
    """
    n, C = f0.shape
    r = lam.size
    M = U.reshape(n, C, r)
    labels = Y.argmax(axis=1)
    eff = 1.0 / (1.0 - momentum)
    z, v = np.zeros(r), np.zeros(r)
    out = np.full((read.size, 2), np.nan)
    steps, j, t, calm_since = eta.size, 0, 0, 0
    while True:
        logits = f0 + (U @ z).reshape(n, C)
        logp = log_softmax(logits, axis=1)
        if t == read[j]:
            loss = float(-np.mean(np.sum(Y * logp, axis=1)))
            acc = float(np.mean(logits.argmax(axis=1) == labels))
            out[j] = (loss, acc)
            j += 1
            if (
                j == read.size
                or (stop_below is not None and loss <= stop_below)
                or (stop_at_accuracy is not None and acc >= stop_at_accuracy)
            ):
                return out
        if t == steps:
            return out
        p = np.exp(logp)
        grad = lam * np.einsum("ic,ick->k", p - Y, M) / n + wd * (drift + z)
        top = float(eta[t] * eff * (lam * np.maximum(direction_curvatures(p, M), 0.0) + wd).max())
        if top > SETTLE:
            calm_since = t + 1
        k = 1
        if top <= SETTLE and t - calm_since >= 3 * eff:
            k = max(int(min(SETTLE / max(top, 1e-300), read[j] - t, steps - t)), 1)
        if k == 1:
            v = momentum * v + grad
            z = z - eta[t] * v
        else:
            v = eff * grad
            z = z - float(eta[t : t + k].sum()) * v
        t += k
