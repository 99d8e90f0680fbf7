"""The cost-aware NAS study on Ray Tune: same search space, data, table and plots as
`cost_aware_nas.py`, with CostAwareSearcher (around OptunaSearch + TPE) and TTPScheduler.

Local by default (``ray.init(num_cpus=2)``); ``--address auto`` (or ``ray://host:10001``) joins
an existing Ray cluster, where every node needs this repository installed (``pip install -e .``)
and, for shared calibration, one ``TTP_SEARCH_CACHE`` folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_aware_nas as nas

from ttp_search.cost import LayerTimeModel
from ttp_search.ray import CostAwareSearcher, TTPScheduler, budget_steps, linear_decay_lr, report


def train_nas(config: dict) -> None:
    """The Ray trainable: trains the config to its budget with linear decay, reporting accuracy."""
    torch.set_num_threads(config["threads"])
    data = nas.load_data(config["data"])
    x_train, y_train, x_val, y_val = data
    params = {k: config[k] for k in nas.SEARCH_SPACE}
    model = nas.build_model(params, tuple(x_train.shape[1:]), int(y_train.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)
    sched = linear_decay_lr(config, opt)
    steps = budget_steps(config)
    every = max(1, math.ceil(steps / nas.REPORTS_PER_TRIAL))
    gen = torch.Generator().manual_seed(0)
    train_s = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(y_train), (params["batch_size"],), generator=gen)
        loss, seconds = nas.train_step(model, opt, sched, x_train[idx], y_train[idx])
        train_s += seconds
        if step % every == 0 or step == steps:
            acc = nas.accuracy(model, x_val, y_val) if math.isfinite(loss) else math.nan
            report(
                {"val_acc": acc, "measured_step_s": train_s / step},
                step,
                config,
                elapsed_s=train_s,
            )


def results_table(results, scheduler: TTPScheduler) -> tuple[pd.DataFrame, list]:
    rows, curves = [], []
    for number, r in enumerate(results):
        c, m = r.config or {}, r.metrics or {}
        if not c:
            continue  # started as the time budget ran out: never reported anything
        history = r.metrics_dataframe
        steps = list(history.ttp_step) if history is not None and "ttp_step" in history else []
        values = list(history.val_acc) if steps else []
        decision = scheduler.decisions.get(m.get("trial_id"))
        stopped = bool(decision and decision.prune)
        state = "FAIL" if r.error else ("PRUNED" if stopped else "COMPLETE")
        steps_run = steps[-1] if steps else 0
        rows.append(
            {
                "number": number,
                "state": state,
                **{k: c.get(k) for k in nas.SEARCH_SPACE},
                "budget_steps": c.get("ttp_budget_steps"),
                "steps_run": steps_run,
                "predicted_step_s": c.get("ttp_predicted_step_s"),
                "measured_step_s": m.get("measured_step_s"),
                "predicted_seconds": c.get("ttp_predicted_seconds"),
                "predicted_low": c.get("ttp_predicted_low"),
                "predicted_high": c.get("ttp_predicted_high"),
                "measured_seconds": (m.get("measured_step_s") or 0.0) * steps_run,
                "value": values[-1] if values else None,
                "prune_reason": decision.reason if stopped else (str(r.error) if r.error else None),
            }
        )
        curves.append((steps, values, stopped))
    return pd.DataFrame(rows), curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", help="an existing Ray cluster (default: local Ray)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--budget", type=float, default=180.0, help="experiment seconds")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (budget / 8)")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--num-samples", type=int, default=200, help="upper bound on trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--name", default=None, help="experiment name (default: dated)")
    parser.add_argument("--out", type=Path, help="default studies/out/<name>/")
    parser.add_argument("--calibration-budget", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    args = parser.parse_args(argv)
    name = args.name or time.strftime("ray_nas-%Y%m%d-%H%M%S")
    out = (args.out or Path(__file__).parent / "out" / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    console = Console()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console.rule(f"cost-aware NAS on Ray Tune, {args.data}: {args.budget:.0f} s budget")

    torch.set_num_threads(args.threads)  # as each trial trains: the cost model must match
    cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
    x_train, y_train, _, _ = nas.load_data(args.data)
    input_shape, n_classes = tuple(x_train.shape[1:]), int(y_train.max()) + 1
    searcher = CostAwareSearcher(
        OptunaSearch(
            space=nas.SEARCH_SPACE,
            metric="val_acc",
            mode="max",
            sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=6),
        ),
        cost_fn=lambda p: nas.build_model(p, input_shape, n_classes),
        input_shape=input_shape,
        batch_size="batch_size",
        optimizer="momentum",
        cost_model=cost_model,
        trial_budget_s=args.trial_budget or args.budget / 8,
        max_steps=args.max_steps,
        min_steps=50,
    )
    scheduler = TTPScheduler(n_startup_trials=4, value_range=(0.0, 1.0), margin=0.005)
    # Ship this file and cost_aware_nas.py to the workers by value: they need not be importable
    # there (only ttp_search must be installed on every node).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(nas)
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(train_nas, {"cpu": 1}),
            param_space={"data": args.data, "threads": args.threads},
            tune_config=tune.TuneConfig(
                metric="val_acc",
                mode="max",
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=args.num_samples,
                time_budget_s=args.budget,
            ),
            run_config=tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=1),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    df, curves = results_table(results, scheduler)
    nas.summarize(console, df, curves, out, f"{name}: {len(df)} trials")
    console.print(f"configs never run (over a cap): {len(searcher.rejected)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
