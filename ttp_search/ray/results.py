"""What a Ray Tune experiment predicted, measured and decided: the same trials table,
summary and plots as an Optuna study (:mod:`ttp_search.reporting`).

.. code-block:: python

    results = tuner.fit()
    print_report(results, scheduler, metric="val_acc", mode="max", out="out/")
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import Console

from ttp_search import reporting
from ttp_search.errors import InvalidInputError
from ttp_search.ray.scheduler import (
    BAND_KEY,
    BUDGET_KEY,
    ELAPSED_KEY,
    PREDICTED_STEP_KEY,
    STEP_KEY,
    TARGET_REACHED_KEY,
    TTPScheduler,
)
from ttp_search.ray.searcher import (
    CROSSING_KEY,
    MODEL_STEP_KEY,
    PREDICTED_HIGH_KEY,
    PREDICTED_LOW_KEY,
    PREDICTED_SECONDS_KEY,
)

_TTP_PREFIX = "ttp_"


def _mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise InvalidInputError(f"mode must be 'min' or 'max', got {mode!r}")
    return "maximize" if mode == "max" else "minimize"


def _history(result, metric: str) -> tuple[list[int], list[float]]:
    frame = result.metrics_dataframe
    if frame is None or metric not in frame:
        return [], []
    frame = frame.dropna(subset=[metric])
    steps = frame[STEP_KEY] if STEP_KEY in frame else frame["training_iteration"]
    return [int(s) for s in steps], [float(v) for v in frame[metric]]


def results_dataframe(
    results, scheduler: TTPScheduler | None, metric: str, mode: str
) -> pd.DataFrame:
    """One row per trial of a ``ResultGrid`` (``tuner.fit()``): ``number``, ``state``
    (``COMPLETE``, ``PRUNED`` when ``scheduler`` stopped it, ``FAIL``), ``value`` (the last
    ``metric`` of a completed trial), ``params_*`` and :data:`ttp_search.reporting.COLUMNS`."""
    _mode(mode)
    rows = []
    for number, result in enumerate(results):
        config, last = result.config or {}, result.metrics or {}
        if not config:
            continue  # started as the time budget ran out: never reported anything
        steps, values = _history(result, metric)
        decision = scheduler.decisions.get(last.get("trial_id")) if scheduler else None
        stopped = bool(decision and decision.prune)
        state = "FAIL" if result.error else ("PRUNED" if stopped else "COMPLETE")
        steps_run = steps[-1] if steps else 0
        seconds = last.get(ELAPSED_KEY, last.get("time_total_s", math.nan))
        step_s = seconds / steps_run if ELAPSED_KEY in last and steps_run else math.nan
        budget = config.get(BUDGET_KEY)
        crossing = config.get(CROSSING_KEY)
        rows.append(
            {
                "number": number,
                "state": state,
                "value": values[-1] if values and state == "COMPLETE" else math.nan,
                **{
                    f"params_{k}": v
                    for k, v in config.items()
                    if not k.startswith(_TTP_PREFIX) and not isinstance(v, dict)
                },
                "budget_steps": budget,
                "steps_run": steps_run,
                "measured_seconds": float(seconds),
                "measured_step_s": step_s,
                "full_budget_seconds": step_s * budget
                if budget and math.isfinite(step_s)
                else math.nan,
                "predicted_step_s": config.get(PREDICTED_STEP_KEY, math.nan),
                "predicted_step_low_s": math.nan,
                "predicted_step_high_s": math.nan,
                "model_step_s": config.get(MODEL_STEP_KEY, math.nan),
                "predicted_seconds": config.get(PREDICTED_SECONDS_KEY, math.nan),
                "predicted_seconds_low": config.get(PREDICTED_LOW_KEY, math.nan),
                "predicted_seconds_high": config.get(PREDICTED_HIGH_KEY, math.nan),
                "predicted_target_steps": math.nan if crossing is None else float(crossing),
                "measured_target_steps": last.get(TARGET_REACHED_KEY, math.nan),
                "last_value": values[-1] if values else math.nan,
                "decision_rule": decision.rule.value if stopped and decision.rule else None,
                "reason": decision.reason
                if stopped
                else (str(result.error)[:300] if result.error else None),
            }
        )
    if not rows:
        return reporting.empty_table()
    df = pd.DataFrame(rows)
    params = [c for c in df.columns if c.startswith("params_")]
    return df[["number", "state", "value", *params, *reporting.COLUMNS[1:]]]


def learning_curves(results, scheduler: TTPScheduler | None, metric: str) -> list:
    """Each trial's reported ``metric`` by step, whether it was stopped, and its band."""
    curves = []
    for result in results:
        steps, values = _history(result, metric)
        if not steps:
            continue
        trial_id = (result.metrics or {}).get("trial_id")
        decision = scheduler.decisions.get(trial_id) if scheduler else None
        band = (result.config or {}).get(BAND_KEY)
        curves.append(
            reporting.Curve(steps, values, bool(decision and decision.prune), band or None)
        )
    return curves


def print_report(
    results,
    scheduler: TTPScheduler | None,
    metric: str,
    mode: str,
    *,
    out: str | Path | None = None,
    console: Console | None = None,
    title: str = "",
) -> reporting.StudySummary:
    """Print the trials table and the summary of a Ray Tune experiment; with ``out``, also
    write ``trials.csv`` and the plots there."""
    df = results_dataframe(results, scheduler, metric, mode)
    return reporting.print_report(
        df,
        learning_curves(results, scheduler, metric),
        _mode(mode),
        out=out,
        console=console,
        title=title or f"{len(df)} trials",
    )
