"""Rank trials from the first part of each budget: the study-informed predictor against the
value observed at that point and the single-curve extrapolation (make bench-ranking).

For every curve set (scripts/curve_sets.py; the tuning sets chose the features, the held-out
sets are scored the same way and reported apart) and each fraction 10/25/50% of every trial's
own budget: the set is split at random into trials the study has finished (``--finished``,
a few or half the set) and trials still running; the predictor is fitted on the finished ones
and ranks the running ones by their predicted final value. Scores over the running trials,
averaged over ``--repeats`` splits: Spearman and Kendall against the final values, recall of
the true top 5 among the predicted top 5, 80% interval coverage, median absolute error.

The ablation fits the predictor with each optional feature added to (or a default one removed
from) ``DEFAULT_FEATURES``; features that do not raise the tuning sets' Spearman stay out. It
also tries the configuration itself (the searched hyperparameters, which a study knows for
every trial): gradient-boosted trees on the configuration and the observed value, fitted to
what the observed value's monotone map leaves (``observed + configuration``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression
from scipy.stats import kendalltau, spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section
from curve_sets import (
    DIAGNOSED_SETS,
    HELD_OUT_SETS,
    SHARED,
    TUNING_SETS,
    available,
    load_set,
    missing,
)

from ttp_search.curves import DEFAULT_FEATURES, FEATURES, StudyPredictor, extrapolate

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.10, 0.25, 0.50)
OPTIONAL = tuple(f for f in FEATURES if f not in DEFAULT_FEATURES)


def _upto(trial, fraction: float) -> int:
    """Reports needed to read the trial at ``fraction`` of its budget (one past it)."""
    at = fraction * trial.budget
    return min(int(np.searchsorted(trial.steps, at - 1e-9)) + 1, trial.steps.size)


def _extrapolations(trials, fraction):
    out = []
    for t in trials:
        c = t.curve(_upto(t, fraction))
        steps, values = c.upto(fraction)
        est = extrapolate(
            steps,
            values,
            t.budget,
            direction="maximize",
            lr_schedule=c.rate,
            value_range=(0.0, 1.0),
        )
        out.append((est.mean, est.low, est.high))
    return np.array(out)


def _scores(pred, low, high, finals) -> dict:
    top = set(np.argsort(-finals)[:5])
    chosen = set(np.argsort(-pred)[:5])
    row = {
        "spearman": spearmanr(pred, finals).statistic,
        "kendall": kendalltau(pred, finals).statistic,
        "top5_recall": len(top & chosen) / 5,
        "median_abs_err": float(np.median(np.abs(pred - finals))),
    }
    if low is not None:
        row["coverage"] = float(np.mean((finals >= low) & (finals <= high)))
    return row


def config_matrix(trials) -> np.ndarray | None:
    """The trials' configurations as numbers: logs of positive values spanning over 10x
    (learning rates), other numbers as they are, strings one-hot; ``None`` without any."""
    keys = sorted({k for t in trials for k in t.config})
    if not keys:
        return None
    columns = []
    for key in keys:
        values = [t.config.get(key) for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            v = np.asarray(values, dtype=np.float64)
            columns.append(np.log(v) if v.min() > 0 and v.max() > 10 * v.min() else v)
        else:
            columns.extend(
                (np.asarray(values, dtype=object) == c).astype(float)
                for c in sorted(set(values), key=str)
            )
    return np.column_stack(columns)


def observed_and_config(observed, configs, finals, done, running) -> np.ndarray:
    """The ``observed + configuration`` arm: the monotone map of the observed value plus
    boosted trees on (observed value, configuration) for what the map leaves."""
    order = np.argsort(observed[done])
    fitted = isotonic_regression(finals[done][order]).x
    mapped = lambda idx: np.interp(observed[idx], observed[done][order], fitted)  # noqa: E731
    features = np.column_stack([observed, configs])
    trees = HistGradientBoostingRegressor(
        max_iter=200, learning_rate=0.05, min_samples_leaf=max(5, len(done) // 20), random_state=0
    ).fit(features[done], finals[done] - mapped(done))
    return mapped(running) + trees.predict(features[running])


def evaluate(
    name: str, trials, finished: int, repeats: int, seed: int, arms: dict, with_config: bool
) -> pd.DataFrame:
    finals = np.array([t.final for t in trials])
    configs = config_matrix(trials) if with_config else None
    rows = []
    for fraction in FRACTIONS:
        observed = np.array(
            [t.curve(_upto(t, fraction)).value_at(fraction * t.budget) for t in trials]
        )
        extra = _extrapolations(trials, fraction)
        for r in range(repeats):
            order = np.random.default_rng([seed, r]).permutation(len(trials))
            done, running = order[:finished], order[finished:]
            base = {"set": name, "finished": finished, "fraction": fraction, "repeat": r}
            f_run = finals[running]
            rows.append(
                {**base, "method": "observed", **_scores(observed[running], None, None, f_run)}
            )
            e = extra[running]
            rows.append(
                {**base, "method": "extrapolation", **_scores(e[:, 0], e[:, 1], e[:, 2], f_run)}
            )
            for arm, model in arms.items():
                model.fit([trials[i].curve() for i in done], finals[done], fraction)
                preds = [
                    model.predict(trials[i].curve(_upto(trials[i], fraction))) for i in running
                ]
                p = np.array([(q.mean, q.low, q.high) for q in preds])
                rows.append({**base, "method": arm, **_scores(p[:, 0], p[:, 1], p[:, 2], f_run)})
            if configs is not None:
                pred = observed_and_config(observed, configs, finals, done, running)
                rows.append(
                    {
                        **base,
                        "method": "observed + configuration",
                        **_scores(pred, None, None, f_run),
                    }
                )
    return pd.DataFrame(rows)


def arms_for(ablation: bool) -> dict[str, StudyPredictor]:
    make = lambda feats: StudyPredictor("maximize", features=feats, value_range=(0.0, 1.0))  # noqa: E731
    arms = {"study": make(DEFAULT_FEATURES)}
    if ablation:
        for f in OPTIONAL:
            arms[f"study +{f}"] = make((*DEFAULT_FEATURES, f))
        for level in ("best", "recent"):
            arms[f"study level={level}"] = make((level, *DEFAULT_FEATURES[1:]))
        for f in DEFAULT_FEATURES[1:]:
            arms[f"study -{f}"] = make(tuple(x for x in DEFAULT_FEATURES if x != f))
    return arms


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    cols = ["spearman", "kendall", "top5_recall", "coverage", "median_abs_err"]
    out = table.groupby(["set", "finished", "fraction", "method"], sort=False)[cols].mean()
    return out.round(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", nargs="+", default=[*TUNING_SETS, *DIAGNOSED_SETS, *HELD_OUT_SETS]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--few", type=int, default=20, help="finished trials, small study")
    parser.add_argument("--ablation", action="store_true", help="add/remove each feature")
    parser.add_argument(
        "--configuration",
        action="store_true",
        help="add the observed + configuration arm (on with --ablation)",
    )
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    tables = []
    start = time.perf_counter()
    for name in tqdm(args.sets, desc="curve sets"):
        if not available(name, args.shared):
            print(missing(name, args.shared))
            continue
        trials = load_set(name, args.shared)
        arms = arms_for(args.ablation)
        for finished in (args.few, len(trials) // 2):
            tables.append(
                evaluate(
                    name,
                    trials,
                    finished,
                    args.repeats,
                    args.seed,
                    arms,
                    args.ablation or args.configuration,
                )
            )
    table = pd.concat(tables)
    summary = summarise(table)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string())
    print(f"{time.perf_counter() - start:.0f} s")
    if not args.no_write:
        table.to_csv(
            ROOT / "docs" / ("ranking_ablation.csv" if args.ablation else "ranking.csv"),
            index=False,
        )
        text = (
            f"Tuning sets: {', '.join(TUNING_SETS)}; diagnosed on (after a held-out run): "
            f"{', '.join(DIAGNOSED_SETS)}; held out: {', '.join(HELD_OUT_SETS)}. "
            f"{args.repeats} random splits each.\n\n```\n{summary.to_string()}\n```\n"
        )
        key = "bench-ranking" + ("-ablation" if args.ablation else "")
        write_section(ROOT / "BENCHMARKS.md", key, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
