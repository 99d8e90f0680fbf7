"""The MSE recursion of the linearized SGD dynamics, compiled (numba).

One run of a learning-rate schedule, step by step, over curvature bins. Per direction of
curvature κ the residual is ``a(t) = α(t)·a0 + β(t)·p`` (``p = drift − a0``; weight decay ω
pulls by ``ω·p``), where α and β follow PyTorch's heavy-ball update and depend on κ only, so a
bin needs its directions' ``Σa0²``, ``Σa0·p`` and ``Σp²``. SGD noise adds an
Ornstein–Uhlenbeck variance per direction, fed by the current loss (see ``sde.py``).

Budget searches run this thousands of times per study with tens to hundreds of bins: the
per-step work is a few hundred flops, which numpy spends mostly in call overhead (~40 µs per
step); compiled, a step costs about a microsecond.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, error_model="numpy")
def mse_run(
    eta: np.ndarray,
    read: np.ndarray,
    kappa: np.ndarray,
    count: np.ndarray,
    s_aa: np.ndarray,
    s_ap: np.ndarray,
    s_pp: np.ndarray,
    noise: float,
    momentum: float,
    wd: float,
    nC: float,
) -> np.ndarray:
    """Run the schedule ``eta`` (one learning rate per step) and read the loss at ``read``.

    ``read``: sorted steps in [0, len(eta)]. Returns (len(read), 2): the expected loss (mean
    over samples and outputs) and its standard deviation over SGD's sampling.
    ``noise``: (1/B − 1/N) × n, the minibatch noise's scale.
    """
    bins = kappa.size
    alpha = np.ones(bins)
    v_alpha = np.zeros(bins)
    beta = np.zeros(bins)
    v_beta = np.zeros(bins)
    var = np.zeros(bins)  # the OU variance of one direction of each bin
    energy = s_aa.copy()
    var_sum = 0.0
    eff = 1.0 / (1.0 - momentum)
    out = np.empty((read.size, 2))
    r = 0
    steps = eta.size
    gain = np.empty(bins)
    keep = np.empty(bins)
    for t in range(steps + 1):
        while r < read.size and read[r] == t:
            sq = 0.0
            for k in range(bins):
                sq += count[k] * 2.0 * var[k] * var[k] + 4.0 * energy[k] * var[k]
            out[r, 0] = (energy.sum() + var_sum) / nC
            out[r, 1] = math.sqrt(max(sq, 0.0)) / nC
            r += 1
        if t == steps or r == read.size:
            break
        e = eta[t]
        lr_eff = e * eff
        total = 0.0
        for k in range(bins):
            # Exact at every rate: a direction too sharp for this step size (η κ above
            # 2 (1 + m)) diverges, as it does in the linearized network and, measured on a
            # pretrained CIFAR ResNet fine-tuned with MSE, in the real one (StepsEstimate.stable
            # says so before any run).
            k_t = kappa[k]
            if wd != 0.0:
                k_d = k_t + wd
                v_beta[k] = momentum * v_beta[k] + k_d * beta[k] + wd
                beta[k] -= e * v_beta[k]
                g_alpha = k_d * alpha[k]
            else:
                g_alpha = k_t * alpha[k]
            v_alpha[k] = momentum * v_alpha[k] + g_alpha
            alpha[k] -= e * v_alpha[k]
            en = alpha[k] * alpha[k] * s_aa[k]
            if wd != 0.0:
                en += beta[k] * (2.0 * alpha[k] * s_ap[k] + beta[k] * s_pp[k])
            energy[k] = en
            total += en
            # Ornstein–Uhlenbeck variance, momentum as the effective rate η/(1 − m).
            k_v = k_t
            if lr_eff * k_v > 1.0:
                k_v = 1.0 / lr_eff
            damp = min(lr_eff * (k_v + wd), 1.0)
            keep[k] = (1.0 - damp) ** 2
            gain[k] = noise * (lr_eff * k_v) ** 2
        loss_t = (total + var_sum) / nC
        # The noise grows with the loss it raises; past a total gain of 1 the linear model
        # would feed on itself and explode, which real SGD does not do: cap it at 0.5.
        loop = 0.0
        for k in range(bins):
            loop += gain[k] / max(1.0 - keep[k], 1e-12) * count[k]
        loop /= nC
        scale = 0.5 / loop if loop > 0.5 else 1.0
        var_sum = 0.0
        for k in range(bins):
            var[k] = keep[k] * var[k] + scale * gain[k] * loss_t
            var_sum += var[k] * count[k]
    return out
