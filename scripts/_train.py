"""A plain, recorded training loop shared by the data-set and schedule scripts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ttp_search.budget import LinearDecayLR


def lr_scheduler(kind: str, opt: torch.optim.Optimizer, total_steps: int):
    """constant | step (÷10 at 50% and 75%, the classic recipe) | cosine | linear (Li et al.)."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    if kind == "step":
        marks = [int(total_steps * 0.5), int(total_steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(opt, marks, gamma=0.1)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total_steps)
    if kind == "linear":
        return LinearDecayLR(opt, total_steps)
    raise ValueError(f"unknown schedule {kind!r}")


@dataclass
class Record:
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    step_time_s: list[float] = field(default_factory=list)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    model.train()
    return float(nn.functional.cross_entropy(logits, y)), float(
        (logits.argmax(1) == y).float().mean()
    )


def train(
    model: nn.Module,
    data,
    *,
    lr: float,
    batch_size: int,
    total_steps: int,
    schedule: str = "constant",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> Record:
    """SGD for exactly ``total_steps`` steps; validation at every epoch end and at the end."""
    x_tr, y_tr, x_va, y_va = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = lr_scheduler(schedule, opt, total_steps)
    steps_per_epoch = math.ceil(len(y_tr) / batch_size)
    rec = Record()
    step = 0
    model.train()
    while step < total_steps:
        perm = torch.randperm(len(y_tr), generator=gen)
        start = time.perf_counter()
        n_in_epoch = 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            value = float(loss)
            rec.train_loss.append(value if math.isfinite(value) else float("nan"))
            step += 1
            n_in_epoch += 1
            if step >= total_steps:
                break
        rec.step_time_s.append((time.perf_counter() - start) / n_in_epoch)
        vl, va = evaluate(model, x_va, y_va)
        rec.val_loss.append(vl)
        rec.val_acc.append(va)
    return rec


def sig(values, digits: int = 5) -> list[float]:
    """Round for storage: 5 significant digits is far below the curves' own noise."""
    arr = np.asarray(values, dtype=np.float64)
    out = []
    for v in arr:
        out.append(float(f"{v:.{digits}g}") if math.isfinite(v) else None)
    return out
