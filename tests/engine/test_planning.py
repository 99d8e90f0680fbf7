"""The fine-tuning pipeline: per-block Grams, budgets from predicted steps, the band rule."""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from ttp_search.dynamics import BlockGrams, LinearizedSDE
from ttp_search.engine import BudgetPlanner, DecisionCore, TrialCurve
from ttp_search.engine.calibration import (
    Calibrator,
    Observation,
    step_time_calibrator,
    steps_calibrator,
)
from ttp_search.engine.space import Categorical, Numeric, similarity
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    get_budget,
    keys,
    record_target_reached,
    report,
)

BLOCKS = {"body": ["0."], "head": ["2."]}


def _net_and_data(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    x = torch.randn(40, 6)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (40,)), 3).float()
    return net, x, y


HP = dict(lr=0.2, batch_size=8, momentum=0.5, weight_decay=1e-3)


def test_block_grams_sum_to_the_sde_of_the_trained_blocks():
    net, x, y = _net_and_data()
    kw = dict(loss="mse", num_samples=40, projection_dim=10_000, seed=0)
    grams = BlockGrams(net, x, y, BLOCKS, **kw)
    full = LinearizedSDE(net, x, y, **kw)
    both = grams.sde(["body", "head"]).predict_curve(**HP, steps=50)
    pd.testing.assert_frame_equal(both, full.predict_curve(**HP, steps=50), rtol=1e-6)
    for p in net[0].parameters():
        p.requires_grad_(False)  # only the head is fine-tuned
    head_only = LinearizedSDE(net, x, y, **kw).predict_curve(**HP, steps=50)
    pd.testing.assert_frame_equal(grams.sde("head").predict_curve(**HP, steps=50), head_only)
    assert all(p.requires_grad for p in net[2].parameters())  # the model is left as it was
    with pytest.raises(InvalidInputError, match="subset"):
        grams.sde(["neck"])
    with pytest.raises(InvalidInputError, match="matches no parameter"):
        BlockGrams(net, x, y, {"neck": ["9."]}, **kw)


def test_block_grams_are_computed_once_and_keyed_by_weights(tmp_path):
    net, x, y = _net_and_data()
    kw = dict(loss="mse", num_samples=20, projection_dim=64, seed=0, folder=tmp_path)
    first = BlockGrams.load_or_compute(net, x, y, BLOCKS, **kw)
    again = BlockGrams.load_or_compute(net, x, y, BLOCKS, **kw)
    assert first.computed_here and not again.computed_here and first.path == again.path
    np.testing.assert_array_equal(first.grams["head"], again.grams["head"])
    other, _, _ = _net_and_data(seed=1)
    assert BlockGrams.load_or_compute(other, x, y, BLOCKS, **kw).path != first.path
    first.path.write_bytes(b"corrupt")  # a corrupt cache file is recomputed, not trusted
    assert BlockGrams.load_or_compute(net, x, y, BLOCKS, **kw).computed_here


def _planner(steps, **kw):
    return BudgetPlanner(lambda p: 0.01, steps_fn=lambda p: steps, **kw)


def test_budget_is_the_predicted_steps_with_a_margin_within_the_limits():
    plan = _planner((100.0, 80.0, 130.0), trial_budget_s=10.0, steps_margin=0.2).plan({})
    assert plan.feasible and plan.steps == 120 and plan.target_steps == 100.0
    assert plan.target_seconds == pytest.approx((1.0, 0.8, 1.3))
    never = _planner((math.inf, math.inf, math.inf), max_steps=500).plan({})
    assert not never.feasible and "never" in never.reason
    long = _planner((1000.0, 900.0, 1100.0), max_steps=500).plan({})
    assert not long.feasible and "max_steps" in long.reason
    costly = _planner((1000.0, 900.0, 1100.0), trial_budget_s=5.0).plan({})
    assert not costly.feasible and "per-trial cap" in costly.reason
    late = _planner((100.0, 80.0, 130.0), max_steps=500).plan({}, time_left_s=0.5)
    assert late.feasible and late.steps == 50  # the study's end caps the budget
    scaled = _planner((100.0, 80.0, 130.0), max_steps=500, steps_margin=0.0)
    assert scaled.plan({}, steps_scale=0.5).steps == 50
    with pytest.raises(InvalidInputError, match="steps_margin"):
        _planner((1.0, 1.0, 1.0), max_steps=5, steps_margin=-1)


