"""Predicted vs measured step times, side by side for our model and the baselines.

Used by the benchmark (``scripts/bench_cost_model.py``) and the demo; one code path, so the
numbers in BENCHMARKS.md are the numbers a user reproduces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from ttp_search.cost._meta_memo import MetaOpMemo
from ttp_search.cost.baselines import FlopLinearModel, RooflineModel
from ttp_search.cost.model import LayerTimeModel
from ttp_search.cost.step import measure_step_time
from ttp_search.cost.trace import trace_training_step
from ttp_search.errors import InvalidInputError

METHODS = ("layer_time", "flop_linear", "roofline")


@dataclass(frozen=True)
class Case:
    """One model at one input size, batch size and optimizer."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    batch_size: int
    optimizer: str


def evaluate(
    ltm: LayerTimeModel,
    cases: Iterable[Case],
    *,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict (ours and baselines) and measure every case; one row per case."""
    assert ltm.data is not None
    flop = FlopLinearModel().fit(ltm.data)
    roof = RooflineModel().fit(ltm.data)
    cases = list(cases)
    rows = []
    for case in tqdm(cases, desc="cases", disable=not progress, mininterval=2.0):
        model = case.build().to(device)
        row = {
            "model": case.name,
            "input": "x".join(map(str, case.input_shape)),
            "batch_size": case.batch_size,
            "optimizer": case.optimizer,
        }
        try:
            # One trace serves our model and both baselines; latency is trace + predict,
            # exactly what LayerTimeModel.predict does: once as this sweep sees it (the
            # process-wide memo holds the cases before it) and once as a fresh process's
            # first prediction of this model would (an empty memo).
            start = time.perf_counter()
            trace = trace_training_step(model, case.input_shape, case.batch_size)
            pred = ltm.predict_trace(trace, case.optimizer)
            row["latency_s"] = time.perf_counter() - start
            start = time.perf_counter()
            cold = trace_training_step(model, case.input_shape, case.batch_size, MetaOpMemo())
            ltm.predict_trace(cold, case.optimizer)
            row["latency_cold_s"] = time.perf_counter() - start
            truth = measure_step_time(
                model,
                case.input_shape,
                case.batch_size,
                case.optimizer,
                warmup=warmup,
                repeats=repeats,
                max_total_s=30.0,
            )
        except InvalidInputError as exc:
            row.update(status=f"not trainable: {str(exc)[-60:]}")
            rows.append(row)
            continue
        row.update(
            status="ok",
            measured_s=truth.step_time_s,
            layer_time_s=pred.step_time_s,
            low_s=pred.low_s,
            high_s=pred.high_s,
            flop_linear_s=flop.predict_trace(trace),
            roofline_s=roof.predict_trace(trace),
            gflops=pred.flops / 1e9,
            unsupported=",".join(pred.unsupported),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per method: median/mean absolute % error, share within ±10/25%, Spearman ρ."""
    ok = results[results["status"] == "ok"]
    truth = ok["measured_s"].to_numpy()
    rows = []
    for method in METHODS:
        pred = ok[f"{method}_s"].to_numpy()
        ape = np.abs(pred - truth) / truth
        rows.append(
            {
                "method": method,
                "cases": len(ok),
                "median_ape": float(np.median(ape)),
                "mean_ape": float(np.mean(ape)),
                "within_10": float(np.mean(ape <= 0.10)),
                "within_25": float(np.mean(ape <= 0.25)),
                "spearman": float(spearmanr(pred, truth).statistic),
            }
        )
    summary = pd.DataFrame(rows)
    coverage = float(np.mean((ok["low_s"] <= truth) & (truth <= ok["high_s"])))
    summary["interval_coverage"] = [coverage, np.nan, np.nan]
    return summary
