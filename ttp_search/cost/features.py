"""Per-op features of one aten call: kind, shapes, FLOPs, bytes.

The same function describes an op seen on fake tensors (prediction) and on real tensors
(calibration), so the regressor sees identical features in both places. FLOPs come from
``torch.utils.flop_counter``'s registry, the formulas ``FlopCounterMode`` uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# Ops that only create metadata or aliases: no kernel runs, only dispatch overhead.
_ALIAS_OPS = {"aten.detach", "aten.alias", "aten.lift_fresh", "aten._unsafe_view", "prim.device"}

_CONV_OPS = {"aten.convolution", "aten.convolution_backward", "aten._convolution"}
_MATMUL_OPS = {"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm"}
_SDPA_FWD = {
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
}
_SDPA_BWD = {name + "_backward" for name in _SDPA_FWD}

#: Numeric feature columns, in the order the regressors use them.
FEATURE_COLUMNS = (
    "log_flops",
    "log_bytes_in",
    "log_bytes_out",
    "log_numel_out",
    "log_d0",
    "log_d1",
    "log_d2",
    "log_d3",
    "log_d4",
    "log_d5",
    "log_d6",
    "variant",
    "n_tensors",
    "dtype_bytes",
    "contiguous",
)


@dataclass(frozen=True)
class OpFeatures:
    """What one aten call is and how much work it does."""

    op: str
    flops: float
    bytes_in: float
    bytes_out: float
    numel_out: float
    dims: tuple[int, int, int, int, int, int, int]
    variant: int
    n_tensors: int
    dtype_bytes: int
    contiguous: bool
    is_alias: bool

    @property
    def bytes(self) -> float:
        return self.bytes_in + self.bytes_out

    def vector(self) -> list[float]:
        """The numeric feature vector, aligned with :data:`FEATURE_COLUMNS`."""
        return [
            math.log1p(self.flops),
            math.log1p(self.bytes_in),
            math.log1p(self.bytes_out),
            math.log1p(self.numel_out),
            *(math.log1p(max(d, 0)) for d in self.dims),
            float(self.variant),
            float(self.n_tensors),
            float(self.dtype_bytes),
            float(self.contiguous),
        ]


def _tensors(tree: object) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _nbytes(tensors: list[torch.Tensor]) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


def _prod(xs: tuple[int, ...] | list[int] | torch.Size) -> int:
    return int(math.prod(xs)) if len(xs) else 1


def _is_transposed(t: torch.Tensor) -> int:
    return int(t.dim() >= 2 and t.stride(-1) != 1)


def _dims(
    name: str, args: tuple, tensors_in: list[torch.Tensor], out: object
) -> tuple[tuple[int, ...], int]:
    """Op-specific dimensions (seven slots) and a small integer 'variant' code."""
    if name in _CONV_OPS:
        if name == "aten.convolution_backward":
            grad_out, inp, weight = args[0], args[1], args[2]
            groups = int(args[9])
            mask = args[10]
            variant = int(mask[0]) + 2 * int(mask[1]) + 4 * int(mask[2])
        else:
            inp, weight = args[0], args[1]
            grad_out = out  # the forward output has the shape the gradient will have
            groups = int(args[8]) if len(args) > 8 else 1
            variant = 8 * int(bool(args[6])) if len(args) > 6 else 0
        out_spatial = _prod(grad_out.shape[2:])
        # A kernel larger than its input is mostly padding: CPU backends take slow paths there.
        if _prod(weight.shape[2:]) > _prod(inp.shape[2:]):
            variant += 16
        return (
            inp.shape[0],
            inp.shape[1],
            weight.shape[0],
            _prod(inp.shape[2:]),
            out_spatial,
            _prod(weight.shape[2:]),
            groups,
        ), variant
    if name in _MATMUL_OPS:
        a, b = (args[1], args[2]) if name in ("aten.addmm", "aten.baddbmm") else (args[0], args[1])
        batch = a.shape[0] if a.dim() == 3 else 1
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        return (batch, m, k, n, 0, 0, 0), _is_transposed(a) + 2 * _is_transposed(b)
    if name in _SDPA_FWD or name in _SDPA_BWD:
        q = args[1] if name in _SDPA_BWD else args[0]
        k = args[2] if name in _SDPA_BWD else args[1]
        b, h, lq, e = q.shape
        return (b * h, lq, k.shape[-2], e, 0, 0, 0), 0
    if not tensors_in:
        return (0, 0, 0, 0, 0, 0, 0), 0
    shape = tensors_in[0].shape
    d0 = shape[0] if len(shape) > 0 else 1
    d1 = shape[1] if len(shape) > 1 else 1
    rest = _prod(shape[2:]) if len(shape) > 2 else 1
    last = shape[-1] if len(shape) > 0 else 1
    # Reductions and broadcasts: the size of the largest other input tells their shape.
    other = max((t.numel() for t in tensors_in[1:]), default=0)
    return (d0, d1, rest, last, len(shape), other, len(tensors_in)), 0


def _flops(func: torch._ops.OpOverload, name: str, args: tuple, kwargs: dict, out: object) -> float:
    fn = flop_counter.flop_registry.get(func._overloadpacket)
    try:
        if fn is not None:
            return float(fn(*args, **kwargs, out_val=out))
        if name in _SDPA_FWD:
            return float(flop_counter.sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape))
        if name in _SDPA_BWD:
            return float(
                flop_counter.sdpa_backward_flop_count(
                    args[0].shape, args[1].shape, args[2].shape, args[3].shape
                )
            )
    except Exception:
        # A formula that rejects an unusual signature must not break a prediction.
        return 0.0
    return 0.0


def op_name(func: torch._ops.OpOverload) -> str:
    """``aten.convolution`` for ``aten.convolution.default``: the overload packet's name."""
    return str(func._overloadpacket)


