"""Benchmark TTPPruner against Optuna's pruners by replaying recorded curves (make bench-pruners).

Replay: every trial of a curve set (scripts/curve_sets.py: the MNIST-1D NAS and HPO halves,
and the DeBERTa / DeBERTaV3 MultiNLI searches from ../shared/curves when present) becomes an
Optuna trial that reports its recorded validation accuracy at its recorded steps and compute
(seconds; for DeBERTa steps × batch size); a pruned trial has consumed the compute up to the
report that stopped it. Each of ``--orders`` orders is a study: every MNIST-1D trial
shuffled, or ``--study-size`` DeBERTa trials drawn at random; the same orders for every
pruner. Metrics per pruner:

* the share of the no-pruning compute spent until a configuration within 0.5% (absolute
  accuracy) of the order's best final value is completed (median over orders; orders where
  none ever completes are counted apart);
* the best completed final value after 25% and 50% of the no-pruning compute, and at the end;
* how often a top-5 configuration was pruned (orders with any, and the share of top-5 runs);
* the compute spent, as a share of no pruning.

Baselines: every Optuna pruner, no pruning, TTPPruner without the study-informed predictor,
and the 1-epoch rule of Egele et al. 2024. Two clairvoyant rows (they know every final value)
bound what any pruner could reach. Ray's ASHA and MedianStoppingRule are replayed by
bench-ray on the MNIST-1D curves.

Live (``--live``): `studies/cost_aware_nas.py`, run in its own process as a user runs it, vs
this script's own TPE + MedianPruner and TPE + HyperbandPruner on the same space and data
(every trial 3000 steps, the study's step cap, same recipe) at equal wall-clock budget over
several seeds.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
import pandas as pd
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section
from curve_sets import (
    DIAGNOSED_SETS,
    HELD_OUT_SETS,
    SHARED,
    TUNING_SETS,
    RecordedTrial,
    available,
    load_set,
    missing,
)

from ttp_search.data import mnist1d
from ttp_search.optuna import TTPPruner, report, run_training, set_budget, suggest, trials_dataframe

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.005
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def pruners() -> dict[str, optuna.pruners.BasePruner]:
    """Fresh pruners; every built-in one with the settings its documentation suggests."""
    return {
        # The margin is the benchmark's own notion of "as good as the best".
        "TTPPruner": TTPPruner(n_startup_trials=5, value_range=(0.0, 1.0), margin=TOLERANCE),
        "TTPPruner (extrapolation only)": TTPPruner(
            n_startup_trials=5, value_range=(0.0, 1.0), margin=TOLERANCE, study_features=None
        ),
        "NopPruner": optuna.pruners.NopPruner(),
        "MedianPruner": optuna.pruners.MedianPruner(n_startup_trials=5),
        "PercentilePruner(25)": optuna.pruners.PercentilePruner(25.0, n_startup_trials=5),
        "SuccessiveHalving": optuna.pruners.SuccessiveHalvingPruner(),
        "Hyperband": optuna.pruners.HyperbandPruner(),
        "Patient(Median, 2)": optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=5), patience=2
        ),
        "1-epoch rule (top 10%)": EpochRulePruner(epochs=1, top=0.10),
    }


class EpochRulePruner(optuna.pruners.BasePruner):
    """The i-epoch rule (Egele et al. 2024), as a study runs it one trial after another:
    at its first report after ``epochs`` epochs a trial continues only when its value is in
    the ``top`` share of the values every trial so far had at that point (the first
    ``n_startup_trials`` always continue); it is never judged again."""

    def __init__(self, epochs: int = 1, top: float = 0.1, n_startup_trials: int = 5) -> None:
        self.epochs, self.top, self.n_startup_trials = epochs, top, n_startup_trials
        self._at: dict[int, float] = {}  # trial number -> its value at the judged report

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        mark = self.epochs * trial.user_attrs["epoch_steps"]
        step = trial.last_step
        if step < mark or trial.number in self._at:
            return False
        value = trial.intermediate_values[step]
        self._at[trial.number] = value
        seen = np.array(list(self._at.values()))
        if seen.size <= self.n_startup_trials:
            return False
        return bool(value < np.quantile(seen, 1.0 - self.top))


def replay(trials: list[RecordedTrial], order: np.ndarray, pruner) -> pd.DataFrame:
    """Feed the trials through one study in ``order``; one row per trial."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    rows = []
    for i in order:
        run = trials[i]
        trial = study.ask()
        set_budget(trial, int(run.budget), schedule=run.schedule)
        trial.set_user_attr("epoch_steps", run.epoch_steps)
        compute = run.compute_at()
        pruned_at = None
        for e, (step, acc) in enumerate(zip(run.steps, run.values, strict=True)):
            report(trial, float(acc), int(step), elapsed_s=float(compute[e]))
            if e < run.steps.size - 1 and trial.should_prune():
                pruned_at = e
                break
        if pruned_at is None:
            study.tell(trial, float(run.final))
            used = float(compute[-1])
        else:
            study.tell(trial, state=TrialState.PRUNED)
            used = float(compute[pruned_at])
        rows.append(
            {"run": run.name, "final": run.final, "completed": pruned_at is None, "seconds": used}
        )
    return pd.DataFrame(rows)


