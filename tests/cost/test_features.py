"""Decomposition of a training step: shapes, FLOPs, layer names, no real compute."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ttp_search.cost.features import FEATURE_COLUMNS, kernel_families, op_features
from ttp_search.cost.step import training_loss
from ttp_search.cost.trace import trace_training_step


def _flop_counter_total(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        training_loss(model(x)).backward()
    return counter.get_total_flops()


def test_conv_features_known_shapes_and_flops():
    x = torch.randn(4, 3, 16, 16)
    w = torch.randn(8, 3, 3, 3)
    args = (x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 1)
    out = torch.ops.aten.convolution.default(*args)
    f = op_features(torch.ops.aten.convolution.default, args, {}, out)
    assert out.shape == (4, 8, 8, 8)
    assert f.op == "aten.convolution"
    assert f.dims == (4, 3, 8, 256, 64, 9, 1)
    # 2 FLOPs per multiply-add: N·Cout·Hout·Wout·Cin·k·k·2
    assert f.flops == 4 * 8 * 8 * 8 * 3 * 3 * 3 * 2
    assert f.bytes_in == (x.numel() + w.numel()) * 4
    assert f.bytes_out == out.numel() * 4
    assert len(f.vector()) == len(FEATURE_COLUMNS)


def test_grouped_convolutions_form_a_kernel_family_of_their_own():
    model = nn.Sequential(
        nn.Conv2d(32, 32, 3, padding=1),  # dense
        nn.Conv2d(32, 32, 3, padding=1, groups=4),  # grouped: 8 channels per group
        nn.Conv2d(32, 64, 3, padding=1, groups=32),  # depthwise, channel multiplier 2
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 10),
    )
    trace = trace_training_step(model, (32, 8, 8), 2)
    ops = [r for r in trace.ops if not r.features.is_alias]
    names = [r.features.op for r in ops]
    families = kernel_families(names, [r.features.vector() for r in ops])
    by_layer: dict[str, set[str]] = {}
    for record, family in zip(ops, families, strict=True):
        if record.features.op.startswith("aten.convolution"):
            by_layer.setdefault(record.layer, set()).add(family)
    assert by_layer == {
        "0": {"aten.convolution", "aten.convolution_backward"},
        "1": {"aten.convolution.grouped", "aten.convolution_backward.grouped"},
        "2": {"aten.convolution", "aten.convolution_backward"},
    }
    # Other ops keep their names, whatever their seventh dimension holds.
    assert all(f == n for f, n in zip(families, names, strict=True) if "convolution" not in n)
    assert kernel_families([], []) == []


def test_mm_features_record_transposition():
    a = torch.randn(5, 7)
    b = torch.randn(3, 7).t()
    out = torch.mm(a, b)
    f = op_features(torch.ops.aten.mm.default, (a, b), {}, out)
    assert f.dims[:4] == (1, 5, 7, 3)
    assert f.variant == 2  # second operand transposed
    assert f.flops == 2 * 5 * 7 * 3


def test_trace_flops_match_flop_counter_mode():
    model = torchvision.models.resnet18(num_classes=10)
    trace = trace_training_step(model, (3, 32, 32), 4)
    assert trace.flops == _flop_counter_total(model, torch.randn(4, 3, 32, 32))
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
    assert trace_training_step(mlp, (20,), 8).flops == _flop_counter_total(mlp, torch.randn(8, 20))


def test_trace_names_layers_and_phases():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)
    )
    trace = trace_training_step(model, (3, 8, 8), 2)
    frame = trace.frame()
    conv = frame[frame.layer == "0"]
    assert set(conv.module_type) == {"Conv2d"}
    assert set(conv.op) >= {"aten.convolution", "aten.convolution_backward"}
    assert set(conv.phase) == {"forward", "backward"}
    assert "aten.nll_loss_forward" in set(frame[frame.layer == "(loss)"].op)
    assert trace.n_params == sum(p.numel() for p in model.parameters())
    assert trace.n_param_tensors == 6


def test_trace_touches_nothing_real():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace_training_step(model, (4,), 3)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def _real_ops(model: nn.Module, x: torch.Tensor) -> set[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[str] = set()

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(str(func._overloadpacket))
            return func(*args, **(kwargs or {}))

    with Log():
        training_loss(model(x)).backward()
    return seen


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_attention_traces_the_kernel_the_cpu_really_runs(dropout):
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=dropout, batch_first=True)
    traced = set(trace_training_step(layer, (10, 32), 2).frame().op)
    real = _real_ops(layer, torch.randn(2, 10, 32))
    fused = "aten._scaled_dot_product_flash_attention_for_cpu"
    assert (fused in traced) == (fused in real)
    assert (fused in traced) == (dropout == 0.0)  # CPU flash attention has no dropout
    assert traced == real


def test_frozen_parameters_are_not_updated_or_differentiated():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    trace = trace_training_step(model, (16,), 4)
    assert trace.n_param_tensors == 2
    assert trace.n_params == 16 * 2 + 2


def test_tracing_leaves_other_threads_attention_alone():
    """A trace in one thread while another trains: the other thread's SDPA is the real one
    (same outputs as with no trace running), and the function is restored afterwards."""
    import threading

    original = nn.functional.scaled_dot_product_attention
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        expected = layer(x)
    outputs, seen = [], []
    start = threading.Event()

    def train():
        start.wait()
        for _ in range(20):
            seen.append(nn.functional.scaled_dot_product_attention)
            with torch.no_grad():
                outputs.append(layer(x))

    worker = threading.Thread(target=train)
    worker.start()
    start.set()
    traced = set()
    for _ in range(5):
        model = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        traced |= set(trace_training_step(model, (10, 32), 2).frame().op)
    worker.join()
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in traced
    assert all(torch.equal(o, expected) for o in outputs)
    assert nn.functional.scaled_dot_product_attention is original
