"""The standard plots of a study, saved as PNG files.

* ``predicted_vs_measured_cost.png``: seconds per step predicted before each trial ran
  (with the predicted interval) against what it measured;
* ``value_vs_cost.png``: each trial's value against its training seconds, with the front of
  the best value for the seconds spent (pruned trials at the point they stopped);
* ``learning_curves.png``: reported values by step, pruned trials marked where they stopped,
  and the predicted band of a fine-tuning search where the sampler made one.

Each takes the trials table of :mod:`ttp_search.reporting.summary` (and the curves), so a
study from either adapter plots alike; :func:`ttp_search.optuna.save_plots` and
:func:`ttp_search.ray.save_plots` build both and call :func:`save_plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Curve:
    """One trial's reported values by step; ``band``: the predicted {step, low, high}."""

    steps: Sequence[int]
    values: Sequence[float]
    pruned: bool
    band: dict | None = None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a headless worker
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_cost(df: pd.DataFrame, path: Path) -> Path | None:
    """Predicted vs measured seconds per step; None when no trial has both."""
    ran = df[df.measured_step_s.notna() & df.predicted_step_s.notna()]
    if ran.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    low = (ran.predicted_step_s - ran.predicted_step_low_s).clip(lower=0).fillna(0)
    high = (ran.predicted_step_high_s - ran.predicted_step_s).clip(lower=0).fillna(0)
    ms = 1e3
    ax.errorbar(
        ran.measured_step_s * ms,
        ran.predicted_step_s * ms,
        yerr=np.vstack([low, high]) * ms,
        fmt="o",
        ms=4,
        label="trials (80% interval)",
    )
    both = pd.concat([ran.measured_step_s, ran.predicted_step_s])
    lims = [both.min() * ms / 1.25, both.max() * ms * 1.25]
    ax.plot(lims, lims, "k--", lw=0.8, label="predicted = measured")
    ax.set(xscale="log", yscale="log", xlabel="measured ms / step", ylabel="predicted ms / step")
    ax.set_title("Cost predicted before each trial vs measured")
    ax.legend()
    return _save(fig, path)


def plot_value_vs_cost(df: pd.DataFrame, direction: str, path: Path) -> Path | None:
    """Value against training seconds, with the front of the best value so far."""
    ran = df[(df.steps_run > 0) & df.last_value.notna() & df.measured_seconds.notna()]
    if ran.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    done = ran[ran.state == "COMPLETE"].sort_values("measured_seconds")
    stopped = ran[ran.state == "PRUNED"]
    ax.scatter(done.measured_seconds, done.last_value, label="completed")
    ax.scatter(
        stopped.measured_seconds, stopped.last_value, marker="x", c="C3", label="pruned (at stop)"
    )
    if len(done):
        best = done.last_value.cummax() if direction == "maximize" else done.last_value.cummin()
        front = done[done.last_value == best]
        ax.step(front.measured_seconds, front.last_value, where="post", c="k", lw=1,
                label="best value for the seconds")  # fmt: skip
    ax.set(xlabel="training seconds", ylabel="value", title="Value vs cost")
    ax.legend()
    return _save(fig, path)


def plot_learning_curves(curves: Sequence[Curve], path: Path) -> Path | None:
    """Reported values by step (red: pruned, x where it stopped) with predicted bands."""
    curves = [c for c in curves if len(c.steps)]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in curves:
        (line,) = ax.plot(c.steps, c.values, c="C3" if c.pruned else "C0", alpha=0.6, lw=1)
        if c.pruned:
            ax.plot(c.steps[-1], c.values[-1], "x", c="C3")
        if c.band:
            ax.fill_between(c.band["step"], c.band["low"], c.band["high"],
                            color=line.get_color(), alpha=0.08)  # fmt: skip
    ax.set(xlabel="step", ylabel="reported value")
    ax.set_title("Learning curves (red x: pruned there; shaded: predicted band)")
    return _save(fig, path)


def save_plots(
    df: pd.DataFrame, curves: Sequence[Curve], direction: str, out: str | Path
) -> list[Path]:
    """Write the standard plots into the folder ``out``; returns the files written (a plot
    with nothing to show is skipped). ``direction``: ``"minimize"`` or ``"maximize"``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if df.empty:
        return []
    paths = [
        plot_cost(df, out / "predicted_vs_measured_cost.png"),
        plot_value_vs_cost(df, direction, out / "value_vs_cost.png"),
        plot_learning_curves(curves, out / "learning_curves.png"),
    ]
    return [p for p in paths if p is not None]
