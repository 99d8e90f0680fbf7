"""Price a configuration before it runs and size its step budget: shared by every adapter."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ttp_search._checks import check_int, check_positive_seconds, check_real, check_shape
from ttp_search.budget.conversions import MAX_BUDGET_STEPS, check_budget_steps, steps_within
from ttp_search.errors import InvalidInputError, MissingParameterError

CostFn = Callable[[dict[str, Any]], "float | nn.Module"]
#: params -> (steps, low, high) to reach the training target, e.g. from a LinearizedSDE.
StepsFn = Callable[[dict[str, Any]], "tuple[float, float, float]"]
#: (params, budget steps) -> {"step": [...], "low": [...], "high": [...]}: the predicted
#: curve of the configuration trained for that budget, for the pruner's band rule.
BandFn = Callable[[dict[str, Any], int], "dict[str, list[float]]"]


class Limit(str, enum.Enum):
    """The limit that rules a configuration out (``TrialPlan.limit``)."""

    COST = "cost"  # cost_fn priced it at inf seconds per step
    TRIAL_TIME = "trial_time"  # over the per-trial time cap
    STUDY_TIME = "study_time"  # over the study's remaining time, or the study's time is spent
    MAX_STEPS = "max_steps"  # needs more steps than max_steps
    TARGET = "target"  # predicted never to reach the training target


@dataclass(frozen=True)
class TrialPlan:
    """A configuration's predicted step time, its step budget, and whether it may run."""

    step_s: float
    step_low_s: float
    step_high_s: float
    steps: int
    feasible: bool
    reason: str = ""
    # With a steps_fn: the predicted steps to the target and their interval (no margin).
    target_steps: float | None = None
    target_low: float | None = None
    target_high: float | None = None
    # Which limit made it infeasible (None when feasible).
    limit: Limit | None = None

    @property
    def target_seconds(self) -> tuple[float, float, float] | None:
        """Predicted seconds to the target (steps x step time), with its interval."""
        if self.target_steps is None:
            return None
        return (
            self.target_steps * self.step_s,
            self.target_low * self.step_low_s,
            self.target_high * self.step_high_s,
        )

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

    With ``steps_fn`` (params -> predicted steps to a training target, low, high; see
    :class:`~ttp_search.dynamics.BlockGrams`) the budget is instead the predicted steps times
    ``1 + steps_margin``: a configuration predicted never to reach the target, or to need
    more than ``max_steps`` or the per-trial cap, is infeasible; the study's time left still
    caps the budget. ``steps_model`` is the same as one object: anything with
    ``steps(params)`` and ``band(params, steps)`` methods, such as
    :class:`~ttp_search.dynamics.StepsToTarget`.
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
        steps_fn: StepsFn | None = None,
        steps_margin: float = 0.1,
        band_fn: BandFn | None = None,
        steps_model=None,
    ) -> None:
        if steps_model is not None:
            if steps_fn is not None or band_fn is not None:
                raise InvalidInputError("give steps_model or steps_fn/band_fn, not both")
            if not callable(getattr(steps_model, "steps", None)):
                raise InvalidInputError(
                    f"steps_model must have a steps(params) method, got {steps_model!r}"
                )
            steps_fn = steps_model.steps
            band_fn = getattr(steps_model, "band", None)
        self.steps_model = steps_model
        if steps_fn is not None and not callable(steps_fn):
            raise InvalidInputError(f"steps_fn must be callable or None, got {steps_fn!r}")
        self.steps_fn = steps_fn
        self.steps_margin = check_real(
            "steps_margin", steps_margin, low=0.0, high=10.0, high_open=True
        )
        if band_fn is not None and not callable(band_fn):
            raise InvalidInputError(f"band_fn must be callable or None, got {band_fn!r}")
        self.band_fn = band_fn
        self._steps_cache: dict[tuple, tuple[float, float, float]] = {}
        if not callable(cost_fn):
            raise InvalidInputError(f"cost_fn must be callable, got {cost_fn!r}")
        trial_budget_s = check_positive_seconds("trial_budget_s", trial_budget_s)
        if trial_budget_s is None and max_steps is None and steps_fn is None:
            raise InvalidInputError("give trial_budget_s, max_steps or both to size budgets")
        if max_steps is not None:
            max_steps = check_int("max_steps", max_steps, 1, MAX_BUDGET_STEPS - 1)
        min_steps = check_int("min_steps", min_steps, 1)
        if max_steps is not None and min_steps > max_steps:
            raise InvalidInputError(f"min_steps ({min_steps}) exceeds max_steps ({max_steps})")
        if input_shape is not None:
            input_shape = check_shape("input_shape", input_shape)
        if batch_size is not None and not isinstance(batch_size, str):
            batch_size = check_int("batch_size", batch_size, 1)
        self.cost_fn = cost_fn
        self.trial_budget_s = trial_budget_s
        self.max_steps = max_steps
        self.min_steps = min_steps
        self.input_shape = input_shape
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
        try:
            out = self.cost_fn(dict(params))
        except KeyError as exc:
            raise MissingParameterError(
                f"cost_fn needs parameter {exc.args[0]!r}, which the configuration "
                f"{dict(params)} does not have"
            ) from exc
        if isinstance(out, nn.Module):
            if self.input_shape is None or self.batch_size is None:
                raise InvalidInputError(
                    "cost_fn returned a model: give input_shape and batch_size to price it"
                )
            batch = self.batch_size
            if isinstance(batch, str):
                if batch not in params:
                    raise MissingParameterError(
                        f"batch_size names parameter {batch!r}, which the configuration "
                        f"{dict(params)} does not have"
                    )
                batch = check_int(
                    f"parameter {self.batch_size!r} (the batch size)", params[batch], 1
                )
            pred = self.cost_model.predict(out, self.input_shape, batch, self.optimizer)
            return pred.step_time_s, pred.low_s, pred.high_s
        if hasattr(out, "step_time_s"):
            out = (out.step_time_s, out.low_s, out.high_s)
        else:
            # inf is a price (this configuration cannot run: say, out of memory); NaN, zero
            # or a negative time is a bug in cost_fn.
            check_real(
                "cost_fn's seconds per step",
                out,
                low=0.0,
                low_open=True,
                finite=False,
                hint=" (return seconds per step, inf for a configuration that cannot run, "
                "or an nn.Module)",
            )
            out = (out, out, out)
        return tuple(float(v) for v in out)

    def target_steps(self, params: dict[str, Any]) -> tuple[float, float, float]:
        """``steps_fn(params)``, cached (an SDE prediction costs milliseconds to seconds)."""
        key = tuple(sorted((k, repr(v)) for k, v in params.items()))
        if key not in self._steps_cache:
            out = self.steps_fn(dict(params))
            if hasattr(out, "steps"):
                out = (out.steps, out.low, out.high)
            steps, low, high = (float(v) for v in out)
            if math.isnan(steps) or steps < 0:
                raise InvalidInputError(f"steps_fn must return steps >= 0 or inf, got {out!r}")
            self._steps_cache[key] = (steps, min(low, steps), max(high, steps))
        return self._steps_cache[key]

    def plan(
        self,
        params: dict[str, Any],
        time_left_s: float | None = None,
        steps_scale: float = 1.0,
        step_time_scale: float = 1.0,
    ) -> TrialPlan:
        """Price ``params`` and size its budget within the per-trial cap and the time left.

        ``steps_scale`` multiplies ``steps_fn``'s prediction and ``step_time_scale`` the
        step time (and its interval): the study's measured/predicted ratios (see
        :func:`steps_scale`, :func:`step_time_scale`), so a systematic error of either model
        is not paid for by every trial.
        """
        check_real("step_time_scale", step_time_scale, low=0.0, low_open=True)
        step_s, low_s, high_s = (step_time_scale * v for v in self.step_cost(params))
        if not math.isfinite(step_s):
            return TrialPlan(
                step_s,
                low_s,
                high_s,
                0,
                False,
                "cost_fn priced it at inf seconds per step",
                limit=Limit.COST,
            )
        if time_left_s is not None and time_left_s <= 0:
            return TrialPlan(
                step_s,
                low_s,
                high_s,
                0,
                False,
                f"the study's time budget is spent ({-time_left_s:.3g} s over)",
                limit=Limit.STUDY_TIME,
            )
        if self.steps_fn is not None:
            return self._plan_to_target(params, step_s, low_s, high_s, time_left_s, steps_scale)
        caps = {}  # steps allowed by each limit
        if self.trial_budget_s is not None:
            caps[Limit.TRIAL_TIME] = steps_within(self.trial_budget_s, step_s)
        if time_left_s is not None:
            # The study's end is a hard wall: size against the slow end of the interval, so
            # a trial started late still finishes instead of being stopped for time.
            caps[Limit.STUDY_TIME] = steps_within(time_left_s, max(high_s, step_s))
        if self.max_steps is not None:
            caps[Limit.MAX_STEPS] = self.max_steps
        limit = min(caps, key=caps.get)
        steps = check_budget_steps(caps[limit], step_s)
        if steps >= self.min_steps:
            return TrialPlan(step_s, low_s, high_s, int(steps), True)
        limit_s = self.trial_budget_s if limit == Limit.TRIAL_TIME else time_left_s
        what = "the per-trial cap" if limit == Limit.TRIAL_TIME else "the study's remaining time"
        reason = (
            f"predicted {step_s:.3g} s/step: {self.min_steps} steps need "
            f"{self.min_steps * step_s:.3g} s, over {what} ({limit_s:.3g} s)"
        )
        return TrialPlan(step_s, low_s, high_s, int(steps), False, reason, limit=limit)

    def _plan_to_target(self, params, step_s, low_s, high_s, time_left_s, scale) -> TrialPlan:
        need, need_low, need_high = (scale * v for v in self.target_steps(params))
        plan = dict(target_steps=need, target_low=need_low, target_high=need_high)
        if not math.isfinite(need):
            reason = "predicted never to reach the target"
            return TrialPlan(step_s, low_s, high_s, 0, False, reason, limit=Limit.TARGET, **plan)
        # (tolerance: 100 x 1.1 is 110 steps, not 111 from rounding)
        steps = max(self.min_steps, math.ceil(need * (1 + self.steps_margin) - 1e-9))
        if self.max_steps is not None and steps > self.max_steps:
            reason = f"needs {steps} steps to the target, over max_steps ({self.max_steps})"
            return TrialPlan(
                step_s, low_s, high_s, steps, False, reason, limit=Limit.MAX_STEPS, **plan
            )
        if self.trial_budget_s is not None and steps * step_s > self.trial_budget_s:
            reason = (
                f"needs {steps} steps x {step_s:.3g} s = {steps * step_s:.1f} s to the target, "
                f"over the per-trial cap ({self.trial_budget_s:.1f} s)"
            )
            return TrialPlan(
                step_s, low_s, high_s, steps, False, reason, limit=Limit.TRIAL_TIME, **plan
            )
        if time_left_s is not None:
            steps = min(steps, steps_within(time_left_s, max(high_s, step_s)))
            if steps < self.min_steps:
                reason = f"the study's remaining time ({time_left_s:.3g} s) is too short"
                return TrialPlan(
                    step_s, low_s, high_s, steps, False, reason, limit=Limit.STUDY_TIME, **plan
                )
        return TrialPlan(step_s, low_s, high_s, int(steps), True, **plan)


def band_arrays(band) -> tuple | None:
    """A stored band ``{"step", "low", "high"}`` as the core's (steps, low, high) arrays."""
    if not band:
        return None
    return tuple(np.asarray(band[k], dtype=np.float64) for k in ("step", "low", "high"))


def band_record(band_fn: BandFn | None, params: dict[str, Any], steps: int) -> dict | None:
    """``band_fn``'s band as plain lists (what Optuna attributes and Ray configs can hold)."""
    if band_fn is None:
        return None
    band = band_fn(dict(params), int(steps))
    out = {k: [float(v) for v in np.asarray(band[k]).ravel()] for k in ("step", "low", "high")}
    crossing = band.get("crossing")  # the predicted first step at the target, if given
    out["crossing"] = float(crossing) if crossing is not None else None
    return out
