"""Cost-aware fine-tuning search: reach a target training loss at the least cost (make finetune).

A small CNN pretrained on digits 0-4, its fresh head linear-probed on digits 5-9 (LP-FT), is
fine-tuned on digits 5-9. The search tunes the learning rate, batch size, momentum, weight
decay and which blocks to fine-tune (the head, the dense layer and head, or everything) to
bring the training loss on digits 5-9 to ``--target`` times its initial value.

Before a trial runs, its cost is predicted end to end: the linearized SDE (StepsToTarget, from
one Jacobian pass per block for the whole study, cached and shared by workers) gives the steps
to the target with an interval, the layer-time model the seconds per step. The trial's step
budget is the predicted steps times ``1 + --margin`` and it trains under a linear-decay
schedule that ends there; it stops as soon as it reaches the target. CostAwareSampler runs
the configuration with the most expected improvement per predicted second, never one
predicted not to reach the target within the trial time budget; TTPPruner stops a trial whose
loss leaves the predicted band on the bad side, or that will not end better than the best.
The objective is the training loss clipped at the target: every trial that reaches it is as
good, and cost decides among them.

Copy this file and edit the part above the line. It needs only ttp_search.
"""

from __future__ import annotations

import argparse
import copy
import functools
import time
from pathlib import Path

import optuna
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from ttp_search.cost import DEFAULT_CALIBRATION_S, LayerTimeModel
from ttp_search.data import digits_finetuning
from ttp_search.dynamics import BlockGrams, StepsToTarget
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
    "lr": FloatDistribution(1e-3, 0.5, log=True),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "momentum": CategoricalDistribution([0.0, 0.5, 0.9]),
    "weight_decay": CategoricalDistribution([0.0, 1e-4, 1e-3]),
    "tune": CategoricalDistribution(["head", "dense+head", "all"]),
}
#: Block -> parameter-name prefixes of the pretrained model; ``tune`` -> the blocks trained.
BLOCKS = {"convs": ["0.0.", "0.2."], "dense": ["0.6."], "head": ["1."]}
TUNED = {"head": ["head"], "dense+head": ["dense", "head"], "all": ["convs", "dense", "head"]}


def load_pretrained(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Your pretrained network and its fine-tuning set (inputs, targets). Here: a CNN
    pretrained on digits 0-4 with a linear-probed head for 5-9 (LP-FT), made and cached by
    ttp_search on first use."""
    task = digits_finetuning(seed)
    return task.model, task.inputs, task.targets


def trainable(net: nn.Module, tune: str) -> nn.Module:
    """A copy of ``net`` with only the blocks of ``tune`` trainable."""
    net, keep = copy.deepcopy(net), [p for b in TUNED[tune] for p in BLOCKS[b]]
    for name, param in net.named_parameters():
        param.requires_grad_(any(name.startswith(p) for p in keep))
    return net


# ---- below the line: the search, the same for any fine-tuning ------------------------------
def make_objective(net, x, y, target):
    def training_loss(model: nn.Module) -> float:
        with torch.no_grad():
            return max(F.mse_loss(model(x), y).item(), target)  # clipped: reached is reached

    def objective(trial: optuna.Trial) -> float:
        p = suggest(trial, SEARCH_SPACE)
        get_budget(trial)  # priced now: a configuration predicted to miss is pruned unrun
        torch.manual_seed(trial.number)
        model = trainable(net, p["tune"])
        opt = torch.optim.SGD(
            [q for q in model.parameters() if q.requires_grad],
            lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
        )  # fmt: skip
        sched = linear_decay_lr(trial, opt)
        loader = DataLoader(
            TensorDataset(x, y), batch_size=p["batch_size"], shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(trial.number),
        )  # fmt: skip

        def train_step(batch):
            loss = F.mse_loss(model(batch[0]), batch[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

        return run_training(
            trial, train_step, lambda: training_loss(model), loader,
            n_reports=40, reached=lambda loss: loss <= target,
        )  # fmt: skip

    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", help="an Optuna storage URL (default: SQLite in --out)")
    parser.add_argument("--study-name", help="workers with one storage and name share a study")
    parser.add_argument("--study-budget", type=float, default=120.0, help="study seconds")
    parser.add_argument("--trial-budget", type=float, help="seconds per trial (default: 1/4)")
    parser.add_argument("--target", type=float, default=0.25, help="target = this x initial loss")
    parser.add_argument("--margin", type=float, default=0.1, help="budget = predicted x (1+m)")
    parser.add_argument("--max-steps", type=int, default=3000, help="step budget cap")
    parser.add_argument("--num-samples", type=int, default=256, help="samples for the SDE")
    parser.add_argument("--n-trials", type=int, help="stop this worker after this many trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--calibration-budget", type=float, default=DEFAULT_CALIBRATION_S)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="seconds (0: off)")
    parser.add_argument("--out", type=Path, help="default: out/<study name>/ here")
    args = parser.parse_args(argv)
    name = args.study_name or time.strftime("finetune-%Y%m%d-%H%M%S")
    out = args.out or Path("out") / name
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says it

    net, x, y = load_pretrained(args.seed)
    target = args.target * F.mse_loss(net(x), y).item()
    print(f"fine-tuning set: {len(y)} digits 5-9; target training loss {target:.4f}")
    cost_model = LayerTimeModel.load_or_calibrate(args.calibration_budget)
    start = time.perf_counter()
    grams = BlockGrams.load_or_compute(
        net, x, y, BLOCKS, loss="mse", num_samples=args.num_samples, seed=args.seed
    )
    how = "computed by this worker" if grams.computed_here else "loaded"
    print(f"Jacobians per block: {how} in {time.perf_counter() - start:.1f} s")
    # Every proposal is priced by a budget search over the SDE: the closed-form noise model
    # keeps a search to milliseconds, where simulated minibatches took seconds (BENCHMARKS.md).
    steps_model = StepsToTarget(
        grams, target, max_steps=args.max_steps, tuned_blocks=lambda p: TUNED[p["tune"]],
        noise="gaussian",
    )  # fmt: skip

    @functools.cache
    def step_time(tune: str, batch_size: int):  # depends on nothing else: price each pair once
        return cost_model.predict(trainable(net, tune), x.shape[1:], batch_size, "momentum")

    sampler = CostAwareSampler(
        optuna.samplers.TPESampler(seed=args.seed, n_startup_trials=5),
        cost_fn=lambda p: step_time(p["tune"], p["batch_size"]),
        search_space=SEARCH_SPACE,
        trial_budget_s=args.trial_budget or args.study_budget / 4,
        study_budget_s=args.study_budget,
        max_steps=args.max_steps,
        min_steps=10,
        steps_model=steps_model,
        steps_margin=args.margin,
        step_time_params=("tune", "batch_size"),  # what step_time() depends on
        n_candidates=2,  # each proposal costs an SDE budget search
        seed=args.seed,
    )
    pruner = TTPPruner(n_startup_trials=3, study_budget_s=args.study_budget, band_tolerance=0.5)
    study = open_study(
        storage, name, direction="minimize", sampler=sampler, pruner=pruner,
        heartbeat_s=args.heartbeat,
    )  # fmt: skip
    left = study_time_left(study, args.study_budget)
    if left > 0:
        with StudyProgress(args.study_budget) as progress:
            study.optimize(
                record_failures(make_objective(net, x, y, target)),
                timeout=left, n_trials=args.n_trials, callbacks=[progress], catch=(RuntimeError,),
            )  # fmt: skip
    print_report(study, out)
    print(f"SDE predictions took {steps_model.prediction_s_:.1f} s; storage: {storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
