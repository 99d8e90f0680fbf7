"""StepsToTarget: the fine-tuning search's steps model answers as the SDE it wraps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ttp_search.dynamics import BlockGrams, StepsToTarget
from ttp_search.engine import BudgetPlanner
from ttp_search.errors import InvalidInputError


@pytest.fixture(scope="module")
def grams():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    x = torch.randn(96, 6)
    y = F.one_hot(torch.randint(3, (96,)), 3).float()
    blocks = {"body": ["0."], "head": ["2."]}
    return BlockGrams(net, x, y, blocks, loss="mse", num_samples=48, projection_dim=200)


def test_steps_and_band_are_the_sdes_of_the_tuned_blocks(grams):
    start = grams.sde(["head"], extrapolate=False).predict_curve(0.1, 16, steps=1).loss.iloc[0]
    target = 0.6 * start
    model = StepsToTarget(grams, target, max_steps=5000, tuned_blocks=lambda p: [p["tune"]])
    params = {"lr": 0.2, "batch_size": 16, "momentum": 0.5, "tune": "head"}
    expected = grams.sde(["head"], extrapolate=False).steps_to_loss(
        target, lr=0.2, batch_size=16, momentum=0.5, schedule="linear", max_steps=5000
    )
    assert model.steps(params) == (expected.steps, expected.low, expected.high)
    band = model.band(params, int(expected.steps))
    assert {"step", "low", "high", "crossing"} <= set(band)
    assert (band["low"] <= band["high"]).all() and model.prediction_s_ > 0
    # A rate too small to move the loss within max_steps: unreachable, inf.
    assert model.steps({**params, "lr": 1e-9}) == (math.inf, math.inf, math.inf)
    # Every block by default: a different SDE from the head's alone.
    assert StepsToTarget(grams, target, max_steps=5000).sde(params) is not model.sde(params)


def test_the_planner_takes_it_as_one_object(grams):
    model = StepsToTarget(grams, 0.01, max_steps=100)
    planner = BudgetPlanner(lambda p: 1e-3, steps_model=model, max_steps=100)
    assert planner.steps_fn == model.steps and planner.band_fn == model.band
    with pytest.raises(InvalidInputError, match="not both"):
        BudgetPlanner(lambda p: 1e-3, steps_model=model, steps_fn=model.steps)
    with pytest.raises(InvalidInputError, match="steps_model"):
        BudgetPlanner(lambda p: 1e-3, steps_model=object(), max_steps=10)


def test_a_model_error_widens_every_interval_it_answers(grams):
    from ttp_search.dynamics import ModelErrorInterval

    start = grams.sde(["head"], extrapolate=False).predict_curve(0.1, 16, steps=1).loss.iloc[0]
    params = {"lr": 0.2, "batch_size": 16, "momentum": 0.5}
    plain = StepsToTarget(grams, 0.6 * start, max_steps=5000).steps(params)
    error = ModelErrorInterval().fit([(10, 10, 10)] * 4, [10, 10, 10, 20])
    wide = StepsToTarget(grams, 0.6 * start, max_steps=5000, model_error=error).steps(params)
    assert wide[0] == plain[0]
    assert wide[1:] == pytest.approx((plain[1] / 2, plain[2] * 2))


def test_gaussian_noise_prices_minibatches_in_closed_form(grams):
    """noise='gaussian' reaches the SDE it builds; its minibatch curve is the closed form
    (seed-free, above the noise-free full-batch curve), not the simulated runs."""
    params = {"lr": 0.2, "batch_size": 8, "momentum": 0.5, "tune": "head"}
    model = StepsToTarget(grams, 0.01, max_steps=500, tuned_blocks=lambda p: [p["tune"]],
                          noise="gaussian")  # fmt: skip
    sde = model.sde(params)
    assert sde.noise == "gaussian"
    simulated = grams.sde(["head"], extrapolate=False)
    closed = grams.sde(["head"], extrapolate=False, noise="gaussian")
    kw = dict(lr=0.2, momentum=0.5, steps=300, points=7)
    noisy, full = (
        closed.predict_curve(batch_size=8, **kw),
        closed.predict_curve(batch_size=48, **kw),
    )
    assert (noisy.loss.iloc[1:] > full.loss.iloc[1:]).all()
    assert (noisy.loss_high - noisy.loss_low).iloc[-1] > 0
    assert not noisy.loss.equals(simulated.predict_curve(batch_size=8, **kw).loss)
    # At batches of all the samples both models run the same exact recursion.
    assert full.loss.equals(simulated.predict_curve(batch_size=48, **kw).loss)
    target = float(noisy.loss.iloc[3])
    expected = closed.steps_to_loss(target, lr=0.2, batch_size=8, momentum=0.5,
                                    schedule="linear", max_steps=500)  # fmt: skip
    assert StepsToTarget(grams, target, max_steps=500, tuned_blocks=lambda p: [p["tune"]],
                         noise="gaussian").steps(params)[0] == expected.steps  # fmt: skip


@pytest.mark.parametrize("loss, noise", [("mse", "ou"), ("ce", "gaussian")])
def test_a_noise_model_the_loss_cannot_take_is_refused(loss, noise):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(16, 4)
    y = torch.randint(3, (16,)) if loss == "ce" else torch.randn(16, 3)
    grams = BlockGrams(net, x, y, {"all": ["0."]}, loss=loss, num_samples=16, projection_dim=50)
    with pytest.raises(InvalidInputError, match="noise"):
        grams.sde(["all"], noise=noise)
    with pytest.raises(InvalidInputError, match="noise"):
        StepsToTarget(grams, 0.1, max_steps=10, noise=noise)
