"""Does the drift check follow a machine whose speed moved since calibration? (make bench-drift)

The cached calibration is used as it is; the device's speed is then moved on purpose by a
background process that keeps the cores busy (what a noisy neighbour on a shared machine
does). In each condition, quiet and loaded, the same models' training steps are measured
(warm-up, median of repeats) and predicted twice side by side: by the calibration as it was
made, and after `LayerTimeModel.check_drift()` re-measured the reference kernels. The
models are the demo's kind (1-D CNNs on MNIST-1D shapes), an MLP and a small ResNet; none
was used to design the drift check.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section

from ttp_search.cost import LayerTimeModel, measure_step_time

ROOT = Path(__file__).resolve().parents[1]
HOG = "import numpy as np\na = np.random.rand(600, 600)\nwhile True:\n    a @ a\n"


def _cnn1d(depth: int, width: int, kernel: int) -> nn.Module:
    layers, channels = [], 1
    for i in range(depth):
        out = width * 2 ** (i // 2)
        layers += [nn.Conv1d(channels, out, kernel, padding=kernel // 2), nn.BatchNorm1d(out),
                   nn.ReLU()]  # fmt: skip
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, 10))


CASES = [
    ("cnn1d d2 w16", lambda: _cnn1d(2, 16, 5), (1, 40), 32),
    ("cnn1d d3 w48", lambda: _cnn1d(3, 48, 5), (1, 40), 64),
    ("cnn1d d4 w64", lambda: _cnn1d(4, 64, 7), (1, 40), 64),
    (
        "mlp 1024",
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 10)),
        (1, 28, 28),
        64,
    ),
    ("resnet18", lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32), 8),
]


def run_condition(name: str, model: LayerTimeModel) -> list[dict]:
    rows = []
    model.slowdown = 1.0
    raw = {c[0]: model.predict(c[1](), c[2], c[3], "momentum").step_time_s for c in CASES}
    drift = model.check_drift()
    for case, build, shape, batch in CASES:
        net = build()
        measured = measure_step_time(net, shape, batch, "momentum").step_time_s
        checked = model.predict(net, shape, batch, "momentum").step_time_s
        rows.append(
            {
                "condition": name,
                "model": case,
                "measured_ms": 1e3 * measured,
                "as_calibrated_err": abs(raw[case] / measured - 1),
                "drift_checked_err": abs(checked / measured - 1),
                "slowdown_applied": model.slowdown,
                "kernels": drift.text().split(": ", 1)[1].split(" the time")[0],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hogs", type=int, default=2, help="busy background processes")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    model = LayerTimeModel.load_or_calibrate(drift_check=False)
    rows = run_condition("quiet", model)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    try:
        time.sleep(2.0)  # let them take the cores
        rows += run_condition(f"{args.hogs} busy processes beside it", model)
    finally:
        for h in hogs:
            h.kill()
    df = pd.DataFrame(rows)
    per = df.groupby("condition", sort=False).agg(
        cases=("model", "size"),
        as_calibrated_median_err=("as_calibrated_err", "median"),
        drift_checked_median_err=("drift_checked_err", "median"),
        slowdown_applied=("slowdown_applied", "first"),
        kernels=("kernels", "first"),
    )
    table = per.to_markdown(floatfmt=".3f")
    detail = df.drop(columns=["kernels"]).to_markdown(index=False, floatfmt=".3f")
    print(table, "\n", detail, sep="\n")
    if not args.no_write:
        body = (
            "## Drift: a calibration rescaled by the device's speed now (`make bench-drift`)\n\n"
            f"{model.data.fingerprint['device_name']}, {torch.get_num_threads()} threads; the "
            "cached calibration, then the same models measured and predicted in each condition, "
            "as calibrated and after `check_drift()` (median relative error).\n\n"
            f"{table}\n\nPer model:\n\n{detail}\n"
        )
        write_section(ROOT / "BENCHMARKS.md", "bench-drift", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
