"""Minibatch SGD on the linearized network, simulated in function space.

The linearized network's outputs on the n samples are ``F = f0 + J(w − w0)``, and one SGD
step on a minibatch B moves them by exactly

    V ← m V + Θ[:, B] ∇_{F_B} L_B(F_B) + ω (d0 + F − f0),    F ← F − η_t V

(``Θ = J Jᵀ`` the function-space Gram, heavy-ball momentum ``m``, weight decay ``ω`` toward 0
with ``d0 = J w0``, or toward w0 with ``d0 = 0``): a step costs B·C rows of Θ, not a pass
over the weights, and needs no eigen-truncation. Several runs with seeded shuffling-loader
batches (a fresh permutation per epoch, the last short batch dropped) give the expected
loss and its spread directly. This holds where a small-noise (Gaussian) model breaks: when
the per-sample gradients are so large that one minibatch step throws the outputs far
(pretrained ResNets with BatchNorm frozen), the loss rises several-fold before it falls.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def _residual(outputs: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """∂ℓ_i/∂f_i per sample (CE: softmax − one-hot; MSE: the mean over C outputs')."""
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
    theta: np.ndarray,
    f0: np.ndarray,
    Y: np.ndarray,
    d0: np.ndarray,
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

    ``theta``: (n·C, n·C) Gram (any float dtype; float32 halves the memory traffic),
    ``f0``/``Y``/``d0``: (n, C) outputs, targets (one-hot for CE) and weight-decay
    direction. Returns (len(read), 4): the runs' mean loss, their 10th and 90th percentiles
    and the mean accuracy (NaN for MSE). ``stop_below``: return at the first read whose 90th
    percentile is at or below it (the rows after are NaN).
    """
    n, C = f0.shape
    rng = np.random.default_rng(seed)
    epoch = n // batch_size
    F = np.broadcast_to(f0, (runs, n, C)).copy()
    V = np.zeros((runs, n * C))
    labels = Y.argmax(axis=1)
    columns = np.arange(C)
    out = np.full((read.size, 4), np.nan)
    order = np.empty((runs, 0), dtype=np.int64)
    j = 0
    for t in range(eta.size + 1):
        if t == read[j]:
            values = _losses(F, Y, loss)
            acc = np.mean(F.argmax(axis=-1) == labels) if loss == "ce" else np.nan
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
        rows = (batch[..., None] * C + columns).reshape(runs, -1)  # (runs, B·C)
        grad = _residual(np.take_along_axis(F, batch[..., None], axis=1), Y[batch], loss)
        grad = grad.reshape(runs, 1, -1).astype(theta.dtype) / batch_size
        kick = np.matmul(grad, theta[rows]).reshape(runs, n * C)  # Θ is symmetric: rows
        if wd:
            kick = kick + wd * (d0.ravel() + (F - f0).reshape(runs, -1))
        V = momentum * V + kick
        F -= eta[t] * V.reshape(runs, n, C)
    return out