def clairvoyant(trials: list[RecordedTrial], order: np.ndarray, judged_at: str) -> pd.DataFrame:
    """The log of a pruner that knows every final value: a near-best trial runs to its end,
    every other one stops at its first report (``"first report"``) or at its first report
    after one epoch (``"one epoch"``, what any rule that watches an epoch must spend). No
    real pruner can do better, so its compute to near-best bounds every row from below."""
    best = max(t.final for t in trials)
    rows = []
    for i in order:
        run = trials[i]
        compute = run.compute_at()
        near = run.final >= best - TOLERANCE
        stop = 0
        if judged_at == "one epoch":
            stop = min(int(np.searchsorted(run.steps, run.epoch_steps)), run.steps.size - 1)
        used = float(compute[-1] if near else compute[stop])
        rows.append({"run": run.name, "final": run.final, "completed": near, "seconds": used})
    return pd.DataFrame(rows)


CLAIRVOYANT = {
    "Clairvoyant, first report (lower bound)": "first report",
    "Clairvoyant, one epoch (lower bound)": "one epoch",
}


def metrics(log: pd.DataFrame, trials: list[RecordedTrial]) -> dict:
    finals = np.array([t.final for t in trials])
    best = finals.max()
    full = sum(float(t.compute_at()[-1]) for t in trials)
    top5 = {trials[i].name for i in np.argsort(-finals)[:5]}
    spent = log.seconds.cumsum()
    hit = log.completed & (log.final >= best - TOLERANCE)
    to_near_best = float(spent[hit].iloc[0]) if hit.any() else math.inf

    def best_by(limit: float) -> float:
        ok = log.completed & (spent <= limit)
        return float(log.final[ok].max()) if ok.any() else math.nan

    wrongly = log[log.run.isin(top5) & ~log.completed]
    return {
        "to_near_best": to_near_best / full,
        "best_at_25pct": best_by(0.25 * full),
        "best_at_50pct": best_by(0.50 * full),
        "final_best": float(log.final[log.completed].max()),
        "top5_pruned": len(wrongly),
        "compute_share": float(log.seconds.sum()) / full,
    }


def replay_table(name: str, orders: int, seed: int, size: int | None, shared: Path):
    """Summary and per-order rows of every pruner on one curve set; each order is a study
    of ``size`` trials drawn from the set (all of them when ``None``), in random order."""
    everything = load_set(name, shared)
    rng = np.random.default_rng(seed)
    draws = [rng.permutation(len(everything))[: size or len(everything)] for _ in range(orders)]
    rows = []
    names = list(pruners())
    jobs = [(o, n) for o in range(orders) for n in names]
    for o, pruner_name in tqdm(jobs, desc=f"replay {name}"):
        trials = [everything[i] for i in draws[o]]
        order = np.arange(len(trials))
        m = metrics(replay(trials, order, pruners()[pruner_name]), trials)
        rows.append({"order": o, "pruner": pruner_name, **m})
    for o in range(orders):
        trials = [everything[i] for i in draws[o]]
        for bound, judged_at in CLAIRVOYANT.items():
            m = metrics(clairvoyant(trials, np.arange(len(trials)), judged_at), trials)
            rows.append({"order": o, "pruner": bound, **m})
    per_order = pd.DataFrame(rows)
    summary = per_order.groupby("pruner", sort=False).agg(
        median_compute_to_near_best=("to_near_best", "median"),
        never_near_best=("to_near_best", lambda s: int(np.isinf(s).sum())),
        best_at_25pct=("best_at_25pct", "mean"),
        best_at_50pct=("best_at_50pct", "mean"),
        final_best=("final_best", "mean"),
        orders_with_top5_pruned=("top5_pruned", lambda s: int((s > 0).sum())),
        top5_pruned_share=("top5_pruned", lambda s: float(s.mean() / 5)),
        compute_share=("compute_share", "mean"),
    )
    return summary, per_order


