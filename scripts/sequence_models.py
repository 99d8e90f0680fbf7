"""bench-cost's sequence split: 1-D models written on 2026-12-08 and scored only after.

The other splits hold one 1-D depthwise model (the held-out split's ``depthwise_cnn1d``),
which steered a change tried the same day (depthwise 1-D convolutions in the calibration;
not kept, BENCHMARKS.md says why). These were written while that change was tested, and
were neither scored under it nor used to decide it. They are the kinds people train on
sequences today: a gated short-convolution block of the kind Mamba and H3 place before their
state-space layer (a 4-tap causal depthwise convolution between two projections),
QuartzNet's time-channel separable blocks (long depthwise kernels, then pointwise), ConvNeXt
blocks over a sequence (7-tap depthwise, layer norm, an MLP), a temporal convolutional
network (dilated causal dense convolutions) and a 1-D MobileNet (strided
depthwise-separable blocks). Inputs are (channels, length); tune nothing on them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHANNELS, LENGTH = 64, 256  # the input every model here takes: (channels, length)


class GatedShortConv(nn.Module):
    """Projection to two streams, a causal depthwise 4-tap convolution and SiLU on one,
    their product, a projection back, a residual (Mamba's block without the scan)."""

    def __init__(self, dim: int = 128, expand: int = 2, taps: int = 4, depth: int = 4):
        super().__init__()
        inner = expand * dim
        self.embed = nn.Linear(CHANNELS, dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "norm": nn.LayerNorm(dim), "proj_in": nn.Linear(dim, 2 * inner),
                "conv": nn.Conv1d(inner, inner, taps, padding=taps - 1, groups=inner),
                "proj_out": nn.Linear(inner, dim),
            })
            for _ in range(depth)
        )  # fmt: skip
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        h = self.embed(x.transpose(1, 2))
        for b in self.blocks:
            u, gate = b["proj_in"](b["norm"](h)).chunk(2, dim=-1)
            u = b["conv"](u.transpose(1, 2))[..., : h.shape[1]].transpose(1, 2)
            h = h + b["proj_out"](F.silu(u) * F.silu(gate))
        return self.head(h.mean(1))


class QuartzNetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, repeat: int = 2):
        super().__init__()
        layers, c = [], cin
        for _ in range(repeat):
            layers += [nn.Conv1d(c, c, kernel, padding=kernel // 2, groups=c, bias=False),
                       nn.Conv1d(c, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]  # fmt: skip
            c = cout
        self.body = nn.Sequential(*layers)
        self.skip = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.skip(x))


class QuartzNet(nn.Module):
    """A small QuartzNet (Kriman et al. 2020): separable blocks with 33-63 tap kernels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(CHANNELS, CHANNELS, 33, stride=2, padding=16, groups=CHANNELS),
            nn.Conv1d(CHANNELS, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
        )  # fmt: skip
        self.blocks = nn.Sequential(
            QuartzNetBlock(128, 128, 33), QuartzNetBlock(128, 128, 39), QuartzNetBlock(128, 192, 51)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(192, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class ConvNeXt1D(nn.Module):
    """ConvNeXt blocks over a sequence: 7-tap depthwise, layer norm, 4x MLP, layer scale."""

    def __init__(self, dim: int = 128, depth: int = 4):
        super().__init__()
        self.stem = nn.Conv1d(CHANNELS, dim, 4, stride=4)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "dw": nn.Conv1d(dim, dim, 7, padding=3, groups=dim), "norm": nn.LayerNorm(dim),
                "mlp": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
            })
            for _ in range(depth)
        )  # fmt: skip
        self.scale = nn.ParameterList(nn.Parameter(1e-2 * torch.ones(dim)) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x)
        for b, gamma in zip(self.blocks, self.scale, strict=True):
            y = b["mlp"](b["norm"](b["dw"](x).transpose(1, 2)))
            x = x + (gamma * y).transpose(1, 2)
        return self.head(x.mean(-1))


class TCN(nn.Module):
    """A temporal convolutional network (Bai et al. 2018): dilated causal 3-tap convolutions
    in residual blocks, dilations 1-8."""

    def __init__(self, dim: int = 96):
        super().__init__()
        self.inp = nn.Conv1d(CHANNELS, dim, 1)
        self.convs = nn.ModuleList(self._block(dim, d) for d in (1, 2, 4, 8))
        self.head = nn.Linear(dim, 10)

    @staticmethod
    def _block(dim: int, dilation: int) -> nn.Sequential:
        def causal() -> list[nn.Module]:
            return [
                nn.ConstantPad1d((2 * dilation, 0), 0.0),
                nn.Conv1d(dim, dim, 3, dilation=dilation),
            ]

        return nn.Sequential(*causal(), nn.ReLU(), *causal(), nn.ReLU())

    def forward(self, x):
        x = self.inp(x)
        for conv in self.convs:
            x = F.relu(x + conv(x))
        return self.head(x[..., -1])


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cin, 5, stride=stride, padding=2, groups=cin, bias=False),
        nn.BatchNorm1d(cin), nn.ReLU6(),
        nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout), nn.ReLU6(),
    )  # fmt: skip


class MobileNet1D(nn.Module):
    """A 1-D MobileNet (v1-style): strided 5-tap depthwise-separable blocks, widths 64-256."""

    def __init__(self):
        super().__init__()
        widths = [(CHANNELS, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)]
        self.body = nn.Sequential(*(_separable(a, b, s) for a, b, s in widths))
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(256, 10))

    def forward(self, x):
        return self.head(self.body(x))


def sequence_builders() -> dict:
    """name -> zero-argument builder, for (CHANNELS, LENGTH) inputs."""
    return {
        "gated_short_conv": GatedShortConv,
        "quartznet": QuartzNet,
        "convnext_1d": ConvNeXt1D,
        "tcn": TCN,
        "mobilenet_1d": MobileNet1D,
    }
