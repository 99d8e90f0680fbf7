"""CostAwareSampler: Optuna's side of the planner (price, cap and budget each trial)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from ttp_search.engine.planner import History, Planner, PlanRecord
from ttp_search.engine.planning import Limit, TrialPlan
from ttp_search.errors import InvalidInputError, MissingParameterError
from ttp_search.optuna import _storage as storage
from ttp_search.optuna import keys
from ttp_search.optuna._calibration import study_history

#: Base samplers that may be asked for several proposals per trial: their proposals depend
#: only on the finished trials (and a random draw), so the ones not run leave no trace.
#: Any other sampler (QMC's sequence, CMA-ES's per-trial state, the GP's cost per call) is
#: asked once per trial; further proposals come from a RandomSampler.
MULTI_PROPOSAL_SAMPLERS: tuple[type[BaseSampler], ...] = (TPESampler, RandomSampler)


class CostAwareSampler(BaseSampler):
    """Wrap an Optuna sampler so each trial is priced, capped and given its step budget.

    The policy lives in the :class:`~ttp_search.engine.Planner` (pass one to compose your
    own step-time model, steps model, calibrations, choice and study clock); the sampler
    only reads the study, draws the base sampler's proposals and stores the plan (one
    attribute, ``keys.PLAN``, and the budget, ``keys.BUDGET``).

    The simple path builds the default planner (:meth:`Planner.from_options`):
    ``cost_fn(params)`` returns seconds per training step or an ``nn.Module`` (then give
    ``input_shape``, ``batch_size`` and ``optimizer`` among ``planner_options``); the budget
    is ``trial_budget_s`` / step seconds, at most ``max_steps``, shrunk to what is left of
    ``study_budget_s`` (counted from the study's first trial, so every worker agrees).
    Further ``planner_options`` (``steps_fn``, ``band_fn``, ``n_candidates``,
    ``n_startup_trials``, ``calibration_bandwidth``, ...) are :meth:`Planner.from_options`'s.

    Pass ``search_space`` (name -> distribution) so even the first trials are priced before
    they run; otherwise the space is learnt from finished trials, and until then a trial is
    priced when the objective calls :func:`get_budget`, with the parameters it actually has.

    Multi-objective studies are supported: the base sampler's first affordable proposal
    runs (there is no single value to weigh against cost).

    Example:
        .. code-block:: python

            import optuna
            from ttp_search.optuna import CostAwareSampler, get_budget

            sampler = CostAwareSampler(
                cost_fn=lambda p: 1e-4 * p["width"],  # seconds per step
                trial_budget_s=2.0,
                max_steps=1000,
                search_space={"width": optuna.distributions.IntDistribution(8, 512)},
            )
            study = optuna.create_study(sampler=sampler)
            study.optimize(lambda t: t.suggest_int("width", 8, 512) / get_budget(t), 5)
    """

    def __init__(
        self,
        base_sampler: BaseSampler | None = None,
        *,
        planner: Planner | None = None,
        cost_fn: Callable | None = None,
        trial_budget_s: float | None = None,
        study_budget_s: float | None = None,
        max_steps: int | None = None,
        search_space: dict[str, BaseDistribution] | None = None,
        seed: int | None = None,
        **planner_options: Any,
    ) -> None:
        if planner is None:
            if cost_fn is None:
                raise InvalidInputError("give cost_fn (seconds per step) or a planner")
            planner = Planner.from_options(
                cost_fn,
                trial_budget_s=trial_budget_s,
                study_budget_s=study_budget_s,
                max_steps=max_steps,
                seed=seed,
                **planner_options,
            )
        elif (
            cost_fn is not None or planner_options or trial_budget_s or study_budget_s or max_steps
        ):
            raise InvalidInputError("give either a planner or the options to build one")
        if not isinstance(planner, Planner):
            raise InvalidInputError(f"planner must be a Planner, got {planner!r}")
        self.planner = planner
        self.base_sampler = base_sampler if base_sampler is not None else TPESampler(seed=seed)
        self.search_space = dict(search_space) if search_space else None
        self._fallback = RandomSampler(seed=seed)
        self._space_calc = IntersectionSearchSpace(include_pruned=True)

    @property
    def study_budget_s(self) -> float | None:
        return self.planner.clock.study_budget_s

    # -- the planner's view of the study ---------------------------------------------------

    def history(self, study: optuna.Study, space=None, trials=None) -> History:
        """The study's finished trials in the planner's terms (``trials``: the study's
        trials when the caller has already read them from storage)."""
        space = space if space is not None else (self.search_space or {})
        return study_history(
            study.get_trials(deepcopy=False) if trials is None else trials,
            space,
            minimize=study.directions[0] == StudyDirection.MINIMIZE,
            multi_objective=len(study.directions) > 1,
            steps=self.planner.budget.steps_fn is not None,
            step_times=self.planner.step_time_calibration is not None,
        )

    def time_left(self, study: optuna.Study, trials=None) -> float | None:
        return self.planner.clock.time_left(storage.study_start(study, trials))

    def _view(self, study: optuna.Study, space=None) -> tuple[History, float | None]:
        """History and time left from one read of the study's trials."""
        trials = study.get_trials(deepcopy=False)
        return self.history(study, space, trials), self.time_left(study, trials)

    def plan(self, study: optuna.Study, params: dict[str, Any]) -> TrialPlan:
        """Price ``params`` and size its budget as the next trial of ``study``."""
        history, left = self._view(study)
        return self.planner.plan(params, history, left)

    def step_time_ratio(self, study: optuna.Study, params: dict[str, Any]) -> float:
        """Measured / model seconds per step the study's timed trials say ``params`` needs."""
        return self.planner.scales(params, self.history(study))[1]

    def steps_ratio(self, study: optuna.Study, params: dict[str, Any] | None = None) -> float:
        """Measured / predicted steps to the target the study's trials say ``params`` needs
        (unclipped: what predictions are reported with); 1.0 without a steps model."""
        if self.planner.steps_calibration is None:
            return 1.0
        history = self.history(study)
        return self.planner.steps_calibration.ratio(history.steps, params, history.space)

    def steps_scale(self, study: optuna.Study, params: dict[str, Any]) -> float:
        """The same ratio as budgets use it: at least 1.0 (budgets are only lengthened)."""
        return self.planner.scales(params, self.history(study))[0]

    def step_cost(self, params: dict[str, Any]) -> tuple[float, float, float]:
        """Predicted (seconds, low, high) of one training step, before calibration."""
        return self.planner.budget.step_cost(params)

    # -- BaseSampler -----------------------------------------------------------------------

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self.search_space is not None:
            return dict(self.search_space)
        space = self._space_calc.calculate(study)
        return {k: d for k, d in space.items() if not d.single()}

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        asked = []  # how many proposals the base sampler has made for this trial

        def propose() -> dict[str, Any]:
            base = self.base_sampler
            if asked and not isinstance(base, MULTI_PROPOSAL_SAMPLERS):
                base = self._fallback
            asked.append(base)
            return self._propose(base, study, trial, search_space)

        history, left = self._view(study, search_space)
        record = self.planner.choose(propose, history, left)
        self._store(study, trial, record)
        return dict(record.params)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self.base_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self.base_sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base_sampler.reseed_rng()
        self._fallback.reseed_rng()
        self.planner.chooser.reseed()

    # -- define-by-run pricing (get_budget) ------------------------------------------------

    def assign_budget(self, study, trial: FrozenTrial, params: dict[str, Any]) -> None:
        """Make the trial's plan the one for ``params``, the parameters it actually has.

        Called by :func:`get_budget`. The sampler's own plan is kept when it was made for
        exactly these parameters; otherwise (no plan yet, an enqueued trial's fixed values,
        an objective whose range is narrower than ``search_space``, or ``get_budget`` called
        before some suggestions) ``params`` is priced now. A cost function that needs a
        parameter the trial has not suggested yet raises :class:`MissingParameterError`.
        """
        priced = keys.plan_of(trial).get("params")
        if priced is not None and priced == _plain(params):
            return
        history, left = self._view(study)
        try:
            plan = self.planner.plan(params, history, left)
        except MissingParameterError as exc:
            raise MissingParameterError(
                f"get_budget(trial) for trial {trial.number}: {exc}; suggest it before "
                "calling get_budget"
            ) from None
        note = "priced after sampling"
        if priced is not None:
            changed = sorted(k for k in set(priced) | set(params) if priced.get(k) != params.get(k))
            note += f": the trial's parameters differ from the proposal's in {changed}"
        spent = plan.limit == Limit.STUDY_TIME and left is not None and left <= 0
        self._store(
            study, trial, self.planner.record(params, plan, history, note, study_spent=spent)
        )

    def _store(self, study, trial: FrozenTrial, record: PlanRecord) -> None:
        """Write the plan (one attribute) and the budget, unless :func:`get_budget` has
        already handed the trial its budget: Optuna samples relative parameters lazily, at
        the first suggestion, which can come after."""
        if trial.user_attrs.get(keys.BUDGET_GIVEN):
            return
        plan = record.to_dict()
        plan["params"] = _plain(plan["params"])
        storage.set_cached_attr(study, trial, keys.PLAN, plan)
        if record.budget_steps is not None or trial.user_attrs.get(keys.BUDGET) is not None:
            storage.set_cached_attr(study, trial, keys.BUDGET, record.budget_steps)

    def _propose(self, base: BaseSampler, study, trial, search_space) -> dict[str, Any]:
        """One full configuration from ``base`` (its joint part, then the rest), with an
        enqueued trial's fixed values in place of the sampled ones: those are the values
        the trial will run with."""
        base_space = base.infer_relative_search_space(study, trial)
        base_space = {k: d for k, d in base_space.items() if k in search_space}
        params = base.sample_relative(study, trial, base_space) if base_space else {}
        for name, dist in search_space.items():
            if name not in params:
                params[name] = base.sample_independent(study, trial, name, dist)
        params.update(keys.fixed_params(trial))
        return params


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as storage gives them back (JSON scalars), so a stored copy compares equal."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}
