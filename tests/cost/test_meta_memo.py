"""The tracer's shortcuts (memoized ops, shape rules) must give what the meta kernels give."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
from torch import nn

from ttp_search.cost._meta_memo import MetaOpMemo
from ttp_search.cost._meta_rules import META_RULES, meta_outputs
from ttp_search.cost.trace import trace_training_step

aten = torch.ops.aten


def _describe(out: object) -> object:
    if out is None:
        return None
    if isinstance(out, torch.Tensor):
        return (tuple(out.shape), out.stride(), out.storage_offset(), out.dtype, out.device.type)
    return tuple(_describe(o) for o in out)


def _outcome(fn, args) -> object:
    try:
        return _describe(fn(*args))
    except Exception as exc:  # the library's own rejection is part of what must match
        return type(exc)


def _assert_rule_matches_library(op, args) -> bool:
    expected = _outcome(op, args)
    got = _outcome(lambda *a: meta_outputs(op, a, {}), args)
    assert got == expected, (op, [_describe(a) for a in args if isinstance(a, torch.Tensor)])
    return META_RULES[op](*args) is not None


def _layouts(shape: tuple[int, ...], dtype: torch.dtype):
    base = torch.empty(shape, device="meta", dtype=dtype)
    yield base
    if len(shape) == 4:
        yield base.contiguous(memory_format=torch.channels_last)
    for d in range(len(shape)):
        wider = list(shape)
        wider[d] *= 2
        yield torch.empty(wider, device="meta", dtype=dtype).narrow(d, 1, shape[d])
    if len(shape) > 1:
        yield torch.empty(shape[::-1], device="meta", dtype=dtype).permute(
            *range(len(shape) - 1, -1, -1)
        )
    yield torch.empty((1, *shape[1:]), device="meta", dtype=dtype).expand(shape)


_SHAPES = [(8, 16), (4, 16, 6, 6), (2, 16, 4, 5, 6), (1, 16, 3, 3)]


@pytest.mark.parametrize("shape", _SHAPES)
def test_batch_norm_rules_match_the_library(shape):
    ruled = 0
    for dtype in (torch.float32, torch.bfloat16):
        for x in _layouts(shape, dtype):
            w = torch.empty(16, device="meta", dtype=dtype)
            wrong = torch.empty(15, device="meta", dtype=dtype)
            stats_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
            saved = torch.empty(16, device="meta", dtype=stats_dtype)
            for training, affine, stats in itertools.product(
                (True, False), (w, None, wrong), (w, None)
            ):
                args = (x, affine, affine, stats, stats, training, 0.1, 1e-5)
                ruled += _assert_rule_matches_library(aten.native_batch_norm.default, args)
                for grad in (x, x.contiguous()):
                    for mask in ((True, True, True), (True, False, False), (False, True, False)):
                        back = (
                            grad,
                            x,
                            affine,
                            stats,
                            stats,
                            saved,
                            saved,
                            training,
                            1e-5,
                            list(mask),
                        )
                        ruled += _assert_rule_matches_library(
                            aten.native_batch_norm_backward.default, back
                        )
    assert ruled > 0  # the grid reaches the rules, not only the library's fallback


_BINARY = [op for op, rule in META_RULES.items() if rule.__name__ == "_same_operands"]
_UNARY = [op for op, rule in META_RULES.items() if rule.__name__ in ("_unary", "_unary_in_place")]


@pytest.mark.parametrize("op", _BINARY, ids=str)
def test_elementwise_rules_match_the_library(op):
    extra = (0.0,) if op is aten.threshold_backward.default else ()
    ruled = 0
    for shape, dtype, other_dtype in itertools.product(
        [(8, 16), (4, 6, 5, 5), (1, 6, 3, 3)],
        (torch.float32, torch.int64),
        (None, torch.float16),
    ):
        for a, b in itertools.product(
            list(_layouts(shape, dtype)), list(_layouts(shape, other_dtype or dtype))
        ):
            ruled += _assert_rule_matches_library(op, (a, b, *extra))
    assert ruled > 0


@pytest.mark.parametrize("op", _UNARY, ids=str)
def test_unary_rules_match_the_library(op):
    ruled = 0
    for shape, dtype in itertools.product(
        [(8, 16), (4, 16, 6, 6), (1, 16, 3, 3)], (torch.float32, torch.float16)
    ):
        for x in _layouts(shape, dtype):
            expected = _outcome(op, (x,))
            out = meta_outputs(op, (x,), {})
            assert _describe(out) == expected
            if op._schema.returns[0].alias_info is not None:
                assert out is x
            ruled += META_RULES[op](x) is not None
    assert ruled > 0


class _Dense(nn.Module):
    """Concatenations, slices, batch norms of growing width, in-place ops, a view trick."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(8 + 4 * i), nn.ReLU(inplace=True), nn.Conv2d(8 + 4 * i, 4, 1)
            )
            for i in range(3)
        )
        self.head = nn.Linear(20, 10)

    def forward(self, x):
        features = self.stem(x)
        for block in self.blocks:
            features = torch.cat([features, block(features)], dim=1)
        flat = features.mean(dim=(2, 3))
        flat.unsqueeze_(0).squeeze_(0)  # in-place ops that change metadata must still run
        return nn.functional.hardswish(self.head(flat))


def _models():
    yield "dense", _Dense(), (3, 8, 8)
    yield "resnet18", torchvision.models.resnet18(num_classes=10), (3, 32, 32)
    yield "mobilenet_v3_small", torchvision.models.mobilenet_v3_small(num_classes=10), (3, 32, 32)
    encoder = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
    yield "encoder", nn.Sequential(encoder, nn.Flatten(), nn.Linear(320, 10)), (10, 32)


@pytest.mark.parametrize(
    ("name", "model", "shape"), list(_models()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_memoized_traces_equal_the_meta_kernels_own(name, model, shape):
    memo = MetaOpMemo()
    for batch in (4, 4, 2):  # a first trace, one that hits every entry, another batch size
        reference = trace_training_step(model, shape, batch, memo=None)
        memoized = trace_training_step(model, shape, batch, memo=memo)
        assert memoized.ops == reference.ops
        assert memoized.frame().equals(reference.frame())
    assert len(memo) > 0


def test_memo_keys_on_layout_and_default_dtype():
    memo = MetaOpMemo()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    traces = []
    for dtype in (torch.float32, torch.float64, torch.float32):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            reference = trace_training_step(model.to(dtype), (3, 6, 6), 2, memo=None)
            memoized = trace_training_step(model, (3, 6, 6), 2, memo=memo)
        finally:
            torch.set_default_dtype(previous)
            model.to(torch.float32)
        assert memoized.ops == reference.ops
        traces.append(memoized)
    assert traces[0].ops != traces[1].ops  # the float64 trace was not served float32's
    assert traces[0].ops == traces[2].ops


def test_a_full_memo_starts_again_and_stays_exact():
    memo = MetaOpMemo(max_entries=10)
    model = torchvision.models.resnet18(num_classes=10)
    reference = trace_training_step(model, (3, 32, 32), 2, memo=None)
    for _ in range(2):
        assert trace_training_step(model, (3, 32, 32), 2, memo=memo).ops == reference.ops
        assert len(memo) <= 10
