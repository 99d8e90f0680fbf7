"""Exact linearized fine-tuning: SGD on ``f0 + J (w − w0)`` in parameter space.

The ground truth the linearized SDE is measured against first: the same network linearized
at its pretrained weights, trained by PyTorch's own ``torch.optim.SGD`` (heavy-ball momentum,
weight decay toward 0, any learning-rate schedule) on the same minibatches a real run would
draw, with no sketch, no eigen-truncation and no continuous-time limit. The Jacobian is
never formed: each step evaluates ``J δ`` with ``torch.func.jvp`` inside the loss and
differentiates through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn import functional as F

from ttp_search._checks import check_int
from ttp_search.budget.schedule import ScheduleLike
from ttp_search.dynamics.hyperparameters import check_hyperparameters, schedule_factors
from ttp_search.dynamics.samples import Loss
from ttp_search.errors import InvalidInputError


def _loss(outputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs, targets)


def shuffled_batches(num_data: int, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """Indices of minibatches as ``DataLoader(shuffle=True, drop_last=True)`` draws them:
    a fresh seeded permutation per epoch, the last short batch dropped (forever).

    Raises ``InvalidInputError`` at the call when ``batch_size`` exceeds ``num_data``: with
    the short batch dropped, no batch would ever come (the generator would spin).
    """
    num_data = check_int("num_data", num_data, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    if batch_size > num_data:
        raise InvalidInputError(
            f"batch_size {batch_size} is larger than the data set ({num_data} samples)"
        )
    return _batches(num_data, batch_size, seed)


def _batches(num_data: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num_data, generator=gen)
        for start in range(0, num_data - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def linearized_sgd(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    lr: float,
    batch_size: int,
    steps: int,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    schedule: ScheduleLike = "constant",
    loss: Loss = "ce",
    eval_every: int = 5,
    seed: int = 0,
    trainable: list[str] | None = None,
) -> pd.DataFrame:
    """Train the linearization of ``model`` at its current weights and record the full
    training loss (and accuracy for cross-entropy) every ``eval_every`` steps.

    Minibatches come from :func:`shuffled_batches`; ``batch_size`` equal to the data set's
    size is full-batch gradient descent. ``trainable``: parameter-name prefixes to
    fine-tune (default: every parameter that requires grad). The model runs in eval mode
    (BatchNorm statistics frozen) and is not modified. Returns a DataFrame with ``step``,
    ``loss`` and ``accuracy``.
    """
    if loss not in ("ce", "mse"):
        raise InvalidInputError(f"loss must be 'ce' or 'mse', got {loss!r}")
    eval_every = check_int("eval_every", eval_every, 1)
    check_hyperparameters(lr, batch_size, momentum, weight_decay, steps, "standard")
    if batch_size > inputs.shape[0]:
        raise InvalidInputError(
            f"batch_size {batch_size} is larger than the data set ({inputs.shape[0]})"
        )
    lrs = lr * schedule_factors(schedule, steps)
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if trainable is not None:
        params = {k: v for k, v in params.items() if any(k.startswith(p) for p in trainable)}
        if not params:
            raise InvalidInputError(f"trainable {trainable!r} matches no parameter")
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def linearized(delta: dict, x: torch.Tensor) -> torch.Tensor:
        """``f0(x) + J(x) δ``: jvp returns the outputs at w0 and their change along δ."""
        out, change = jvp(
            lambda p: functional_call(model, ({**fixed, **p}, buffers), (x,)), (params,), (delta,)
        )
        return out + change

    delta = {k: torch.zeros_like(v, requires_grad=True) for k, v in params.items()}
    # PyTorch's SGD adds weight_decay * w = weight_decay * (w0 + δ): the optimizer adds the
    # δ part, the w0 part is added to the gradient by hand.
    opt = torch.optim.SGD(list(delta.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rows = []
    was_training = model.training
    model.eval()
    try:
        batches = shuffled_batches(inputs.shape[0], batch_size, seed)
        for step in range(steps + 1):
            if step % eval_every == 0 or step == steps:
                with torch.no_grad():
                    out = linearized({k: d.detach() for k, d in delta.items()}, inputs)
                    acc = (out.argmax(1) == targets).float().mean() if loss == "ce" else math.nan
                    rows.append((step, float(_loss(out, targets, loss)), float(acc)))
            if step == steps:
                break
            batch = next(batches)
            for group in opt.param_groups:
                group["lr"] = float(lrs[step])
            opt.zero_grad(set_to_none=False)
            _loss(linearized(delta, inputs[batch]), targets[batch], loss).backward()
            if weight_decay:
                with torch.no_grad():
                    for k, d in delta.items():
                        d.grad.add_(params[k], alpha=weight_decay)
            opt.step()
    finally:
        model.train(was_training)
    return pd.DataFrame(rows, columns=["step", "loss", "accuracy"])
