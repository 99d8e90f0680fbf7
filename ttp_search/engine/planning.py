"""Price a configuration before it runs and size its step budget: shared by every adapter."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ttp_search.errors import InvalidInputError

CostFn = Callable[[dict[str, Any]], "float | nn.Module"]


@dataclass(frozen=True)
class TrialPlan:
    """A configuration's predicted step time, its step budget, and whether it may run."""

    step_s: float
    step_low_s: float
    step_high_s: float
    steps: int
    feasible: bool
    reason: str = ""

    @property
    def seconds(self) -> float:
        return self.steps * self.step_s

    @property
    def seconds_low(self) -> float:
        return self.steps * self.step_low_s

    @property
    def seconds_high(self) -> float:
        return self.steps * self.step_high_s


class BudgetPlanner:
    """Turn ``cost_fn(params)`` into a :class:`TrialPlan` under per-trial and study limits.

    ``cost_fn`` returns seconds per training step, an ``nn.Module`` priced by the layer-time
    model (``input_shape`` without the batch; ``batch_size`` an int or the name of a
    parameter; ``optimizer``), or a :class:`~ttp_search.cost.StepTimePrediction`. The budget
    is ``trial_budget_s / step seconds`` steps, at most ``max_steps``, shrunk to the study's
    time left; a configuration that cannot run ``min_steps`` within that is infeasible.
    """

    def __init__(
        self,
        cost_fn: CostFn,
        *,
        trial_budget_s: float | None = None,
        max_steps: int | None = None,
        min_steps: int = 1,
        input_shape: Sequence[int] | None = None,
        batch_size: int | str | None = None,
        optimizer: str = "sgd",
        cost_model=None,
    ) -> None:
        if not callable(cost_fn):
            raise InvalidInputError(f"cost_fn must be callable, got {cost_fn!r}")
        if trial_budget_s is not None and not (
            isinstance(trial_budget_s, numbers.Real) and trial_budget_s > 0
        ):
            raise InvalidInputError(f"trial_budget_s must be > 0 or None, got {trial_budget_s!r}")
        if trial_budget_s is None and max_steps is None:
            raise InvalidInputError("give trial_budget_s, max_steps or both to size budgets")
        for name, value in (("max_steps", max_steps), ("min_steps", min_steps)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
        if max_steps is not None and min_steps > max_steps:
            raise InvalidInputError(f"min_steps ({min_steps}) exceeds max_steps ({max_steps})")
        self.cost_fn = cost_fn
        self.trial_budget_s = trial_budget_s
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.batch_size = batch_size
        self.optimizer = optimizer
        self._cost_model = cost_model
        # Tracing a model costs ~0.1 s; searchers propose the same configurations repeatedly.
        self._cache: dict[tuple, tuple[float, float, float]] = {}

    @property
    def cost_model(self):
        if self._cost_model is None:
            from ttp_search.cost import LayerTimeModel

            self._cost_model = LayerTimeModel.load()
        return self._cost_model

    def step_cost(self, params: dict[str, Any]) -> tuple[float, float, float]:
        """Predicted (seconds, low, high) of one training step of the configuration."""
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in self._cache:
            self._cache[key] = self._price(params)
        return self._cache[key]

    def _price(self, params: dict[str, Any]) -> tuple[float, float, float]:
        out = self.cost_fn(dict(params))
        if isinstance(out, nn.Module):
            if self.input_shape is None or self.batch_size is None:
                raise InvalidInputError(
                    "cost_fn returned a model: give input_shape and batch_size to price it"
                )
            batch = params[self.batch_size] if isinstance(self.batch_size, str) else self.batch_size
            pred = self.cost_model.predict(out, self.input_shape, int(batch), self.optimizer)
            return pred.step_time_s, pred.low_s, pred.high_s
        if hasattr(out, "step_time_s"):
            return out.step_time_s, out.low_s, out.high_s
        if isinstance(out, bool) or not isinstance(out, numbers.Real) or not out > 0:
            raise InvalidInputError(
                f"cost_fn must return seconds per step > 0 or an nn.Module, got {out!r}"
            )
        return float(out), float(out), float(out)

    def plan(self, params: dict[str, Any], time_left_s: float | None = None) -> TrialPlan:
        """Price ``params`` and size its budget within the per-trial cap and the time left."""
        step_s, low_s, high_s = self.step_cost(params)
        caps = []  # steps allowed by each limit
        if self.trial_budget_s is not None:
            caps.append(math.floor(self.trial_budget_s / step_s))
        if time_left_s is not None:
            # The study's end is a hard wall: size against the slow end of the interval, so
            # a trial started late still finishes instead of being stopped for time.
            caps.append(math.floor(max(time_left_s, 0.0) / max(high_s, step_s)))
        limits = [v for v in (self.trial_budget_s, time_left_s) if v is not None]
        steps = min(caps) if caps else self.max_steps
        if self.max_steps is not None:
            steps = min(steps, self.max_steps)
        if steps >= self.min_steps:
            return TrialPlan(step_s, low_s, high_s, int(steps), True)
        by_cap = time_left_s is None or (
            self.trial_budget_s is not None and self.trial_budget_s <= time_left_s
        )
        what = "the per-trial cap" if by_cap else "the study's remaining time"
        reason = (
            f"predicted {step_s:.3g} s/step: {self.min_steps} steps need "
            f"{self.min_steps * step_s:.1f} s, over {what} ({max(min(limits), 0.0):.1f} s)"
        )
        return TrialPlan(step_s, low_s, high_s, int(steps), False, reason)
