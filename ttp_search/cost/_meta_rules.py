"""Output metadata of the ops whose meta kernels are slow Python decompositions.

Batch norm's meta kernel computes the whole decomposition (means, variances, broadcasts) on
meta tensors, some milliseconds per call, while its outputs are simply shaped: the input's
shape and strides, plus one value per channel. A network with a hundred batch norms of
distinct shapes (DenseNet) spends most of its trace there; elementwise ops on two operands
of one layout (gradient sums, ReLU's backward) are the next largest share. Each rule gives the outputs the
library's meta kernel gives, on the inputs it accepts (dense, contiguous in some memory
format, matching strides), and returns None otherwise so the library's kernel runs; the
tests compare every rule with the library over a grid of shapes, dtypes, formats and flags.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

aten = torch.ops.aten

_REDUCED = (torch.float16, torch.bfloat16)


def _dense(t: torch.Tensor) -> bool:
    """Laid out exactly as a fresh tensor of some memory format (size-1 strides included)."""
    if t.device.type != "meta" or t.storage_offset() != 0:
        return False
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    candidates = [torch.contiguous_format] + ([formats[t.dim()]] if t.dim() in formats else [])
    return any(
        torch.empty(t.shape, device="meta", memory_format=f).stride() == t.stride()
        for f in candidates
    )


def _like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=dtype or t.dtype, device="meta")


def _per_channel(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((t.shape[1],), dtype=dtype, device="meta")


def _channels_match(input: torch.Tensor, *per_channel: torch.Tensor | None) -> bool:
    # Anything the library would reject goes to the library, which raises its own error.
    return input.dim() >= 2 and all(
        t is None or (t.device.type == "meta" and tuple(t.shape) == (input.shape[1],))
        for t in per_channel
    )


def _batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    if not _channels_match(input, weight, bias, running_mean, running_var) or not _dense(input):
        return None
    if not training and (running_mean is None or running_var is None):
        return None
    if training and input.numel() <= input.shape[1]:
        return None  # one value per channel: the library raises (unbiased variance)
    stats = torch.float32 if input.dtype in _REDUCED else input.dtype
    return _like(input), _per_channel(input, stats), _per_channel(input, stats)


def _batch_norm_backward(
    grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps, mask
):
    if not _channels_match(input, weight, running_mean, running_var, save_mean, save_invstd):
        return None
    if not train and (running_mean is None or running_var is None):
        return None
    if not _dense(input) or grad_out.stride() != input.stride():
        return None
    if grad_out.shape != input.shape or grad_out.dtype != input.dtype:
        return None
    # The library's meta kernel gives grad_input whatever the mask says.
    return (
        _like(input),
        _per_channel(input, input.dtype) if mask[1] else None,
        _per_channel(input, input.dtype) if mask[2] else None,
    )


def _row_major_block(t: torch.Tensor) -> bool:
    """A block of a row-major tensor (a slice of a contiguous one): strides strictly nested."""
    if 1 in t.shape or 0 in t.shape or t.stride()[-1] != 1:
        return False
    return all(t.stride()[i] >= t.stride()[i + 1] * t.shape[i + 1] for i in range(t.dim() - 1))


def _same_operands(a, b, *rest):
    # Two floating tensors of one dtype and shape, no broadcast and no promotion: autograd
    # sums gradients this way (DenseNet's concatenations hundreds of times, each shape new,
    # one operand a slice of the concatenation's gradient). The output takes the operands'
    # layout when they share one, and is contiguous when both are blocks of row-major ones.
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return None
    if (a.dtype, a.shape) != (b.dtype, b.shape) or not a.dtype.is_floating_point:
        return None
    if a.device.type != "meta" or b.device.type != "meta":
        return None
    if a.stride() == b.stride() and _dense(a):
        return _like(a)
    if _row_major_block(a) and _row_major_block(b):
        return torch.empty(a.shape, dtype=a.dtype, device="meta")
    return None


def _unary(a, *rest):
    if not isinstance(a, torch.Tensor) or not a.dtype.is_floating_point or not _dense(a):
        return None
    return _like(a)


def _unary_in_place(a, *rest):
    # An in-place elementwise op returns its input, metadata untouched.
    if not isinstance(a, torch.Tensor) or not a.dtype.is_floating_point or not _dense(a):
        return None
    return a


_UNARY = ("relu", "hardswish", "hardsigmoid", "silu", "sigmoid", "tanh", "gelu")
_UNARY_BACKWARD = (
    "threshold_backward",
    "hardswish_backward",
    "hardsigmoid_backward",
    "silu_backward",
    "sigmoid_backward",
    "tanh_backward",
    "gelu_backward",
)


#: op -> rule(*args) giving its outputs, or None where the library's meta kernel must run.
META_RULES: dict[torch._ops.OpOverload, Callable] = {
    aten.native_batch_norm.default: _batch_norm,
    aten.native_batch_norm_backward.default: _batch_norm_backward,
    aten.add.Tensor: _same_operands,
    aten.sub.Tensor: _same_operands,
    aten.mul.Tensor: _same_operands,
    **{getattr(aten, name).default: _unary for name in _UNARY},
    **{getattr(aten, name + "_").default: _unary_in_place for name in _UNARY},
    **{getattr(aten, name).default: _same_operands for name in _UNARY_BACKWARD},
}


def meta_outputs(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> object:
    """``func(*args, **kwargs)`` on meta tensors, by its rule where one applies."""
    rule = META_RULES.get(func)
    if rule is not None and not kwargs:
        out = rule(*args)
        if out is not None:
            return out
    return func(*args, **kwargs)
