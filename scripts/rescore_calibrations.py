"""Score saved bench-cost measurements under several calibrations, with nothing re-measured.

Timings on a shared machine drift, so two calibrations compared in two bench-cost runs differ
in their measurements as much as in themselves. Here the measurements are held fixed (the
per-case CSVs bench-cost wrote); every case is traced again and predicted by each calibration
file given, and by the geometric mean of their predictions (what pooling several
calibrations would give):

    python scripts/rescore_calibrations.py CAL1.npz CAL2.npz CAL3.npz
    python scripts/rescore_calibrations.py CAL1.npz CAL2.npz --splits demo

The calibration files must be for this device and thread count (the cache names them
``layer_time_<device>-t<threads>-*.npz``; ``ttp time calibrate --seed S`` with
``TTP_SEARCH_CACHE`` set to a folder of its own makes one per seed).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import (
    build_cases,
    build_demo_cases,
    build_fresh_cases,
    build_held_out_cases,
    build_sequence_cases,
)

from ttp_search.cost import LayerTimeModel, UnsupportedOpWarning
from ttp_search.cost.trace import StepTrace, trace_training_step

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {
    "benchmark": ("bench_cost_cpu.csv", build_cases),
    "held-out": ("bench_cost_cpu-held-out.csv", build_held_out_cases),
    "fresh": ("bench_cost_cpu-fresh.csv", build_fresh_cases),
    "sequence": ("bench_cost_cpu-sequence.csv", build_sequence_cases),
    "demo": ("bench_cost_cpu-demo.csv", build_demo_cases),
}


def measured_cases(split: str, docs: Path) -> list[tuple[StepTrace, str, float]]:
    """(trace, optimizer, measured seconds) of every case the split's CSV measured."""
    csv, build = SPLITS[split]
    frame = pd.read_csv(docs / csv)
    frame = frame[frame.status == "ok"]
    measured = {
        (r.model, r.batch_size, r.optimizer, str(r.input)): r.measured_s for r in frame.itertuples()
    }
    traces: dict[tuple, StepTrace] = {}
    out = []
    for case in tqdm(build(False), desc=f"tracing {split}", leave=False):
        key = (case.name, case.batch_size, case.optimizer, "x".join(map(str, case.input_shape)))
        if key not in measured:
            continue
        model_key = (case.name, case.input_shape, case.batch_size)
        if model_key not in traces:
            traces[model_key] = trace_training_step(case.build(), case.input_shape, case.batch_size)
        out.append((traces[model_key], case.optimizer, measured[key]))
    return out


def score(predicted: np.ndarray, measured: np.ndarray) -> dict:
    ape = np.abs(predicted - measured) / measured
    return {
        "median_ape": float(np.median(ape)),
        "within_10": float(np.mean(ape <= 0.10)),
        "within_25": float(np.mean(ape <= 0.25)),
        "median_ratio": float(np.median(predicted / measured)),
        "spearman": float(spearmanr(predicted, measured)[0]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("calibrations", type=Path, nargs="+", help="calibration .npz files")
    parser.add_argument("--splits", nargs="+", choices=list(SPLITS), default=list(SPLITS))
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the CSVs are")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.calibrations if not p.exists()]
    if missing:
        parser.error(f"no calibration file at {', '.join(missing)}")
    models = {str(p): LayerTimeModel.load(p) for p in args.calibrations}  # names may repeat
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        for split in args.splits:
            cases = measured_cases(split, args.docs)
            measured = np.array([m for _, _, m in cases])
            predicted = {
                name: np.array([ltm.predict_trace(t, o).step_time_s for t, o, _ in cases])
                for name, ltm in models.items()
            }
            if len(models) > 1:
                logs = np.log(np.stack(list(predicted.values())))
                predicted[f"geometric mean of {len(models)}"] = np.exp(logs.mean(axis=0))
            for name, p in predicted.items():
                rows.append({"split": split, "calibration": name, "cases": len(cases),
                             **score(p, measured)})  # fmt: skip
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
