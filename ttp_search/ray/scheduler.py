"""TTPScheduler: Ray Tune's side of the decision core (the twin of TTPPruner)."""

from __future__ import annotations

import math
import numbers
import pickle
import warnings
from dataclasses import dataclass, field

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ttp_search._checks import renamed_option
from ttp_search.engine import Decision
from ttp_search.engine.clock import StudyClock
from ttp_search.engine.decision import TrialCurve
from ttp_search.engine.judging import DecisionOptions
from ttp_search.engine.planning import band_arrays
from ttp_search.errors import InvalidInputError

STEP_KEY = "ttp_step"
BUDGET_KEY = "ttp_budget_steps"
SCHEDULE_KEY = "ttp_schedule"
PREDICTED_STEP_KEY = "ttp_predicted_step_s"
ELAPSED_KEY = "ttp_elapsed_s"  # seconds of training so far, when the trainable reports them
TARGET_REACHED_KEY = "ttp_target_reached_step"  # a result's first step at the target
BAND_KEY = "ttp_band"  # {"step": [...], "low": [...], "high": [...]}: a predicted curve
TRAIN_LOSS_KEY = "ttp_train_loss"  # the training loss beside the metric (TSE/LCGA features)


@dataclass
class _TrialState:
    steps: list = field(default_factory=list)
    values: list = field(default_factory=list)
    budget: float | None = None
    schedule: str = "constant"
    elapsed_s: float | None = None
    recent_step_s: float | None = None
    predicted_step_s: float | None = None
    status: str = "running"  # running, completed, stopped, errored, removed
    final: float | None = None
    prediction: tuple[float, float, float] | None = None
    band: tuple | None = None
    train_steps: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    # An ended trial's curve, kept: it will not report again, and the decision core reuses
    # what it read from the same curve objects (not checkpointed).
    _ended: TrialCurve | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_ended": None}

    def curve(self, label: str | None = None) -> TrialCurve:
        ended, done = self.status in ("completed", "stopped"), self.status == "completed"
        kept = self._ended
        if (
            ended
            and kept is not None
            and (kept.label, kept.finished, kept.steps.size) == (label, done, len(self.steps))
            and (kept.final, kept.elapsed_s, kept.budget_steps)
            == (self.final if done else None, self.elapsed_s, self.budget)
        ):
            return kept
        curve = self._build_curve(label)
        self._ended = curve if ended else None
        return curve

    def _build_curve(self, label: str | None) -> TrialCurve:
        done = self.status == "completed"
        return TrialCurve(
            np.array(self.steps, dtype=np.float64),
            np.array(self.values, dtype=np.float64),
            budget_steps=self.budget,
            schedule=self.schedule,
            elapsed_s=self.elapsed_s,
            predicted_step_s=self.predicted_step_s,
            recent_step_s=self.recent_step_s,
            finished=done,
            final=self.final if done else None,
            predicted_final=self.prediction,
            band=self.band,
            label=label,
            pruned=self.status == "stopped",
            train_steps=self.train_steps or None,
            train_losses=self.train_losses or None,
        )


