"""Random layers and random networks for calibration.

Calibration times *these*, never the models a user will ask about: single layers whose ops
become op-level samples, and small random networks whose whole steps teach the model the
per-op overhead that single ops do not show. Sizes are drawn log-uniformly over the range
image classifiers at 32–224 px, MLPs, 1D CNNs and small Transformers actually use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)
SPATIAL = (1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56, 64)


def _logint(rng: np.random.Generator, low: int, high: int, multiple: int = 1) -> int:
    value = round(math.exp(rng.uniform(math.log(low), math.log(high))))
    if multiple > 1 and value >= multiple:
        value = round(value / multiple) * multiple
    return max(low, min(high, value))


class _Act(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.act = {
            "relu": nn.ReLU(inplace=True),
            "relu_out": nn.ReLU(),
            "relu6": nn.ReLU6(inplace=True),
            "gelu": nn.GELU(),
            "silu": nn.SiLU(inplace=True),
            "hardswish": nn.Hardswish(inplace=True),
            "hardsigmoid": nn.Hardsigmoid(),
            "sigmoid": nn.Sigmoid(),
            "tanh": nn.Tanh(),
        }[kind]

    def forward(self, x):
        return self.act(x)


ACTIVATIONS = (
    "relu",
    "relu_out",
    "relu6",
    "gelu",
    "silu",
    "hardswish",
    "hardsigmoid",
    "sigmoid",
    "tanh",
)


class _SE(nn.Module):
    """Squeeze-and-excitation: pooling, two 1x1 convs, a broadcast multiply."""

    def __init__(self, c: int, r: int):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // r), 1)
        self.fc2 = nn.Conv2d(max(1, c // r), c, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        s = self.fc2(nn.functional.relu(self.fc1(s)))
        return x * nn.functional.hardsigmoid(s)


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class _DenseCat(nn.Module):
    def __init__(self, c: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class _Shuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.groups if c % self.groups == 0 else 1
        return x.view(n, g, c // g, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class _ChannelsLastNorm(nn.Module):
    """ConvNeXt's pattern: permute to channels-last, LayerNorm, scale, permute back."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, c)

    def forward(self, x):
        y = self.fc(self.norm(x.permute(0, 2, 3, 1)))
        return y.permute(0, 3, 1, 2)


