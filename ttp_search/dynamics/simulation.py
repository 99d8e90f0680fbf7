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

Every step's weight change lies in the span of ``Jᵀ`` and ``w0``, so a run's weights are
``w0 + Jᵀ a + b w0`` for a coefficient vector ``a`` (n·C) and a scalar ``b`` (standard decay
only); :class:`PathEnd` carries them, and one vector-Jacobian product rebuilds the weights
(:mod:`ttp_search.dynamics.linearity`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_softmax

from ttp_search.dynamics._sparse import csr_matrix


def _residual(outputs: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """∂ℓ_i/∂f_i per sample (CE: softmax − one-hot; MSE: the mean over C outputs')."""
    if loss == "ce":
        return np.exp(log_softmax(outputs, axis=-1)) - targets
    return 2.0 * (outputs - targets) / outputs.shape[-1]


def run_losses(outputs: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """The mean training loss of each run (``outputs``: (runs, n, C))."""
    if loss == "ce":
        return -np.mean(np.sum(targets * log_softmax(outputs, axis=-1), axis=-1), axis=-1)
    return np.mean((outputs - targets) ** 2, axis=(-2, -1))


@dataclass(frozen=True)
class PathEnd:
    """Where each simulated run stands after its last step: the linearized outputs
    ``outputs`` (runs, n, C) and the weights' coefficients, ``w − w0 = Jᵀ a + b w0`` with
    ``a = coefficients`` (runs, n·C) and ``b = w0_coefficient`` (runs,)."""

    step: int
    outputs: np.ndarray
    coefficients: np.ndarray
    w0_coefficient: np.ndarray


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
    stop_at_accuracy: float | None = None,
    return_path: bool = False,
    batches: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, PathEnd]:
    """``runs`` seeded SGD runs of the schedule ``eta``, read at the sorted steps ``read``.

    ``theta``: (n·C, n·C) Gram (any float dtype; float32 halves the memory traffic),
    ``f0``/``Y``/``d0``: (n, C) outputs, targets (one-hot for CE) and weight-decay
    direction. Returns (len(read), 4): the runs' mean loss, their 10th and 90th percentiles
    and the mean accuracy (NaN for MSE). ``stop_below``: return at the first read whose 90th
    percentile is at or below it (the rows after are NaN); ``stop_at_accuracy``: at the first
    read whose mean accuracy is at or above it. ``return_path``: also return the
    :class:`PathEnd` of the step the simulation stopped at. ``batches``: (runs, steps,
    batch_size) sample indices to step on instead of seeded shuffling, e.g. a recorded run's
    (``runs`` and ``batch_size`` then come from its shape).
    """
    n, C = f0.shape
    if batches is not None:
        batches = np.asarray(batches, dtype=np.int64)
        runs, _, batch_size = batches.shape
    theta_t = torch.from_numpy(np.ascontiguousarray(theta))  # shares Θ's memory
    rng = np.random.default_rng(seed)
    epoch = n // batch_size
    F = np.broadcast_to(f0, (runs, n, C)).copy()
    V = np.zeros((runs, n * C))
    labels = Y.argmax(axis=1)
    columns = np.arange(C)
    out = np.full((read.size, 4), np.nan)
    order = np.empty((runs, 0), dtype=np.int64)
    row_starts = torch.arange(0, runs * batch_size * C + 1, batch_size * C)
    # The weights' coefficients and their velocity (tracked only when asked for).
    A, VA = (np.zeros((runs, n * C)), np.zeros((runs, n * C))) if return_path else (None, None)
    b, vb = np.zeros(runs), np.zeros(runs)
    toward_zero = bool(wd) and bool(np.any(d0))  # decay toward w0 passes d0 = 0

    def done(t: int):
        if not return_path:
            return out
        return out, PathEnd(t, F.copy(), A.copy(), b.copy())

    j = 0
    for t in range(eta.size + 1):
        if t == read[j]:
            values = run_losses(F, Y, loss)
            acc = np.mean(F.argmax(axis=-1) == labels) if loss == "ce" else np.nan
            low, high = np.percentile(values, [10, 90])
            out[j] = (values.mean(), low, high, acc)
            j += 1
            if (
                j == read.size
                or (stop_below is not None and high <= stop_below)
                or (stop_at_accuracy is not None and acc >= stop_at_accuracy)
            ):
                return done(t)
        if t == eta.size:
            return done(t)
        if batches is not None:
            batch = batches[:, t]
        else:
            if order.shape[1] < batch_size:
                order = np.argsort(rng.random((runs, n)), axis=1)[:, : epoch * batch_size]
            batch, order = order[:, :batch_size], order[:, batch_size:]
        rows = (batch[..., None] * C + columns).reshape(runs, -1)  # (runs, B·C)
        grad = _residual(np.take_along_axis(F, batch[..., None], axis=1), Y[batch], loss)
        grad = grad.reshape(runs, -1).astype(theta.dtype) / batch_size
        # A confident network's softmax has probabilities below float32's smallest normal
        # number, and products with subnormals run several times slower: flush them to 0.
        grad[np.abs(grad) < np.finfo(grad.dtype).tiny] = 0.0
        # Θ is symmetric, so the kick is the batch's rows of Θ weighted by the gradient: a
        # sparse (runs, n·C) matrix times Θ reads only those rows, without copying them out
        # (torch's CSR product runs on every core; scipy's on one.)
        kick = csr_matrix(
            row_starts, torch.from_numpy(rows.ravel()), torch.from_numpy(grad.ravel()),
            (runs, n * C),
        )  # fmt: skip
        kick = (kick @ theta_t).numpy()
        if wd:
            kick = kick + wd * (d0.ravel() + (F - f0).reshape(runs, -1))
        V = momentum * V + kick
        F -= eta[t] * V.reshape(runs, n, C)
        if return_path:
            # The same step on the coefficients: the batch's gradient enters at its rows,
            # decay toward 0 adds ω (w0 + Jᵀ a + b w0).
            step = np.zeros((runs, n * C))
            np.put_along_axis(step, rows, grad.reshape(runs, -1).astype(np.float64), axis=1)
            if wd:
                step += wd * A
            VA = momentum * VA + step
            A -= eta[t] * VA
            if toward_zero:
                vb = momentum * vb + wd * (1.0 + b)
                b = b - eta[t] * vb
    return done(eta.size)
