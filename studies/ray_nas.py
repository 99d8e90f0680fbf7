"""Cost-aware architecture and hyperparameter search on Ray Tune (MNIST-1D, 1-D CNNs).

The same search as ``cost_aware_nas.py``, on Ray Tune: CostAwareSearcher wraps OptunaSearch
(TPE) to price each configuration before it runs, refuse those over the trial time budget and
give each its step budget; TTPScheduler stops trials that will not end better than the best,
judged at each trial's own budget, or that cannot finish in the experiment's time left. At
the end: the trials table, what was predicted and measured, what stopping saved, the best
configuration, trials.csv and plots.

Copy this file and edit the part above the line. Local by default (``ray.init(num_cpus=2)``);
``--address auto`` (or ``ray://host:10001``) joins a running cluster, where every node needs
ttp_search installed and, to calibrate once, one ``TTP_SEARCH_CACHE`` folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import optuna
import ray
import torch
from ray import tune
from ray.tune.search.optuna import OptunaSearch
from torch import nn
from torch.nn import functional as F

from ttp_search.cost import DEFAULT_CALIBRATION_S, LayerTimeModel
from ttp_search.data import mnist1d
from ttp_search.ray import (
    CostAwareSearcher,
    TTPScheduler,
    budget_steps,
    linear_decay_lr,
    print_report,
    report,
)

SEARCH_SPACE = {
    "depth": tune.randint(1, 5),
    "width": tune.lograndint(8, 129),
    "kernel": tune.choice([3, 5, 7]),
    "batch_size": tune.choice([16, 32, 64, 128]),
    "lr": tune.loguniform(1e-3, 0.5),
}
METRIC, MODE = "val_acc", "max"
REPORTS_PER_TRIAL = 12


def load_data() -> tuple[torch.Tensor, ...]:
    return mnist1d(num_samples=5000)


def build_model(config: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    layers, channels, k = [], input_shape[0], config["kernel"]
    for i in range(config["depth"]):
        width = config["width"] * 2 ** (i // 2)
        layers += [nn.Conv1d(channels, width, k, padding=k // 2), nn.BatchNorm1d(width), nn.ReLU()]
        channels = width
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def train_mnist1d(config: dict) -> None:
    """The trainable: train to the budget under linear decay, reporting accuracy."""
    torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    x_train, y_train, x_val, y_val = load_data()
    model = build_model(config, tuple(x_train.shape[1:]), int(y_train.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    sched = linear_decay_lr(config, opt)
    steps = budget_steps(config)
    every, train_s = max(1, steps // REPORTS_PER_TRIAL), 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(y_train), (config["batch_size"],))
        start = time.perf_counter()  # time the step alone, as the cost model predicts it
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_s += time.perf_counter() - start
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                acc = (model(x_val).argmax(1) == y_val).float().mean().item()
            model.train()
            report({METRIC: acc}, step, config, elapsed_s=train_s)


# ---- below the line: the search, the same for any model -------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--address", help="a running Ray cluster (default: local Ray)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--study-budget", type=float, default=180.0, help="experiment seconds")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (default: 1/20)")
    parser.add_argument("--max-steps", type=int, default=3000, help="step budget cap")
    parser.add_argument("--num-samples", type=int, default=200, help="at most this many trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", help="experiment name (default: dated)")
    parser.add_argument("--out", type=Path, help="default: out/<name>/ here")
    parser.add_argument("--calibration-budget", type=float, default=DEFAULT_CALIBRATION_S)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    args = parser.parse_args(argv)
    name = args.name or time.strftime("ray_nas-%Y%m%d-%H%M%S")
    out = (args.out or Path("out") / name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)  # as each trial trains: the cost model must match

    cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
    x_train, y_train, _, _ = load_data()
    input_shape, n_classes = tuple(x_train.shape[1:]), int(y_train.max()) + 1
    searcher = CostAwareSearcher(
        OptunaSearch(
            metric=METRIC,
            mode=MODE,
            sampler=optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=6),
        ),
        cost_fn=lambda p: build_model(p, input_shape, n_classes),
        input_shape=input_shape,
        batch_size="batch_size",
        optimizer="momentum",
        cost_model=cost_model,
        trial_budget_s=args.trial_budget or args.study_budget / 20,
        study_budget_s=args.study_budget,
        max_steps=args.max_steps,
        min_steps=min(100, args.max_steps),
    )
    scheduler = TTPScheduler(n_startup_trials=4, value_range=(0.0, 1.0))
    # Ship this file to the workers by value: only ttp_search must be installed on each node.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(train_mnist1d, {"cpu": 1}),
            param_space={**SEARCH_SPACE, "threads": args.threads},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode=MODE,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=args.num_samples,
                time_budget_s=args.study_budget,
            ),
            run_config=tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=1),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()
    print_report(results, scheduler, METRIC, MODE, out=out, title=f"{name}")
    print(f"configurations refused before running (over a time cap): {len(searcher.rejected)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
