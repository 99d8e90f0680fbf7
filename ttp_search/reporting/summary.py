"""The end-of-run account of a search, from its trials table.

The table has one row per trial and the columns of :data:`COLUMNS` (plus ``number``,
``state``, ``params_*``); :func:`ttp_search.optuna.trials_dataframe` builds it from an
Optuna study and :func:`ttp_search.ray.results_dataframe` from a Ray Tune result grid, so
both adapters summarize, print and plot alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: The columns every trials table has besides ``number``, ``state`` and ``params_*``.
COLUMNS = (
    "value",
    "budget_steps",
    "steps_run",
    "measured_seconds",
    "measured_step_s",
    "full_budget_seconds",
    "predicted_step_s",
    "predicted_step_low_s",
    "predicted_step_high_s",
    "model_step_s",
    "predicted_seconds",
    "predicted_seconds_low",
    "predicted_seconds_high",
    "predicted_target_steps",
    "measured_target_steps",
    "last_value",
    "decision_rule",
    "reason",
)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=["number", "state", *COLUMNS])


def _median_error(predicted: pd.Series, measured: pd.Series) -> float:
    ok = predicted.notna() & measured.notna() & (measured > 0)
    if not ok.any():
        return math.nan
    return float((predicted[ok] / measured[ok] - 1).abs().median())


@dataclass(frozen=True)
class StudySummary:
    """The end-of-run account of a study: what it predicted, spent, saved and found.

    ``saved_seconds`` is what pruning saved against running every trial that started to its
    whole budget (each at its own measured speed); ``refused_seconds`` the predicted cost of
    configurations refused before they ran (over a time cap). Errors are median relative
    errors over the trials that ran, NaN where nothing was predicted.
    """

    n_trials: int
    states: dict[str, int]
    n_refused: int
    step_time_error: float
    model_step_time_error: float
    target_steps_error: float
    spent_seconds: float
    full_budget_seconds: float
    refused_seconds: float
    best_number: int | None
    best_value: float | None
    best_params: dict = field(default_factory=dict)
    #: Seconds saved per decision rule that stopped trials (``"unlikely"``, ``"study_time"``,
    #: ...; ``"other"`` for a pruner that names none).
    saved_by_rule: dict = field(default_factory=dict)

    @property
    def saved_seconds(self) -> float:
        return max(0.0, self.full_budget_seconds - self.spent_seconds)

    def text(self) -> str:
        """The summary as a few plain sentences."""
        states = ", ".join(f"{n} {s.lower()}" for s, n in self.states.items() if n)
        lines = [f"{self.n_trials} trials ({states or 'none'})"]
        if self.n_refused:
            lines.append(
                f"{self.n_refused} configurations refused before running (predicted over a "
                f"time cap; together {self.refused_seconds:.1f} s predicted)"
            )
        if not math.isnan(self.step_time_error):
            lines.append(
                f"seconds per step predicted before each trial: median error "
                f"{100 * self.step_time_error:.1f}% (the layer-time model alone, before the "
                f"study's own calibration: {100 * self.model_step_time_error:.1f}%)"
            )
        if not math.isnan(self.target_steps_error):
            lines.append(
                f"steps to the target predicted before each trial: median error "
                f"{100 * self.target_steps_error:.1f}%"
            )
        if self.full_budget_seconds > 0 and math.isfinite(self.full_budget_seconds):
            share = self.saved_seconds / self.full_budget_seconds
            lines.append(
                f"training time {self.spent_seconds:.1f} s; every started trial run to its "
                f"budget would have taken {self.full_budget_seconds:.1f} s: pruning saved "
                f"{self.saved_seconds:.1f} s ({100 * share:.0f}%)"
            )
            for rule, seconds in sorted(self.saved_by_rule.items(), key=lambda kv: -kv[1]):
                lines.append(f"  {seconds:.1f} s {_RULE_WORDS.get(rule, f'by rule {rule!r}')}")
        elif math.isfinite(self.spent_seconds):
            lines.append(f"training time {self.spent_seconds:.1f} s")
        if self.best_number is not None:
            params = ", ".join(f"{k}={_short(v)}" for k, v in self.best_params.items())
            lines.append(f"best: trial {self.best_number}, value {self.best_value:.4g} ({params})")
        return "\n".join(lines)


_RULE_WORDS = {
    "unlikely": "by stopping trials predicted not to beat the best",
    "not_worth_cost": "by stopping trials whose chance per second was below a new trial's",
    "study_time": "by stopping trials that could not finish in the study's time left",
    "outside_band": "by stopping trials whose loss left the predicted band",
    "non_finite": "by stopping trials that reported NaN or inf",
    "other": "by the pruner's stops",
}


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summarize(df: pd.DataFrame, direction: str = "minimize") -> StudySummary:
    """The :class:`StudySummary` of a trials table; ``direction`` says which value is best."""
    if df.empty:
        return StudySummary(0, {}, 0, math.nan, math.nan, math.nan, 0.0, 0.0, 0.0, None, None)
    states = {s: int((df.state == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    ran = df[df.steps_run > 0]
    refused = df[(df.steps_run == 0) & df.reason.notna() & df.predicted_seconds.notna()]
    done = df[(df.state == "COMPLETE") & df.value.notna()]
    best_number = best_value = None
    best_params: dict = {}
    if len(done):
        best = done.loc[done.value.idxmax() if direction == "maximize" else done.value.idxmin()]
        best_number, best_value = int(best.number), float(best.value)
        best_params = {
            c.removeprefix("params_"): best[c] for c in df.columns if c.startswith("params_")
        }
    full = ran.full_budget_seconds.where(ran.full_budget_seconds.notna(), ran.measured_seconds)
    stopped = ran[ran.state == "PRUNED"]
    left = (full[stopped.index] - stopped.measured_seconds).clip(lower=0)
    saved_by_rule = {
        str(rule): float(seconds)
        for rule, seconds in left.groupby(stopped.decision_rule.fillna("other")).sum().items()
        if seconds > 0
    }
    return StudySummary(
        n_trials=len(df),
        states=states,
        n_refused=len(refused),
        step_time_error=_median_error(ran.predicted_step_s, ran.measured_step_s),
        model_step_time_error=_median_error(ran.model_step_s, ran.measured_step_s),
        target_steps_error=_median_error(ran.predicted_target_steps, ran.measured_target_steps),
        spent_seconds=float(np.nansum(ran.measured_seconds)),
        full_budget_seconds=float(np.nansum(full)),
        refused_seconds=float(refused.predicted_seconds.sum()),
        best_number=best_number,
        best_value=best_value,
        best_params=best_params,
        saved_by_rule=saved_by_rule,
    )
