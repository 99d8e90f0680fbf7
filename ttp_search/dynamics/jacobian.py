"""Per-sample Jacobians at the pretrained weights, sketched per layer, and their Gram matrix."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap


def _count_sketch(numel: int, dim: int, generator: torch.Generator):
    """Bucket and sign of every coordinate: a CountSketch keeps inner products unbiased."""
    bucket = torch.randint(0, dim, (numel,), generator=generator)
    sign = torch.randint(0, 2, (numel,), generator=generator).to(torch.float64) * 2 - 1
    return bucket, sign


def sketched_jacobian(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    projection_dim: int = 2000,
    seed: int = 0,
    chunk_size: int = 64,
) -> torch.Tensor:
    """``J`` of shape (n, outputs, features): ∂f(x_i)/∂w at the current weights.

    Each parameter tensor larger than ``projection_dim`` is compressed to ``projection_dim``
    coordinates by a CountSketch (a random bucket and sign per coordinate), so memory stays
    bounded for models with millions of parameters while ``J Jᵀ`` stays unbiased; smaller
    tensors are kept exactly. Computed with ``torch.func`` (``vmap`` over ``jacrev``) in
    chunks of samples, in float64.
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    gen = torch.Generator().manual_seed(seed)
    sketches = {
        k: _count_sketch(v.numel(), projection_dim, gen)
        for k, v in params.items()
        if v.numel() > projection_dim
    }

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).squeeze(0)

    jac_fn = vmap(jacrev(f), in_dims=(None, 0))
    blocks = []
    for start in range(0, inputs.shape[0], chunk_size):
        jac = jac_fn(params, inputs[start : start + chunk_size])
        cols = []
        for name, j in jac.items():
            j = j.reshape(j.shape[0], j.shape[1], -1).to(torch.float64)
            if name in sketches:
                bucket, sign = sketches[name]
                out = torch.zeros(j.shape[0], j.shape[1], projection_dim, dtype=torch.float64)
                j = out.index_add_(2, bucket, j * sign)
            cols.append(j)
        blocks.append(torch.cat(cols, dim=2))
    return torch.cat(blocks, dim=0)


def weight_direction(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``J w0``: how the outputs move along the weights themselves (for standard decay)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p):
        return functional_call(model, (p, buffers), (inputs,))

    _, tangent_out = jvp(f, (params,), (params,))
    return tangent_out.detach().to(torch.float64)
