"""Decompose one training step into its aten ops without doing the arithmetic.

Forward and backward run on fake tensors (``FakeTensorMode``): shapes, strides, dtypes and
the device's kernel choices (e.g. CPU flash attention) are exactly those of a real step,
but no memory is touched and no FLOP is spent. A ``TorchDispatchMode`` records every op, and
``torch.utils.module_tracker.ModuleTracker`` names the layer each op belongs to.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pandas as pd
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.nn.attention import SDPBackend
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.module_tracker import ModuleTracker

from ttp_search.cost._meta_memo import META_OP_MEMO, MetaOpMemo
from ttp_search.cost.features import OpFeatures, op_features
from ttp_search.cost.step import check_step_args, model_device, training_loss
from ttp_search.errors import InvalidInputError

_IGNORED = {"prim.device", "prim.layout"}


@dataclass(frozen=True)
class OpRecord:
    """One aten op of a training step: which layer ran it, in which phase, and its features."""

    layer: str
    module_type: str
    phase: str  # "forward" or "backward"
    features: OpFeatures


@dataclass
class StepTrace:
    """Every op of one training step plus what the optimizer update will touch."""

    ops: list[OpRecord]
    n_params: int
    n_param_tensors: int
    input_shape: tuple[int, ...]
    batch_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def flops(self) -> float:
        return sum(r.features.flops for r in self.ops)

    @property
    def bytes(self) -> float:
        return sum(r.features.bytes for r in self.ops)

    def frame(self) -> pd.DataFrame:
        """One row per op: layer, module type, phase, op name and its features."""
        rows = [
            {
                "layer": r.layer,
                "module_type": r.module_type,
                "phase": r.phase,
                "op": r.features.op,
                "flops": r.features.flops,
                "bytes": r.features.bytes,
                "is_alias": r.features.is_alias,
            }
            for r in self.ops
        ]
        return pd.DataFrame(
            rows, columns=["layer", "module_type", "phase", "op", "flops", "bytes", "is_alias"]
        )


class _Recorder(TorchDispatchMode):
    def __init__(
        self,
        tracker: ModuleTracker,
        types_by_name: dict[str, str],
        root: str,
        memo: MetaOpMemo | None = None,
    ):
        super().__init__()
        self.tracker = tracker
        self.types_by_name = types_by_name
        self.root = root
        self.memo = memo
        self.memo_defaults = MetaOpMemo.defaults()
        self.ops: list[OpRecord] = []

    def _layer(self) -> str:
        parents = self.tracker.parents
        deepest = max(parents, key=lambda s: (s.count("."), len(s)), default="Global")
        if deepest in ("Global", self.root):
            return "(model)" if deepest == self.root else "(loss)"
        return deepest[len(self.root) + 1 :]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.memo is not None:
            out, features = self.memo.call(func, args, kwargs, self.memo_defaults)
        else:
            out = func(*args, **kwargs)
            features = op_features(func, args, kwargs, out)
        if str(func._overloadpacket) not in _IGNORED:
            layer = self._layer()
            self.ops.append(
                OpRecord(
                    layer=layer,
                    module_type=self.types_by_name.get(layer, ""),
                    phase="backward" if self.tracker.is_bw else "forward",
                    features=features,
                )
            )
        return out


_SDPA_NAMES = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _device_sdpa(device: torch.device, math_sdpa):
    """An SDPA that calls the kernel ``device`` would pick for these shapes.

    On meta tensors SDPA always takes its math path. The real device is asked which kernel
    it would choose (``torch._fused_sdp_choice`` on uninitialised tensors of the same shapes)
    and that kernel's aten op is called instead, so the trace holds the ops that really run.
    """

    def real(t):
        if not isinstance(t, torch.Tensor):
            return t
        return torch.empty(t.shape, dtype=t.dtype, device=device).requires_grad_(t.requires_grad)

    def sdpa(q, k, v, *rest, **kwargs):
        kwargs.update(zip(_SDPA_NAMES, rest, strict=False))
        mask, dropout = kwargs.get("attn_mask"), kwargs.get("dropout_p", 0.0)
        causal, scale = kwargs.get("is_causal", False), kwargs.get("scale")
        try:
            with _disable_current_modes():  # the probe is not part of the step
                choice = torch._fused_sdp_choice(
                    *(real(t) for t in (q, k, v, mask)),
                    dropout,
                    causal,
                    scale=scale,
                    enable_gqa=kwargs.get("enable_gqa", False),
                )
            if choice == SDPBackend.FLASH_ATTENTION.value and device.type == "cpu":
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    q, k, v, dropout, causal, attn_mask=mask, scale=scale
                )[0]
            if choice == SDPBackend.FLASH_ATTENTION.value and device.type == "cuda":
                return torch.ops.aten._scaled_dot_product_flash_attention(
                    q, k, v, dropout, causal, False, scale=scale
                )[0]
            if choice == SDPBackend.EFFICIENT_ATTENTION.value:
                return torch.ops.aten._scaled_dot_product_efficient_attention(
                    q, k, v, mask, q.requires_grad, dropout, causal, scale=scale
                )[0]
        except Exception:
            pass  # no meta kernel for that fused op: the math path is the honest fallback
        return math_sdpa(q, k, v, **kwargs)

    return sdpa


class _FusedAttention:
    """While a thread traces, its ``scaled_dot_product_attention`` calls go to the kernel
    the device would pick; every other thread's calls go to the real function.

    ``nn.MultiheadAttention`` reaches SDPA through ``torch.nn.functional``'s module global,
    which only replacing that global intercepts (a TorchFunctionMode does not see calls
    nested in ``multi_head_attention_forward``). The replacement is installed while at least
    one thread traces and dispatches on the calling thread, so a training step in another
    thread (``study.optimize(n_jobs=2)``) runs exactly what it would without ttp_search.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _tracing: ClassVar[dict[int, Callable]] = {}  # thread id -> its device SDPA
    _original: ClassVar[Callable | None] = None

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @classmethod
    def _dispatch(cls, *args, **kwargs):
        handler = cls._tracing.get(threading.get_ident())
        if handler is None:
            return cls._original(*args, **kwargs)
        return handler(*args, **kwargs)

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if not cls._tracing:
                cls._original = nn.functional.scaled_dot_product_attention
                nn.functional.scaled_dot_product_attention = cls._dispatch
            cls._tracing[threading.get_ident()] = _device_sdpa(self.device, cls._original)
        return self

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._tracing.pop(threading.get_ident(), None)
            if not cls._tracing and cls._original is not None:
                nn.functional.scaled_dot_product_attention = cls._original
                cls._original = None
        return False


