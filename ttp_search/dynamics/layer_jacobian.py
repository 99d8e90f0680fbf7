"""Per-sample Jacobians of standard layers from one forward and one batched backward.

For a layer ``y = W x`` (a linear map, or a convolution: the same map at every position p),
the per-sample gradient of output c is ``∂f_c/∂W = Σ_p g_p xᵀ_p``: the gradient reaching the
layer's output times its input's patches. So one forward pass (saving every layer's input)
and one backward pass batched over the C outputs (``is_grads_batched``) give every sample's
gradient as a batched matrix product per layer, at the cost of a few training steps, where
``vmap(jacrev)`` pays a grouped convolution per sample.

Weights larger than the sketch budget are compressed so that inner products stay unbiased:

- a convolution's patches are CountSketched before the product, ``Σ_p g_p (S x_p)ᵀ``, which
  is a convolution of the input with a sparse ±1 kernel: the full per-sample gradient is
  never formed. Over many positions the gradient has high rank and this input-side sketch
  is nearly as accurate as a CountSketch of the whole gradient (BENCHMARKS.md,
  bench-fidelity, measures both);
- a linear layer's gradient ``g xᵀ`` is often rank one (one position), where an input-side
  sketch is poor: it is formed, a block of output rows at a time, and CountSketched whole.

Supported: ``Linear``, ``Conv1d/2d/3d`` (zero padding, any groups, at most
``projection_dim / 8`` output channels per group where sketched), ``BatchNorm1d/2d/3d`` in
eval mode and ``LayerNorm``. :func:`supports` says whether a model has only these; the
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
# An input-side sketch keeps at least this many buckets per output channel.
_MIN_INPUT_BUCKETS = 8
# Entries of a linear layer's per-sample gradients formed at once (256 MiB in float32).
_LINEAR_BLOCK = 2**26


def _supported_module(module: nn.Module, dim: int) -> bool:
    if isinstance(module, _BATCH_NORM):
        return not module.training and module.running_mean is not None
    if isinstance(module, (nn.LayerNorm, nn.Linear)):
        return True
    if isinstance(module, _CONV):
        # A wider convolution would need its output side sketched too, and a sketch of both
        # sides of ``g xᵀ`` is far noisier than a CountSketch of the whole gradient.
        o, k = module.weight.shape[0] // module.groups, module.weight[0].numel()
        fits = o * k <= dim or dim // o >= _MIN_INPUT_BUCKETS
        return module.padding_mode == "zeros" and fits
    return False


def supports(model: nn.Module, projection_dim: int) -> bool:
    """Every trainable parameter is the ``weight`` or ``bias`` of a supported layer (see the
    module's docstring) at this ``projection_dim``."""
    owned = set()
    for module in model.modules():
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        if not _supported_module(module, projection_dim) or set(own) - {"weight", "bias"}:
            return False
        owned.update(id(p) for p in own.values())
    return all(id(p) in owned for p in model.parameters() if p.requires_grad)


class _PatchSketch:
    """A convolution's input-side sketch: patch coordinates ``k`` → ``k_out`` buckets
    (``kernel``: a (k_out, k) ±1 matrix, one non-zero per column; None: kept exactly)."""

    def __init__(self, o: int, k: int, dim: int, generator: torch.Generator) -> None:
        self.o, self.k = o, k
        self.k_out = k if o * k <= dim else dim // o
        self.kernel = None
        if self.k_out < k:
            drawn = CountSketch.draw(k, self.k_out, generator)
            self.kernel = torch.zeros(self.k_out, k)
            self.kernel[drawn.bucket, torch.arange(k)] = drawn.sign


def make_sketches(model: nn.Module, dim: int, seed: int) -> dict:
    """The sketch of every trainable linear and convolutional weight, keyed by the weight's
    ``id`` (layers sharing a weight share its sketch), drawn in module order from ``seed``
    so every process draws the same. A linear weight within ``dim`` maps to None (exact)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[int, _PatchSketch | CountSketch | None] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, (nn.Linear, *_CONV)) or not weight.requires_grad:
            continue
        if id(weight) in out:
            continue
        if isinstance(module, nn.Linear):
            fits = weight.numel() <= dim
            out[id(weight)] = None if fits else CountSketch.draw(weight.numel(), dim, generator)
        else:
            o = weight.shape[0] // module.groups
            out[id(weight)] = _PatchSketch(o, weight[0].numel(), dim, generator)
    return out


def _output_grads(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """The gradients reaching a linear or convolutional layer's output, (C, B, o, P)."""
    C, B = g.shape[:2]
    if isinstance(module, nn.Linear):
        return g.reshape(C, B, -1, g.shape[-1]).transpose(2, 3)
    return g.reshape(C, B, g.shape[2], -1)


def _conv_features(module: nn.Module, a: torch.Tensor, grads: torch.Tensor, sketch) -> torch.Tensor:
    """Per-sample (sketched) gradients of a convolution's weight, (B, C, features)."""
    C, B, _, P = grads.shape
    groups, per_group, size = module.groups, module.weight.shape[1], module.weight.shape[2:]
    basis = torch.eye(sketch.k) if sketch.kernel is None else sketch.kernel
    # Each output channel of this kernel picks (or sums, with signs) patch coordinates.
    kernel = basis.to(a.dtype).reshape(sketch.k_out, per_group, *size)
    kernel = kernel.repeat(groups, *([1] * (kernel.dim() - 1)))
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(size) - 1]
    patches = conv(a, kernel, None, module.stride, module.padding, module.dilation, groups)
    right = patches.reshape(B * groups, sketch.k_out, P)
    left = grads.reshape(C, B, groups, sketch.o, P).permute(1, 2, 0, 3, 4)
    out = torch.bmm(left.reshape(B * groups, C * sketch.o, P), right.transpose(1, 2))
    out = out.reshape(B, groups, C, sketch.o * sketch.k_out).transpose(1, 2)
    return out.reshape(B, C, -1)


def _linear_features(a: torch.Tensor, grads: torch.Tensor, sketch) -> torch.Tensor:
    """Per-sample (CountSketched) gradients of a linear layer's weight, (B, C, features)."""
    C, B, o, P = grads.shape
    x = a.reshape(B, P, -1)
    k = x.shape[2]
    left = grads.permute(1, 0, 2, 3)  # (B, C, o, P)
    if sketch is None:
        return torch.bmm(left.reshape(B, C * o, P), x).reshape(B, C, o * k)
    out = a.new_zeros(B * C, sketch.dim)
    rows = max(1, _LINEAR_BLOCK // (B * C * k))
    for start in range(0, o, rows):
        part = left[:, :, start : start + rows].reshape(B, -1, P)
        full = torch.bmm(part, x).reshape(B * C, -1)  # output rows start.. of g xᵀ, flat
        out += sketch(full, start * k)
    return out.reshape(B, C, -1)


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
    parts = {"bias": grads.sum(-1).transpose(0, 1)}
    if module.weight.requires_grad:
        sketch = sketches[id(module.weight)]
        if isinstance(module, nn.Linear):
            parts["weight"] = _linear_features(a, grads, sketch)
        else:
            parts["weight"] = _conv_features(module, a, grads, sketch)
    return parts


def _feature_count(module: nn.Module, name: str, sketches: dict) -> int:
    sketch = sketches.get(id(module.weight)) if name == "weight" else None
    if isinstance(sketch, CountSketch):
        return sketch.dim
    if isinstance(sketch, _PatchSketch):
        return module.groups * sketch.o * sketch.k_out
    return math.prod(getattr(module, name).shape)


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
