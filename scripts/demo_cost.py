"""The quick-start demo (`make demo`): calibrate this CPU briefly, then predict and measure.

Until the Optuna study lands, the demo is the cost model end to end: a short calibration
(reused from the cache when one exists), then predicted vs measured seconds per training
step for a few torchvision models none of which calibration ever timed.
"""

from __future__ import annotations

import argparse
import functools

import torchvision
from rich.console import Console
from rich.table import Table

from ttp_search.cost import LayerTimeModel
from ttp_search.cost.evaluate import Case, evaluate, summarize

MODELS = ("resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x1_0", "mnasnet0_5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-s", type=float, default=90.0, help="calibration budget")
    args = parser.parse_args()
    console = Console()
    console.rule("ttp_search: seconds per training step, predicted before running")
    ltm = LayerTimeModel.load_or_calibrate(args.budget_s)
    console.print(f"calibration: {ltm.path}")
    cases = [
        Case(
            name,
            functools.partial(torchvision.models.get_model, name, num_classes=10),
            (3, 32, 32),
            32,
            opt,
        )
        for name in MODELS
        for opt in ("sgd", "adam")
    ]
    results = evaluate(ltm, cases)
    table = Table(title="batch 32, input 3x32x32")
    for col in (
        "model",
        "optimizer",
        "predicted ms",
        "80% interval ms",
        "measured ms",
        "error",
        "FLOP-linear ms",
        "roofline ms",
    ):
        table.add_column(col, justify="left" if col in ("model", "optimizer") else "right")
    for r in results.itertuples():
        err = (r.layer_time_s - r.measured_s) / r.measured_s
        table.add_row(
            r.model,
            r.optimizer,
            f"{1e3 * r.layer_time_s:.1f}",
            f"{1e3 * r.low_s:.1f}–{1e3 * r.high_s:.1f}",
            f"{1e3 * r.measured_s:.1f}",
            f"{err:+.0%}",
            f"{1e3 * r.flop_linear_s:.1f}",
            f"{1e3 * r.roofline_s:.1f}",
        )
    console.print(table)
    console.print(summarize(results).round(3).to_string(index=False))
    console.print(
        "A longer calibration predicts better: `ttp time calibrate --force --budget-s 280`."
    )


if __name__ == "__main__":
    main()
