"""The pretrained backbones bench-steps fine-tunes; every one is pretrained here (no downloads).

Each setup pretrains a body on classes 0-4 of its data set, then puts a fresh 5-way head on
it, linear-probes the head on classes 5-9 with the configuration's loss and hands the whole
network over for fine-tuning (LP-FT: fine-tuning starts from a trained head, the regime in
which the linearization is meant to hold). From the probe on the model is in eval mode:
BatchNorm's statistics stay frozen during fine-tuning, as the linearization assumes.

- ``digits-cnn``: a 13k-parameter CNN on scikit-learn's 8x8 digits (675 fine-tuning samples).
- ``mnist1d-cnn``: a 1-D CNN on MNIST-1D (1,000 fine-tuning samples).
- ``resnet18``: torchvision's ResNet-18 (``BasicBlock``, [2, 2, 2, 2]) at a quarter of its
  width (16 channels in the stem, 0.7M parameters) with a CIFAR-style stem (3x3, stride 1,
  no max-pool) for the 8x8 digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ttp_search.data import digits, mnist1d


@dataclass(frozen=True)
class Setup:
    name: str
    #: loss -> (model ready to fine-tune, (fine-tuning inputs, class labels))
    build: Callable[[str], tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]]
    max_steps: int
    every: int  # the full training loss is recorded every this many steps


def targets_for(loss: str, y: torch.Tensor) -> torch.Tensor:
    return y if loss == "ce" else F.one_hot(y, 5).float()


def lp_ft(
    make_body: Callable[[], nn.Module],
    features: int,
    source: tuple[torch.Tensor, torch.Tensor],
    target: tuple[torch.Tensor, torch.Tensor],
    loss: str,
    seed: int = 0,
    pretrain_steps: int = 300,
) -> nn.Module:
    """Pretrain ``make_body()`` + a head on ``source`` (CE), then a fresh head probed on
    ``target`` with ``loss``; returns the body with the probed head, in eval mode."""
    torch.manual_seed(seed)
    body = make_body()
    net = nn.Sequential(body, nn.Linear(features, 5))
    xs, ys = source
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(pretrain_steps):
        idx = torch.randint(len(ys), (64,))
        step_loss = F.cross_entropy(net(xs[idx]), ys[idx])
        opt.zero_grad()
        step_loss.backward()
        opt.step()
    torch.manual_seed(seed + 1)
    model = nn.Sequential(body, nn.Linear(features, 5)).eval()
    xt, yt = target
    with torch.no_grad():
        feats = body(xt)
    head_opt = torch.optim.SGD(model[1].parameters(), lr=0.1, momentum=0.9)
    probe_targets = targets_for(loss, yt)
    probe_loss = F.cross_entropy if loss == "ce" else F.mse_loss
    for _ in range(200):
        idx = torch.randint(len(yt), (64,))
        step_loss = probe_loss(model[1](feats[idx]), probe_targets[idx])
        head_opt.zero_grad()
        step_loss.backward()
        head_opt.step()
    return model


def _split(x: torch.Tensor, y: torch.Tensor, limit: int | None = None):
    src, dst = y < 5, y >= 5
    x_ft, y_ft = x[dst][:limit], y[dst][:limit] - 5
    return (x[src], y[src]), (x_ft, y_ft)


def digits_cnn_body() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 64),
        nn.ReLU(),
    )


def mnist1d_cnn_body() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(16, 32, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Linear(128, 64),
        nn.ReLU(),
    )


def resnet18_body(width: int = 16) -> nn.Module:
    """torchvision's ResNet-18 at ``width`` channels in the stem (64 in the original)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [2, 2, 2, 2])
    net.inplanes = width
    net.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.maxpool = nn.Identity()
    net.layer1 = net._make_layer(BasicBlock, width, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * width, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, 2, stride=2)
    net.fc = nn.Identity()
    return net


def _digits(make_body, features):
    def build(loss: str):
        x, y, _, _ = digits()
        source, target = _split(x, y)
        return lp_ft(make_body, features, source, target, loss), target

    return build


def _mnist1d(loss: str):
    x, y, _, _ = mnist1d()
    source, target = _split(x, y, limit=1000)
    return lp_ft(mnist1d_cnn_body, 64, source, target, loss, pretrain_steps=600), target


SETUPS = {
    s.name: s
    for s in (
        Setup("digits-cnn", _digits(digits_cnn_body, 64), max_steps=1500, every=5),
        Setup("mnist1d-cnn", _mnist1d, max_steps=1500, every=5),
        Setup("resnet18", _digits(resnet18_body, 128), max_steps=1000, every=10),
    )
}
