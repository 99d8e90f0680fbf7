"""CostAwareSampler: price each configuration before it runs, enforce caps, assign budgets."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import Matern, WhiteKernel

from ttp_search._checks import check_int, check_positive_seconds, check_real
from ttp_search.engine.planning import (
    BandFn,
    BudgetPlanner,
    CostFn,
    Limit,
    StepsFn,
    TrialPlan,
    band_record,
    step_time_scale,
    steps_scale,
)
from ttp_search.errors import InvalidInputError, MissingParameterError
from ttp_search.optuna import _storage as keys
from ttp_search.optuna._calibration import (
    similarity,
    step_time_pairs,
    steps_pairs,
)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_STEP_TIME_MISMATCH = 9.0  # a differing categorical: three bandwidths, weight exp(-4.5)


class CostAwareSampler(BaseSampler):
    """Wrap an Optuna sampler so each trial is priced, capped and given its step budget.

    ``cost_fn(params)`` returns the predicted seconds per training step, or an
    ``nn.Module`` that the layer-time model prices (``input_shape`` without the batch,
    ``batch_size`` as an int or the name of a parameter, ``optimizer``). The step budget is
    ``trial_budget_s / step_seconds`` steps, at most ``max_steps``; when the study's remaining
    time (``study_budget_s``, counted from its first trial) is shorter, the budget shrinks to
    fit. A configuration that cannot run ``min_steps`` within those limits is not run as
    sampled: the base sampler's next proposal is tried instead.

    Choice among proposals: the base sampler proposes ``n_candidates`` configurations. Before
    ``n_startup_trials`` trials have completed the first feasible proposal is run (the base
    sampler's own choice). After that, a Gaussian process on the completed trials scores each
    proposal's expected improvement, and the one with the most expected improvement per
    predicted second (Snoek et al. 2012; ``cost_exponent`` sets how much cost weighs) is run.
    Past ``max_gp_points`` completed trials the GP is fitted on the best half and the most
    recent rest (its cost grows with the cube of the points).

    Pass ``search_space`` (name -> distribution) so even the first trials are priced before
    they run; otherwise the space is learnt from completed trials, and until then a trial is
    priced when the objective first calls :func:`get_budget` (and pruned there if over a cap).

    Fine-tuning searches: ``steps_fn(params)`` -> (steps, low, high) to a training target
    (e.g. from :class:`~ttp_search.dynamics.BlockGrams`) makes each budget the predicted steps
    times ``1 + steps_margin`` (see :class:`~ttp_search.engine.BudgetPlanner`), stored as
    ``ttp:predicted_target_steps``; ``band_fn(params, steps)`` stores the predicted curve as
    ``ttp:band`` for :class:`TTPPruner`'s band rule. Trials that record when they reached the
    target (:func:`record_target_reached`) calibrate later predictions by measured/predicted,
    weighted toward similar configurations (``calibration_bandwidth``, see
    :meth:`steps_ratio`; ``None``: one study-wide ratio).

    Step times are calibrated too (``step_time_calibration``): every finished trial that
    reported its clock (:func:`report` with ``elapsed_s``, over at least 20 steps) gives
    measured / model seconds per step, and a configuration is priced at the model's step
    time times the ratio of the trials like it in ``step_time_params`` (the parameters that
    change the step time, such as architecture and batch size; ``None``: all), shrunk toward
    the model (see :meth:`step_time_ratio`). Pass the training seconds as ``elapsed_s`` if
    evaluation should not count as training time.

    Stored on each trial: ``ttp:predicted_step_s`` (and ``_low_s``/``_high_s``, calibrated;
    ``ttp:model_step_s`` is the cost model's own and ``ttp:step_time_ratio`` their ratio),
    ``ttp:budget_steps``, ``ttp:predicted_seconds``/``_low``/``_high`` for the whole budget,
    and ``ttp:sampler`` (how the configuration was chosen).

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
        cost_fn: CostFn,
        trial_budget_s: float | None = None,
        study_budget_s: float | None = None,
        max_steps: int | None = None,
        min_steps: int = 1,
        search_space: dict[str, BaseDistribution] | None = None,
        n_candidates: int = 8,
        n_startup_trials: int = 5,
        cost_exponent: float = 1.0,
        input_shape: Sequence[int] | None = None,
        batch_size: int | str | None = None,
        optimizer: str = "sgd",
        cost_model=None,
        seed: int | None = None,
        max_gp_points: int = 200,
        steps_fn: StepsFn | None = None,
        steps_margin: float = 0.1,
        band_fn: BandFn | None = None,
        calibration_bandwidth: float | None = 0.25,
        step_time_calibration: bool = True,
        step_time_params: Sequence[str] | None = None,
    ) -> None:
        study_budget_s = check_positive_seconds("study_budget_s", study_budget_s)
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
        n_candidates = check_int("n_candidates", n_candidates, 1)
        n_startup_trials = check_int("n_startup_trials", n_startup_trials, 0)
        max_gp_points = check_int("max_gp_points", max_gp_points, 2)
        self.max_gp_points = max_gp_points
        if calibration_bandwidth is not None:
            calibration_bandwidth = check_real(
                "calibration_bandwidth", calibration_bandwidth, low=0.0, low_open=True
            )
        self.calibration_bandwidth = calibration_bandwidth
        if isinstance(step_time_params, str) or not (
            step_time_params is None or all(isinstance(name, str) for name in step_time_params)
        ):
            raise InvalidInputError(
                f"step_time_params must be parameter names or None, got {step_time_params!r}"
            )
        self.step_time_calibration = bool(step_time_calibration)
        self.step_time_params = None if step_time_params is None else tuple(step_time_params)
        cost_exponent = check_real("cost_exponent", cost_exponent, low=0.0)
        self.base_sampler = base_sampler if base_sampler is not None else TPESampler(seed=seed)
        self.study_budget_s = study_budget_s
        self.search_space = dict(search_space) if search_space else None
        self.n_candidates = n_candidates
        self.n_startup_trials = n_startup_trials
        self.cost_exponent = cost_exponent
        self._rng = np.random.default_rng(seed)
        self._space_calc = IntersectionSearchSpace(include_pruned=True)

    def step_cost(self, params: dict[str, Any]) -> tuple[float, float, float]:
        """Predicted (seconds, low, high) of one training step of the configuration."""
        return self.planner.step_cost(params)

    def plan(
        self,
        study: optuna.Study,
        params: dict[str, Any],
        time_left_s: float | None = None,
        scale: float | None = None,
        step_time_scale: float | None = None,
    ) -> TrialPlan:
        """Price ``params`` and size its budget within the caps and the study's time left
        (read from the study unless the caller passes it, like both scales)."""
        if time_left_s is None:
            time_left_s = keys.study_time_left(study, self.study_budget_s)
        if scale is None:
            scale = self.steps_scale(study, params)
        if step_time_scale is None:
            step_time_scale = self.step_time_ratio(study, params)
        return self.planner.plan(
            params, time_left_s, steps_scale=scale, step_time_scale=step_time_scale
        )

    def step_time_ratio(self, study: optuna.Study, params: dict[str, Any]) -> float:
        """Measured / model seconds per step for ``params`` (1.0 before any trial is timed).

        The layer-time model's error belongs to the configuration's ops on this machine
        (bench-pipeline: one architecture 1.1x over, another 0.8x under, in one study). Each
        timed trial is weighted by :func:`similarity` in ``step_time_params`` with bandwidth
        ``calibration_bandwidth``, a differing categorical counting as three bandwidths (a
        different architecture says little about this one), and the weighted geometric mean
        is shrunk toward the model (:func:`~ttp_search.engine.planning.step_time_scale`);
        ``calibration_bandwidth=None``: every timed trial counts alike.
        """
        return self._timed(self._step_time_pairs(self._finished(study)), params)

    def _timed(self, pairs: list[tuple], params: dict[str, Any]) -> float:
        if not pairs:
            return 1.0
        weights = None
        if self.calibration_bandwidth is not None:
            names = self.step_time_params
            mine = params if names is None else {k: params[k] for k in names if k in params}
            weights = [
                similarity(
                    mine,
                    p if names is None else {k: p[k] for k in names if k in p},
                    dists,
                    self.calibration_bandwidth,
                    mismatch=_STEP_TIME_MISMATCH,
                )
                for *_, p, dists in pairs
            ]
        return step_time_scale([pair[:2] for pair in pairs], weights=weights)

    def _step_time_pairs(self, finished: list[FrozenTrial]) -> list[tuple]:
        return step_time_pairs(finished) if self.step_time_calibration else []

    @staticmethod
    def _finished(study: optuna.Study) -> list[FrozenTrial]:
        """The trials that calibrate: one storage read for both kinds of pairs."""
        return study.get_trials(deepcopy=False, states=_FINISHED)

    def steps_scale(self, study: optuna.Study, params: dict[str, Any] | None = None) -> float:
        """Measured / predicted steps to the target over this study's trials (recorded with
        :func:`record_target_reached`; a completed trial that never reached it counts with
        more than its budget), at least 1.0; 1.0 without ``steps_fn``. With ``params`` and
        ``calibration_bandwidth``, trials like ``params`` count most (see :meth:`steps_ratio`).
        """
        # Budgets are only lengthened: a trial that stops at the target wastes nothing of a
        # long budget, while a budget too short wastes the whole trial (and a shorter linear
        # decay reaches the target later in its budget than a long one: no time stretch).
        return self._calibrated(self._steps_pairs(self._finished(study)), params, lower=1.0)

    def steps_ratio(self, study: optuna.Study, params: dict[str, Any] | None = None) -> float:
        """The same ratio unclipped below: the study's calibration of the steps model, used
        for the predicted steps and seconds it reports (``ttp:steps_ratio``).

        The steps model's error moves with the configuration (bench-pipeline: trials with
        weight decay needed 0.3-0.6 of the SDE's steps, those without 0.5-0.9), so for
        ``params`` each trial is weighted by :func:`similarity` with bandwidth
        ``calibration_bandwidth`` and the result shrunk toward the study-wide median
        (:func:`~ttp_search.engine.planning.steps_scale`); ``None`` is the median alone.
        """
        return self._calibrated(self._steps_pairs(self._finished(study)), params)

    def _calibrated(self, pairs: list, params: dict[str, Any] | None, **clip) -> float:
        weights = None
        if params is not None and self.calibration_bandwidth is not None:
            weights = [
                similarity(params, p, dists, self.calibration_bandwidth) for *_, p, dists in pairs
            ]
        return steps_scale([pair[:2] for pair in pairs], weights=weights, **clip)

    def _steps_pairs(self, finished: list[FrozenTrial]) -> list[tuple]:
        return steps_pairs(finished) if self.planner.steps_fn is not None else []

    def _store(
        self, study, trial: FrozenTrial, params, plan: TrialPlan, note: str, pairs=None
    ) -> None:
        """Record the plan on the trial; ``pairs``: the calibration pairs if already read.

        Nothing is written once :func:`get_budget` has handed the trial its budget: Optuna
        samples relative parameters lazily, at the first suggestion, which can come after.
        """
        if trial.user_attrs.get(keys.BUDGET_GIVEN):
            return
        keys.set_attr(study, trial, keys.PRICED_PARAMS, _plain(params))
        keys.set_attr(study, trial, keys.PREDICTED_STEP, plan.step_s)
        model_s = self.planner.step_cost(params)[0]
        keys.set_attr(study, trial, keys.MODEL_STEP, model_s)
        if math.isfinite(model_s):
            keys.set_attr(study, trial, keys.STEP_TIME_RATIO, plan.step_s / model_s)
        keys.set_attr(study, trial, keys.PREDICTED_STEP_LOW, plan.step_low_s)
        keys.set_attr(study, trial, keys.PREDICTED_STEP_HIGH, plan.step_high_s)
        keys.set_attr(study, trial, keys.SAMPLER_NOTE, note)
        if plan.target_steps is not None:
            target = [plan.target_steps, plan.target_low, plan.target_high]
            keys.set_attr(study, trial, keys.TARGET_STEPS, target)
        if not plan.feasible:
            keys.set_attr(study, trial, keys.INFEASIBLE, plan.reason)
            if trial.user_attrs.get(keys.BUDGET) is not None:
                keys.set_attr(study, trial, keys.BUDGET, None)  # a stale proposal's budget
            return
        if trial.user_attrs.get(keys.INFEASIBLE):
            keys.set_attr(study, trial, keys.INFEASIBLE, None)  # a stale proposal's verdict
        keys.set_attr(study, trial, keys.BUDGET, plan.steps)
        keys.set_attr(study, trial, keys.PREDICTED_SECONDS, plan.seconds)
        keys.set_attr(study, trial, keys.PREDICTED_LOW, plan.seconds_low)
        keys.set_attr(study, trial, keys.PREDICTED_HIGH, plan.seconds_high)
        if self.planner.band_fn is None:
            return
        # The model's curve runs `scale` times slower or faster than the study has measured:
        # predict the budget it would need and stretch the curve onto this trial's steps.
        scale = 1.0
        if plan.target_steps is not None:
            raw = self.planner.target_steps(params)[0]
            scale = plan.target_steps / raw if raw > 0 else 1.0
        band = band_record(self.planner.band_fn, params, max(1, round(plan.steps / scale)))
        keys.set_attr(study, trial, keys.STEPS_SCALE, scale)
        if pairs is None:
            pairs = self._steps_pairs(self._finished(study))
        keys.set_attr(study, trial, keys.STEPS_RATIO, self._calibrated(pairs, params))
        if band.get("crossing") is not None:
            keys.set_attr(study, trial, keys.PREDICTED_CROSSING, band["crossing"])
        band["step"] = [scale * v for v in band["step"]]
        band.pop("crossing", None)
        keys.set_attr(study, trial, keys.BAND, band)

    def assign_budget(self, study, trial: FrozenTrial, params: dict[str, Any]) -> None:
        """Make the trial's plan the one for ``params``, the parameters it actually has.

        Called by :func:`get_budget`. The sampler's own plan is kept when it was made for
        exactly these parameters; otherwise (no plan yet, an enqueued trial's fixed values,
        an objective whose range is narrower than ``search_space``, or ``get_budget`` called
        before some suggestions) ``params`` is priced now. A cost function that needs a
        parameter the trial has not suggested yet raises :class:`MissingParameterError`.
        """
        priced = trial.user_attrs.get(keys.PRICED_PARAMS)
        if priced is not None and priced == _plain(params):
            return
        left = keys.study_time_left(study, self.study_budget_s)
        try:
            plan = self.plan(study, params, left)
        except MissingParameterError as exc:
            raise MissingParameterError(
                f"get_budget(trial) for trial {trial.number}: {exc}; suggest it before "
                "calling get_budget"
            ) from None
        note = "priced after sampling"
        if priced is not None:
            changed = sorted(k for k in set(priced) | set(params) if priced.get(k) != params.get(k))
            note += f": the trial's parameters differ from the proposal's in {changed}"
        self._store(study, trial, params, plan, note)
        if plan.limit == Limit.STUDY_TIME and left is not None and left <= 0:
            keys.set_attr(study, trial, keys.STUDY_SPENT, plan.reason)

    # -- BaseSampler -----------------------------------------------------------------------

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if self.search_space is not None:
            return dict(self.search_space)
        space = self._space_calc.calculate(study)
        return {k: d for k, d in space.items() if not d.single()}

    def sample_relative(self, study, trial: FrozenTrial, search_space) -> dict[str, Any]:
        if not search_space:
            return {}
        chosen, plan, note = None, None, ""
        proposals = []
        # In the startup phase the first feasible proposal runs: the rest need no pricing
        # (a price can cost an SDE budget search).
        done = self._completed_trials(study, search_space)
        first_feasible = self._in_startup(done)
        for _ in range(4):  # rounds of proposals before giving up on a feasible one
            batch = [self._propose(study, trial, search_space) for _ in range(self.n_candidates)]
            # The study's state is read once per batch, not once per proposal.
            left = keys.study_time_left(study, self.study_budget_s)
            finished = self._finished(study)
            pairs, timed = self._steps_pairs(finished), self._step_time_pairs(finished)
            plans = []
            for p in batch:
                scale = self._calibrated(pairs, p, lower=1.0)
                plans.append(self.plan(study, p, left, scale, self._timed(timed, p)))
                if plans[-1].feasible:
                    proposals.append((p, plans[-1]))
                    if first_feasible:
                        break
            if proposals:
                break
        if not proposals:
            chosen, plan = batch[0], plans[0]
            note = f"no feasible proposal in {4 * self.n_candidates}: {plan.reason}"
        else:
            chosen, plan, note = self._choose(study, search_space, proposals, done)
        self._store(study, trial, chosen, plan, note, pairs)
        if not proposals and plan.limit == Limit.STUDY_TIME:
            # Not one of 4 x n_candidates proposals fits in what is left: the study's time
            # is spent for any configuration this space is likely to give.
            keys.set_attr(study, trial, keys.STUDY_SPENT, note)
        return chosen

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self.base_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self.base_sampler.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base_sampler.reseed_rng()
        self._rng = np.random.default_rng()

    # -- internals -------------------------------------------------------------------------

    def _propose(self, study, trial, search_space) -> dict[str, Any]:
        """One full configuration from the base sampler (its joint part, then the rest),
        with an enqueued trial's fixed values in place of the sampled ones: those are the
        values the trial will run with."""
        base_space = self.base_sampler.infer_relative_search_space(study, trial)
        base_space = {k: d for k, d in base_space.items() if k in search_space}
        params = self.base_sampler.sample_relative(study, trial, base_space) if base_space else {}
        for name, dist in search_space.items():
            if name not in params:
                params[name] = self.base_sampler.sample_independent(study, trial, name, dist)
        params.update(keys.fixed_params(trial))
        return params

    @staticmethod
    def _completed_trials(study, space) -> list[FrozenTrial]:
        return [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value) and all(k in t.params for k in space)
        ]

    def _in_startup(self, done: list[FrozenTrial]) -> bool:
        return len(done) < max(self.n_startup_trials, 2)

    def _choose(self, study, space, proposals, done: list[FrozenTrial]):
        if self._in_startup(done):
            p, q = proposals[0]
            return p, q, "base sampler's proposal (startup)"
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        if len(done) > self.max_gp_points:
            # The GP costs O(n^3): fit it on the best half and the most recent half, which
            # is where expected improvement is decided, so a 1,000-trial study stays fast.
            by_value = sorted(done, key=lambda t: sign * t.value)
            best = by_value[: self.max_gp_points // 2]
            chosen = {t.number for t in best}
            recent = [t for t in reversed(done) if t.number not in chosen]
            done = best + recent[: self.max_gp_points - len(best)]
        X = np.array([_encode(t.params, space) for t in done])
        y = sign * np.array([t.value for t in done])  # lower is better from here on
        gp = GaussianProcessRegressor(
            Matern(length_scale=np.full(X.shape[1], 0.3), length_scale_bounds=(1e-2, 1e2), nu=2.5)
            + WhiteKernel(1e-2, (1e-6, 1.0)),
            normalize_y=True,
            random_state=int(self._rng.integers(2**31)),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X, y)
        C = np.array([_encode(p, space) for p, _ in proposals])
        mu, sd = gp.predict(C, return_std=True)
        sd = np.maximum(sd, 1e-12)
        z = (y.min() - mu) / sd
        ei = sd * (z * norm.cdf(z) + norm.pdf(z))
        seconds = np.array([q.seconds for _, q in proposals])
        score = ei / np.maximum(seconds, 1e-9) ** self.cost_exponent
        i = int(np.argmax(score))
        p, q = proposals[i]
        cost_rank = int((seconds < seconds[i]).sum()) + 1
        return (
            p,
            q,
            (
                f"best of {len(proposals)} by EI per second^{self.cost_exponent:g}: "
                f"EI {ei[i]:.3g}, {seconds[i]:.1f} s (cost rank {cost_rank} of {len(proposals)})"
            ),
        )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as storage gives them back (JSON scalars), so a stored copy compares equal."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}


def _encode(params: dict[str, Any], space: dict[str, BaseDistribution]) -> list[float]:
    """Each parameter scaled to [0, 1] (log scale where the distribution says so)."""
    row = []
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            n = len(dist.choices)
            row.append(dist.to_internal_repr(params[name]) / max(n - 1, 1))
            continue
        lo, hi, value = float(dist.low), float(dist.high), float(params[name])
        if getattr(dist, "log", False):
            lo, hi, value = math.log(lo), math.log(hi), math.log(value)
        row.append((value - lo) / (hi - lo) if hi > lo else 0.0)
    return row
