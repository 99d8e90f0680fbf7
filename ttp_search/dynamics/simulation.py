"""Minibatch SGD on the linearized network, simulated in function space.

With ``Θ = U Λ Uᵀ`` the linearized network's outputs are ``f = f0 + U z``, and one SGD step
on a minibatch B moves them by exactly

    v ← m v + Λ U_Bᵀ ∇_{f_B} L_B(f_B) + ω (d + z),    z ← z − η_t v

where ``U_B`` are the rows of the batch's samples: the step needs the batch's outputs only,
``B·C·r`` numbers, not a pass over the weights. Several runs with seeded shuffling-loader
batches (a fresh permutation per epoch, the last short batch dropped) give the expected
loss and its spread directly. This is the reference the Gaussian noise model approximates,
and it holds where that model breaks: when the per-sample gradients are so large that one
minibatch step throws the outputs far (pretrained ResNets with BatchNorm frozen), the
loss rises several-fold before it falls, which no small-noise expansion can follow.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def _residual(outputs: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """∂ℓ_i/∂f_i per sample for the mean loss (CE: softmax − one-hot; MSE over C outputs)."""
    if loss == "ce":
        return np.exp(log_softmax(outputs, axis=-1)) - targets
    return 2.0 * (outputs - targets) / outputs.shape[-1]


def _losses(outputs: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """The mean training loss of each run (``outputs``: (runs, n, C))."""
    if loss == "ce":
        return -np.mean(np.sum(targets * log_softmax(outputs, axis=-1), axis=-1), axis=-1)
    return np.mean((outputs - targets) ** 2, axis=(-2, -1))


def simulate_sgd(
    eta: np.ndarray,
    read: np.ndarray,
    U: np.ndarray,
    lam: np.ndarray,
    f0: np.ndarray,
    Y: np.ndarray,
    drift: np.ndarray,
    *,
    loss: str,
    batch_size: int,
    momentum: float,
    wd: float,
    runs: int = 8,
    seed: int = 0,
    stop_below: float | None = None,
) -> np.ndarray:
    """``runs`` seeded SGD runs of the schedule ``eta``, read at the sorted steps ``read``.

    ``U``: (n·C, r), ``lam``: (r,), ``f0``/``Y``: (n, C) outputs and targets (one-hot for
    CE), ``drift``: (r,) the weight-decay direction. Returns (len(read), 5): the runs' mean
    loss, their 10th and 90th percentiles, the mean accuracy (NaN for MSE), and the largest
    per-step rate ``η λ h`` of the mean outputs met so far. ``stop_below``: return at the
    first read whose 90th percentile is at or below it (the rows after are NaN).
    """
    n, C = f0.shape
    r = lam.size
    M = U.reshape(n, C, r)
    rng = np.random.default_rng(seed)
    epoch = n // batch_size
    z, v = np.zeros((runs, r)), np.zeros((runs, r))
    labels = Y.argmax(axis=1)
    out = np.full((read.size, 4), np.nan)
    order = np.empty((runs, 0), dtype=np.int64)
    j = 0
    for t in range(eta.size + 1):
        if t == read[j]:
            outputs = f0 + np.einsum("ick,sk->sic", M, z)
            values = _losses(outputs, Y, loss)
            acc = np.mean(outputs.argmax(axis=-1) == labels) if loss == "ce" else np.nan
            low, high = np.percentile(values, [10, 90])
            out[j] = (values.mean(), low, high, acc)
            j += 1
            if j == read.size or (stop_below is not None and high <= stop_below):
                return out
        if t == eta.size:
            return out
        if order.shape[1] < batch_size:
            order = np.argsort(rng.random((runs, n)), axis=1)[:, : epoch * batch_size]
        batch, order = order[:, :batch_size], order[:, batch_size:]
        Mb = M[batch]  # (runs, B, C, r)
        outputs = f0[batch] + np.einsum("sbck,sk->sbc", Mb, z)
        grad = lam * np.einsum("sbc,sbck->sk", _residual(outputs, Y[batch], loss), Mb) / batch_size
        if wd:
            grad += wd * (drift + z)
        v = momentum * v + grad
        z -= eta[t] * v
    return out
