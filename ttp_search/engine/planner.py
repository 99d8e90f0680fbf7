"""The planner: what runs next and for how long, for every adapter.

It is composed of parts a user can build and pass: the budget sizing with its cost model
(:class:`~ttp_search.engine.BudgetPlanner`: step time, optional steps to a target, caps),
two calibrations (:class:`~ttp_search.engine.calibration.Calibrator`), the choice among
affordable proposals (:class:`~ttp_search.engine.choice.ExpectedImprovementPerSecond`) and
the study's clock (:class:`~ttp_search.engine.clock.StudyClock`). Adapters hand it the
study's history in engine terms (:class:`History`) and a way to draw proposals, and store
what it returns (:class:`PlanRecord`); they decide nothing themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ttp_search._checks import check_int, check_positive_seconds, check_real
from ttp_search.engine.calibration import (
    Calibrator,
    Observation,
    step_time_calibrator,
    steps_calibrator,
)
from ttp_search.engine.choice import Completed, ExpectedImprovementPerSecond
from ttp_search.engine.clock import StudyClock
from ttp_search.engine.planning import BudgetPlanner, Limit, TrialPlan, band_record
from ttp_search.engine.space import Space
from ttp_search.errors import InvalidInputError

#: Rounds of ``n_candidates`` proposals drawn before a trial is declared unaffordable.
PROPOSAL_ROUNDS = 4


@dataclass
class History:
    """A study's finished trials as the planner sees them."""

    completed: list[Completed] = field(default_factory=list)
    steps: list[Observation] = field(default_factory=list)  # predicted vs measured crossing
    step_times: list[Observation] = field(default_factory=list)  # model vs measured s/step
    space: Space = field(default_factory=dict)  # every parameter seen (for similarity)
    minimize: bool = True
    # The dimensions proposals are chosen over (the relative search space); default: space.
    choice_space: Space | None = None


@dataclass(frozen=True)
class PlanRecord:
    """Everything worth storing about one trial's plan (one storage attribute)."""

    params: dict
    feasible: bool
    reason: str
    limit: str | None
    note: str
    step_s: float
    step_low_s: float
    step_high_s: float
    model_step_s: float
    step_time_ratio: float | None
    budget_steps: int | None
    seconds: float | None
    seconds_low: float | None
    seconds_high: float | None
    target_steps: list[float] | None = None
    steps_scale: float | None = None  # measured/predicted steps applied to the budget
    steps_ratio: float | None = None  # the study's calibration of the steps model, unclipped
    crossing: float | None = None  # the steps model's own first step at the target
    band: dict | None = None  # {"step", "low", "high"}: the predicted curve
    study_spent: bool = False  # no proposal fits in what is left of the study's time

    def to_dict(self) -> dict:
        return asdict(self)


