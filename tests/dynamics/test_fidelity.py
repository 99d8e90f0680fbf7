"""The SDE against its exact reference: SGD on the exact linearized network.

With every sample, no sketch and every eigen-direction, the SDE's mean path is the
linearized network's full-batch SGD; these tests hold it to that, for cross-entropy and MSE,
momentum and weight decay, and a learning rate past the edge of stability (cross-entropy
overshoots and settles, MSE diverges).
With minibatches, the SDE's expected loss (its simulated runs' mean) is held to the mean of
several seeded runs of the exact linearized network.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from ttp_search.dynamics import LinearizedSDE
from ttp_search.errors import InvalidInputError
from ttp_search.testing import linearized_sgd, shuffled_batches

STEPS, EVERY = 200, 20


@pytest.fixture(scope="module")
def task():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x = torch.randn(120, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (120,))
    return net, x, y


def _sde(task, loss):
    net, x, y = task
    targets = y if loss == "ce" else nn.functional.one_hot(y, 3).double()
    exact = dict(num_samples=120, projection_dim=10**6, rank=10**6)
    sde = LinearizedSDE(net, x, targets, loss=loss, **exact)
    sde.bin_width = 0.0  # one MSE recursion per direction: exact, not binned
    return sde, targets


def _exact(task, targets, loss, seeds=(0,), **hyper):
    net, x, _ = task
    runs = [
        linearized_sgd(
            net, x, targets, loss=loss, steps=STEPS, eval_every=EVERY, seed=s, **hyper
        ).loss.to_numpy()
        for s in seeds
    ]
    return np.mean(runs, axis=0)


@pytest.mark.parametrize(
    "loss, lr, momentum, weight_decay",
    [
        ("ce", 0.5, 0.0, 0.0),
        ("ce", 0.5, 0.9, 0.0),
        ("ce", 0.5, 0.0, 0.01),
        ("ce", 5.0, 0.0, 0.0),  # past the edge: the loss rises before it falls
        ("mse", 1.0, 0.0, 0.0),  # between (1 + m) and the edge 2 (1 + m): oscillates
        ("mse", 0.5, 0.9, 0.0),
    ],
)
def test_full_batch_sde_is_the_linearized_networks_sgd(task, loss, lr, momentum, weight_decay):
    sde, targets = _sde(task, loss)
    hyper = dict(lr=lr, batch_size=120, momentum=momentum, weight_decay=weight_decay)
    exact = _exact(task, targets, loss, **hyper)
    predicted = sde.predict_curve(steps=STEPS, points=STEPS // EVERY + 1, **hyper)
    assert predicted.step.tolist() == list(range(0, STEPS + 1, EVERY))
    np.testing.assert_allclose(predicted.loss.to_numpy(), exact, rtol=2e-3)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mse_past_the_edge_diverges_as_the_linearized_network_does(task, momentum):
    sde, targets = _sde(task, "mse")
    lr = 1.2 / sde.edge_ratio(1.0, momentum)  # 20% past the edge of stability
    hyper = dict(lr=lr, batch_size=120, momentum=momentum, weight_decay=0.0)
    exact = _exact(task, targets, "mse", **hyper)
    predicted = sde.predict_curve(steps=STEPS, points=STEPS // EVERY + 1, **hyper)
    assert exact[-1] > 1e3 * exact[0]  # the reference does diverge
    np.testing.assert_allclose(predicted.loss.to_numpy(), exact, rtol=2e-3)
    estimate = sde.steps_to_loss(0.01 * exact[0], **hyper, max_steps=STEPS)
    assert not estimate.stable


def test_past_the_edge_the_estimate_says_it_is_unstable(task):
    sde, _ = _sde(task, "ce")
    assert sde.edge_ratio(5.0) > 1 > sde.edge_ratio(0.5)
    target = 0.9
    assert not sde.steps_to_loss(target, lr=5.0, batch_size=120).stable
    assert sde.steps_to_loss(target, lr=0.5, batch_size=120).stable


@pytest.mark.parametrize("momentum, edge_fraction, rtol", [(0.0, 0.3, 0.05), (0.9, 0.1, 0.1)])
def test_mse_minibatch_noise_matches_the_seeds_mean(task, momentum, edge_fraction, rtol):
    """MSE with batches of 16 of 120: the SDE's expected loss is within 5% of 32 seeds'
    mean (10% with momentum 0.9, whose runs scatter more; the misses fall on both sides) and
    above the noise-free path (at 80% of the full batch's edge of stability both
    diverge: a batch of 16 is sharper than the whole set)."""
    sde, targets = _sde(task, "mse")
    sde.simulated_runs = 64  # the comparison is of two means: keep the SDE's noise small
    lr = edge_fraction / sde.edge_ratio(1.0, momentum)
    hyper = dict(lr=lr, momentum=momentum, weight_decay=0.0)
    exact = _exact(task, targets, "mse", seeds=range(32), batch_size=16, **hyper)
    predicted = sde.predict_curve(batch_size=16, steps=STEPS, points=11, **hyper).loss
    noise_free = sde.predict_curve(batch_size=120, steps=STEPS, points=11, **hyper).loss
    np.testing.assert_allclose(predicted.to_numpy()[1:], exact[1:], rtol=rtol)
    assert np.all((exact - noise_free)[1:] > 0)  # the noise is there to be matched


@pytest.mark.parametrize("momentum, rtol", [(0.0, 0.02), (0.9, 0.04)])
def test_minibatch_noise_of_a_shuffling_loader_matches_the_seeds_mean(task, momentum, rtol):
    """Cross-entropy with batches of 16 of 120 (epochs of 7 steps): the expected loss (the
    mean of the SDE's simulated runs) is within 2% of sixteen seeds' mean (whose standard
    error is about 0.5%) without momentum, 4% with momentum 0.9, and above the noise-free
    path by a similar amount. A Gaussian model of i.i.d. batches (the paper's) is 15-20%
    high on the momentum case."""
    sde, targets = _sde(task, "ce")
    lr = 0.5 if momentum == 0 else 0.2
    hyper = dict(lr=lr, momentum=momentum, weight_decay=0.0)
    exact = _exact(task, targets, "ce", seeds=range(16), batch_size=16, **hyper)
    predicted = sde.predict_curve(batch_size=16, steps=STEPS, points=11, **hyper).loss
    noise_free = sde.predict_curve(batch_size=120, steps=STEPS, points=11, **hyper).loss
    np.testing.assert_allclose(predicted.to_numpy()[1:], exact[1:], rtol=rtol)
    raised, true_raise = (predicted - noise_free).to_numpy()[1:], (exact - noise_free)[1:]
    assert np.all(raised > 0.4 * true_raise) and np.all(raised < 2.0 * true_raise)


@pytest.mark.parametrize(
    "loss, lr, momentum, weight_decay",
    [("ce", 0.5, 0.9, 0.01), ("ce", 5.0, 0.0, 0.0), ("mse", 0.5, 0.9, 0.01)],
)
def test_replay_on_a_runs_batches_is_that_run_of_the_linearized_network(
    task, loss, lr, momentum, weight_decay
):
    """Minibatches of 16, the batches the exact run drew: no sampling noise is left, so the
    function-space simulation and the parameter-space run agree step by step."""
    sde, targets = _sde(task, loss)
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)
    batches = list(itertools.islice(shuffled_batches(120, 16, seed=3), STEPS))
    exact = linearized_sgd(
        task[0], task[1], targets, loss=loss, steps=STEPS, eval_every=EVERY, seed=3,
        batch_size=16, **hyper,
    )  # fmt: skip
    replayed = sde.replay(torch.stack(batches).numpy(), **hyper)
    # To float32 precision: the simulation keeps the Gram it gathers rows of in float32.
    np.testing.assert_allclose(
        replayed.loss.to_numpy()[exact.step.to_numpy()], exact.loss.to_numpy(), rtol=1e-4
    )


def test_replay_rejects_batches_outside_the_samples(task):
    sde, _ = _sde(task, "ce")
    with pytest.raises(InvalidInputError, match=r"not computed on \(e.g. 120\); it has 120 of 120"):
        sde.replay(np.array([[0, 120]]), lr=0.1)
    with pytest.raises(InvalidInputError, match="steps, batch_size"):
        sde.replay(np.arange(4), lr=0.1)
    with pytest.raises(InvalidInputError, match="integer"):
        sde.replay(np.zeros((3, 2)), lr=0.1)


def test_shuffled_batches_draw_like_a_loader_that_drops_the_last_batch():
    epoch = list(itertools.islice(shuffled_batches(50, 16, seed=1), 3))
    drawn = torch.cat(epoch)
    assert [b.numel() for b in epoch] == [16, 16, 16]
    assert drawn.unique().numel() == 48  # one permutation, its last 2 samples dropped
    again = list(itertools.islice(shuffled_batches(50, 16, seed=1), 3))
    assert all(torch.equal(a, b) for a, b in zip(epoch, again, strict=True))


@pytest.mark.parametrize("num_data, batch_size", [(60, 64), (60, 0), (0, 1)])
def test_shuffled_batches_reject_sizes_that_never_give_a_batch(num_data, batch_size):
    """A batch larger than the data set used to make the generator spin without yielding."""
    with pytest.raises(InvalidInputError, match=r"batch_size|num_data"):
        shuffled_batches(num_data, batch_size)
