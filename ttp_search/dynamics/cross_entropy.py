"""The cross-entropy run of the linearized SGD dynamics, in discrete steps.

In function space the linearized network's outputs are ``f = f0 + U z`` (``Θ = U Λ Uᵀ``);
PyTorch's SGD on the weights moves them exactly as

    v ← m v + Λ Uᵀ ∇_f L(f) + ω (d + z),    z ← z − η_t v

(heavy-ball momentum ``m``, weight decay ``ω`` toward 0 with ``d = Uᵀ J w0``, or toward w0
with ``d = 0``). The mean path is this iteration on the full-batch gradient, step by step,
so the overshoot of directions too sharp for the step is reproduced, not smoothed away as
a continuous-time ODE does. Once every direction is slow (``η λ_k h_k / (1 − m)`` below
``settle``, ``h_k`` the loss's curvature along it, and the momentum's transient has died),
steps are taken several at a time with the quasi-static velocity ``v = grad / (1 − m)``:
then the discrete and continuous dynamics agree to that tolerance, and long runs cost a
few hundred iterations instead of one per step.

SGD's minibatch noise adds, per direction, an Ornstein–Uhlenbeck variance fed by the
minibatch gradient's covariance, ``(1/B − 1/N) λ_k² (1/n) Σ_i (U_kiᵀ r_i)²`` for the residuals
``r_i = softmax(f_i) − y_i`` (computed per direction, not assumed spread evenly); the
expected loss is ``L(f̄) + ½ Σ_k h_k var_k``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_softmax

#: A direction whose rate η λ h / (1 − m) is below this moves like the continuous-time
#: limit to within it per step; then several steps are taken at once.
SETTLE = 0.02
_Z = 1.2815515655446004  # 80% two-sided normal quantile, as the SDE's band


def direction_curvatures(p: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``h_k = U_kᵀ H U_k``: the mean cross-entropy's curvature along each eigen-direction
    (``H`` the per-sample softmax Hessians ``diag p_i − p_i p_iᵀ`` over n), for the softmax
    outputs ``p`` (n, C) and the eigenvectors ``M`` (n, C, r)."""
    pm = np.einsum("ic,ick->ik", p, M)
    return (np.einsum("ic,ick->k", p, M * M) - np.einsum("ik,ik->k", pm, pm)) / p.shape[0]


def _geometric(a: np.ndarray, k: int) -> np.ndarray:
    """``1 + a + ... + a^(k-1)``, exact near ``a = 1``."""
    out = np.full(a.shape, float(k))
    away = np.abs(1.0 - a) > 1e-12
    out[away] = (1.0 - a[away] ** k) / (1.0 - a[away])
    return out