def _fused_attention(device: torch.device) -> _FusedAttention:
    return _FusedAttention(device)


class _ThreadsTracing(logging.Filter):
    """Drops the fake-tensor module's log records of the threads inside a trace."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return threading.get_ident() not in self.threads


_TRACING = _ThreadsTracing()
logging.getLogger("torch._subclasses.fake_tensor").addFilter(_TRACING)


@contextlib.contextmanager
def _quiet_fake_tensor_log():
    # A model that cannot take the input shape fails inside FakeTensorMode, which logs the
    # whole traceback (some 90 lines) before raising; the error is re-raised as one typed
    # line, so the log is dropped, for this thread only.
    me = threading.get_ident()
    _TRACING.threads.add(me)
    try:
        yield
    finally:
        _TRACING.threads.discard(me)


def _run_step(model, params, buffers, x, trainable, tracker, recorder) -> None:
    with tracker, recorder:
        loss = training_loss(functional_call(model, {**params, **buffers}, (x,)))
        grad_inputs = [params[n] for n in trainable]
        if grad_inputs:
            torch.autograd.grad(loss, grad_inputs, allow_unused=True)


def _meta(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def trace_training_step(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int,
    memo: MetaOpMemo | None = META_OP_MEMO,
) -> StepTrace:
    """Record the aten ops of forward + loss + backward of one step, with no real compute.

    The model's own tensors are never modified: parameters and buffers are replaced by meta
    (or, for models meta tensors cannot run, fake) copies through
    ``torch.func.functional_call``. ``memo`` reuses the outcome of ops already seen on the
    same metadata (see ``_meta_memo``); ``None`` runs every meta kernel.
    """
    shape, batch_size = check_step_args(model, input_shape, batch_size)
    device = model_device(model)
    root = type(model).__name__
    types_by_name = {name: type(m).__name__ for name, m in model.named_modules() if name}
    types_by_name["(model)"] = root
    types_by_name["(loss)"] = "loss"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.train()
    try:
        # Meta tensors are fast; fake tensors also handle tensors kept outside parameters
        # and buffers. Try the fast path, fall back to the general one.
        try:
            recorder = _Recorder(ModuleTracker(), types_by_name, root, memo)
            params = {
                n: _meta(p).requires_grad_(p.requires_grad) for n, p in model.named_parameters()
            }
            buffers = {n: _meta(b) for n, b in model.named_buffers()}
            x = torch.empty(batch_size, *shape, device="meta")
            with _fused_attention(device):
                _run_step(model, params, buffers, x, trainable, recorder.tracker, recorder)
        except Exception:
            recorder = _Recorder(ModuleTracker(), types_by_name, root)
            fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
            params = {
                n: fake_mode.from_tensor(p).requires_grad_(p.requires_grad)
                for n, p in model.named_parameters()
            }
            buffers = {n: fake_mode.from_tensor(b) for n, b in model.named_buffers()}
            with fake_mode, _quiet_fake_tensor_log():
                x = torch.empty(batch_size, *shape, device=device)
                _run_step(model, params, buffers, x, trainable, recorder.tracker, recorder)
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError(
            f"{root} cannot run a training step on input shape {(batch_size, *shape)}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    return StepTrace(
        ops=recorder.ops,
        n_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        n_param_tensors=len(trainable),
        input_shape=shape,
        batch_size=batch_size,
        device=device,
    )
