"""Cost-aware architecture and hyperparameter search on MNIST-1D (what `make demo` runs).

Optuna searches a 1-D CNN's depth, width and kernel, the batch size and the learning rate.
Before a trial runs, ttp_search's CostAwareSampler prices its training step with the
layer-time model, refuses configurations that cannot finish within the time caps, prefers
expected improvement per predicted second, and gives the trial a step budget; the trial
trains under a linear-decay schedule that ends exactly at that budget. TTPPruner stops
trials that will not end better than the best, judged at each trial's own budget, or that
cannot finish in the study's time left. At the end it prints what was predicted, what was
measured, what pruning saved and the best configuration, and writes trials.csv and plots.

Copy this file and edit the part above the line: SEARCH_SPACE, load_data, build_model and
train_step. It needs only ttp_search (which brings Optuna and PyTorch).

Several workers: run the same command in several shells or machines with one storage and
study name (``--storage postgresql+psycopg://user:pw@host/db --study-name nas``). The study
time budget counts from the study's first trial, so workers share it; workers on one
machine calibrate the cost model once; a worker that dies mid-trial stops sending
heartbeats and its trial is failed and retried once by another worker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import optuna
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ttp_search.cost import DEFAULT_CALIBRATION_S, LayerTimeModel
from ttp_search.data import mnist1d
from ttp_search.optuna import (
    CostAwareSampler,
    StudyProgress,
    TTPPruner,
    get_budget,
    linear_decay_lr,
    open_study,
    print_report,
    record_failures,
    run_training,
    study_time_left,
    suggest,
)

SEARCH_SPACE = {
    "depth": IntDistribution(1, 4),
    "width": IntDistribution(8, 128, log=True),
    "kernel": CategoricalDistribution([3, 5, 7]),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "lr": FloatDistribution(1e-3, 0.5, log=True),
}
DIRECTION = "maximize"  # validation accuracy
OPTIMIZER = "momentum"  # the update the cost model prices: SGD with momentum


def load_data() -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val): MNIST-1D, inputs (n, 1, 40), ten classes."""
    return mnist1d(num_samples=5000)


def build_model(params: dict, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``depth`` conv-BN-ReLU blocks, the width doubling every other block."""
    layers, channels, k = [], input_shape[0], params["kernel"]
    for i in range(params["depth"]):
        width = params["width"] * 2 ** (i // 2)
        layers += [nn.Conv1d(channels, width, k, padding=k // 2), nn.BatchNorm1d(width), nn.ReLU()]
        channels = width
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*layers)


def make_optimizer(model: nn.Module, params: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=params["lr"], momentum=0.9)


def train_step(model, optimizer, scheduler, batch) -> float:
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train()
    return acc


# ---- below the line: the search, the same for any model -------------------------------------
def make_objective(data):
    x_train, y_train, x_val, y_val = data
    input_shape, n_classes = tuple(x_train.shape[1:]), int(y_train.max()) + 1

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, SEARCH_SPACE)
        get_budget(trial)  # priced now: a configuration over a time cap is pruned unrun
        torch.manual_seed(trial.number)
        model = build_model(params, input_shape, n_classes)
        optimizer = make_optimizer(model, params)
        scheduler = linear_decay_lr(trial, optimizer)  # anneals exactly at the budget
        loader = DataLoader(
            TensorDataset(x_train, y_train),
            batch_size=params["batch_size"],
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(trial.number),
        )
        return run_training(
            trial,
            lambda batch: train_step(model, optimizer, scheduler, batch),
            lambda: accuracy(model, x_val, y_val),
            loader,
        )

    return objective, input_shape, n_classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", help="an Optuna storage URL (default: SQLite in --out)")
    parser.add_argument("--study-name", help="workers with one storage and name share a study")
    parser.add_argument("--study-budget", type=float, default=180.0, help="study seconds")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (default: 1/20)")
    parser.add_argument("--max-steps", type=int, default=3000, help="step budget cap")
    parser.add_argument("--n-trials", type=int, help="stop this worker after this many trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--calibration-budget", type=float, default=DEFAULT_CALIBRATION_S)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds (0: off)")
    parser.add_argument("--out", type=Path, help="default: out/<study name>/ here")
    args = parser.parse_args(argv)
    name = args.study_name or time.strftime("cost_aware_nas-%Y%m%d-%H%M%S")
    out = args.out or Path("out") / name
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    # Small models: one thread per worker. The cost model is calibrated per thread count.
    torch.set_num_threads(args.threads)

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says it
    cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
    how = "calibrated by this worker" if cost_model.calibrated_here else "loaded"
    print(f"cost model: {how} ({cost_model.path})")
    if cost_model.drift is not None:  # a cached calibration, re-checked against the device now
        print(cost_model.drift.text())
    objective, input_shape, n_classes = make_objective(load_data())
    sampler = CostAwareSampler(
        optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=6),
        cost_fn=lambda p: build_model(p, input_shape, n_classes),
        input_shape=input_shape,
        batch_size="batch_size",
        optimizer=OPTIMIZER,
        cost_model=cost_model,
        search_space=SEARCH_SPACE,
        trial_budget_s=args.trial_budget or args.study_budget / 20,
        study_budget_s=args.study_budget,
        max_steps=args.max_steps,
        min_steps=min(100, args.max_steps),
        seed=args.seed,
    )
    pruner = TTPPruner(n_startup_trials=4, study_budget_s=args.study_budget, value_range=(0, 1))
    study = open_study(
        storage, name, direction=DIRECTION, sampler=sampler, pruner=pruner,
        heartbeat_s=args.heartbeat,
    )  # fmt: skip
    left = study_time_left(study, args.study_budget)
    if left > 0:
        with StudyProgress(args.study_budget) as progress:
            study.optimize(
                record_failures(objective),
                timeout=left,
                n_trials=args.n_trials,
                callbacks=[progress],
                catch=(RuntimeError,),
            )
    print_report(study, out)
    print(f"storage: {storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
