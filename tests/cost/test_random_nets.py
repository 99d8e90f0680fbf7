"""The calibration's random layers and networks: every kind builds and trains a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ttp_search.cost.random_nets import LAYER_KINDS, random_layer, random_network
from ttp_search.cost.step import training_loss


def _train_step(module: nn.Module, shape: tuple[int, ...], batch: int) -> None:
    x = torch.randn(batch, *shape, requires_grad=True).clone()
    training_loss(module(x)).backward()


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_every_layer_kind_builds_and_backpropagates(kind):
    rng = np.random.default_rng(3)
    built = 0
    for _ in range(6):
        with torch.device("meta"):
            module, shape, batch = random_layer(rng, kind)
        if (
            batch * int(np.prod(shape)) > 2_000_000
            or sum(p.numel() for p in module.parameters()) > 5_000_000
        ):
            continue  # the calibration skips sizes this large too
        module = module.to_empty(device="cpu")
        for p in module.parameters():
            torch.nn.init.normal_(p, 0.0, 0.02)
        for b in module.buffers():
            b.fill_(1) if b.is_floating_point() else b.zero_()
        try:
            _train_step(module.train(), shape, batch)
        except (RuntimeError, ValueError):
            continue  # the calibration skips invalid draws (e.g. batch norm of one value)
        built += 1
    assert built >= 1, f"no draw of {kind!r} trained"


def test_grouped_convolutions_lie_between_dense_and_depthwise():
    rng = np.random.default_rng(0)
    for _ in range(50):
        with torch.device("meta"):
            conv, (channels, *_), _ = random_layer(rng, "gconv")
        assert isinstance(conv, nn.Conv2d)
        assert 2 <= conv.groups < channels
        assert 4 <= channels // conv.groups <= 64


def test_random_networks_are_reproducible_by_seed():
    def shapes(seed: int) -> list:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(10):
            net, shape, batch = random_network(rng)
            out.append((shape, batch, [tuple(p.shape) for p in net.parameters()]))
        return out

    assert shapes(5) == shapes(5)
    assert shapes(5) != shapes(6)