def _verdict(summary: pd.DataFrame, orders: int) -> str:
    ttp = summary.loc["TTPPruner"]
    builtins = summary.drop(index=["TTPPruner", "NopPruner", *CLAIRVOYANT])
    optuna_names = [n for n in builtins.index if not n.startswith(("TTP", "1-epoch"))]
    best_name = builtins.loc[optuna_names].median_compute_to_near_best.idxmin()
    best = builtins.loc[best_name]
    rule = summary.loc["1-epoch rule (top 10%)"]
    ratio = ttp.median_compute_to_near_best / best.median_compute_to_near_best
    bounds = [summary.loc[name].median_compute_to_near_best for name in CLAIRVOYANT]
    return (
        f"TTPPruner reaches within {TOLERANCE:.1%} of the best after "
        f"{ttp.median_compute_to_near_best:.3f} of the no-pruning compute (median) vs "
        f"{best.median_compute_to_near_best:.3f} for the best Optuna pruner ({best_name}): "
        f"{ratio:.2f}x (target ≤ 0.5x) and {rule.median_compute_to_near_best:.3f} for the "
        f"1-epoch rule. No near-best configuration completed in {int(ttp.never_near_best)} of "
        f"{orders} orders (target 0). Final best {ttp.final_best:.4f} vs no pruning "
        f"{summary.loc['NopPruner'].final_best:.4f}. A top-5 configuration was pruned in "
        f"{int(ttp.orders_with_top5_pruned)} of {orders} orders (target ≤ 1). A pruner that "
        f"knew every final value would need {bounds[0]:.3f} (stopping the rest at their first "
        f"report) or {bounds[1]:.3f} (after one epoch): "
        f"{bounds[0] / best.median_compute_to_near_best:.2f}x and "
        f"{bounds[1] / best.median_compute_to_near_best:.2f}x the best Optuna pruner."
    )


def plot_replay(per_order: dict[str, pd.DataFrame], path: Path) -> None:
    fig, axes = plt.subplots(1, len(per_order), figsize=(6 * len(per_order), 4))
    for ax, (space, df) in zip(np.atleast_1d(axes), per_order.items(), strict=True):
        names = list(dict.fromkeys(df.pruner))
        data = [df[df.pruner == n].to_near_best.replace(np.inf, np.nan).dropna() for n in names]
        ax.boxplot(data, tick_labels=names, orientation="horizontal")
        ax.set(xlabel=f"share of compute until within {TOLERANCE:.1%} of the best", title=space)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------ live


LIVE_CSV = ROOT / "docs" / "bench_pruners_live.csv"
STUDY = ROOT / "studies" / "cost_aware_nas.py"
# The study's space and network, restated: the baselines search exactly what it does.
LIVE_SPACE = {
    "depth": IntDistribution(1, 4),
    "width": IntDistribution(8, 128, log=True),
    "kernel": CategoricalDistribution([3, 5, 7]),
    "batch_size": CategoricalDistribution([16, 32, 64, 128]),
    "lr": FloatDistribution(1e-3, 0.5, log=True),
}


