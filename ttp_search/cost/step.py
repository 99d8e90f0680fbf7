"""What "one training step" means, shared by prediction and measurement.

A step is: ``zero_grad`` → forward → loss → backward → ``optimizer.step()``, with the model
in train mode. Cross-entropy when the model outputs ``(batch, classes)`` logits, MSE
against zeros otherwise. Keeping this in one place makes the predicted and the measured
step the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ttp_search.cost._timing import median_time
from ttp_search.errors import InvalidInputError

#: Optimizer kinds the cost model is calibrated for, with the settings used to time them.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
    "sgd": (torch.optim.SGD, {"lr": 1e-3}),
    "momentum": (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 1e-4}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-4, "weight_decay": 0.01}),
}


def check_optimizer(kind: str) -> str:
    """Normalise an optimizer name; raise naming the bad value otherwise."""
    if not isinstance(kind, str) or kind.lower() not in OPTIMIZERS:
        raise InvalidInputError(f"unknown optimizer {kind!r}; expected one of {sorted(OPTIMIZERS)}")
    return kind.lower()


def build_optimizer(kind: str, params: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    cls, kwargs = OPTIMIZERS[check_optimizer(kind)]
    return cls(params, **kwargs)


def check_step_args(
    model: object, input_shape: Sequence[int], batch_size: int
) -> tuple[tuple[int, ...], int]:
    """Validate the inputs every step function takes; return them normalised."""
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"input_shape must be a sequence of positive integers, got {input_shape!r}"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise InvalidInputError(
            f"input_shape must be a non-empty sequence of positive integers, got {input_shape!r}"
        )
    return shape, batch_size


def first_tensor(output: object) -> torch.Tensor:
    """The tensor a loss is computed from (models may return tuples or named tuples)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    leaves, _ = tree_flatten(output)
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return leaf
    raise InvalidInputError(f"model returned no floating-point tensor: {type(output).__name__}")


def training_loss(output: object) -> torch.Tensor:
    """Cross-entropy for ``(batch, classes)`` logits, MSE against zeros otherwise."""
    out = first_tensor(output)
    if out.dim() == 2 and out.shape[1] > 1:
        target = torch.zeros(out.shape[0], dtype=torch.long, device=out.device)
        return nn.functional.cross_entropy(out, target)
    return nn.functional.mse_loss(out, torch.zeros_like(out))


def model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@dataclass(frozen=True)
class MeasuredStep:
    """Ground truth: the median wall-clock seconds of one training step."""

    step_time_s: float
    samples_s: list[float]
    device: str
    threads: int
    optimizer: str
    batch_size: int
    input_shape: tuple[int, ...]


def measure_step_time(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    optimizer: str = "sgd",
    *,
    warmup: int = 2,
    repeats: int = 5,
    max_total_s: float | None = 60.0,
) -> MeasuredStep:
    """Run real training steps and return their median time (the cost model's ground truth).

    Uses random inputs on the model's device. The model is put in train mode and restored
    afterwards; its weights and optimizer state are changed by the steps taken.
    """
    shape, batch_size = check_step_args(model, input_shape, batch_size)
    kind = check_optimizer(optimizer)
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(kind, params) if params else None
    x = torch.randn(batch_size, *shape, device=device)
    was_training = model.training
    model.train()

    def step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        loss = training_loss(model(x))
        loss.backward()
        if opt is not None:
            opt.step()

    try:
        result = median_time(
            step,
            warmup=warmup,
            repeats=repeats,
            max_total_s=max_total_s,
            min_repeats=min(3, repeats),
            device=device,
        )
    except (RuntimeError, ValueError) as exc:
        raise InvalidInputError(
            f"{type(model).__name__} cannot run a training step on input shape "
            f"{(batch_size, *shape)}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    return MeasuredStep(
        step_time_s=result.median_s,
        samples_s=result.samples_s,
        device=device_name(device),
        threads=torch.get_num_threads(),
        optimizer=kind,
        batch_size=batch_size,
        input_shape=shape,
    )


def device_name(device: torch.device | str) -> str:
    """A human-readable device name: the GPU model or the CPU model string."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ttp_search.cost.cache import cpu_model_name

    return cpu_model_name()
