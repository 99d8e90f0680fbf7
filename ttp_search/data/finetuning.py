"""A small pretrained network and a fine-tuning set, made offline: the task the fine-tuning
study and its benchmark search over (a stand-in for your own pretrained backbone)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ttp_search._cache import atomic_write_bytes, cache_dir
from ttp_search.data.datasets import digits


@dataclass(frozen=True)
class FinetuningTask:
    """A pretrained ``model``, the fine-tuning set (``inputs``, one-hot ``targets``, trained
    with MSE) and the model's ``blocks`` (name -> parameter-name prefixes)."""

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    blocks: dict[str, list[str]]


def _network() -> nn.Module:
    body = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
    )
    return nn.Sequential(body, nn.Linear(64, 5))


def digits_finetuning(seed: int = 0) -> FinetuningTask:
    """A CNN pretrained on scikit-learn's digits 0-4 (upsampled to 16x16), its fresh head
    linear-probed (MSE) on digits 5-9, which are the fine-tuning set (LP-FT). The weights are
    cached after the first call (a few seconds), written atomically for concurrent workers."""
    x, y, _, _ = digits()
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x_ft, y_ft = x[y >= 5], F.one_hot(y[y >= 5] - 5, 5).float()
    blocks = {"convs": ["0.0.", "0.2."], "dense": ["0.6."], "head": ["1."]}
    net, path = _network(), cache_dir() / f"finetune_backbone_digits16_s{seed}.pt"
    if path.exists():
        net.load_state_dict(torch.load(path, weights_only=True))
        return FinetuningTask(net, x_ft, y_ft, blocks)
    torch.manual_seed(seed)
    pre, source = nn.Sequential(net[0], nn.Linear(64, 5)), y < 5
    _fit(pre, x[source], y[source], F.cross_entropy, 300)
    with torch.no_grad():
        features = net[0](x_ft)
    _fit(net[1], features, y_ft, F.mse_loss, 200)  # linear probe: FT starts from a fit head
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return FinetuningTask(net, x_ft, y_ft, blocks)


def _fit(module: nn.Module, inputs, targets, loss_fn, steps: int) -> None:
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        idx = torch.randint(len(targets), (64,))
        loss = loss_fn(module(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