def _cnn(p: dict) -> torch.nn.Module:
    layers, channels, k = [], 1, p["kernel"]
    for i in range(p["depth"]):
        width = p["width"] * 2 ** (i // 2)
        layers += [torch.nn.Conv1d(channels, width, k, padding=k // 2),
                   torch.nn.BatchNorm1d(width), torch.nn.ReLU()]  # fmt: skip
        channels = width
    layers += [torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 10)]
    return torch.nn.Sequential(*layers)


def _baseline(method: str, seed: int, budget: float, storage: str, name: str, steps: int):
    """What a user writes without ttp_search: TPE, Optuna's pruner, every trial ``steps``."""
    x, y, xv, yv = mnist1d(num_samples=5000)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=4)
        if method == "tpe+median"
        else optuna.pruners.HyperbandPruner()
    )
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", pruner=pruner,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=6),
    )  # fmt: skip

    def objective(trial):
        p = suggest(trial, LIVE_SPACE)
        torch.manual_seed(trial.number)
        model = _cnn(p)
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=0.9)
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=steps)
        loader = DataLoader(TensorDataset(x, y), batch_size=p["batch_size"], shuffle=True,
                            drop_last=True)  # fmt: skip

        def step(batch):
            loss = F.cross_entropy(model(batch[0]), batch[1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

        def accuracy():
            model.eval()
            with torch.no_grad():
                acc = (model(xv).argmax(1) == yv).float().mean().item()
            model.train()
            return acc

        return run_training(trial, step, accuracy, loader, steps=steps)

    torch.set_num_threads(1)  # as the study trains
    study.optimize(objective, timeout=budget, catch=(RuntimeError,))


def live_runs(budget: float, seeds: int, out: Path) -> list[tuple[str, int, Path]]:
    """Run the NAS study (its own process) and the baselines per seed; (method, seed, dir)."""
    done = []
    for seed in range(seeds):
        for method in ("ttp", "tpe+median", "tpe+hyperband"):
            name = f"bench-{method}-{seed}-{int(time.time())}"
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            storage = f"sqlite:///{folder / 'study.db'}"
            if method == "ttp":
                cmd = [sys.executable, str(STUDY), "--study-budget", str(budget), "--seed"]
                cmd += [str(seed), "--study-name", name, "--out", str(folder)]
                subprocess.run(cmd, check=True, capture_output=True)
            else:  # the study's default step cap: what its trials may at most train
                _baseline(method, seed, budget, storage, name, steps=3000)
            study = optuna.load_study(study_name=name, storage=storage)
            trials_dataframe(study).to_csv(folder / "trials.csv", index=False)
            done.append((method, seed, folder))
    return done


def live_table(runs: list[tuple[str, int, Path]]) -> pd.DataFrame:
    rows = []
    for method, seed, folder in runs:
        df = pd.read_csv(folder / "trials.csv")
        done = df[df.state == "COMPLETE"]
        ran = df[df.measured_step_s.notna()]
        ape = (ran.predicted_step_s / ran.measured_step_s - 1).abs()
        rows.append(
            {
                "method": method,
                "seed": seed,
                "trials": len(df),
                "completed": len(done),
                "best_acc": float(done.value.max()) if len(done) else math.nan,
                "step_time_median_err": float(ape.median()) if len(ape) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument(
        "--sets", nargs="+", default=[*TUNING_SETS, *DIAGNOSED_SETS, *HELD_OUT_SETS]
    )
    parser.add_argument("--study-size", type=int, default=120, help="DeBERTa trials per order")
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--live", action="store_true", help="also run the live NAS comparison")
    parser.add_argument("--live-budget", type=float, default=120.0)
    parser.add_argument("--live-seeds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lines, per_order = [], {}
    for name in args.sets:
        if not available(name, args.shared):
            print(missing(name, args.shared))
            continue
        size = None if not name.startswith("deberta") else args.study_size
        summary, per_order[name] = replay_table(name, args.orders, args.seed, size, args.shared)
        split = "held out" if name in HELD_OUT_SETS else "tuning set"
        split = "diagnosed on" if name in DIAGNOSED_SETS else split
        drawn = f"{size} trials drawn per order" if size else "every trial, shuffled"
        lines += [
            f"### Replay, {name} ({split}; {args.orders} orders, {drawn})",
            "",
            summary.round(4).to_markdown(),
            "",
            _verdict(summary, args.orders),
            "",
        ]
    live = None
    if args.live:
        live = live_table(live_runs(args.live_budget, args.live_seeds, ROOT / "results" / "live"))
        live.to_csv(LIVE_CSV, index=False)
    elif LIVE_CSV.exists():
        live = pd.read_csv(LIVE_CSV)  # the last live comparison (it takes ~15 minutes)
    if live is not None:
        agg = live.groupby("method", sort=False).agg(
            best_acc_mean=("best_acc", "mean"),
            best_acc_min=("best_acc", "min"),
            trials=("trials", "mean"),
            completed=("completed", "mean"),
            step_time_median_err=("step_time_median_err", "median"),
        )
        lines += [
            f"### Live NAS study, equal wall clock per run, seeds {sorted(set(live.seed))}",
            "",
            agg.round(4).to_markdown(),
            "",
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        img = ROOT / "docs" / "bench_pruners_replay.png"
        plot_replay(per_order, img)
        write_section(
            ROOT / "BENCHMARKS.md", "bench-pruners", body + f"\n![replay](docs/{img.name})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
