"""Exact linearized fine-tuning: SGD on ``f0 + J (w − w0)`` in parameter space.

The ground truth the linearized SDE is measured against first: the same network linearized
at its pretrained weights, trained by PyTorch's own ``torch.optim.SGD`` (heavy-ball momentum,
weight decay toward 0, any learning-rate schedule) on the same minibatches a real run would
draw, with no sketch, no eigen-truncation and no continuous-time limit. The Jacobian is
never formed: each step evaluates ``J δ`` with ``torch.func.jvp`` inside the loss and
differentiates through it.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn import functional as F

from ttp_search._checks import check_int, check_real
from ttp_search.budget.schedule import ScheduleLike
from ttp_search.dynamics.sde import Loss, check_hyperparameters, schedule_factors
from ttp_search.errors import InvalidInputError


def _loss(outputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> torch.Tensor:
    if loss == "ce":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs, targets)


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

    Minibatches are drawn without replacement within each epoch (a fresh seeded permutation
    per epoch, the last short batch dropped), as ``DataLoader(shuffle=True, drop_last=True)``
    does; ``batch_size`` equal to the data set's size is full-batch gradient descent.
    ``trainable``: parameter-name prefixes to fine-tune (default: every parameter that
    requires grad). The model runs in eval mode (BatchNorm statistics frozen) and is not
    modified. Returns a DataFrame with ``step``, ``loss`` and ``accuracy``.
    """
    if loss not in ("ce", "mse"):
        raise InvalidInputError(f"loss must be 'ce' or 'mse', got {loss!r}")
    steps = check_int("steps", steps, 1)
    eval_every = check_int("eval_every", eval_every, 1)
    check_hyperparameters(lr, batch_size, momentum, weight_decay, steps, "standard")
    n = inputs.shape[0]
    if batch_size > n:
        raise InvalidInputError(f"batch_size {batch_size} is larger than the data set ({n})")
    check_real("lr", lr, low=0, low_open=True)
    factors = schedule_factors(schedule, steps)

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if trainable is not None:
        params = {k: v for k, v in params.items() if any(k.startswith(p) for p in trainable)}
        if not params:
            raise InvalidInputError(f"trainable {trainable!r} matches no parameter")
    fixed = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    was_training = model.training
    model.eval()
    try:
        return _run(
            model,
            params,
            fixed,
            buffers,
            inputs,
            targets,
            lr,
            batch_size,
            steps,
            momentum,
            weight_decay,
            factors,
            loss,
            eval_every,
            seed,
        )
    finally:
        model.train(was_training)


def _run(
    model,
    params,
    fixed,
    buffers,
    inputs,
    targets,
    lr,
    batch_size,
    steps,
    momentum,
    weight_decay,
    factors,
    loss,
    eval_every,
    seed,
) -> pd.DataFrame:
    def f(p, x):
        return functional_call(model, ({**fixed, **p}, buffers), (x,))

    def linear(delta, x):
        out, tangent = jvp(lambda p: f(p, x), (params,), (delta,))
        return out + tangent

    with torch.no_grad():
        f0 = f(params, inputs)
    delta = {k: torch.zeros_like(v, requires_grad=True) for k, v in params.items()}
    # PyTorch's SGD adds weight_decay * w = weight_decay * (w0 + δ): the optimizer adds the
    # δ part, the w0 part is added to the gradient by hand.
    opt = torch.optim.SGD(list(delta.values()), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    rows = []

    def record(step: int) -> None:
        with torch.no_grad():
            _, tangent = jvp(
                lambda p: f(p, inputs), (params,), ({k: d.detach() for k, d in delta.items()},)
            )
            out = f0 + tangent
            value = float(_loss(out, targets, loss))
            acc = float((out.argmax(1) == targets).float().mean()) if loss == "ce" else float("nan")
        rows.append((step, value, acc))

    record(0)
    n = inputs.shape[0]
    for step in range(steps):
        if order.numel() < batch_size:
            order = torch.randperm(n, generator=gen)
        batch, order = order[:batch_size], order[batch_size:]
        for group in opt.param_groups:
            group["lr"] = lr * float(factors[step])
        opt.zero_grad(set_to_none=False)
        _loss(linear(delta, inputs[batch]), targets[batch], loss).backward()
        if weight_decay:
            with torch.no_grad():
                for k, d in delta.items():
                    d.grad.add_(params[k], alpha=weight_decay)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            record(step + 1)
    return pd.DataFrame(rows, columns=["step", "loss", "accuracy"])
