"""Decision latency at scale: 1,000 trials x 100 reports in SQLite and PostgreSQL (make bench-load).

A study is filled with completed trials, each with ``--reports`` intermediate values, budgets
and a linear schedule (synthetic learning curves); then ``--running`` trials are run report by
report and every ``trial.should_prune()`` is timed (storage reads included). Optuna's
MedianPruner is timed on the same study as the reference. The sampler's latency is the time of
``study.ask()`` with CostAwareSampler (pricing eight proposals, GP expected improvement per
second) and with plain TPE. PostgreSQL is a throwaway server on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section

from ttp_search.optuna import CostAwareSampler, TTPPruner, keys, report, set_budget
from ttp_search.optuna import pruner as pruner_module
from ttp_search.testing import PostgresUnavailableError, throwaway_postgres

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"lr": FloatDistribution(1e-3, 1.0, log=True), "width": IntDistribution(8, 512, log=True)}

TARGET_MS = 10.0  # median decision latency the project aims at


def curve(rng: np.random.Generator, reports: int) -> tuple[dict, np.ndarray]:
    """A saturating accuracy curve with noise, and the parameters that made it."""
    params = {"lr": float(10 ** rng.uniform(-3, 0)), "width": int(2 ** rng.uniform(3, 9))}
    final = 0.98 - 0.3 * abs(math.log10(params["lr"]) + 1.5) / 1.5 + rng.normal(0, 0.01)
    steps = np.arange(1, reports + 1)
    values = final - (final - 0.1) * (steps / 8 + 1.0) ** -1.2 + rng.normal(0, 0.004, reports)
    return params, np.clip(values, 0.0, 1.0)


def fill(study: optuna.Study, n: int, reports: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = []
    for i in tqdm(range(n), desc="  completed trials", leave=False):
        params, values = curve(rng, reports)
        batch.append(
            optuna.trial.create_trial(
                params=params,
                distributions=SPACE,
                value=float(values[-1]),
                intermediate_values={s + 1: float(v) for s, v in enumerate(values)},
                user_attrs={
                    "ttp:budget_steps": reports,
                    "ttp:schedule": "linear",
                    "ttp:clock": {"elapsed_s": 0.01 * reports, "step": reports},
                },
            )
        )
        if len(batch) == 50 or i == n - 1:
            study.add_trials(batch)
            batch = []


def time_pruning(study: optuna.Study, running: int, reports: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    times = []
    for _ in tqdm(range(running), desc=f"  {type(study.pruner).__name__}", leave=False):
        params, values = curve(rng, reports)
        trial = study.ask({k: SPACE[k] for k in params})
        set_budget(trial, reports, schedule="linear")
        for step, value in enumerate(values, start=1):
            report(trial, float(value), step)
            start = time.perf_counter()
            pruned = trial.should_prune()
            times.append(time.perf_counter() - start)
            if pruned:
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return np.array(times)


@contextlib.contextmanager
def counted_records():
    """Count the decision records TTPPruner writes (a one-element list, filled in)."""
    count = [0]
    write = pruner_module.storage.set_attr

    def counting(study, trial, key, value):
        count[0] += key == keys.DECISION
        write(study, trial, key, value)

    pruner_module.storage.set_attr = counting
    try:
        yield count
    finally:
        pruner_module.storage.set_attr = write


def time_storage_parts(study: optuna.Study, repeats: int = 50) -> dict[str, np.ndarray]:
    """Milliseconds of the two storage calls every TTPPruner decision makes, alone: the read
    of the study's trials (MedianPruner makes the same read) and one user-attribute write
    (the decision record), on a running trial of the same study."""
    trial = study.ask()
    for step in range(1, 51):  # a running trial halfway through its reports
        trial.report(0.5, step)
    record = {"prune": False, "reason": "x" * 120, "predicted_final": 0.9, "step": 1}
    reads, writes = [], []
    for i in range(repeats):
        start = time.perf_counter()
        study.get_trials(deepcopy=False)
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        trial.set_user_attr("ttp:decision", {**record, "step": i})
        writes.append(time.perf_counter() - start)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return {"read": np.array(reads) * 1e3, "write": np.array(writes) * 1e3}


def time_sampler(study: optuna.Study, n: int) -> np.ndarray:
    """Seconds per ``ask`` with every parameter sampled; the first call (which fills
    Optuna's trial cache from the storage) is a warm-up and not counted."""
    times = []
    for i in tqdm(range(n + 1), desc=f"  {type(study.sampler).__name__}", leave=False):
        start = time.perf_counter()
        trial = study.ask(SPACE)  # suggests every parameter, as an objective would
        if i:
            times.append(time.perf_counter() - start)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # kept out of the GP and TPE
    return np.array(times)


def bench_backend(name: str, url: str, args) -> list[dict]:
    print(f"{name}: filling {args.trials - args.running} completed trials x {args.reports} reports")
    base = optuna.create_study(study_name="load", storage=url, direction="maximize")
    start = time.perf_counter()
    fill(base, args.trials - args.running, args.reports, args.seed)
    print(f"  filled in {time.perf_counter() - start:.1f} s")
    rows = []
    pruners = {
        "TTPPruner": TTPPruner(n_startup_trials=5, value_range=(0.0, 1.0)),
        "MedianPruner": optuna.pruners.MedianPruner(n_startup_trials=5),
    }
    for label, pruner in pruners.items():
        study = optuna.load_study(study_name="load", storage=url, pruner=pruner)
        with counted_records() as written:
            t = time_pruning(study, args.running, args.reports, args.seed) * 1e3
        rows.append(_row(name, f"{label}.should_prune", t))
        if label == "TTPPruner":
            rows[-1]["records_written"] = written[0]
    parts = time_storage_parts(study)
    rows.append(_row(name, "storage read (get_trials)", parts["read"]))
    rows.append(_row(name, "storage write (one attribute)", parts["write"]))
    samplers = {
        "CostAwareSampler(TPE)": CostAwareSampler(
            optuna.samplers.TPESampler(seed=args.seed),
            cost_fn=lambda p: 1e-4 * p["width"],
            trial_budget_s=5.0,
            max_steps=1000,
            search_space=SPACE,
            seed=args.seed,
        ),
        "TPESampler": optuna.samplers.TPESampler(seed=args.seed),
    }
    for label, sampler in samplers.items():
        study = optuna.load_study(study_name="load", storage=url, sampler=sampler)
        t = time_sampler(study, args.asks) * 1e3
        rows.append(_row(name, f"{label}.ask", t))
    return rows


def _row(storage: str, op: str, ms: np.ndarray) -> dict:
    return {
        "storage": storage,
        "operation": op,
        "calls": len(ms),
        "median_ms": float(np.median(ms)),
        "p99_ms": float(np.quantile(ms, 0.99)),
        "max_ms": float(ms.max()),
    }


def findings(df: pd.DataFrame) -> str:
    """What the table says, computed from it."""
    lines = []
    for storage, part in df.groupby("storage", sort=False):
        ms = part.set_index("operation").median_ms
        ttp = part[part.operation == "TTPPruner.should_prune"].iloc[0]
        lines.append(
            f"- {storage}: a TTPPruner decision costs "
            f"{ms['TTPPruner.should_prune'] / ms['MedianPruner.should_prune']:.1f}x a "
            f"MedianPruner decision; {ms['storage read (get_trials)']:.1f} ms of its "
            f"{ms['TTPPruner.should_prune']:.1f} ms are the storage's own read of the trials "
            "(MedianPruner's too), timed alone; the decision record "
            f"({ms['storage write (one attribute)']:.1f} ms a write) was written at "
            f"{ttp.records_written:.0f} of {ttp.calls:.0f} decisions "
            "(`ttp_search.engine.recording`); the rest is the decision core; "
            f"CostAwareSampler's ask costs "
            f"{ms['CostAwareSampler(TPE).ask'] / ms['TPESampler.ask']:.1f}x plain TPE's: it "
            "draws 8 TPE proposals, prices them and fits a GP on at most 200 trials."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--running", type=int, default=10, help="trials timed report by report")
    parser.add_argument("--asks", type=int, default=20, help="sampler calls timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_backend("SQLite", f"sqlite:///{tmp}/load.db", args)
    try:
        with throwaway_postgres() as server:
            rows += bench_backend("PostgreSQL", server.create_database("load"), args)
    except PostgresUnavailableError as err:
        print(f"PostgreSQL skipped: {err}")
    df = pd.DataFrame(rows)
    table = df.drop(columns="records_written").to_markdown(index=False, floatfmt=".2f")
    print(table)
    ttp = df[df.operation == "TTPPruner.should_prune"]
    verdict = ", ".join(
        f"{r.storage} {r.median_ms:.1f} ms median ({'met' if r.median_ms < TARGET_MS else 'missed'})"
        for r in ttp.itertuples()
    )
    print(f"target < {TARGET_MS:g} ms median per decision: {verdict}")
    if not args.no_write:
        body = (
            f"## Load: decision latency at {args.trials} trials x {args.reports} reports "
            "(`make bench-load`)\n\n"
            f"{args.trials - args.running} completed trials with {args.reports} reports each, "
            f"then {args.running} trials timed report by report (every `should_prune`, storage "
            f"reads included); `ask` timed {args.asks} times on the full study. PostgreSQL is a "
            "throwaway local server (loopback, fsync off). 2-core CPU machine.\n\n"
            f"{table}\n\nTarget < {TARGET_MS:g} ms median per decision: {verdict}.\n\n"
            f"{findings(df)}\n"
        )
        write_section(ROOT / "BENCHMARKS.md", "bench-load", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