def is_alias_op(func: torch._ops.OpOverload) -> bool:
    """True when the op only creates a view or alias (no kernel does real work)."""
    return bool(getattr(func, "is_view", False)) or op_name(func) in _ALIAS_OPS


def op_features(
    func: torch._ops.OpOverload, args: tuple, kwargs: dict | None, out: object
) -> OpFeatures:
    """Describe one aten call by its shapes; works on real, meta and fake tensors."""
    kwargs = kwargs or {}
    name = op_name(func)
    tensors_in = _tensors((args, kwargs))
    tensors_out = _tensors(out)
    alias = is_alias_op(func)
    dims, variant = _dims(name, args, tensors_in, out)
    ref = tensors_in[0] if tensors_in else (tensors_out[0] if tensors_out else None)
    return OpFeatures(
        op=name,
        flops=0.0 if alias else _flops(func, name, args, kwargs, out),
        bytes_in=0.0 if alias else _nbytes(tensors_in),
        bytes_out=0.0 if alias else _nbytes(tensors_out),
        numel_out=float(sum(t.numel() for t in tensors_out)),
        dims=tuple(int(d) for d in dims),  # type: ignore[arg-type]
        variant=variant,
        n_tensors=len(tensors_in),
        dtype_bytes=ref.element_size() if ref is not None else 4,
        contiguous=all(t.is_contiguous() for t in tensors_in),
        is_alias=alias,
    )


_IN_CHANNELS = FEATURE_COLUMNS.index("log_d1")
_GROUPS = FEATURE_COLUMNS.index("log_d6")


def kernel_families(names: Sequence[str], X: np.ndarray) -> list[str]:
    """Each op's kernel family for the op model: its name, except that a convolution with
    groups between dense and depthwise (ResNeXt, RegNet) gets a family of its own
    (``<name>.grouped``). Those run other kernels than dense convolutions; pooled with
    them, their timings also moved the predictions for dense convolutions."""
    if len(names) == 0:
        return []
    X = np.asarray(X, dtype=np.float64).reshape(len(names), -1)
    channels = np.rint(np.expm1(X[:, _IN_CHANNELS]))
    groups = np.rint(np.expm1(X[:, _GROUPS]))
    grouped = (groups >= 2) & (groups < channels)
    return [
        f"{name}.grouped" if is_grouped and name in _CONV_OPS else name
        for name, is_grouped in zip(names, grouped, strict=True)
    ]