class Planner:
    """Price configurations, size their budgets, and choose which one runs.

    Example:
        >>> from ttp_search.engine import BudgetPlanner, Planner
        >>> planner = Planner(BudgetPlanner(lambda p: 0.01 * p["w"], trial_budget_s=1.0))
        >>> planner.plan({"w": 4}).steps
        25
    """

    def __init__(
        self,
        budget: BudgetPlanner,
        *,
        steps_calibration: Calibrator | None = None,
        step_time_calibration: Calibrator | None = None,
        chooser: ExpectedImprovementPerSecond | None = None,
        clock: StudyClock | None = None,
        n_candidates: int = 8,
    ) -> None:
        self.budget = budget
        self.steps_calibration = steps_calibration
        self.step_time_calibration = step_time_calibration
        self.chooser = chooser if chooser is not None else ExpectedImprovementPerSecond()
        self.clock = clock if clock is not None else StudyClock()
        self.n_candidates = check_int("n_candidates", n_candidates, 1)

    @classmethod
    def from_options(
        cls,
        cost_fn: Callable,
        *,
        study_budget_s: float | None = None,
        n_candidates: int = 8,
        n_startup_trials: int = 5,
        cost_exponent: float = 1.0,
        max_gp_points: int = 200,
        seed: int | None = None,
        calibration_bandwidth: float | None = 0.25,
        step_time_calibration: bool = True,
        step_time_params: Sequence[str] | None = None,
        **budget_options,
    ) -> Planner:
        """The default planner from flat options (what ``CostAwareSampler(cost_fn=...)``
        and ``CostAwareSearcher(cost_fn=...)`` build): ``budget_options`` go to
        :class:`BudgetPlanner`, steps are calibrated when it has a ``steps_fn``."""
        if isinstance(step_time_params, str) or not (
            step_time_params is None or all(isinstance(n, str) for n in step_time_params)
        ):
            raise InvalidInputError(
                f"step_time_params must be parameter names or None, got {step_time_params!r}"
            )
        check_positive_seconds("study_budget_s", study_budget_s)
        if calibration_bandwidth is not None:
            check_real("calibration_bandwidth", calibration_bandwidth, low=0.0, low_open=True)
        budget = BudgetPlanner(cost_fn, **budget_options)
        steps = steps_calibrator(calibration_bandwidth) if budget.steps_fn is not None else None
        times = None
        if step_time_calibration:
            times = step_time_calibrator(calibration_bandwidth, step_time_params)
        chooser = ExpectedImprovementPerSecond(
            n_startup_trials=n_startup_trials,
            cost_exponent=cost_exponent,
            max_gp_points=max_gp_points,
            seed=seed,
        )
        return cls(
            budget,
            steps_calibration=steps,
            step_time_calibration=times,
            chooser=chooser,
            clock=StudyClock(study_budget_s),
            n_candidates=n_candidates,
        )

    # -- one configuration ---------------------------------------------------------------

    def scales(self, params: Mapping[str, Any], history: History) -> tuple[float, float]:
        """(steps scale, step-time scale) the study's trials say ``params`` needs."""
        steps = 1.0
        if self.steps_calibration is not None and self.budget.steps_fn is not None:
            steps = self.steps_calibration.ratio(history.steps, params, history.space, lower=1.0)
        times = 1.0
        if self.step_time_calibration is not None:
            times = self.step_time_calibration.ratio(history.step_times, params, history.space)
        return steps, times

    def plan(
        self,
        params: Mapping[str, Any],
        history: History | None = None,
        time_left_s: float | None = None,
    ) -> TrialPlan:
        """Price ``params`` and size its budget, calibrated by ``history``."""
        history = history if history is not None else History()
        steps, times = self.scales(params, history)
        return self.budget.plan(dict(params), time_left_s, steps_scale=steps, step_time_scale=times)

    # -- choosing among proposals --------------------------------------------------------

    def choose(
        self,
        propose: Callable[[], dict],
        history: History,
        time_left_s: float | None = None,
        *,
        max_proposals: int | None = None,
    ) -> PlanRecord:
        """Draw proposals from ``propose`` and return the record of the one to run.

        Rounds of ``n_candidates`` proposals are drawn until one is affordable, at most
        ``max_proposals`` in all (default :data:`PROPOSAL_ROUNDS` rounds); while the chooser
        is in its startup phase the first affordable proposal runs (the base sampler's own
        choice), after that the best of the round by expected improvement per predicted
        second. With none affordable, the first proposal's infeasible plan is returned;
        ``study_spent`` says whether the study's time is what ruled every proposal out.
        """
        if max_proposals is None:
            max_proposals = PROPOSAL_ROUNDS * self.n_candidates
        first_feasible = self.chooser.in_startup(len(history.completed))
        affordable: list[tuple[dict, TrialPlan]] = []
        tried: list[tuple[dict, TrialPlan]] = []
        while len(tried) < max_proposals and not affordable:
            for _ in range(min(self.n_candidates, max_proposals - len(tried))):
                params = propose()
                plan = self.plan(params, history, time_left_s)
                tried.append((params, plan))
                if plan.feasible:
                    affordable.append((params, plan))
                    if first_feasible:
                        break
        if not affordable:
            params, plan = tried[0]
            note = f"no feasible proposal in {len(tried)}: {plan.reason}"
            spent = all(p.limit == Limit.STUDY_TIME for _, p in tried)
            return self.record(params, plan, history, note, study_spent=spent)
        i, note = self.chooser.choose(
            [p for p, _ in affordable],
            [q.seconds for _, q in affordable],
            history.completed,
            history.space if history.choice_space is None else history.choice_space,
            minimize=history.minimize,
        )
        params, plan = affordable[i]
        return self.record(params, plan, history, note)

    def record(
        self,
        params: Mapping[str, Any],
        plan: TrialPlan,
        history: History,
        note: str,
        *,
        study_spent: bool = False,
    ) -> PlanRecord:
        """What to store for ``plan``: the model's own step time beside the calibrated one,
        and for a fine-tuning search the predicted band stretched by the study's ratio."""
        params = dict(params)
        model_s = self.budget.step_cost(params)[0]
        target = None
        if plan.target_steps is not None:
            target = [plan.target_steps, plan.target_low, plan.target_high]
        out = dict(
            params=params,
            feasible=plan.feasible,
            reason=plan.reason,
            limit=None if plan.limit is None else plan.limit.value,
            note=note,
            step_s=plan.step_s,
            step_low_s=plan.step_low_s,
            step_high_s=plan.step_high_s,
            model_step_s=model_s,
            step_time_ratio=plan.step_s / model_s if math.isfinite(model_s) else None,
            budget_steps=plan.steps if plan.feasible else None,
            seconds=plan.seconds if plan.feasible else None,
            seconds_low=plan.seconds_low if plan.feasible else None,
            seconds_high=plan.seconds_high if plan.feasible else None,
            target_steps=target,
            study_spent=study_spent,
        )
        if plan.feasible and self.budget.band_fn is not None:
            out.update(self._band(params, plan, history))
        return PlanRecord(**out)

    def _band(self, params: dict, plan: TrialPlan, history: History) -> dict:
        # The model's curve runs `scale` times slower or faster than the study has measured:
        # predict the budget it would need and stretch the curve onto this trial's steps.
        scale = 1.0
        if plan.target_steps is not None:
            raw = self.budget.target_steps(params)[0]
            scale = plan.target_steps / raw if raw > 0 else 1.0
        band = band_record(self.budget.band_fn, params, max(1, round(plan.steps / scale)))
        ratio = 1.0
        if self.steps_calibration is not None:
            ratio = self.steps_calibration.ratio(history.steps, params, history.space)
        crossing = band.pop("crossing", None)
        band["step"] = [scale * v for v in band["step"]]
        return {"steps_scale": scale, "steps_ratio": ratio, "crossing": crossing, "band": band}
