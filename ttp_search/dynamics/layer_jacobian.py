"""Per-sample Jacobians of standard layers from one forward and one batched backward.

For a layer ``y = W x`` (a linear map, or a convolution: the same map at every position p),
the per-sample gradient of output c is ``∂f_c/∂W = Σ_p g_p xᵀ_p``: the gradient reaching the
layer's output times its input's patches. So one forward pass (saving every layer's input)
and one backward pass batched over the C outputs (``is_grads_batched``) give every sample's
gradient as a batched matrix product per layer, at the cost of a few training steps, where
``vmap(jacrev)`` pays a grouped convolution per sample.

Weights larger than the sketch budget are CountSketched (a random bucket and sign per
coordinate, so inner products stay unbiased): their per-sample gradients are formed a block
of output rows at a time and sketched, so memory stays bounded. A sketch of the layer's
input patches alone would avoid forming them, but on ResNet-20 it roughly doubled the Gram's
error and moved single runs further from the exact linearized network (BENCHMARKS.md,
bench-fidelity).

Supported: ``Linear``, ``Conv1d/2d/3d`` (zero padding, any groups), ``BatchNorm1d/2d/3d``
in eval mode and ``LayerNorm``. :func:`supports` says whether a model has only these; the
caller falls back to ``vmap(jacrev)`` otherwise. Samples must not interact in the forward
pass (true of these layers in eval mode).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ttp_search.dynamics.sketch import CountSketch

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Entries of a layer's per-sample weight gradients formed at once (16 MiB in float32).
# Larger blocks are no faster: glibc serves allocations above 32 MiB by mmap, and every
# fresh mapping is page-faulted in again.
_BLOCK = 2**22


def _supported_module(module: nn.Module) -> bool:
    if isinstance(module, _BATCH_NORM):
        return not module.training and module.running_mean is not None
    if isinstance(module, (nn.LayerNorm, nn.Linear)):
        return True
    if isinstance(module, _CONV):
        return module.padding_mode == "zeros"
    return False


def supports(model: nn.Module) -> bool:
    """Every trainable parameter is the ``weight`` or ``bias`` of a supported layer (see the
    module's docstring)."""
    owned = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        if not _supported_module(module) or set(own) - {"weight", "bias"}:
            return False
        owned.update(id(p) for p in own.values())
    return all(id(p) in owned for p in model.parameters() if p.requires_grad)


def make_sketches(model: nn.Module, dim: int, seed: int) -> dict:
    """The CountSketch of every trainable linear and convolutional weight larger than ``dim``
    (None: kept exactly), keyed by the weight's ``id`` (layers sharing a weight share its
    sketch), drawn in module order from ``seed`` so every process draws the same."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[int, CountSketch | None] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, *_CONV)) or not weight.requires_grad:
            continue
        if id(weight) not in out:
            fits = weight.numel() <= dim
            out[id(weight)] = None if fits else CountSketch.draw(weight.numel(), dim, generator)
    return out


def _output_grads(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The gradients reaching a linear or convolutional layer's output, (C, B, o, P)."""
    C, B = g.shape[:2]
    if isinstance(module, nn.Linear):
        return g.reshape(C, B, -1, g.shape[-1]).transpose(2, 3)
    return g.reshape(C, B, g.shape[2], -1)


def _products(left: torch.Tensor, right: torch.Tensor, sketch, offset: int = 0):
    """Per-sample weight gradients ``Σ_p left[b, c, o, p] · right[b, k, p]``, (B, C, o·k), or
    their CountSketch (B, C, dim) as coordinates ``offset ..`` of the weight: formed a block
    of output rows at a time, so a wide layer's temporaries stay bounded."""
    B, C, o, P = left.shape
    right = right.transpose(1, 2)  # (B, P, k)
    k = right.shape[2]
    if sketch is None:
        return torch.bmm(left.reshape(B, C * o, P), right).reshape(B, C, o * k)
    out = None
    rows = max(1, _BLOCK // (B * C * k))
    for start in range(0, o, rows):
        full = torch.bmm(left[:, :, start : start + rows].reshape(B, -1, P), right)
        part = sketch(full.reshape(B * C, -1), offset + start * k)
        out = part if out is None else out + part
    return out.reshape(B, C, -1)


def _conv_features(module: nn.Module, a: torch.Tensor, grads: torch.Tensor, sketch):
    """Per-sample (sketched) gradients of a convolution's weight, (B, C, features), from its
    input ``a`` and its output gradients ``grads`` (C, B, o, P)."""
    C, B, o, P = grads.shape
    groups, per_group, size = module.groups, module.weight.shape[1], module.weight.shape[2:]
    k = module.weight[0].numel()
    # A kernel whose output channels pick single patch coordinates: the unfolded input,
    # for 1-, 2- and 3-d convolutions alike.
    picks = torch.eye(k, dtype=a.dtype).reshape(k, per_group, *size)
    picks = picks.repeat(groups, *([1] * (picks.dim() - 1)))
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(size) - 1]
    patches = conv(a, picks, None, module.stride, module.padding, module.dilation, groups)
    patches = patches.reshape(B, groups, k, P)
    left = grads.transpose(0, 1).reshape(B, C, groups, o // groups, P)
    parts = [
        _products(left[:, :, g], patches[:, g], sketch, g * (o // groups) * k)
        for g in range(groups)
    ]
    if sketch is None:
        return torch.cat(parts, dim=2)
    return sum(parts[1:], parts[0])


def _linear_features(a: torch.Tensor, grads: torch.Tensor, sketch) -> torch.Tensor:
    """Per-sample (sketched) gradients of a linear layer's weight, (B, C, features)."""
    B, P = grads.shape[1], grads.shape[3]
    x = a.reshape(B, P, -1).transpose(1, 2)  # (B, k, P)
    return _products(grads.transpose(0, 1), x, sketch)


def _norm_features(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> dict:
    """Per-sample gradients of a normalisation layer's scale and shift, (B, C, channels)."""
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(-len(module.normalized_shape), 0))
        mean = a.mean(dims, keepdim=True)
        var = a.var(dims, unbiased=False, keepdim=True)
        normed = (a - mean) * torch.rsqrt(var + module.eps)
        lead = tuple(range(2, g.dim() - len(dims)))  # dims between batch and normalised
        weight = (g * normed).sum(lead) if lead else g * normed
        bias = g.sum(lead) if lead else g
        return {
            "weight": weight.reshape(*weight.shape[:2], -1).transpose(0, 1),
            "bias": bias.reshape(*bias.shape[:2], -1).transpose(0, 1),
        }
    shape = (1, -1) + (1,) * (a.dim() - 2)
    normed = (a - module.running_mean.view(shape)) * torch.rsqrt(
        module.running_var.view(shape) + module.eps
    )
    spatial = g.reshape(*g.shape[:3], -1)  # (C, B, channels, positions)
    return {
        "weight": torch.einsum("cbkp,bkp->bck", spatial, normed.reshape(*normed.shape[:2], -1)),
        "bias": spatial.sum(-1).transpose(0, 1),
    }


def _features(module: nn.Module, a: torch.Tensor, g: torch.Tensor, sketches: dict) -> dict:
    """Per-sample gradient features of each of a layer's trainable parameters."""
    if isinstance(module, (nn.LayerNorm, *_BATCH_NORM)):
        return _norm_features(module, a, g)
    grads = _output_grads(module, g)
    parts = {}
    if module.bias is not None and module.bias.requires_grad:
        parts["bias"] = grads.sum(-1).transpose(0, 1)
    if module.weight.requires_grad:
        sketch = sketches[id(module.weight)]
        if isinstance(module, nn.Linear):
            parts["weight"] = _linear_features(a, grads, sketch)
        else:
            parts["weight"] = _conv_features(module, a, grads, sketch)
    return parts


def _feature_count(module: nn.Module, name: str, sketches: dict) -> int:
    sketch = sketches.get(id(module.weight)) if name == "weight" else None
    return sketch.dim if sketch is not None else math.prod(getattr(module, name).shape)


def layer_jacobian(model: nn.Module, inputs: torch.Tensor, sketches: dict) -> torch.Tensor:
    """(B, C, features): every sample's (sketched) gradient of each of its C outputs, the
    parameters in ``named_parameters`` order. Requires :func:`supports`."""
    calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def record(module, args, output):
        calls.append((module, args[0].detach(), output))
        # A later in-place op (ReLU(inplace=True)) would rebase the output's history, and the
        # gradient asked for below would silently be the wrong tensor's: hand on a copy.
        return output.clone()

    layers = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(False))]
    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with torch.enable_grad():
            out = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    out = out.reshape(out.shape[0], -1)
    B, C = out.shape
    per_output = torch.eye(C, dtype=out.dtype).unsqueeze(1).expand(C, B, C)
    grads = torch.autograd.grad(
        out, [o for _, _, o in calls], per_output, is_grads_batched=True, allow_unused=True
    )
    features: dict[int, torch.Tensor] = {}
    for (module, a, _), g in zip(calls, grads, strict=True):
        if g is None:
            continue
        for name, value in _features(module, a, g, sketches).items():
            param = getattr(module, name)
            if param is not None and param.requires_grad:
                key = id(param)  # a layer called twice adds its calls' gradients
                features[key] = features[key] + value if key in features else value
    blocks, seen = [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if id(param) in features:
                blocks.append(features[id(param)])
            else:  # never reached the outputs: a zero gradient
                blocks.append(out.new_zeros(B, C, _feature_count(module, name, sketches)))
    return torch.cat(blocks, dim=2).detach()
