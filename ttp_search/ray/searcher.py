"""CostAwareSearcher: price every Ray Tune suggestion and give it a step budget."""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from typing import Any

from ray.tune.search import Searcher

from ttp_search._checks import check_int, check_positive_seconds
from ttp_search.engine import BudgetPlanner
from ttp_search.engine.planning import BandFn, CostFn, StepsFn, band_record
from ttp_search.errors import InvalidInputError
from ttp_search.ray.scheduler import BAND_KEY, BUDGET_KEY, PREDICTED_STEP_KEY, SCHEDULE_KEY

PREDICTED_SECONDS_KEY = "ttp_predicted_seconds"
PREDICTED_LOW_KEY = "ttp_predicted_low"
PREDICTED_HIGH_KEY = "ttp_predicted_high"
TARGET_STEPS_KEY = "ttp_predicted_target_steps"
TTP_KEYS = (
    TARGET_STEPS_KEY,
    BAND_KEY,
    SCHEDULE_KEY,
    BUDGET_KEY,
    PREDICTED_STEP_KEY,
    PREDICTED_SECONDS_KEY,
    PREDICTED_LOW_KEY,
    PREDICTED_HIGH_KEY,
)


class CostAwareSearcher(Searcher):
    """Wrap any Ray ``Searcher`` so each config carries its predicted cost and step budget.

    Each suggestion of the wrapped searcher is priced with the same planner as
    :class:`ttp_search.optuna.CostAwareSampler` (``cost_fn`` returns seconds per step or an
    ``nn.Module`` for the layer-time model). Suggestions that cannot run ``min_steps`` within
    ``trial_budget_s`` or the experiment's time left are not run: they are reported back to the
    wrapped searcher as errored and the next suggestion is tried; after ``max_retries``
    unaffordable suggestions in a row the search ends (``Searcher.FINISHED``).
    The config the trainable receives gains ``ttp_budget_steps``, ``ttp_predicted_step_s``
    and ``ttp_predicted_seconds``/``_low``/``_high``. Works around ``OptunaSearch`` (with
    any Optuna sampler) like any other searcher. ``steps_fn``, ``steps_margin`` and
    ``band_fn`` size fine-tuning budgets to a predicted target as in
    :class:`ttp_search.optuna.CostAwareSampler` (config keys ``ttp_predicted_target_steps``,
    ``ttp_schedule`` = ``"linear"`` and ``ttp_band`` for :class:`TTPScheduler`).
    """

    def __init__(
        self,
        searcher: Searcher,
        *,
        cost_fn: CostFn,
        trial_budget_s: float | None = None,
        time_budget_s: float | None = None,
        max_steps: int | None = None,
        min_steps: int = 1,
        input_shape: Sequence[int] | None = None,
        batch_size: int | str | None = None,
        optimizer: str = "sgd",
        cost_model=None,
        max_retries: int = 32,
        steps_fn: StepsFn | None = None,
        steps_margin: float = 0.1,
        band_fn: BandFn | None = None,
    ) -> None:
        if not isinstance(searcher, Searcher):
            raise InvalidInputError(f"searcher must be a ray.tune Searcher, got {searcher!r}")
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.planner = BudgetPlanner(
            cost_fn,
            trial_budget_s=trial_budget_s,
            max_steps=max_steps,
            min_steps=min_steps,
            input_shape=input_shape,
            batch_size=batch_size,
            optimizer=optimizer,
            cost_model=cost_model,
            steps_fn=steps_fn,
            steps_margin=steps_margin,
            band_fn=band_fn,
        )
        self.time_budget_s = check_positive_seconds("time_budget_s", time_budget_s)
        self.max_retries = check_int("max_retries", max_retries, 0)
        self._started_at: float | None = None
        self._base_id: dict[str, str] = {}  # Ray's trial id -> the id the wrapped searcher saw
        self.rejected: list[tuple[dict, str]] = []  # (config, why) never run

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self.time_budget_s is None and spec.get("time_budget_s"):
            budget = spec["time_budget_s"]
            self.time_budget_s = float(getattr(budget, "total_seconds", lambda: budget)())
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def _time_left(self) -> float | None:
        if self.time_budget_s is None:
            return None
        if self._started_at is None:
            self._started_at = time.time()
        return self.time_budget_s - (time.time() - self._started_at)

    def suggest(self, trial_id: str) -> dict | str | None:
        for attempt in range(self.max_retries + 1):
            base_id = trial_id if attempt == 0 else f"{trial_id}_ttp{attempt}"
            config = self.searcher.suggest(base_id)
            if config is None or config == Searcher.FINISHED:
                return config
            params = {k: v for k, v in config.items() if k not in TTP_KEYS}
            plan = self.planner.plan(params, self._time_left())
            if plan.feasible:
                self._base_id[trial_id] = base_id
                out = {
                    **config,
                    BUDGET_KEY: plan.steps,
                    PREDICTED_STEP_KEY: plan.step_s,
                    PREDICTED_SECONDS_KEY: plan.seconds,
                    PREDICTED_LOW_KEY: plan.seconds_low,
                    PREDICTED_HIGH_KEY: plan.seconds_high,
                }
                if plan.target_steps is not None:
                    out[TARGET_STEPS_KEY] = [plan.target_steps, plan.target_low, plan.target_high]
                    out[SCHEDULE_KEY] = "linear"  # the budget is sized for a linear decay
                band = band_record(self.planner.band_fn, params, plan.steps)
                if band is not None:
                    out[BAND_KEY] = band
                return out
            self.rejected.append((params, plan.reason))
            # The wrapped searcher must not wait for a result that will never come.
            self.searcher.on_trial_complete(base_id, None, error=True)
        # Every proposal in a row is over the limits: the search space has nothing affordable
        # left (or the time is spent), so end the search instead of asking forever.
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(self._base_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        base_id = self._base_id.pop(trial_id, trial_id)
        self.searcher.on_trial_complete(base_id, result, error=error)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path + ".wrapped")
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.get_state(), fh)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path + ".wrapped")
        with open(checkpoint_path, "rb") as fh:
            self.set_state(pickle.load(fh))

    def get_state(self) -> dict[str, Any]:
        elapsed = None if self._started_at is None else time.time() - self._started_at
        return {
            "base_id": dict(self._base_id),
            "rejected": list(self.rejected),
            "elapsed_before_save": elapsed,
            "time_budget_s": self.time_budget_s,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._base_id, self.rejected = dict(state["base_id"]), list(state["rejected"])
        self.time_budget_s = self.time_budget_s or state.get("time_budget_s")
        elapsed = state.get("elapsed_before_save")
        # The experiment's clock goes on from where it stopped, as TTPScheduler's does.
        self._started_at = None if elapsed is None else time.time() - elapsed
