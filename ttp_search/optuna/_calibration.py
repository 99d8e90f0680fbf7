"""A study's trials in the planner's terms: completed values, what the finished trials say
about the predictions (measured vs predicted steps to the target and seconds per step), and
the search space as the engine's dimensions."""

from __future__ import annotations

import math
from collections.abc import Mapping

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from ttp_search.engine.calibration import MIN_TIMED_STEPS, SHORT_OF_TARGET, Observation
from ttp_search.engine.choice import Completed
from ttp_search.engine.planner import History
from ttp_search.engine.space import Categorical, Dimension, Numeric
from ttp_search.optuna import keys

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def engine_space(distributions: Mapping[str, BaseDistribution]) -> dict[str, Dimension]:
    """Optuna distributions as the engine's dimensions."""
    out: dict[str, Dimension] = {}
    for name, dist in distributions.items():
        if isinstance(dist, FloatDistribution | IntDistribution):
            out[name] = Numeric(float(dist.low), float(dist.high), bool(dist.log))
        elif isinstance(dist, CategoricalDistribution):
            out[name] = Categorical(tuple(dist.choices))
    return out


def study_history(
    trials: list[FrozenTrial],
    space: Mapping[str, BaseDistribution],
    *,
    minimize: bool,
    multi_objective: bool = False,
    steps: bool = True,
    step_times: bool = True,
) -> History:
    """The planner's view of a study's trials (one read of the storage by the caller).

    A multi-objective study has no single value to improve on: its completed trials are
    left out, so the planner runs the base sampler's own (affordable) proposals.
    """
    finished = [t for t in trials if t.state in _FINISHED]
    completed = []
    if not multi_objective:
        completed = [
            Completed(t.params, t.value)
            for t in finished
            if t.state == TrialState.COMPLETE
            and t.value is not None
            and math.isfinite(t.value)
            and all(k in t.params for k in space)
        ]
    return History(
        completed=completed,
        steps=steps_observations(finished) if steps else [],
        step_times=step_time_observations(finished) if step_times else [],
        space=engine_space({**_distributions(finished), **space}),
        minimize=minimize,
        choice_space=engine_space(space),
    )


def _distributions(trials: list[FrozenTrial]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            out.setdefault(name, dist)
    return out


def steps_observations(trials: list[FrozenTrial]) -> list[Observation]:
    """Predicted vs measured steps to the target of the trials that have a predicted
    crossing and either reached the target or completed short of it."""
    out = []
    for t in trials:
        a, plan = t.user_attrs, keys.plan_of(t)
        if not plan.get("crossing"):
            continue
        if keys.TARGET_REACHED in a:
            measured = a[keys.TARGET_REACHED]
        elif t.state == TrialState.COMPLETE and a.get(keys.BUDGET):
            measured = SHORT_OF_TARGET * a[keys.BUDGET]
        else:
            continue
        out.append(Observation(plan["crossing"], measured, t.params))
    return out


def step_time_observations(trials: list[FrozenTrial]) -> list[Observation]:
    """Model vs measured seconds per step of the trials whose clock covers enough steps."""
    out = []
    for t in trials:
        model_s, clock = keys.plan_of(t).get("model_step_s"), t.user_attrs.get(keys.CLOCK)
        if not model_s or not clock or clock.get("step", 0) < MIN_TIMED_STEPS:
            continue
        measured = clock["elapsed_s"] / clock["step"]
        if measured > 0:
            out.append(Observation(float(model_s), measured, t.params))
    return out