def _obs(*pairs, params=None):
    return [Observation(p, m, params[i] if params else {}) for i, (p, m) in enumerate(pairs)]


def test_steps_calibration_is_the_median_ratio_and_needs_two_trials():
    steps = steps_calibrator(bandwidth=None)
    assert steps.ratio(_obs((100, 50)), None, {}) == 1.0
    assert steps.ratio(_obs((100, 50), (200, 80), (100, 60)), None, {}) == pytest.approx(0.5)
    assert steps.ratio(_obs((100, 1e9), (100, 1e9)), None, {}) == 20.0  # clipped
    assert steps.ratio(_obs((math.inf, 10), (100, 40), (100, 60)), None, {}) == pytest.approx(0.5)
    assert steps.ratio(_obs((100, 30), (100, 40)), None, {}, lower=1.0) == 1.0  # never shorter


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_trial_that_leaves_its_band_in_the_bad_direction_is_stopped(direction):
    sign = 1.0 if direction == "minimize" else -1.0
    core = DecisionCore(direction, n_startup_trials=5, band_tolerance=0.5)
    band = (np.array([0.0, 100.0]), sign * np.array([1.0, 0.1]), sign * np.array([1.2, 0.2]))
    if direction == "maximize":
        band = (band[0], band[2], band[1])  # low < high
    k = np.arange(1.0, 51.0)
    expected = sign * (1.1 - 0.01 * k)
    ok = TrialCurve(k, expected, budget_steps=100, band=band)
    assert not core.decide(ok, []).prune
    bad = TrialCurve(k, 3 * expected, budget_steps=100, band=band)
    decision = core.decide(bad, [])
    assert decision.prune and "outside the predicted band" in decision.reason
    better = TrialCurve(k, 0.2 * expected, budget_steps=100, band=band)
    assert not core.decide(better, []).prune  # better than predicted is never stopped
    ignoring = DecisionCore(direction, n_startup_trials=5, band_tolerance=None)
    assert not ignoring.decide(bad, []).prune


def test_calibration_leans_toward_similar_trials():
    space = {"wd": Categorical((0.0, 1e-3))}
    like, unlike = {"wd": 1e-3}, {"wd": 0.0}
    obs = _obs((100, 40), (100, 40), (100, 80), (100, 80), params=[like, like, unlike, unlike])
    # A differing categorical weighs exp(-huge) = 0: the two similar trials (0.4) and the
    # median (0.6) as one more observation.
    steps = Calibrator("median", mismatch=1e6)
    assert steps.ratio(obs, like, space) == pytest.approx(
        math.exp((2 * math.log(0.4) + math.log(0.6)) / 3)
    )
    assert steps.ratio(obs, {"wd": 0.5}, space) == pytest.approx(0.6)  # nothing alike: median
    assert steps.ratio(obs[:1], like, space) == 1.0  # still needs two trials


def test_step_time_calibration_shrinks_toward_the_model():
    times = step_time_calibrator(bandwidth=None)
    assert times.ratio([], None, {}) == 1.0  # nothing measured: the model's own time
    two = _obs((0.01, 0.02), (0.01, 0.02))
    assert times.ratio(two, None, {}) == pytest.approx(2 ** (2 / 3))  # the model is a pair
    assert Calibrator("model", bandwidth=None, prior_weight=0.0).ratio(
        two, None, {}
    ) == pytest.approx(2.0)
    lonely = Calibrator("model", mismatch=1e6)
    assert lonely.ratio(_obs((0.01, 0.02), params=[{"w": 1}]), {"w": 2}, {}) == 1.0
    # 100x measured, shrunk to 10x by the model's pseudo-trial, clipped at 5x
    assert step_time_calibrator(None).ratio(_obs((0.01, 1.0)), None, {}) == 5.0
    planner = _planner((100.0, 80.0, 130.0), trial_budget_s=10.0)
    base, slow = planner.plan({}), planner.plan({}, step_time_scale=2.0)
    assert slow.step_s == pytest.approx(2 * base.step_s)
    assert slow.step_high_s == pytest.approx(2 * base.step_high_s)
    with pytest.raises(InvalidInputError, match="step_time_scale"):
        planner.plan({}, step_time_scale=0.0)


