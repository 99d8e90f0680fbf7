"""The samples the dynamics are computed on: the checked data, its seeded subset, the outputs
at the pretrained weights and the encoded targets."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from ttp_search._checks import check_int
from ttp_search.errors import InvalidInputError

Loss = Literal["ce", "mse"]
#: How minibatch noise is predicted: ``"simulated"`` (seeded SGD runs on the linearized
#: network, exact in distribution; a step costs a gather of the batch's Gram rows) or
#: ``"gaussian"`` (MSE only: the closed-form Ornstein-Uhlenbeck model, milliseconds per
#: prediction whatever the steps, but it can reach targets sooner than the linearized
#: network does; BENCHMARKS.md, "MSE fine-tuning").
Noise = Literal["simulated", "gaussian"]


def check_noise(noise: object, loss: str) -> str:
    """A valid noise model for ``loss``, or an :class:`InvalidInputError` naming it."""
    if noise not in ("simulated", "gaussian"):
        raise InvalidInputError(f"noise must be 'simulated' or 'gaussian', got {noise!r}")
    if noise == "gaussian" and loss != "mse":
        raise InvalidInputError(
            f"noise='gaussian' is the MSE closed form; loss {loss!r} needs noise='simulated'"
        )
    return str(noise)


def sample_indices(num_data: int, num_samples: int, seed: int) -> torch.Tensor:
    """Which of the ``num_data`` samples the dynamics are computed on, in the SDE's order."""
    order = torch.randperm(num_data, generator=torch.Generator().manual_seed(seed))
    return order[: min(num_samples, num_data)]


def sample_outputs(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss: Loss,
    num_samples: int,
    seed: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
    """Check the data, draw the ``num_samples`` subset the dynamics are computed on, and return
    (its inputs, the outputs ``f0`` at the pretrained weights, the encoded targets, N)."""
    if loss not in ("ce", "mse"):
        raise InvalidInputError(f"loss must be 'ce' or 'mse', got {loss!r}")
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise InvalidInputError("inputs and targets must be tensors")
    if inputs.shape[0] == 0:
        raise InvalidInputError("the data set is empty")
    if targets.shape[0] != inputs.shape[0]:
        raise InvalidInputError(
            f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) differ in length"
        )
    num_samples = check_int("num_samples", num_samples, 1)
    for name, tensor in (("inputs", inputs), ("targets", targets)):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InvalidInputError(
                f"{name} hold {bad} non-finite values (NaN or inf): every prediction would be "
                "inf; clean the data first"
            )
    N = int(inputs.shape[0])
    idx = sample_indices(N, num_samples, seed)
    x = inputs[idx]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            f0 = model(x).detach().to(torch.float64)
    finally:
        model.train(was_training)
    if f0.ndim == 1:
        f0 = f0[:, None]
    if not bool(torch.isfinite(f0).all()):
        raise InvalidInputError(
            "the model's outputs at its current weights are not finite (NaN or inf): check "
            "the weights"
        )
    return x, f0.numpy(), _encode_targets(targets[idx], loss, f0.shape[1]), N


def _encode_targets(y: torch.Tensor, loss: str, C: int) -> np.ndarray:
    if loss == "ce":
        if y.dtype.is_floating_point or y.ndim != 1:
            raise InvalidInputError(
                f"cross-entropy targets must be integer class labels of shape (N,), "
                f"got {tuple(y.shape)} {y.dtype}"
            )
        if y.min() < 0 or y.max() >= C:
            raise InvalidInputError(
                f"labels must be in [0, {C}): the model has {C} outputs, "
                f"labels span [{int(y.min())}, {int(y.max())}]"
            )
        return np.eye(C)[y.numpy()]
    y = y.to(torch.float64)
    if y.ndim == 1 and C == 1:
        y = y[:, None]
    if tuple(y.shape[1:]) != (C,):
        raise InvalidInputError(
            f"MSE targets must match the outputs' shape (N, {C}), got "
            f"{tuple(y.shape[1:])} per sample"
        )
    return y.numpy()
