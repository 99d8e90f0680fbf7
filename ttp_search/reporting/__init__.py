"""Reporting a search: its trials table summarized, printed and plotted, the same for
Optuna studies and Ray Tune experiments (each adapter builds the table from its own
results; see :func:`ttp_search.optuna.print_report` and :func:`ttp_search.ray.print_report`)."""

from ttp_search.reporting.console import print_report, trials_table
from ttp_search.reporting.plots import Curve, save_plots
from ttp_search.reporting.summary import COLUMNS, StudySummary, empty_table, summarize

__all__ = [
    "COLUMNS",
    "Curve",
    "StudySummary",
    "empty_table",
    "print_report",
    "save_plots",
    "summarize",
    "trials_table",
]
