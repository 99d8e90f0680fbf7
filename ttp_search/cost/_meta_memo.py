"""Reuse what an aten op did on meta tensors of the same metadata.

A traced step runs every op's meta kernel, and many of those kernels are Python
decompositions (batch norm's takes milliseconds per call) while a network repeats the same
op on the same shapes block after block. On meta tensors an op's outcome is a function of
its inputs' metadata (shape, stride, offset, dtype), its other arguments and the default
dtype and device alone, so the first call's outcome serves every later call with the same
signature (and the first call itself takes ``_meta_rules``' shortcut where one applies):

* the op's features (``op_features``) are kept for every op;
* when the first call returned fresh tensors (the schema says no output aliases an input)
  they are rebuilt as new meta tensors of the recorded metadata;
* when it returned one of its inputs with that input's metadata untouched (an in-place
  op such as ``relu_``), that input is returned again;
* anything else, views in particular, runs again: what a view returns must share its
  input's storage.

The memo is shared by every trace in the process, so a model predicted at several batch
sizes or for several optimizers reuses its layers' entries; it is bounded and cleared when
full.
"""

from __future__ import annotations

import threading

import torch

from ttp_search.cost._meta_rules import meta_outputs
from ttp_search.cost.features import OpFeatures, op_features

_SCALARS = (
    int,
    float,
    bool,
    str,
    type(None),
    torch.dtype,
    torch.device,
    torch.layout,
    torch.memory_format,
)


class _Unkeyable(Exception):
    pass


def _tensor_meta(t: torch.Tensor) -> tuple:
    return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype)


def _key(x: object, tensors: list[torch.Tensor]) -> object:
    if isinstance(x, torch.Tensor):
        if x.device.type != "meta":
            raise _Unkeyable
        tensors.append(x)
        return _tensor_meta(x)
    if isinstance(x, (list, tuple)):
        return (type(x), tuple(_key(item, tensors) for item in x))
    if isinstance(x, _SCALARS):
        # The type is part of the key: 1, 1.0 and True are equal but promote differently.
        return (type(x), x)
    raise _Unkeyable


def _signature(
    func: torch._ops.OpOverload, args: tuple, kwargs: dict, defaults: tuple
) -> tuple[tuple, list[torch.Tensor]] | None:
    """Everything the op's meta outcome depends on, and its input tensors in order."""
    tensors: list[torch.Tensor] = []
    try:
        key = (
            func,
            defaults,
            _key(args, tensors),
            tuple((name, _key(value, tensors)) for name, value in kwargs.items()),
        )
    except _Unkeyable:
        return None
    return key, tensors


def _describe(out: object, inputs: list[torch.Tensor], before: list[tuple], fresh: bool):
    """How to give ``out`` again without running the op, or None when it must run."""
    if any(_tensor_meta(t) != m for t, m in zip(inputs, before, strict=True)):
        # An input's metadata changed (resize_, transpose_): only running it does that.
        if not isinstance(out, torch.Tensor) or all(out is not t for t in inputs):
            return None
    if isinstance(out, torch.Tensor):
        for i, t in enumerate(inputs):
            if out is t:
                return ("input", i) if _tensor_meta(t) == before[i] else None
    if not fresh:
        return None
    if out is None or isinstance(out, _SCALARS):
        return ("value", out)
    if isinstance(out, torch.Tensor):
        if out.device.type != "meta":
            return None
        return ("tensor", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (list, tuple)):
        items = tuple(_describe(o, inputs, before, fresh) for o in out)
        return None if any(i is None for i in items) else ("sequence", type(out), items)
    return None


def _rebuild(description: tuple, inputs: list[torch.Tensor]) -> object:
    kind = description[0]
    if kind == "value":
        return description[1]
    if kind == "input":
        return inputs[description[1]]
    if kind == "tensor":
        _, shape, stride, dtype = description
        return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    _, seq_type, items = description
    return seq_type(_rebuild(item, inputs) for item in items)


class MetaOpMemo:
    """Outcomes of aten ops on meta tensors, keyed by the ops' full signatures."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[tuple | None, OpFeatures]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @staticmethod
    def defaults() -> tuple:
        """What factory ops fill in where an argument is None; part of every key."""
        return (torch.get_default_dtype(), torch.get_default_device())

    def call(
        self, func: torch._ops.OpOverload, args: tuple, kwargs: dict, defaults: tuple
    ) -> tuple[object, OpFeatures]:
        """Run ``func`` (or give its outputs again) and describe it, as an unmemoized call
        would. ``defaults`` is ``MetaOpMemo.defaults()``, read once per trace."""
        signature = _signature(func, args, kwargs, defaults)
        if signature is None:
            out = meta_outputs(func, args, kwargs)
            return out, op_features(func, args, kwargs, out)
        key, inputs = signature
        entry = self._entries.get(key)
        if entry is not None:
            description, features = entry
            if description is None:
                return func(*args, **kwargs), features
            return _rebuild(description, inputs), features
        before = [_tensor_meta(t) for t in inputs]
        out = meta_outputs(func, args, kwargs)
        features = op_features(func, args, kwargs, out)
        fresh = all(r.alias_info is None for r in func._schema.returns)
        description = _describe(out, inputs, before, fresh)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (description, features)
        return out, features


#: The process-wide memo the tracer uses.
META_OP_MEMO = MetaOpMemo()
