"""A live progress bar for ``study.optimize``.

.. code-block:: python

    with StudyProgress(study_budget_s=180) as progress:
        study.optimize(objective, timeout=180, callbacks=[progress])
    print_report(study, out="out/")
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ttp_search.optuna._storage import study_start


class StudyProgress:
    """A progress bar over the study's time budget, updated as trials end (an
    ``optimize`` callback): trials so far, how many were pruned, the best value."""

    def __init__(self, study_budget_s: float, console: Console | None = None) -> None:
        self.study_budget_s = float(study_budget_s)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = None

    def __enter__(self) -> StudyProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task("starting", total=self.study_budget_s)
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        try:
            best = f"{study.best_value:.4g}"
        except (ValueError, RuntimeError):  # none completed yet, or several objectives
            best = "-"
        elapsed = time.time() - (study_start(study, trials) or time.time())
        self._progress.update(
            self._task,
            completed=min(elapsed, self.study_budget_s),
            description=f"trials {len(trials)} | pruned {states.count(TrialState.PRUNED)}"
            f" | best {best}",
        )
