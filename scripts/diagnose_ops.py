"""Where does a step-time prediction go wrong? Predicted vs profiled seconds per aten op.

For each (model, batch) given, the real training step is profiled with ``torch.profiler``
(warm-up, then several steps; self CPU time per aten op) and set beside the layer-time
model's per-op predictions for the traced step (kernel seconds plus per-op dispatch), summed
by op name. Prints the ops that carry the error, largest first.

    python scripts/diagnose_ops.py regnet_x_400mf:32 resnext50_32x4d:32 mobilenet_v2:8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_models import fresh_builders
from held_out_models import held_out_builders

from ttp_search.cost import LayerTimeModel
from ttp_search.cost.features import FEATURE_COLUMNS
from ttp_search.cost.step import build_optimizer, training_loss
from ttp_search.cost.trace import trace_training_step


def predicted_by_op(ltm: LayerTimeModel, model, shape, batch) -> pd.Series:
    trace = trace_training_step(model, shape, batch)
    real = [r for r in trace.ops if not r.features.is_alias]
    names = [r.features.op for r in real]
    X = np.array([r.features.vector() for r in real]).reshape(-1, len(FEATURE_COLUMNS))
    a, b_op, *_ = ltm.step_coef
    seconds = a * ltm.kernel_seconds(names, X) + b_op
    return pd.Series(seconds, index=names).groupby(level=0).sum()


def profiled_by_op(model, shape, batch, steps: int = 5) -> pd.Series:
    x = torch.randn(batch, *shape)
    opt = build_optimizer("sgd", list(model.parameters()))

    def step():
        opt.zero_grad(set_to_none=True)
        training_loss(model(x)).backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    rows = {
        e.key: e.self_cpu_time_total / 1e6 / steps
        for e in prof.key_averages()
        if e.key.startswith("aten::")
    }
    return pd.Series(rows).rename(lambda k: k.replace("aten::", "aten."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "cases", nargs="+", help="MODEL:BATCH, models of held_out_models.py or fresh_models.py"
    )
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    ltm = LayerTimeModel.load_or_calibrate(drift_check=False)
    builders = {**held_out_builders(32), **fresh_builders(32)}
    for case in args.cases:
        name, batch = case.split(":")
        model = builders[name]().train()
        pred = predicted_by_op(ltm, model, (3, 32, 32), int(batch))
        prof = profiled_by_op(model, (3, 32, 32), int(batch))
        both = pd.DataFrame({"predicted_ms": pred * 1e3, "profiled_ms": prof * 1e3}).fillna(0.0)
        both["error_ms"] = both.predicted_ms - both.profiled_ms
        both = both.reindex(both.error_ms.abs().sort_values(ascending=False).index)
        total = both[["predicted_ms", "profiled_ms"]].sum()
        print(f"\n{name} batch {batch}: predicted {total.predicted_ms:.1f} ms of ops, "
              f"profiled {total.profiled_ms:.1f} ms")  # fmt: skip
        print(both.head(args.top).round(2).to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