def ce_run(
    eta: np.ndarray,
    read: np.ndarray,
    U: np.ndarray,
    lam: np.ndarray,
    f0: np.ndarray,
    Y: np.ndarray,
    drift: np.ndarray,
    *,
    batch_size: int,
    num_data: int,
    momentum: float,
    wd: float,
    stop_below: float | None = None,
) -> np.ndarray:
    """Run the schedule ``eta`` and read at the sorted steps ``read`` (within ``len(eta)``).

    ``U``: (n·C, r) eigenvectors, ``lam``: (r,) eigenvalues, ``f0``/``Y``: (n, C) outputs
    and one-hot targets, ``drift``: (r,) the weight-decay direction in the eigenbasis.
    Minibatches of ``batch_size`` are drawn as a shuffling DataLoader draws them: without
    replacement, a fresh permutation of the ``num_data`` samples each epoch of
    ``num_data // batch_size`` steps (the rest dropped). Within an epoch the batches'
    gradient errors are negatively correlated (they sum to the error of the epoch's mean),
    so noise in slow directions largely cancels over an epoch; an i.i.d. model of the
    noise overstates its effect several times. Returns (len(read), 4): expected loss, its
    standard deviation over SGD's sampling, accuracy of the mean outputs, and the largest
    per-step rate ``η λ h / (1 − m)`` met so far. ``stop_below``: return at the first
    read whose band's high edge is at or below it (the rows after are NaN).
    """
    n, C = f0.shape
    r = lam.size
    M = U.reshape(n, C, r)
    labels = Y.argmax(axis=1)
    eff = 1.0 / (1.0 - momentum)
    epoch = max(num_data // batch_size, 1)
    z, v = np.zeros(r), np.zeros(r)
    # Per direction, the (v, z) covariance from finished epochs (P) and the current epoch's
    # weight sums (W1, W2): the current epoch adds S (W2/B − W1 W1ᵀ/N) for the per-sample
    # gradient variance S. Stored as (vv, vz, zz) and (v, z).
    P, W2, W1 = np.zeros((3, r)), np.zeros((3, r)), np.zeros((2, r))
    pos = 0
    out = np.empty((read.size, 4))
    steps, j, t = eta.size, 0, 0
    rate_max, calm_since = 0.0, 0
    while True:
        logits = f0 + (U @ z).reshape(n, C)
        logp = log_softmax(logits, axis=1)
        p = np.exp(logp)
        res = p - Y
        per_sample = np.einsum("ic,ick->ik", res, M)
        grad_f = per_sample.sum(axis=0) / n  # Uᵀ ∇_f L
        h = direction_curvatures(p, M)
        var = np.maximum(P[2], 0.0) + np.maximum(W2[2] / batch_size - W1[1] ** 2 / num_data, 0.0)
        if t == read[j]:
            loss = float(-np.mean(np.sum(Y * logp, axis=1)))
            mean = loss + 0.5 * float(h @ var)
            sd = math.sqrt(float(grad_f**2 @ var) + 0.5 * float((h * var) @ (h * var)))
            acc = float(np.mean(logits.argmax(axis=1) == labels))
            out[j] = (mean, sd, acc, rate_max)
            j += 1
            if j == read.size:
                return out
            if stop_below is not None and mean + _Z * sd <= stop_below:
                out[j:] = np.nan
                return out
        if t == steps:
            return out
        e = float(eta[t])
        curv = lam * np.maximum(h, 0.0) + wd
        rate = e * eff * curv
        top = float(rate.max()) if r else 0.0
        rate_max = max(rate_max, top)
        if top > SETTLE:
            calm_since = t + 1
        grad = lam * grad_f + wd * (drift + z)
        # The kick SGD's sampling gives each direction's velocity, per unit of S.
        scale = lam * np.sqrt(np.einsum("ik,ik->k", per_sample, per_sample) / n)
        if batch_size >= num_data:  # full batch: no sampling noise (not even round-off)
            scale = np.zeros(r)
        k = 1
        if pos == 0 and top <= SETTLE and t - calm_since >= 3 * eff:
            k = int(min(SETTLE / max(top, 1e-300), read[j] - t, steps - t)) // epoch * epoch
        if k <= 1:
            v = momentum * v + grad
            z = z - e * v
            # Beyond the edge of stability the frozen-curvature noise would grow without
            # bound, while the mean path flattens the direction: cap it at the edge.
            c = np.minimum(curv, (1.0 + momentum) / e)
            A = (momentum, c, -e * momentum, 1.0 - e * c)
            P = _propagate(P, A)
            W2 = _propagate(W2, A) + scale**2 * np.array([[1.0], [-e], [e * e]])
            W1 = np.stack((A[0] * W1[0] + A[1] * W1[1], A[2] * W1[0] + A[3] * W1[1]))
            W1 += scale * np.array([[1.0], [-e]])
            pos += 1
            if pos == epoch:
                P += W2 / batch_size - np.stack((W1[0] ** 2, W1[0] * W1[1], W1[1] ** 2)) / num_data
                W1[:], W2[:], pos = 0.0, 0.0, 0
            t += 1
            continue
        # Whole epochs at once for slow directions, momentum quasi-static (v = grad/(1 − m)).
        v = eff * grad
        z = z - float(eta[t : t + k].sum()) * v
        keep = 1.0 - np.minimum(rate, 1.0)
        step = e * eff * scale
        one = step**2 * _geometric(keep**2, epoch) / batch_size
        one -= (step * _geometric(keep, epoch)) ** 2 / num_data
        epochs = _geometric(keep ** (2 * epoch), k // epoch)
        P = np.stack((0 * keep, 0 * keep, keep ** (2 * k) * P[2] + np.maximum(one, 0.0) * epochs))
        t += k


def _propagate(S: np.ndarray, A: tuple) -> np.ndarray:
    """``A S Aᵀ`` per direction, for symmetric 2x2 ``S`` stored as (vv, vz, zz)."""
    a11, a12, a21, a22 = A
    vv, vz, zz = S
    return np.stack(
        (
            a11 * a11 * vv + 2 * a11 * a12 * vz + a12 * a12 * zz,
            a11 * a21 * vv + (a11 * a22 + a12 * a21) * vz + a12 * a22 * zz,
            a21 * a21 * vv + 2 * a21 * a22 * vz + a22 * a22 * zz,
        )
    )
