"""The linearity check: the network and its linearization at the weights a prediction reaches.

The simulated runs' outputs must be the exact linearization's at the rebuilt weights (the
path's coefficients are bookkeeping of the same steps), and the check must tell a learning
rate the network follows from one that throws it out of the linear regime.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ttp_search.dynamics import LinearityCheck, LinearizedSDE
from ttp_search.dynamics.linearity import DEFAULT_TOLERANCE
from ttp_search.dynamics.simulation import simulate_sgd
from ttp_search.errors import InvalidInputError


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x = torch.randn(96, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (96,))
    return net, x, y


def _sde(task, loss="ce"):
    net, x, y = task
    targets = y if loss == "ce" else nn.functional.one_hot(y, 3).double()
    return LinearizedSDE(net, x, targets, loss=loss, num_samples=96, projection_dim=10**6)


@pytest.mark.parametrize(
    "loss, momentum, weight_decay, decay",
    [
        ("ce", 0.0, 0.0, "standard"),
        ("ce", 0.9, 0.01, "standard"),
        ("ce", 0.9, 0.01, "to_init"),
        ("mse", 0.5, 0.01, "standard"),
    ],
)
def test_rebuilt_weights_give_the_simulated_outputs(task, loss, momentum, weight_decay, decay):
    sde = _sde(task, loss)
    d0 = sde.d0 if decay == "standard" else np.zeros_like(sde.d0)
    _, end = simulate_sgd(
        np.full(30, 0.1), np.array([30]), sde._function_gram().astype(np.float64), sde.f0,
        np.asarray(sde.Y, dtype=np.float64), d0, loss=loss, batch_size=16, momentum=momentum,
        wd=weight_decay, return_path=True,
    )  # fmt: skip
    assert end.step == 30
    for run in (0, 5):
        weights = sde._network.weights(
            end.coefficients[run].reshape(sde.n, sde.C), float(end.w0_coefficient[run])
        )
        _, linear = sde._network.outputs(weights)
        moved = np.abs(end.outputs[run] - sde.f0).max()
        assert moved > 0.05  # the run went somewhere
        # Θ is held in float32 for the simulation: agreement to its precision.
        np.testing.assert_allclose(linear.numpy(), end.outputs[run], atol=1e-5 * (1 + moved))


def test_small_steps_hold_and_steps_far_past_the_edge_fail(task):
    sde = _sde(task)
    gentle = sde.check_linearity(40, lr=0.05, batch_size=16)
    assert gentle.holds and gentle.loss_ratio == pytest.approx(1.0, abs=0.02)
    assert 0 < gentle.weight_change < 0.5
    # A tanh network's loss saturates, so even far past the edge its ratio stays modest:
    # the tolerance is passed, the default is ResNet-scale (see DEFAULT_TOLERANCE).
    wild = sde.check_linearity(40, lr=10.0, batch_size=16, momentum=0.9, tolerance=1.5)
    assert not wild.holds and wild.loss_ratio > 2.0
    assert wild.weight_change > 10 * gentle.weight_change
    assert wild.tolerance == 1.5 and gentle.tolerance == DEFAULT_TOLERANCE


def test_steps_to_loss_attaches_the_check_at_its_crossing(task):
    sde = _sde(task)
    with torch.no_grad():
        loss0 = float(nn.functional.cross_entropy(task[0](task[1]), task[2]))
    plain = sde.steps_to_loss(0.8 * loss0, lr=0.1, batch_size=16, max_steps=2000)
    checked = sde.steps_to_loss(
        0.8 * loss0, lr=0.1, batch_size=16, max_steps=2000, check_linearity=True
    )
    assert plain.linearity is None and plain.trusted == plain.stable
    assert (checked.steps, checked.low, checked.high) == (plain.steps, plain.low, plain.high)
    assert checked.linearity.step == int(checked.steps)
    assert checked.linearity.linear_loss == pytest.approx(0.8 * loss0, rel=0.15)
    assert checked.trusted is (checked.stable and checked.linearity.holds)


def test_the_check_does_not_see_later_changes_to_the_model(task):
    net, x, y = task
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    model.load_state_dict(net.state_dict())
    sde = LinearizedSDE(model, x, y, loss="ce", num_samples=96, projection_dim=10**6)
    before = sde.check_linearity(20, lr=0.1, batch_size=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # a fine-tuning in place
    assert sde.check_linearity(20, lr=0.1, batch_size=16) == before


def test_the_check_needs_the_network_and_a_sane_tolerance(task):
    sde = _sde(task)
    gram = sde.U @ np.diag(sde.sample_eigenvalues) @ sde.U.T
    bare = LinearizedSDE.from_gram(gram, sde.f0, sde.d0, sde.Y, loss="ce", num_data=96)
    with pytest.raises(InvalidInputError, match="needs the network"):
        bare.check_linearity(10, lr=0.1, batch_size=16)
    with pytest.raises(InvalidInputError, match="tolerance"):
        sde.check_linearity(10, lr=0.1, batch_size=16, tolerance=0.5)


def test_a_diverged_network_fails_the_check():
    broken = LinearityCheck(step=5, linear_loss=1.0, network_loss=math.nan, weight_change=3.0)
    assert not broken.holds
    assert LinearityCheck(5, 0.0, 0.0, 0.0).holds


def test_several_targets_from_one_run_match_one_search_each(task):
    sde = _sde(task)
    with torch.no_grad():
        loss0 = float(nn.functional.cross_entropy(task[0](task[1]), task[2]))
    levels = [0.9 * loss0, 0.7 * loss0, 0.01 * loss0]  # the last is never reached
    hyper = dict(lr=0.2, batch_size=16, momentum=0.5, max_steps=1500)
    many = sde.steps_to_losses(levels, **hyper, check_linearity=True)
    one = [sde.steps_to_loss(v, **hyper, check_linearity=True) for v in levels]
    assert many == one
    assert math.isinf(many[-1].steps) and many[-1].linearity is None
    assert sde.steps_to_losses([], **hyper) == []
    with pytest.raises(InvalidInputError, match="target"):
        sde.steps_to_losses([0.5, -1.0], **hyper)
