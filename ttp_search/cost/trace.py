"""Decompose one training step into its aten ops without doing the arithmetic.

Forward and backward run on fake tensors (``FakeTensorMode``): shapes, strides, dtypes and
the device's kernel choices (e.g. CPU flash attention) are exactly those of a real step,
but no memory is touched and no FLOP is spent. A ``TorchDispatchMode`` records every op, and
``torch.utils.module_tracker.ModuleTracker`` names the layer each op belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.module_tracker import ModuleTracker

from ttp_search.cost.features import OpFeatures, op_features
from ttp_search.cost.step import check_step_args, model_device, training_loss

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
    def __init__(self, tracker: ModuleTracker, types_by_name: dict[str, str], root: str):
        super().__init__()
        self.tracker = tracker
        self.types_by_name = types_by_name
        self.root = root
        self.ops: list[OpRecord] = []

    def _layer(self) -> str:
        parents = self.tracker.parents
        deepest = max(parents, key=lambda s: (s.count("."), len(s)), default="Global")
        if deepest in ("Global", self.root):
            return "(model)" if deepest == self.root else "(loss)"
        return deepest[len(self.root) + 1 :]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func._overloadpacket) not in _IGNORED:
            layer = self._layer()
            self.ops.append(
                OpRecord(
                    layer=layer,
                    module_type=self.types_by_name.get(layer, ""),
                    phase="backward" if self.tracker.is_bw else "forward",
                    features=op_features(func, args, kwargs, out),
                )
            )
        return out


def trace_training_step(
    model: nn.Module, input_shape: Sequence[int], batch_size: int
) -> StepTrace:
    """Record the aten ops of forward + loss + backward of one step, with no real compute.

    The model's own tensors are never modified: parameters and buffers are replaced by fake
    copies through ``torch.func.functional_call``.
    """
    shape, batch_size = check_step_args(model, input_shape, batch_size)
    device = model_device(model)
    root = type(model).__name__
    types_by_name = {name: type(m).__name__ for name, m in model.named_modules() if name}
    types_by_name["(model)"] = root
    types_by_name["(loss)"] = "loss"

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    params = {
        n: fake_mode.from_tensor(p).requires_grad_(p.requires_grad)
        for n, p in model.named_parameters()
    }
    buffers = {n: fake_mode.from_tensor(b) for n, b in model.named_buffers()}
    tracker = ModuleTracker()
    recorder = _Recorder(tracker, types_by_name, root)
    was_training = model.training
    model.train()
    try:
        with fake_mode:
            x = torch.empty(batch_size, *shape, device=device)
            with tracker, recorder:
                loss = training_loss(functional_call(model, {**params, **buffers}, (x,)))
                grad_inputs = [params[n] for n in trainable]
                if grad_inputs:
                    torch.autograd.grad(loss, grad_inputs, allow_unused=True)
    finally:
        model.train(was_training)
    return StepTrace(
        ops=recorder.ops,
        n_params=sum(p.numel() for p in trainable.values()),
        n_param_tensors=len(trainable),
        input_shape=shape,
        batch_size=batch_size,
        device=device,
    )
