"""Optuna's own sampler conformance suite (shipped in the optuna wheel) for CostAwareSampler
around TPE, Random, QMC, GP and CMA-ES: wrapping keeps the base sampler's contract."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from ttp_search.optuna import CostAwareSampler, get_budget, keys

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _wrapped(base: Callable[[], BaseSampler]) -> Callable[[], BaseSampler]:
    # A cost that depends on nothing: every proposal is affordable, so the wrapper's own
    # choice (expected improvement per second) is what the suite exercises.
    return lambda: CostAwareSampler(base(), cost_fn=lambda p: 1e-3, max_steps=10, seed=0)


class TestAroundTPE(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _wrapped(lambda: TPESampler(seed=0, multivariate=True))


class TestAroundRandom(BasicSamplerTestCase, RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _wrapped(lambda: RandomSampler(seed=0))


class TestAroundQMC(BasicSamplerTestCase, RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _wrapped(lambda: QMCSampler(seed=0, warn_independent_sampling=False))


class TestAroundGP(RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _wrapped(lambda: GPSampler(seed=0, n_startup_trials=3))


class TestAroundCmaEs(BasicSamplerTestCase, RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return _wrapped(lambda: CmaEsSampler(seed=0, warn_independent_sampling=False))


@pytest.mark.parametrize(
    "base",
    [
        lambda: QMCSampler(seed=0, warn_independent_sampling=False),
        lambda: CmaEsSampler(seed=0, warn_independent_sampling=False),
    ],
    ids=["qmc", "cmaes"],
)
def test_a_sampler_with_state_is_asked_once_per_trial(base):
    inner = base()
    calls = []
    original = inner.sample_relative

    def counted(study, trial, space):
        calls.append(trial.number)
        return original(study, trial, space)

    inner.sample_relative = counted
    # Half the space is too expensive: the wrapper must draw its replacements elsewhere.
    sampler = CostAwareSampler(
        inner,
        cost_fn=lambda p: 1.0 if p["x"] > 0.5 else 1e-3,
        trial_budget_s=0.5,
        search_space={"x": optuna.distributions.FloatDistribution(0, 1)},
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=12)
    assert sorted(calls) == sorted(set(calls)), calls  # never twice for one trial
    assert all(t.params["x"] <= 0.5 for t in study.trials if t.state.name == "COMPLETE")


def test_multi_objective_study_is_planned_without_a_single_value():
    sampler = CostAwareSampler(
        cost_fn=lambda p: 1e-3 * p["x"],
        trial_budget_s=0.5,
        search_space={"x": optuna.distributions.FloatDistribution(1, 1000)},
        seed=0,
    )
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", 1, 1000)
        get_budget(trial)  # prunes a configuration over the per-trial cap
        return x, -x

    study.optimize(objective, n_trials=12)
    assert len(study.trials) == 12
    # No single value to weigh against cost: the base sampler's affordable proposal runs.
    assert not any("EI per second" in keys.plan_of(t)["note"] for t in study.trials)
    assert all(t.params["x"] <= 500 for t in study.trials if t.state.name == "COMPLETE")
