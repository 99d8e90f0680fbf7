"""Architectures the cost model was never designed or tuned on: bench-cost's held-out split.

Kinds the main benchmark lacks: grouped and depthwise convolutions at small maps, wide
linear layers, token-mixing transposes with layer norms, concatenations, upsampling with
skip connections, PyTorch's own Transformer encoder, and the 1-D CNNs of the demo. None of
them was looked at when the model or its constants were first chosen. Since then its worst
models pointed at grouped convolutions, and the change they led to (grouped convolutions as a
kernel family of their own, 2026-12-08) was decided on this split with the benchmark and the
demo; so it is a tuning split now. `fresh_models.py` holds architectures written later.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

TORCHVISION_HELD_OUT = ["resnext50_32x4d", "mobilenet_v2", "googlenet", "regnet_x_400mf"]


class WideMLP(nn.Module):
    def __init__(self, in_features: int, width: int = 4096):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.GELU(),
                                 nn.Linear(width, width // 4), nn.GELU(),
                                 nn.Linear(width // 4, 10))  # fmt: skip

    def forward(self, x):
        return self.net(x)


class Mixer(nn.Module):
    """MLP-Mixer: token mixing across patches (transposes), channel mixing, layer norms."""

    def __init__(self, image: int, patch: int = 4, dim: int = 128, depth: int = 4):
        super().__init__()
        tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "n1": nn.LayerNorm(dim),
                "tok": nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(),
                                     nn.Linear(2 * tokens, tokens)),
                "n2": nn.LayerNorm(dim),
                "ch": nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)),
            })
            for _ in range(depth)
        )  # fmt: skip
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = x + b["tok"](b["n1"](x).transpose(1, 2)).transpose(1, 2)
            x = x + b["ch"](b["n2"](x))
        return self.head(x.mean(1))


class TorchEncoder(nn.Module):
    """PyTorch's own nn.TransformerEncoder over patch tokens."""

    def __init__(self, image: int, patch: int = 4, dim: int = 128, depth: int = 3):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x).flatten(2).transpose(1, 2)).mean(1))


class DenseCat(nn.Module):
    """Dense blocks: every layer sees the concatenation of all before it."""

    def __init__(self, growth: int = 24, layers: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, 2 * growth, 3, padding=1)
        self.layers = nn.ModuleList()
        c = 2 * growth
        for _ in range(layers):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(),
                                             nn.Conv2d(c, growth, 3, padding=1)))  # fmt: skip
            c += growth
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x):
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return self.head(x)


class TinyUNet(nn.Module):
    """Down, up (transposed conv and interpolation), skip concatenations; a 10-way pixel map
    averaged to logits."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.d1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU())
        self.d2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU())
        self.d3 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU())
        self.u2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.c2 = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(w, 10, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(a)
        c = self.d3(b)
        b = self.c2(torch.cat([self.u2(c), b], 1))
        up = nn.functional.interpolate(b, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.c1(torch.cat([up, a], 1))).mean((2, 3))


class DemoCNN1D(nn.Module):
    """The demo's kind: conv-BN-ReLU blocks over a 1-channel sequence, widths doubling."""

    def __init__(self, depth: int, width: int, kernel: int, groups: int = 1):
        super().__init__()
        layers, c = [], 1
        for i in range(depth):
            out = width * 2 ** (i // 2)
            g = groups if c % groups == 0 and out % groups == 0 and i else 1
            layers += [nn.Conv1d(c, out, kernel, padding=kernel // 2, groups=g),
                       nn.BatchNorm1d(out), nn.ReLU()]  # fmt: skip
            c = out
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x):
        return self.net(x.flatten(1)[:, None, :40])  # the demo's 40-step sequences


def held_out_builders(image: int) -> dict:
    """name -> zero-argument builder, for 3 x image x image inputs."""
    builders = {
        name: (lambda n=name: torchvision.models.get_model(
            n, weights=None, num_classes=10,
            **({"aux_logits": False, "init_weights": False} if n == "googlenet" else {}),
        ))
        for name in TORCHVISION_HELD_OUT
    }  # fmt: skip
    builders.update(
        {
            "wide_mlp": lambda: WideMLP(3 * image * image),
            "mixer": lambda: Mixer(image),
            "torch_encoder": lambda: TorchEncoder(image),
            "dense_cat": DenseCat,
            "tiny_unet": TinyUNet,
            "demo_cnn1d_small": lambda: DemoCNN1D(2, 16, 5),
            "demo_cnn1d_large": lambda: DemoCNN1D(4, 64, 7),
            "depthwise_cnn1d": lambda: DemoCNN1D(4, 64, 5, groups=64),
        }
    )
    return builders
