"""The trials table and the end-of-run report on the terminal (what ``ttp report`` prints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from ttp_search.reporting.plots import Curve, save_plots
from ttp_search.reporting.summary import StudySummary, summarize


def _fmt(value, spec: str = "{:.3g}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return spec.format(value) if isinstance(value, (int, float)) else str(value)


def trials_table(df: pd.DataFrame, title: str = "") -> Table:
    """The trials as a rich table: parameters, budget, predicted and measured cost, value,
    and why a trial was stopped or refused."""
    params = [c for c in df.columns if c.startswith("params_")]
    table = Table(title=title)
    for name in ["#", "state", *(p.removeprefix("params_") for p in params)]:
        table.add_column(name, no_wrap=True)
    for name in ("budget", "steps", "pred ms/step", "meas ms/step", "value"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column("why stopped", overflow="fold", max_width=60)
    for r in df.to_dict("records"):
        table.add_row(
            str(r["number"]),
            r["state"],
            *(_fmt(r[p]) for p in params),
            _fmt(r["budget_steps"], "{:.0f}"),
            _fmt(r["steps_run"], "{:.0f}"),
            _fmt(1e3 * r["predicted_step_s"], "{:.2f}"),
            _fmt(1e3 * r["measured_step_s"], "{:.2f}"),
            _fmt(r["last_value"], "{:.4f}"),
            _fmt(r["reason"]),
        )
    return table


def print_report(
    df: pd.DataFrame,
    curves: Sequence[Curve],
    direction: str,
    *,
    out: str | Path | None = None,
    console: Console | None = None,
    title: str = "",
) -> StudySummary:
    """Print the trials table and the summary; with ``out``, also write ``trials.csv`` and
    the plots there. Returns the :class:`StudySummary`."""
    console = console or Console()
    Console(width=max(console.width, 150), file=console.file).print(trials_table(df, title))
    summary = summarize(df, direction)
    console.print(summary.text())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "trials.csv", index=False)
        console.print(f"trials: {out / 'trials.csv'}")
        for path in save_plots(df, curves, direction, out):
            console.print(f"plot: {path}")
    return summary
