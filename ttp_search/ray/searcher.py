"""CostAwareSearcher: Ray Tune's side of the planner (the twin of optuna.CostAwareSampler)."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

from ray.tune.search import Searcher

from ttp_search._checks import check_int, check_positive_seconds, renamed_option
from ttp_search.engine.calibration import MIN_TIMED_STEPS, SHORT_OF_TARGET, Observation
from ttp_search.engine.choice import Completed
from ttp_search.engine.planner import History, Planner, PlanRecord
from ttp_search.engine.space import Categorical, Dimension, Numeric, observed_space
from ttp_search.errors import InvalidInputError
from ttp_search.ray.scheduler import (
    BAND_KEY,
    BUDGET_KEY,
    ELAPSED_KEY,
    PREDICTED_STEP_KEY,
    SCHEDULE_KEY,
    STEP_KEY,
    TARGET_REACHED_KEY,
)

PREDICTED_SECONDS_KEY = "ttp_predicted_seconds"
PREDICTED_LOW_KEY = "ttp_predicted_low"
PREDICTED_HIGH_KEY = "ttp_predicted_high"
TARGET_STEPS_KEY = "ttp_predicted_target_steps"
MODEL_STEP_KEY = "ttp_model_step_s"  # the cost model's step time, before calibration
CROSSING_KEY = "ttp_predicted_crossing_step"  # the steps model's own first step at the target
TTP_KEYS = (
    TARGET_STEPS_KEY,
    BAND_KEY,
    SCHEDULE_KEY,
    BUDGET_KEY,
    PREDICTED_STEP_KEY,
    PREDICTED_SECONDS_KEY,
    PREDICTED_LOW_KEY,
    PREDICTED_HIGH_KEY,
    MODEL_STEP_KEY,
    CROSSING_KEY,
)


class CostAwareSearcher(Searcher):
    """Wrap any Ray ``Searcher`` so each config carries its predicted cost and step budget.

    The policy is the :class:`~ttp_search.engine.Planner`'s, the same as
    :class:`ttp_search.optuna.CostAwareSampler`'s: pricing, budgets, both calibrations (from
    the results of finished trials: ``time_total_s`` over ``ttp_step`` for the step time,
    ``ttp_target_reached_step`` for the steps model; the step time is ``ttp_elapsed_s`` over
    ``ttp_step`` when the trainable reports its training seconds, else ``time_total_s``)
    and the study clock. The simple path
    builds the default planner from ``cost_fn``, ``trial_budget_s``, ``study_budget_s`` (also
    read from ``TuneConfig``), ``max_steps`` and further ``planner_options``.

    Proposals the planner rules out are told to the wrapped searcher as errored and the
    next is asked for; after ``max_retries`` in a row the search ends
    (``Searcher.FINISHED``). The planner's ``n_candidates`` is 1 here by default: each
    extra candidate is a suggestion the wrapped searcher records as a failed trial; with
    more, the expected-improvement-per-second choice runs over them as in Optuna.
    The config the trainable receives gains ``ttp_budget_steps``, ``ttp_predicted_step_s``,
    ``ttp_model_step_s``, ``ttp_predicted_seconds``/``_low``/``_high`` and, for fine-tuning
    searches, ``ttp_predicted_target_steps``, ``ttp_schedule`` = ``"linear"`` and ``ttp_band``.
    """

    def __init__(
        self,
        searcher: Searcher,
        *,
        planner: Planner | None = None,
        cost_fn: Callable | None = None,
        trial_budget_s: float | None = None,
        study_budget_s: float | None = None,
        max_steps: int | None = None,
        max_retries: int = 32,
        **planner_options: Any,
    ) -> None:
        if not isinstance(searcher, Searcher):
            raise InvalidInputError(f"searcher must be a ray.tune Searcher, got {searcher!r}")
        study_budget_s = renamed_option(  # the name before ttp_search 0.2
            planner_options, "time_budget_s", "study_budget_s", "CostAwareSearcher", study_budget_s
        )
        check_positive_seconds("study_budget_s", study_budget_s)
        if planner is None:
            if cost_fn is None:
                raise InvalidInputError("give cost_fn (seconds per step) or a planner")
            planner_options.setdefault("n_candidates", 1)
            planner = Planner.from_options(
                cost_fn,
                trial_budget_s=trial_budget_s,
                study_budget_s=study_budget_s,
                max_steps=max_steps,
                **planner_options,
            )
        elif cost_fn is not None or planner_options or trial_budget_s or study_budget_s:
            raise InvalidInputError("give either a planner or the options to build one")
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.planner = planner
        self.max_retries = check_int("max_retries", max_retries, 0)
        self._base_id: dict[str, str] = {}  # Ray's trial id -> the id the wrapped searcher saw
        self._live: dict[str, dict] = {}  # Ray's trial id -> the config it runs
        self._finished: list[dict] = []  # {"config", "value", "step_s", "reached"}
        self.rejected: list[tuple[dict, str]] = []  # (config, why) never run
        self._space: dict = {}  # the param_space's dimensions, once Tune passes it

    @property
    def study_budget_s(self) -> float | None:
        return self.planner.clock.study_budget_s

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        clock = self.planner.clock
        if clock.study_budget_s is None and spec.get("time_budget_s"):
            budget = spec["time_budget_s"]
            clock.study_budget_s = float(getattr(budget, "total_seconds", lambda: budget)())
        if config:
            self._space = tune_space(config)
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def suggest(self, trial_id: str) -> dict | str | None:
        self.planner.clock.start()
        ended: list = []
        asked: list[tuple[str, dict]] = []  # (the wrapped searcher's id, params)

        def propose() -> dict:
            base_id = trial_id if not asked else f"{trial_id}_ttp{len(asked)}"
            config = self.searcher.suggest(base_id)
            if config is None or config == Searcher.FINISHED:
                ended.append(config)
                raise _Exhausted
            params = {k: v for k, v in config.items() if k not in TTP_KEYS}
            asked.append((base_id, params))
            return params

        try:
            record = self.planner.choose(
                propose,
                self.history(),
                self.planner.clock.time_left(),
                max_proposals=self.max_retries + 1,
            )
        except _Exhausted:
            record = None
        chosen = None
        for base_id, params in asked:
            if (
                record is not None
                and record.feasible
                and chosen is None
                and params == record.params
            ):
                chosen = base_id
                continue
            why = record.reason if record is not None and not record.feasible else "not chosen"
            self.rejected.append((params, why))
            # The wrapped searcher must not wait for a result that will never come.
            self.searcher.on_trial_complete(base_id, None, error=True)
        if chosen is None:
            # Every proposal in a row was over the limits (the space has nothing affordable
            # left, or the time is spent), or the wrapped searcher is done.
            return ended[0] if ended and ended[0] is None else Searcher.FINISHED
        self._base_id[trial_id] = chosen
        config = self._config(record)
        self._live[trial_id] = config
        return config

    def history(self) -> History:
        """The finished trials in the planner's terms."""
        configs = [f["config"] for f in self._finished]
        params = [{k: v for k, v in c.items() if k not in TTP_KEYS} for c in configs]
        minimize = self._mode != "max"
        completed = [
            Completed(p, f["value"])
            for p, f in zip(params, self._finished, strict=True)
            if f["value"] is not None and math.isfinite(f["value"])
        ]
        step_times = [
            Observation(c[MODEL_STEP_KEY], f["step_s"], p)
            for p, c, f in zip(params, configs, self._finished, strict=True)
            if f["step_s"] and c.get(MODEL_STEP_KEY)
        ]
        steps = [
            Observation(c[CROSSING_KEY], f["reached"], p)
            for p, c, f in zip(params, configs, self._finished, strict=True)
            if f["reached"] and c.get(CROSSING_KEY)
        ]
        space = {**observed_space(params), **self._space}
        return History(completed, steps, step_times, space, minimize)

    def _config(self, record: PlanRecord) -> dict:
        out = {
            **record.params,
            BUDGET_KEY: record.budget_steps,
            PREDICTED_STEP_KEY: record.step_s,
            MODEL_STEP_KEY: record.model_step_s,
            PREDICTED_SECONDS_KEY: record.seconds,
            PREDICTED_LOW_KEY: record.seconds_low,
            PREDICTED_HIGH_KEY: record.seconds_high,
        }
        if record.target_steps is not None:
            out[TARGET_STEPS_KEY] = record.target_steps
            out[SCHEDULE_KEY] = "linear"  # the budget is sized for a linear decay
        if record.band is not None:
            out[BAND_KEY] = record.band
        if record.crossing is not None:
            out[CROSSING_KEY] = record.crossing
        return out

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(self._base_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        base_id = self._base_id.pop(trial_id, trial_id)
        config = self._live.pop(trial_id, None)
        if config is not None and result and not error:
            self._finished.append(_finished(config, result, self._metric))
        self.searcher.on_trial_complete(base_id, result, error=error)

    # -- checkpointing ---------------------------------------------------------------------

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path + ".wrapped")
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.get_state(), fh)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path + ".wrapped")
        with open(checkpoint_path, "rb") as fh:
            self.set_state(pickle.load(fh))

    def get_state(self) -> dict[str, Any]:
        return {
            "base_id": dict(self._base_id),
            "live": dict(self._live),
            "finished": list(self._finished),
            "rejected": list(self.rejected),
            "clock": self.planner.clock.state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._base_id, self.rejected = dict(state["base_id"]), list(state["rejected"])
        self._live, self._finished = dict(state.get("live", {})), list(state.get("finished", []))
        # The experiment's clock goes on from where it stopped, as TTPScheduler's does.
        self.planner.clock.restore(state.get("clock", {}))


def tune_space(config: dict) -> dict[str, Dimension]:
    """The dimensions of a Tune ``param_space`` (``tune.uniform``, ``loguniform``, ``randint``,
    ``choice``, ...); constants and nested dicts are left out."""
    from ray.tune.search.sample import Categorical as TuneCategorical
    from ray.tune.search.sample import Float, Integer

    space: dict[str, Dimension] = {}
    for name, domain in config.items():
        log = "Log" in type(getattr(domain, "get_sampler", lambda: None)()).__name__
        if isinstance(domain, Float):
            space[name] = Numeric(float(domain.lower), float(domain.upper), log)
        elif isinstance(domain, Integer):  # randint's upper bound is exclusive
            space[name] = Numeric(float(domain.lower), float(domain.upper) - 1, log)
        elif isinstance(domain, TuneCategorical):
            space[name] = Categorical(tuple(domain.categories))
    return space


class _Exhausted(Exception):
    """The wrapped searcher has nothing more to suggest, or the retries are used up."""


def _finished(config: dict, result: dict, metric: str | None) -> dict:
    """What a finished trial's last result says: its value, seconds per step (over enough
    steps), and steps to the target (or a lower bound when it completed short of it)."""
    value = result.get(metric) if metric else None
    value = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    step, elapsed = result.get(STEP_KEY), result.get(ELAPSED_KEY, result.get("time_total_s"))
    step_s = None
    if isinstance(step, int | float) and step >= MIN_TIMED_STEPS and elapsed:
        step_s = float(elapsed) / float(step)
    reached = result.get(TARGET_REACHED_KEY)
    if reached is None and config.get(CROSSING_KEY) and config.get(BUDGET_KEY):
        reached = SHORT_OF_TARGET * config[BUDGET_KEY]
    return {"config": config, "value": value, "step_s": step_s, "reached": reached}