class _Attention(nn.Module):
    def __init__(self, e: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(e, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


# How often each kind is drawn: convolutions (depthwise above all, whose CPU kernels have
# slow paths at small spatial sizes) and matmuls dominate real steps, so they get more samples.
# Grouped convolutions between dense and depthwise (ResNeXt, RegNet: 4-64 channels per group)
# run other kernels than either, and "conv" draws them only with a few groups.
_LAYER_WEIGHTS = {
    "conv": 5,
    "dwconv": 4,
    "gconv": 2,
    "conv1d": 1,
    "linear": 3,
    "linear3d": 2,
    "bn": 1,
    "act": 1,
    "maxpool": 1,
    "avgpool": 1,
    "se": 1,
    "residual": 1,
    "dense": 1,
    "shuffle": 1,
    "lnorm": 1,
    "attn": 2,
    "vggfc": 1,
    "dropout": 1,
}
LAYER_KINDS = tuple(_LAYER_WEIGHTS)
_LAYER_P = np.array(list(_LAYER_WEIGHTS.values()), dtype=float) / sum(_LAYER_WEIGHTS.values())


def random_layer(
    rng: np.random.Generator, kind: str | None = None
) -> tuple[nn.Module, tuple[int, ...], int]:
    """One random layer (or tiny block) with its input shape (without batch) and batch size.

    ``kind`` picks the layer family (one of :data:`LAYER_KINDS`); by default it is drawn.
    """
    if kind is None:
        kind = str(rng.choice(LAYER_KINDS, p=_LAYER_P))
    n = int(rng.choice(BATCHES))
    hw = int(rng.choice(SPATIAL))
    c = _logint(rng, 3, 1024, 8)
    if kind == "conv":
        k = int(rng.choice([1, 1, 3, 3, 3, 5, 7]))
        stride = int(rng.choice([1, 1, 2]))
        hw = max(hw, k // 2 + 1)
        cout = _logint(rng, 8, 2048, 8)
        g = int(rng.choice([1, 1, 1, 2, 4, 8, 32])) if c % 32 == 0 and cout % 32 == 0 else 1
        layer = nn.Conv2d(c, cout, k, stride, k // 2, groups=g, bias=bool(rng.integers(2)))
        return layer, (c, hw, hw), n
    if kind == "dwconv":
        k = int(rng.choice([3, 3, 5, 5, 7]))
        stride = int(rng.choice([1, 1, 2]))
        c = _logint(rng, 8, 1536, 8)
        # Mobile networks reach 1x1-4x4 maps at small inputs, where depthwise kernels are slow.
        hw = int(rng.choice((1, 2, 3, 4, 7, 8, 14, 16, 28, 32, 56)))
        mult = int(rng.choice([1, 1, 1, 2]))
        layer = nn.Conv2d(c, c * mult, k, stride, k // 2, groups=c, bias=bool(rng.integers(2)))
        return layer, (c, hw, hw), n
    if kind == "gconv":
        width = int(rng.choice([4, 8, 16, 24, 32, 64]))  # channels per group
        groups = _logint(rng, 2, max(2, 1024 // width))
        k = int(rng.choice([1, 3, 3, 3, 5]))
        stride = int(rng.choice([1, 1, 2]))
        hw = max(int(rng.choice((2, 4, 7, 8, 14, 16, 28, 32, 56))), k // 2 + 1)
        c = width * groups
        layer = nn.Conv2d(c, c, k, stride, k // 2, groups=groups, bias=bool(rng.integers(4) == 0))
        return layer, (c, hw, hw), n
    if kind == "conv1d":
        k = int(rng.choice([1, 3, 5, 7, 9]))
        length = _logint(rng, 8, 2048)
        cout = _logint(rng, 8, 512, 8)
        layer = nn.Sequential(
            nn.Conv1d(c, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU()
        )
        return layer, (c, length), n
    if kind in ("linear", "linear3d", "vggfc"):
        fin = (
            _logint(rng, 8, 8192, 8)
            if kind != "vggfc"
            else int(rng.choice([512, 2048, 4608, 25088]))
        )
        fout = _logint(rng, 2, 8192, 2) if kind != "vggfc" else int(rng.choice([10, 1000, 4096]))
        layer = nn.Sequential(
            nn.Linear(fin, fout, bias=bool(rng.integers(4))), _Act(rng.choice(ACTIVATIONS))
        )
        shape = (_logint(rng, 1, 256), fin) if kind == "linear3d" else (fin,)
        return layer, shape, n
    if kind == "bn":
        return nn.BatchNorm2d(c), (c, hw, hw), n
    if kind == "act":
        return _Act(rng.choice(ACTIVATIONS)), (c, hw, hw), n
    if kind in ("maxpool", "avgpool"):
        hw = max(hw, 2)
        if kind == "maxpool":
            layer = [nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2)][int(rng.integers(2))]
        else:
            options = [
                nn.AvgPool2d(2),
                nn.AdaptiveAvgPool2d(1),
                nn.AdaptiveAvgPool2d(7),
                nn.AvgPool2d(3, 1, 1),
            ]
            layer = options[int(rng.integers(len(options)))]
        return nn.Sequential(layer, nn.Flatten()), (c, hw, hw), n
    if kind == "se":
        return _SE(c, int(rng.choice([4, 8, 16]))), (c, hw, hw), n
    if kind == "residual":
        body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )
        return _Residual(body), (c, hw, hw), n
    if kind == "dense":
        return _DenseCat(c, int(rng.choice([12, 32, 48]))), (c, hw, hw), n
    if kind == "shuffle":
        return nn.Sequential(_Shuffle(int(rng.choice([2, 4]))), nn.BatchNorm2d(c)), (c, hw, hw), n
    if kind == "lnorm":
        return _ChannelsLastNorm(c), (c, hw, hw), n
    if kind == "attn":
        heads = int(rng.choice([1, 2, 4, 8, 12]))
        e = heads * _logint(rng, 8, 96, 8)
        seq = _logint(rng, 2, 256)
        body = nn.Sequential(nn.LayerNorm(e), _Attention(e, heads))
        return _Residual(body), (seq, e), n
    dropout = nn.Dropout(float(rng.uniform(0.05, 0.5)), inplace=bool(rng.integers(2)))
    return nn.Sequential(_Act(str(rng.choice(ACTIVATIONS))), dropout), (c, hw, hw), n


def random_network(rng: np.random.Generator) -> tuple[nn.Module, tuple[int, ...], int]:
    """A small random network (CNN, MLP, Transformer or 1D CNN) with its input shape and batch."""
    family = rng.choice(["cnn", "cnn", "cnn", "mlp", "transformer", "cnn1d"])
    n = int(rng.choice((1, 2, 4, 8, 16, 32, 64)))
    classes = int(rng.choice([10, 100, 1000]))
    if family == "mlp":
        width = _logint(rng, 32, 2048, 16)
        depth = int(rng.integers(1, 6))
        fin = _logint(rng, 16, 4096, 16)
        layers: list[nn.Module] = []
        prev = fin
        for _ in range(depth):
            layers += [nn.Linear(prev, width), _Act(rng.choice(ACTIVATIONS))]
            if rng.random() < 0.3:
                layers.append(nn.Dropout(0.1))
            prev = width
        layers.append(nn.Linear(prev, classes))
        return nn.Sequential(*layers), (fin,), n
    if family == "transformer":
        e = int(rng.choice([32, 64, 96, 128, 192, 256]))
        heads = int(rng.choice([h for h in (1, 2, 4, 8) if e % h == 0]))
        seq = _logint(rng, 4, 128)
        layer = nn.TransformerEncoderLayer(
            e,
            heads,
            dim_feedforward=e * int(rng.choice([2, 4])),
            batch_first=True,
            norm_first=bool(rng.integers(2)),
            activation=str(rng.choice(["relu", "gelu"])),
        )
        body = nn.TransformerEncoder(layer, int(rng.integers(1, 5)), enable_nested_tensor=False)
        return nn.Sequential(body, nn.Flatten(), nn.Linear(seq * e, classes)), (seq, e), n
    if family == "cnn1d":
        c = int(rng.choice([1, 8, 16, 40]))
        length = _logint(rng, 32, 1024)
        layers = []
        prev = c
        for _ in range(int(rng.integers(2, 6))):
            width = _logint(rng, 8, 256, 8)
            layers += [nn.Conv1d(prev, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU()]
            if rng.random() < 0.5:
                layers.append(nn.MaxPool1d(2))
                length = max(1, length)
            prev = width
        layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(prev, classes)]
        return nn.Sequential(*layers), (c, length), n
    hw = int(rng.choice([16, 32, 48, 64]))
    width = _logint(rng, 8, 96, 8)
    layers = [
        nn.Conv2d(3, width, 3, int(rng.choice([1, 2])), 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    c = width
    for _stage in range(int(rng.integers(1, 5))):
        for _ in range(int(rng.integers(1, 3))):
            block = rng.choice(["basic", "dw", "dense", "plain"])
            if block == "basic":
                body = nn.Sequential(
                    nn.Conv2d(c, c, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                )
                layers.append(_Residual(body))
            elif block == "dw":
                body = nn.Sequential(
                    nn.Conv2d(c, 4 * c, 1, bias=False),
                    nn.BatchNorm2d(4 * c),
                    _Act("hardswish"),
                    nn.Conv2d(4 * c, 4 * c, 3, padding=1, groups=4 * c, bias=False),
                    nn.BatchNorm2d(4 * c),
                    _SE(4 * c, 4),
                    nn.Conv2d(4 * c, c, 1, bias=False),
                    nn.BatchNorm2d(c),
                )
                layers.append(_Residual(body))
            elif block == "dense":
                layers.append(_DenseCat(c, 16))
                c += 16
            else:
                layers += [nn.Conv2d(c, c, 3, padding=1), _Act(rng.choice(ACTIVATIONS))]
        cout = min(512, c * 2)
        layers += [
            nn.Conv2d(c, cout, 3, 2, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        c = cout
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if rng.random() < 0.3:
        head += [nn.Linear(c, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, classes)]
    else:
        head += [nn.Linear(c, classes)]
    return nn.Sequential(*layers, *head), (3, hw, hw), n