def _timed_trial(width: int, model_s: float, measured_s: float, steps: int, lr: float = 0.1):
    dists = {
        "width": optuna.distributions.CategoricalDistribution([1, 2, 4]),
        "lr": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
    }
    return optuna.trial.create_trial(
        params={"width": width, "lr": lr},
        distributions=dists,
        value=0.0,
        user_attrs={
            keys.PLAN: {"model_step_s": model_s},
            keys.CLOCK: {"elapsed_s": measured_s * steps, "step": steps},
        },
    )


def test_sampler_calibrates_step_time_on_trials_of_the_same_architecture():
    cost = {1: 0.001, 2: 0.002, 4: 0.004}
    kwargs = dict(cost_fn=lambda p: cost[p["width"]], max_steps=100)
    sampler = CostAwareSampler(**kwargs, step_time_params=["width"])
    study = optuna.create_study()
    for lr in (0.001, 0.03, 1.0):  # width 1 runs twice as slow as the model says, at any lr
        study.add_trial(_timed_trial(1, 0.001, 0.002, 100, lr))
    study.add_trial(_timed_trial(4, 0.004, 0.004, 100))  # width 4 runs as the model says
    study.add_trial(_timed_trial(4, 0.004, 0.1, 5))  # too few steps (warm-up): ignored
    # three like trials at 2x and the model as a fourth at 1x; width 4 barely counts
    one, four = {"width": 1, "lr": 0.1}, {"width": 4, "lr": 0.1}
    assert sampler.step_time_ratio(study, one) == pytest.approx(2 ** (3 / 4), rel=0.01)
    assert sampler.step_time_ratio(study, four) == pytest.approx(1.0, abs=0.02)
    assert sampler.plan(study, one).step_s == pytest.approx(0.001 * 2 ** (3 / 4), rel=0.01)
    # Without step_time_params the learning rate, which does not change the step time,
    # makes the width-1 trials look less alike: the ratio stays nearer the model.
    every = CostAwareSampler(**kwargs).step_time_ratio(study, one)
    assert 1.0 < every < sampler.step_time_ratio(study, one)
    pooled = CostAwareSampler(**kwargs, calibration_bandwidth=None)
    assert pooled.step_time_ratio(study, four) == pytest.approx(2 ** (3 / 5))  # all alike
    off = CostAwareSampler(**kwargs, step_time_calibration=False)
    assert off.step_time_ratio(study, one) == 1.0
    with pytest.raises(InvalidInputError, match="step_time_params"):
        CostAwareSampler(**kwargs, step_time_params="width")


def test_trials_store_the_model_step_time_and_the_calibrated_one():
    sampler = CostAwareSampler(
        cost_fn=lambda p: 0.001,
        max_steps=50,
        search_space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        seed=0,
        step_time_params=(),  # no parameter changes the step time: every trial is alike
    )
    study = optuna.create_study(sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        steps = get_budget(trial)
        report(trial, x, steps, elapsed_s=0.003 * steps)  # three times the model's time
        return x

    study.optimize(objective, n_trials=4)
    plans = [keys.plan_of(t) for t in study.trials]
    assert all(p["model_step_s"] == 0.001 for p in plans)
    ratios = [p["step_time_ratio"] for p in plans]
    # n timed trials at 3x and the model at 1x: 3 ** (n / (n + 1)), toward the measured 3x
    assert ratios == pytest.approx([3 ** (n / (n + 1)) for n in range(4)])
    assert plans[3]["step_s"] == pytest.approx(0.001 * ratios[3])


def test_similarity_of_configurations():
    space = {"lr": Numeric(1e-3, 1.0, log=True), "wd": Categorical((0.0, 1e-3))}
    a = {"lr": 0.01, "wd": 0.0}
    assert similarity(a, a, space) == 1.0
    assert similarity(a, {"lr": 0.01, "wd": 1e-3}, space) == pytest.approx(math.exp(-0.5))
    decade = similarity(a, {"lr": 0.1, "wd": 0.0}, space, bandwidth=1 / 3)
    assert decade == pytest.approx(math.exp(-0.5))  # a third of the log range per bandwidth
    assert similarity(a, {"lr": 0.01}, space) == pytest.approx(math.exp(-0.5))  # missing


def test_sampler_calibrates_each_configuration_by_the_trials_like_it():
    """Trials with decay needed 0.4 of the predicted steps, those without 0.8: a new
    configuration with decay is calibrated near 0.4, not at the study-wide median."""
    dists = {
        "lr": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
        "wd": optuna.distributions.CategoricalDistribution([0.0, 1e-3]),
    }
    kwargs = {"cost_fn": lambda p: 0.001, "steps_fn": lambda p: (100.0, 80.0, 120.0)}
    local, global_ = (
        CostAwareSampler(**kwargs),
        CostAwareSampler(**kwargs, calibration_bandwidth=None),
    )
    study = optuna.create_study()
    for lr, wd, reached in (
        (0.1, 1e-3, 40),
        (0.2, 1e-3, 40),
        (0.1, 0.0, 80),
        (0.2, 0.0, 80),
        (0.3, 0.0, 80),
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "wd": wd},
                distributions=dists,
                value=0.0,
                user_attrs={keys.PLAN: {"crossing": 100.0}, keys.TARGET_REACHED: reached},
            )
        )
    decayed = {"lr": 0.15, "wd": 1e-3}
    assert global_.steps_ratio(study, decayed) == pytest.approx(0.8)  # the median
    assert local.steps_ratio(study, decayed) < 0.6
    assert local.steps_ratio(study, {"lr": 0.15, "wd": 0.0}) > 0.65
    assert local.steps_scale(study, decayed) == 1.0  # budgets are never shortened
    with pytest.raises(InvalidInputError, match="bandwidth"):
        CostAwareSampler(**kwargs, calibration_bandwidth=0)


