"""Per-sample Jacobians at the pretrained weights, sketched per layer, and their Gram matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from ttp_search.dynamics import layer_jacobian
from ttp_search.dynamics.sketch import CountSketch


def _count_sketches(model: nn.Module, projection_dim: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: CountSketch.draw(v.numel(), projection_dim, gen)
        for k, v in model.named_parameters()
        if v.requires_grad and v.numel() > projection_dim
    }


def _vmap_jacobian(model: nn.Module, inputs: torch.Tensor, sketches: dict) -> torch.Tensor:
    """The general path: ``vmap(jacrev)`` over a chunk of samples, each parameter tensor
    larger than ``projection_dim`` CountSketched to ``projection_dim`` coordinates."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, inputs)
    cols = []
    for name, j in jac.items():
        j = j.reshape(j.shape[0], j.shape[1], -1)
        if name in sketches:
            j = sketches[name](j.reshape(-1, j.shape[2])).reshape(j.shape[0], j.shape[1], -1)
        cols.append(j)
    return torch.cat(cols, dim=2)


def sketched_jacobian(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    projection_dim: int = 2000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``J`` of shape (n, outputs, features): ∂f(x_i)/∂w at the current weights, in the
    model's dtype.

    Each parameter tensor with more than ``projection_dim`` entries is compressed to about
    ``projection_dim`` coordinates by a CountSketch (a random bucket and sign per
    coordinate), so memory stays bounded for models with millions of parameters while
    ``J Jᵀ`` stays unbiased; smaller tensors are kept exactly. Models built of standard
    layers (:mod:`~ttp_search.dynamics.layer_jacobian`) get every sample's gradient from
    one forward and one batched backward per chunk; any other model goes through
    ``vmap(jacrev)`` (which also sketches large biases and normalisation parameters; the
    fast path keeps those exact). The samples must not interact
    in the forward pass (eval mode). ``seed`` draws the sketch; ``chunk_size`` is the samples
    per pass (default: 32 for standard layers, 64 through ``vmap``, the faster sizes here).
    """
    fast = layer_jacobian.supports(model)
    chunk_size = chunk_size or (32 if fast else 64)
    if fast:
        sketches = layer_jacobian.make_sketches(model, projection_dim, seed)
    else:
        sketches = _count_sketches(model, projection_dim, seed)
    blocks = []
    for start in range(0, inputs.shape[0], chunk_size):
        chunk = inputs[start : start + chunk_size]
        if fast:
            blocks.append(layer_jacobian.layer_jacobian(model, chunk, sketches))
        else:
            blocks.append(_vmap_jacobian(model, chunk, sketches))
    return torch.cat(blocks, dim=0)


def sketched_gram(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    projection_dim: int = 2000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """The function-space Gram ``J Jᵀ``, (n·outputs, n·outputs), of
    :func:`sketched_jacobian` (same arguments), in the Jacobian's dtype (the model's).
    Products run over the lower block triangle, mirrored: half the work of a full one."""
    J = sketched_jacobian(
        model, inputs, projection_dim=projection_dim, seed=seed, chunk_size=chunk_size
    )
    rows = 32 * J.shape[1]  # block rows: whole samples, large enough for fast products
    J = J.reshape(J.shape[0] * J.shape[1], -1)
    gram = torch.empty(J.shape[0], J.shape[0], dtype=J.dtype)
    for start in range(0, J.shape[0], rows):
        block = J[start : start + rows] @ J[: start + rows].T
        gram[start : start + rows, : start + rows] = block
        gram[: start + rows, start : start + rows] = block.T
    return gram


def weight_direction(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``J w0``: how the outputs move along the weights themselves (for standard decay)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p):
        return functional_call(model, (p, buffers), (inputs,))

    _, tangent_out = jvp(f, (params,), (params,))
    return tangent_out.detach().to(torch.float64)
