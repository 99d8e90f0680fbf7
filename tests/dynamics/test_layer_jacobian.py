"""Per-sample Jacobians from layer hooks against ``torch.func`` (vmap over jacrev)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ttp_search.dynamics import sketched_gram, sketched_jacobian
from ttp_search.dynamics.layer_jacobian import supports

EXACT = 10**7  # a projection no tensor here exceeds: no sketch


class _Layers(nn.Module):
    """Every supported layer, in the ways real models use them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding="valid", groups=4, bias=False)
        self.dilated = nn.Conv1d(8, 6, 2, dilation=2)
        self.bn1d = nn.BatchNorm1d(6)
        self.volume = nn.Conv3d(1, 2, (1, 2, 2))
        self.norm = nn.LayerNorm(6)
        self.shared = nn.Linear(6, 6)  # called twice: its gradients add
        self.unused = nn.Linear(6, 6)  # never called: zero gradient
        self.head = nn.Linear(6 + 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu_(self.bn(self.conv(x)))  # in place on the BatchNorm output
        h = self.grouped(h).flatten(2)  # (B, 8, 9)
        h = self.bn1d(self.dilated(h))  # (B, 6, 7)
        v = self.volume(x[:, :1].unsqueeze(1)).mean((2, 3, 4))  # (B, 2)
        h = self.norm(h.transpose(1, 2))  # (B, 7, 6): a linear layer over a sequence
        h = torch.tanh(self.shared(torch.tanh(self.shared(h)))).mean(1)
        return self.head(torch.cat([h, v], dim=1))


def _layers() -> nn.Module:
    torch.manual_seed(0)
    model = _Layers().double()
    for bn in (model.bn, model.bn1d):  # non-trivial running statistics and affine terms
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    return model.eval()


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return torch.cat([j.reshape(x.shape[0], j.shape[1], -1) for j in jac.values()], dim=2)


def _x(n: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_every_supported_layer_matches_vmap_jacrev_exactly():
    model, x = _layers(), _x()
    assert supports(model)
    ours = sketched_jacobian(model, x, projection_dim=EXACT, chunk_size=2)
    torch.testing.assert_close(ours, _reference(model, x), rtol=1e-10, atol=1e-12)


def test_frozen_parameters_are_left_out_as_vmap_leaves_them_out():
    model, x = _layers(), _x()
    model.conv.weight.requires_grad_(False)  # its bias stays trainable
    model.head.bias.requires_grad_(False)
    model.norm.requires_grad_(False)
    ours = sketched_jacobian(model, x, projection_dim=EXACT)
    torch.testing.assert_close(ours, _reference(model, x), rtol=1e-10, atol=1e-12)


class _FreeScale(nn.Module):
    """``scale · net(x)`` with ``scale`` a parameter outside any standard layer: only
    vmap(jacrev) can see it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(x)


def _float(shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (_FreeScale(nn.Linear(4, 3)), _float((4, 4))),
        (nn.Sequential(nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"), nn.Flatten()),
         _float((4, 2, 5))),
        (nn.Sequential(nn.Embedding(5, 3), nn.Flatten()), torch.randint(0, 5, (4, 2))),
    ],
    ids=["free-parameter", "reflect-padding", "embedding"],
)  # fmt: skip
def test_other_models_go_through_vmap_and_agree_with_it(model, x):
    model = model.double()
    assert not supports(model)
    torch.testing.assert_close(
        sketched_jacobian(model, x, projection_dim=EXACT), _reference(model, x)
    )


def test_batch_norm_in_training_mode_is_not_taken_for_per_sample_layers():
    # In training mode a batch's statistics couple its samples: hooks on a batched forward
    # would not give per-sample gradients.
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert not supports(model.train())
    assert supports(model.eval())


def _mlp():
    return nn.Sequential(nn.Linear(40, 16), nn.Tanh(), nn.Linear(16, 3))


def _cnn():
    return nn.Sequential(nn.Conv1d(4, 6, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3))


@pytest.mark.parametrize(
    ("make", "shape", "fast"),
    [(_mlp, (12, 40), True), (_cnn, (12, 4, 10), True), (_mlp, (12, 40), False)],
    ids=["linear-hooks", "conv-hooks", "vmap"],
)
def test_sketched_gram_is_unbiased_and_reproducible(make, shape, fast):
    torch.manual_seed(0)
    model = (make() if fast else _FreeScale(make())).double()
    assert supports(model) is fast
    x = _float(shape)
    exact = sketched_gram(model, x, projection_dim=EXACT)
    grams = [sketched_gram(model, x, projection_dim=64, seed=s) for s in range(24)]
    features = sketched_jacobian(model, x, projection_dim=64).shape[2]
    assert features < sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(grams[3], sketched_gram(model, x, projection_dim=64, seed=3))
    single = torch.linalg.norm(grams[0] - exact) / torch.linalg.norm(exact)
    mean = torch.linalg.norm(torch.stack(grams).mean(0) - exact) / torch.linalg.norm(exact)
    assert single < 0.5
    assert mean < single / 2.5  # about 1/sqrt(24) of it for an unbiased sketch


def test_gram_is_the_product_of_the_jacobian_with_itself():
    model, x = _layers(), _x(7)
    J = sketched_jacobian(model, x, projection_dim=40, seed=5).reshape(21, -1)
    gram = sketched_gram(model, x, projection_dim=40, seed=5, chunk_size=3)
    torch.testing.assert_close(gram, J @ J.T)