def test_sampler_prices_by_steps_to_target_stores_the_band_and_learns_the_scale():
    def steps_fn(p):
        s = 200.0 / p["lr"]
        return s, 0.8 * s, 1.3 * s

    def band_fn(p, steps):
        grid = np.linspace(0, steps, 11)
        mean = 1.0 / (1.0 + p["lr"] * grid / 20)
        return {"step": grid, "low": 0.9 * mean, "high": 1.1 * mean, "crossing": 0.9 * steps}

    sampler = CostAwareSampler(
        cost_fn=lambda p: 0.001,
        max_steps=10_000,
        search_space={"lr": optuna.distributions.FloatDistribution(0.5, 2.0)},
        steps_fn=steps_fn,
        steps_margin=0.1,
        band_fn=band_fn,
        seed=0,
    )
    study = optuna.create_study(sampler=sampler, pruner=TTPPruner(n_startup_trials=0))

    def objective(trial):
        lr = trial.suggest_float("lr", 0.5, 2.0)
        steps = get_budget(trial)
        assert steps == math.ceil(keys.plan_of(trial).get("steps_scale") * 200 / lr * 1.1)
        report(trial, 0.5, steps // 2)
        if trial.number == 0:
            record_target_reached(trial, steps)  # later than the predicted 0.9 x budget
        # Trial 1 ends its budget short of the target: the model was optimistic.
        return 0.5

    study.optimize(objective, n_trials=4)
    plans = [keys.plan_of(t) for t in study.trials]
    assert all(len(p["target_steps"]) == 3 for p in plans)
    assert all(set(p["band"]) == {"step", "low", "high"} for p in plans)
    scales = [p["steps_scale"] for p in plans]
    assert scales[:2] == [1.0, 1.0]  # learnt once two trials have finished
    # median of (budget, 1.25 budget) / (0.9 budget): later budgets lengthened by 1.25
    assert scales[2] == pytest.approx(1.25, rel=0.02) and scales[3] >= 1.0
    assert [p["steps_ratio"] for p in plans][2] == pytest.approx(scales[2])
    json.dumps([t.user_attrs for t in study.trials])


def test_ray_searcher_passes_the_pipeline_keys():
    pytest.importorskip("ray")
    from ray.tune.search import Searcher

    from ttp_search.ray import CostAwareSearcher

    class Fixed(Searcher):
        def suggest(self, trial_id):
            return {"lr": 0.1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    searcher = CostAwareSearcher(
        Fixed(metric="loss", mode="min"),
        cost_fn=lambda p: 0.01,
        max_steps=1000,
        steps_fn=lambda p: (100.0, 90.0, 120.0),
        band_fn=lambda p, s: {"step": [0, s], "low": [1.0, 0.1], "high": [1.2, 0.2]},
    )
    config = searcher.suggest("t1")
    assert config["ttp_budget_steps"] == 110 and config["ttp_schedule"] == "linear"
    assert config["ttp_predicted_target_steps"] == [100.0, 90.0, 120.0]
    assert config["ttp_band"]["high"] == [1.2, 0.2]
