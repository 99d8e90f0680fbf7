"""What a study predicted, measured and decided, as a pandas DataFrame and a summary.

Every column comes from what the trials stored: Optuna's own fields (as in
``study.trials_dataframe()``), the plan :class:`CostAwareSampler` wrote before a trial ran,
the clock :func:`~ttp_search.optuna.report` kept, and the pruner's decision. A study that
never used ttp_search still gets its Optuna columns, its seconds (from the trials' start and
end times) and its best trial.

.. code-block:: python

    from ttp_search.optuna import print_report, study_summary, trials_dataframe

    df = trials_dataframe(study)
    print(df[["number", "state", "predicted_step_s", "measured_step_s", "reason"]])
    print(study_summary(study).text())
    print_report(study, out="out/")  # the table, the summary, trials.csv and the plots
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from ttp_search import reporting
from ttp_search.optuna import keys
from ttp_search.reporting import COLUMNS, Curve, StudySummary, empty_table, summarize


def _row(trial: FrozenTrial) -> dict:
    attrs, plan = trial.user_attrs, keys.plan_of(trial)
    clock = attrs.get(keys.CLOCK) or {}
    last_step = trial.last_step
    if clock:
        steps_run, seconds = int(clock["step"]), float(clock["elapsed_s"])
    else:  # a study without ttp_search's report(): wall-clock seconds of the whole trial
        steps_run = last_step or 0
        seconds = trial.duration.total_seconds() if trial.duration is not None else math.nan
    step_s = seconds / steps_run if clock and steps_run else math.nan
    budget = attrs.get(keys.BUDGET)
    crossing, ratio = plan.get("crossing"), plan.get("steps_ratio") or plan.get("steps_scale")
    decision = attrs.get(keys.DECISION) or {}
    if trial.value is not None:
        last_value = trial.value
    elif last_step is not None:
        last_value = trial.intermediate_values[last_step]
    else:
        last_value = math.nan
    refused = bool(plan) and not plan.get("feasible", True)
    return {
        "budget_steps": budget,
        "steps_run": steps_run,
        "measured_seconds": seconds,
        "measured_step_s": step_s,
        # What the trial would have cost had it run its whole budget at its measured speed.
        "full_budget_seconds": step_s * budget if budget and math.isfinite(step_s) else math.nan,
        "predicted_step_s": plan.get("step_s", math.nan),
        "predicted_step_low_s": plan.get("step_low_s", math.nan),
        "predicted_step_high_s": plan.get("step_high_s", math.nan),
        "model_step_s": plan.get("model_step_s", math.nan),
        "predicted_seconds": _num(plan.get("seconds")),
        "predicted_seconds_low": _num(plan.get("seconds_low")),
        "predicted_seconds_high": _num(plan.get("seconds_high")),
        # The steps model's first step at the target, calibrated as it was when planned.
        "predicted_target_steps": crossing * (ratio or 1.0) if crossing is not None else math.nan,
        "measured_target_steps": _num(attrs.get(keys.TARGET_REACHED)),
        "last_value": last_value,
        "decision_rule": decision.get("rule") if trial.state == TrialState.PRUNED else None,
        "reason": attrs.get(keys.PRUNE_REASON)
        or (plan.get("reason") if refused else None)
        or attrs.get(keys.FAIL_REASON),
    }


def _num(value) -> float:
    return math.nan if value is None else float(value)


def trials_dataframe(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: Optuna's columns (``number``, ``value`` or ``values_*``,
    ``params_*``, start and end times) and the reporting columns
    (:data:`ttp_search.reporting.COLUMNS`)."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return empty_table()
    single = len(study.directions) == 1
    # Other workers add and finish trials while this runs: Optuna's columns come from an
    # in-memory copy of the one snapshot above, so every column describes the same trials.
    snapshot = _in_memory_copy(trials, study.directions)
    base = snapshot.trials_dataframe(
        attrs=("number", "value" if single else "values", "datetime_start",
               "datetime_complete", "duration", "params")
    )  # fmt: skip
    base["number"] = [t.number for t in trials]
    base.insert(1, "state", [t.state.name for t in trials])
    if not single:
        base["value"] = math.nan  # several objectives: no one value to rank by
    extra = pd.DataFrame([_row(t) for t in trials], columns=[c for c in COLUMNS if c != "value"])
    return pd.concat([base.reset_index(drop=True), extra], axis=1)


def _in_memory_copy(trials: list[FrozenTrial], directions) -> optuna.Study:
    """A private in-memory study holding ``trials`` (without the "new study" log line)."""
    storage_log = logging.getLogger("optuna.storages._in_memory")
    level = storage_log.level
    storage_log.setLevel(logging.WARNING)
    try:
        snapshot = optuna.create_study(directions=directions)
    finally:
        storage_log.setLevel(level)
    snapshot.add_trials(trials)
    return snapshot


def learning_curves(study: optuna.Study) -> list[Curve]:
    """Each trial's reported values, whether it was pruned, and its predicted band."""
    return [
        Curve(
            steps=sorted(t.intermediate_values),
            values=[t.intermediate_values[s] for s in sorted(t.intermediate_values)],
            pruned=t.state == TrialState.PRUNED,
            band=keys.plan_of(t).get("band"),
        )
        for t in study.get_trials(deepcopy=False)
        if t.intermediate_values
    ]


def _direction(study: optuna.Study) -> str:
    return study.directions[0].name.lower() if len(study.directions) == 1 else ""


def study_summary(study: optuna.Study, df: pd.DataFrame | None = None) -> StudySummary:
    """Summarize ``study`` (``df``: its :func:`trials_dataframe`, when already built)."""
    df = trials_dataframe(study) if df is None else df
    return summarize(df, _direction(study))


def save_plots(study: optuna.Study, out: str | Path, df: pd.DataFrame | None = None) -> list[Path]:
    """Write the standard plots of ``study`` into the folder ``out`` (see
    :func:`ttp_search.reporting.save_plots`); returns the files written."""
    df = trials_dataframe(study) if df is None else df
    return reporting.save_plots(df, learning_curves(study), _direction(study), out)


def print_report(
    study: optuna.Study, out: str | Path | None = None, console: Console | None = None
) -> StudySummary:
    """Print the trials table and the summary of ``study``; with ``out``, also write
    ``trials.csv`` and the plots there. Returns the :class:`StudySummary`."""
    df = trials_dataframe(study)
    return reporting.print_report(
        df, learning_curves(study), _direction(study), out=out, console=console,
        title=f"{study.study_name}: {len(df)} trials",
    )  # fmt: skip
