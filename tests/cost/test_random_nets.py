"""The calibration's random layers and networks: every kind builds and trains a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ttp_search.cost.calibrate import _materialize
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
            continue  # kept small for the test's speed (the calibration's caps are larger)
        module = _materialize(module, torch.device("cpu"))
        try:
            _train_step(module, shape, batch)
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