def _budget(value: object, where: str) -> float | None:
    """A step budget read from a config or result: ``None`` or a number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 1:
        raise InvalidInputError(f"{where} must be a step budget (a number >= 1), got {value!r}")
    if not math.isfinite(value):
        raise InvalidInputError(f"{where} must be a finite step budget, got {value!r}")
    return float(value)


class TTPScheduler(FIFOScheduler):
    """Stop Ray Tune trials that will not end better than the best, judged at their budgets.

    Same decisions and options, in the same words, as :class:`ttp_search.optuna.TTPPruner`:
    each result is added to the trial's curve, its end at its own budget
    (``config["ttp_budget_steps"]``, set by :class:`CostAwareSearcher`, or the result's
    ``ttp_budget_steps``) under its schedule (``ttp_schedule``) is predicted from the
    finished and stopped trials and its own extrapolation, and the trial is stopped when
    P(it ends better than the best) < ``threshold``, it is behind ``peer_percentile`` of its
    peers at the same fraction of their budgets and a new trial buys more chance per
    second (the training loss, when reported as ``ttp_train_loss``, feeds the TSE/LCGA
    features); or when its
    predicted cost to finish exceeds the time left of ``study_budget_s`` (also read from
    ``TuneConfig(time_budget_s=...)``, Ray Tune's name for it); or on NaN/inf. STOP is the only action taken:
    pausing a trial that trains to a budget saves nothing.

    Progress is ``result["ttp_step"]`` when the trainable reports it (the :func:`report`
    helper does), else ``result[time_attr]`` (``training_iteration`` or ``time_total_s``);
    the budget must be in the same unit. A result without the metric is ignored (CONTINUE),
    as Ray's own schedulers do. ``decisions`` holds each trial's latest decision.

    Example:
        .. code-block:: python

            from ray import tune
            from ttp_search.ray import TTPScheduler

            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric="val_acc", mode="max", study_budget_s=600,
                    scheduler=TTPScheduler(n_startup_trials=4, value_range=(0, 1)),
                ),
            )
    """

    def __init__(
        self,
        threshold: float = 0.05,
        *,
        metric: str | None = None,
        mode: str | None = None,
        time_attr: str = "training_iteration",
        options: DecisionOptions | None = None,
        clock: StudyClock | None = None,
        **decision_options,
    ) -> None:
        super().__init__()
        if mode not in (None, "min", "max"):
            raise InvalidInputError(f"mode must be 'min' or 'max', got {mode!r}")
        study_budget_s = renamed_option(  # the name before ttp_search 0.2
            decision_options,
            "time_budget_s",
            "study_budget_s",
            "TTPScheduler",
            decision_options.pop("study_budget_s", None),
        )
        if study_budget_s is not None:
            decision_options["study_budget_s"] = study_budget_s
        if options is None:
            options = DecisionOptions(threshold=threshold, **decision_options)
        elif decision_options:
            raise InvalidInputError("give either options or the options to build them")
        self.options = options
        self.clock = clock if clock is not None else StudyClock(options.study_budget_s)
        self._metric = metric
        self._mode = mode
        self.time_attr = time_attr
        self._trials: dict[str, _TrialState] = {}
        self.decisions: dict[str, Decision] = {}

    @property
    def study_budget_s(self) -> float | None:
        return self.clock.study_budget_s

    # -- search properties -----------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        if self.clock.study_budget_s is None and spec.get("time_budget_s"):
            budget = spec["time_budget_s"]
            # Tune passes a number or a timedelta.
            self.clock.study_budget_s = float(getattr(budget, "total_seconds", lambda: budget)())
        return True

    def _direction(self) -> str:
        if self._metric is None or self._mode is None:
            raise InvalidInputError(
                "TTPScheduler needs metric and mode: pass them here or in TuneConfig"
            )
        return "maximize" if self._mode == "max" else "minimize"

    # -- trial events ----------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial) -> None:
        self.clock.start()
        config = getattr(trial, "config", {}) or {}
        budget = _budget(config.get(BUDGET_KEY), f"config[{BUDGET_KEY!r}]")
        state = _TrialState(
            budget=budget,
            schedule=config.get(SCHEDULE_KEY, "constant"),
            predicted_step_s=config.get(PREDICTED_STEP_KEY),
            band=band_arrays(config.get(BAND_KEY)),
        )
        self._trials[trial.trial_id] = state

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        direction = self._direction()
        value = result.get(self._metric)
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            # No usable metric in this result (missing, None, text): ignored, as Ray's own
            # schedulers ignore results without the metric; the trial's curve is untouched.
            if value is not None:
                warnings.warn(
                    f"TTPScheduler ignores results whose {self._metric!r} is not a number "
                    f"(got {type(value).__name__})",
                    stacklevel=2,
                )
            return TrialScheduler.CONTINUE
        state = self._trials.get(trial.trial_id)
        if state is None:
            self.on_trial_add(tune_controller, trial)
            state = self._trials[trial.trial_id]
        step = result.get(STEP_KEY, result.get(self.time_attr))
        if step is None:
            raise InvalidInputError(
                f"result has neither {STEP_KEY!r} nor time_attr {self.time_attr!r}: "
                f"keys {sorted(result)}"
            )
        if state.steps and step <= state.steps[-1]:
            return TrialScheduler.CONTINUE  # a repeated or out-of-order result: nothing new
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or math.isnan(step):
            raise InvalidInputError(f"result's step must be a number, got {step!r}")
        budget = _budget(result.get(BUDGET_KEY), f"result[{BUDGET_KEY!r}]")
        state.steps.append(float(step))
        state.values.append(float(value))
        train_loss = result.get(TRAIN_LOSS_KEY)
        if isinstance(train_loss, numbers.Real) and not isinstance(train_loss, bool):
            state.train_steps.append(float(step))
            state.train_losses.append(float(train_loss))
        elapsed = result.get(ELAPSED_KEY, result.get("time_total_s"))
        if elapsed is not None and state.elapsed_s is not None and len(state.steps) > 1:
            state.recent_step_s = (elapsed - state.elapsed_s) / (state.steps[-1] - state.steps[-2])
        state.elapsed_s = elapsed if elapsed is not None else state.elapsed_s
        if budget is not None:
            state.budget = budget
        state.schedule = result.get(SCHEDULE_KEY, state.schedule)
        if not self.options.should_judge(state.steps, state.values[-1]):
            return TrialScheduler.CONTINUE
        decision = self.options.judge(
            direction, state.curve(trial.trial_id), self._peers(trial.trial_id), self._time_left()
        )
        self.decisions[trial.trial_id] = decision
        if decision.predicted_final is not None:
            state.prediction = (
                decision.predicted_final,
                decision.predicted_low,
                decision.predicted_high,
            )
        if decision.prune:
            state.status = "stopped"
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        state = self._trials.get(trial.trial_id)
        if state is None or state.status == "stopped":
            return
        state.status = "completed"
        if result and self._metric in result:
            state.final = float(result[self._metric])
        elif state.values:
            state.final = state.values[-1]

    def on_trial_error(self, tune_controller, trial) -> None:
        if trial.trial_id in self._trials:
            self._trials[trial.trial_id].status = "errored"

    def on_trial_remove(self, tune_controller, trial) -> None:
        state = self._trials.get(trial.trial_id)
        if state is not None and state.status != "stopped":  # a stopped one stays censored
            state.status = "removed"

    def debug_string(self) -> str:
        stopped = sum(s.status == "stopped" for s in self._trials.values())
        return f"TTPScheduler: {len(self._trials)} trials, {stopped} stopped early."

    # -- helpers ---------------------------------------------------------------------------

    def _peers(self, trial_id: str) -> list[TrialCurve]:
        return [
            state.curve(tid)
            for tid, state in self._trials.items()
            if tid != trial_id
            and state.status in ("running", "completed", "stopped")
            and state.steps
        ]

    def _time_left(self) -> float | None:
        return self.clock.time_left()

    # -- checkpointing ---------------------------------------------------------------------

    def save(self, checkpoint_path: str) -> None:
        state = {
            "trials": self._trials,
            "clock": self.clock.state(),
            "metric": self._metric,
            "mode": self._mode,
            "decisions": self.decisions,
        }
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        self._trials = state["trials"]
        self.decisions = dict(state.get("decisions", {}))
        self._metric = self._metric or state["metric"]
        self._mode = self._mode or state["mode"]
        # The time budget keeps counting from where the interrupted experiment stopped.
        self.clock.restore(state["clock"])
