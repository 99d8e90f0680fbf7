"""The linearized SDE against direct simulation of the linearized network, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from ttp_search.dynamics import LinearizedSDE, schedule_factors, sketched_jacobian
from ttp_search.errors import InvalidInputError


def _net(outputs=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, outputs)).double()


def _data(n=24, outputs=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y_reg = torch.randn(n, outputs, generator=g, dtype=torch.float64)
    y_cls = torch.randint(0, outputs, (n,), generator=g)
    return x, y_reg, y_cls


def _simulate_linear_model(net, x, y, loss, lr, steps, momentum=0.0, wd=0.0, factors=None):
    """Full-batch SGD on the linearized network, in parameter space, as PyTorch would run it."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    names = list(params)
    w0 = torch.cat([params[k].ravel() for k in names])

    def f(flat):
        split, i = {}, 0
        for k in names:
            n = params[k].numel()
            split[k] = flat[i : i + n].view_as(params[k])
            i += n
        return functional_call(net, split, (x,))

    f0 = f(w0).detach()
    J = jacrev(f)(w0).reshape(f0.numel(), -1)
    w, buf, losses = w0.clone(), torch.zeros_like(w0), []
    factors = np.ones(steps) if factors is None else factors
    for t in range(steps + 1):
        out = f0 + (J @ (w - w0)).view_as(f0)
        out = out.requires_grad_(True)
        value = (
            nn.functional.mse_loss(out, y) if loss == "mse" else nn.functional.cross_entropy(out, y)
        )
        losses.append(value.item())
        if t == steps:
            break
        (g_out,) = torch.autograd.grad(value, out)
        grad = J.T @ g_out.ravel() + wd * w
        buf = momentum * buf + grad
        w = w - lr * factors[t] * buf
    return np.array(losses)


@pytest.mark.parametrize(
    ("momentum", "wd", "schedule"),
    [
        (0.0, 0.0, "constant"),
        (0.9, 0.0, "constant"),
        (0.0, 0.01, "constant"),
        (0.5, 0.01, "linear"),
    ],
)
def test_mse_closed_form_matches_direct_simulation_of_the_linear_model(momentum, wd, schedule):
    net = _net()
    x, y, _ = _data()
    sde = LinearizedSDE(net, x, y, loss="mse", num_samples=len(x), projection_dim=10_000)
    sde.bin_width = 0.0  # one recursion per direction: exact
    steps = 60
    curve = sde.predict_curve(
        lr=0.2,
        batch_size=len(x),
        momentum=momentum,
        weight_decay=wd,
        steps=steps,
        schedule=schedule,
        points=steps + 1,
    )
    truth = _simulate_linear_model(
        net, x, y, "mse", 0.2, steps, momentum, wd, schedule_factors(schedule, steps)
    )
    np.testing.assert_allclose(curve.loss.to_numpy(), truth, rtol=1e-6, atol=1e-9)
    # Full batch: no sampling noise, so the band collapses onto the mean.
    np.testing.assert_allclose(curve.loss_low, curve.loss_high, rtol=1e-9)


def _smooth_regression_sde():
    """An exact-Jacobian MSE SDE of a learnable smooth target, and its initial loss: its
    spectrum spreads over many decades and its targets are reachable."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x = torch.randn(120, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.sin(2 * x) + 0.5 * x.roll(1, dims=1)
    sde = LinearizedSDE(net, x, y, loss="mse", num_samples=120, projection_dim=10_000)
    return sde, float(np.mean((sde.f0 - sde.Y) ** 2))


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_curvature_bins_move_steps_to_target_by_under_two_percent(schedule):
    """The default binned MSE recursion against one recursion per direction, with SGD noise,
    momentum and decay, on a spectrum spread over many decades."""
    sde, initial = _smooth_regression_sde()
    answers = {}
    for width in (0.0, LinearizedSDE.bin_width):
        sde.bin_width = width
        answers[width] = [
            sde.steps_to_loss(
                frac * initial,
                lr=lr,
                batch_size=8,
                momentum=m,
                weight_decay=wd,
                schedule=schedule,
                max_steps=3000,
            )
            for frac, lr, m, wd in ((0.3, 0.3, 0.0, 0.0), (0.25, 0.05, 0.9, 1e-3))
        ]
    assert len(sde._curvature_bins()[1]) < sde.eigenvalues.size / 2
    linear = schedule == "linear"
    for exact, binned in zip(*answers.values(), strict=True):
        assert math.isfinite(exact.steps) and math.isfinite(exact.low)
        # Within 2%, plus the budget search's resolution (1/32 for the mean, 1/8 for edges).
        assert abs(binned.steps - exact.steps) <= exact.steps * (0.02 + (1 / 32 if linear else 0))
        assert abs(binned.low - exact.low) <= exact.low * (0.02 + (1 / 8 if linear else 0))


def test_cross_entropy_ode_matches_direct_simulation_for_small_steps():
    net = _net(outputs=3)
    x, _, y = _data(outputs=3)
    sde = LinearizedSDE(net, x, y, loss="ce", num_samples=len(x), projection_dim=10_000, rank=72)
    steps = 200
    curve = sde.predict_curve(lr=0.05, batch_size=len(x), steps=steps, points=11)
    truth = _simulate_linear_model(net, x, y, "ce", 0.05, steps)
    np.testing.assert_allclose(curve.loss.to_numpy(), truth[curve.step.to_numpy()], rtol=2e-3)
    assert curve.accuracy.between(0, 1).all()


def test_sketch_keeps_the_gram_matrix_close():
    net = _net()
    x, _, _ = _data(n=16)
    exact = sketched_jacobian(net, x, projection_dim=10_000).reshape(32, -1)
    sketched = sketched_jacobian(net, x, projection_dim=12, seed=3).reshape(32, -1)
    g_exact, g_sketch = exact @ exact.T, sketched @ sketched.T
    assert sketched.shape[1] < exact.shape[1]
    rel = torch.linalg.norm(g_sketch - g_exact) / torch.linalg.norm(g_exact)
    assert rel < 0.5


def test_sgd_noise_raises_the_loss_and_widens_the_band():
    net = _net()
    x, y, _ = _data(n=64)
    sde = LinearizedSDE(net, x, y, loss="mse", num_samples=64, projection_dim=10_000)
    full = sde.predict_curve(lr=0.2, batch_size=64, steps=100)
    small = sde.predict_curve(lr=0.2, batch_size=4, steps=100)
    assert small.loss.iloc[-1] > full.loss.iloc[-1]
    assert (small.loss_high - small.loss_low).iloc[-1] > 0
    assert (small.loss_low <= small.loss).all() and (small.loss <= small.loss_high).all()


def test_steps_to_loss_and_unreachable_targets():
    net = _net()
    x, y, _ = _data()
    sde = LinearizedSDE(net, x, y, loss="mse", num_samples=len(x), projection_dim=10_000)
    curve = sde.predict_curve(lr=0.2, batch_size=len(x), steps=400, points=401)
    target = float(curve.loss.iloc[100])
    est = sde.steps_to_loss(target, lr=0.2, batch_size=len(x), max_steps=400)
    assert abs(est.steps - 100) <= 2 and est.low <= est.steps <= est.high
    never = sde.steps_to_loss(0.0, lr=0.2, batch_size=len(x), max_steps=400)
    assert math.isinf(never.steps)
    linear = sde.steps_to_loss(target, lr=0.2, batch_size=len(x), schedule="linear", max_steps=2000)
    assert linear.steps > est.steps  # decaying the rate costs steps for the same target
    assert est.weight_decay == "standard"


def test_crossings_within_a_fixed_budget():
    """Within one run whose schedule ends at its budget, each target's crossing is where
    that run's curve first reaches it; at a constant rate it is steps_to_loss's answer."""
    sde, initial = _smooth_regression_sde()
    hp = {"lr": 0.3, "batch_size": 8, "momentum": 0.5, "weight_decay": 1e-3}
    targets = [0.7 * initial, 0.4 * initial, 0.0]
    run = sde.predict_curve(**hp, steps=300, schedule="linear", points=301)
    found = sde.crossings(targets, steps=300, schedule="linear", **hp)
    for target, estimate in zip(targets, found, strict=True):
        for col, value in (("loss", estimate.steps), ("loss_low", estimate.low)):
            hit = run.step[run[col] <= target]
            assert value == (float(hit.iloc[0]) if len(hit) else math.inf), (target, col)
        assert estimate.low <= estimate.steps <= estimate.high
    assert math.isinf(found[-1].steps)
    every = sde.crossings(targets[:2], steps=300, schedule="linear", every=20, **hp)
    assert [e.steps % 20 for e in every] == [0, 0]
    assert all(e.steps >= f.steps for e, f in zip(every, found, strict=False))
    constant = sde.crossings(targets[:2], steps=300, **hp)
    shortest = [sde.steps_to_loss(t, **hp, max_steps=300) for t in targets[:2]]
    assert [c.steps for c in constant] == [s.steps for s in shortest]
    with pytest.raises(InvalidInputError, match="every"):
        sde.crossings(targets, steps=300, every=0, **hp)


def test_budget_search_matches_every_budget_run_to_its_end():
    """The shortest linear-decay budget ending at the target, for the mean and both band
    edges, against running every budget to its end (noise, momentum and decay on)."""
    sde, initial = _smooth_regression_sde()
    hp = {"lr": 0.3, "batch_size": 8, "momentum": 0.5, "weight_decay": 1e-3}
    ends = pd.concat(
        [
            sde.predict_curve(**hp, steps=T, schedule="linear", points=2).iloc[[-1]]
            for T in range(1, 301)
        ]
    )
    for fraction in (0.7, 0.5, 0.35):
        target = fraction * initial
        est = sde.steps_to_loss(target, **hp, schedule="linear", max_steps=300)
        for col, found, resolution in (
            ("loss", est.steps, 32),
            ("loss_low", est.low, 8),
            ("loss_high", est.high, 8),
        ):
            first = float(ends.step[ends[col] <= target].iloc[0])
            assert first <= found <= first + max(1, first // resolution), (fraction, col)


def test_steps_to_accuracy():
    net = _net(outputs=3)
    x, _, y = _data(outputs=3)
    sde = LinearizedSDE(net, x, y, loss="ce", num_samples=len(x), projection_dim=10_000)
    est = sde.steps_to_accuracy(0.6, lr=0.5, batch_size=len(x), max_steps=3000)
    assert est.steps < math.inf
    with pytest.raises(InvalidInputError, match="accuracy must be in"):
        sde.steps_to_accuracy(1.5, lr=0.5, batch_size=len(x))


@pytest.mark.parametrize("batch", [8, None])
def test_steps_to_accuracy_stops_at_the_crossing_the_whole_curve_shows(batch):
    net = _net(outputs=3)
    x, _, y = _data(outputs=3)
    sde = LinearizedSDE(net, x, y, loss="ce", num_samples=len(x), projection_dim=10_000)
    batch = batch or len(x)
    curve = sde.predict_curve(lr=0.5, batch_size=batch, steps=400, points=401)
    target = float(curve.accuracy.iloc[-1])
    first = float(curve.step[curve.accuracy >= target].iloc[0])
    est = sde.steps_to_accuracy(target, lr=0.5, batch_size=batch, max_steps=400)
    assert est.steps == first


def test_bad_input_is_named():
    net = _net()
    x, y, labels = _data()
    with pytest.raises(InvalidInputError, match="empty"):
        LinearizedSDE(net, x[:0], y[:0], loss="mse")
    with pytest.raises(InvalidInputError, match="shape"):
        LinearizedSDE(net, x, y[:, :1], loss="mse")
    with pytest.raises(InvalidInputError, match="labels must be in"):
        LinearizedSDE(net, x, labels + 5, loss="ce")
    with pytest.raises(InvalidInputError, match="differ in length"):
        LinearizedSDE(net, x, y[:3], loss="mse")
    with pytest.raises(InvalidInputError, match="loss"):
        LinearizedSDE(net, x, y, loss="hinge")
    sde = LinearizedSDE(net, x, y, loss="mse", num_samples=8)
    for kwargs, match in (
        ({"lr": 0.0, "batch_size": 4}, "lr"),
        ({"lr": -1.0, "batch_size": 4}, "lr"),
        ({"lr": 0.1, "batch_size": 1000}, "larger than the data set"),
        ({"lr": 0.1, "batch_size": 4, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "batch_size": 4, "schedule": "exp"}, "unknown schedule"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            sde.predict_curve(**kwargs, steps=10)
    with pytest.raises(InvalidInputError, match="target"):
        sde.steps_to_loss(-1.0, lr=0.1, batch_size=4)


def test_subset_spectrum_extrapolated_to_the_full_data_set():
    """A 100-sample subset predicts training on 400 samples too fast; the extrapolated
    spectrum is closer to what the full Gram predicts, and leaves the top directions alone."""
    from torch.nn import functional as F

    from ttp_search.data import digits

    x, y, _, _ = digits()
    x, y = x.reshape(len(x), -1)[:400].double(), F.one_hot(y[:400], 10).double()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    full = LinearizedSDE(net, x, y, loss="mse", num_samples=400, projection_dim=10**6)
    assert full.extrapolated_to is None
    gram = full.U @ np.diag(full.eigenvalues) @ full.U.T
    N, C = full.f0.shape
    initial = float(np.mean((full.f0 - full.Y) ** 2))
    kw = {"lr": 0.5, "batch_size": N, "max_steps": 3000}
    truth = full.steps_to_loss(0.25 * initial, **kw).steps
    plain_err, ext_err = [], []
    for seed in range(3):
        idx = np.random.default_rng(seed).permutation(N)[:100]
        rows = (idx[:, None] * C + np.arange(C)).ravel()
        args = (gram[np.ix_(rows, rows)], full.f0[idx], full.d0[idx], full.Y[idx])
        plain = LinearizedSDE.from_gram(*args, loss="mse", num_data=N, extrapolate=False)
        ext = LinearizedSDE.from_gram(*args, loss="mse", num_data=N)
        assert plain.extrapolated_to is None and ext.extrapolated_to == N
        np.testing.assert_array_equal(ext.sample_eigenvalues, plain.eigenvalues)
        assert np.all(ext.eigenvalues <= ext.sample_eigenvalues)
        # The top directions have converged at n = 100: per sample, they stay near the full's.
        np.testing.assert_allclose(ext.eigenvalues[:3] / 100, full.eigenvalues[:3] / N, rtol=0.1)
        plain_err.append(math.log(plain.steps_to_loss(0.25 * initial, **kw).steps / truth))
        ext_err.append(math.log(ext.steps_to_loss(0.25 * initial, **kw).steps / truth))
    assert np.mean(plain_err) < math.log(0.7)  # the subset alone is optimistic
    assert abs(np.mean(ext_err)) < math.log(1.35)
    assert np.mean(np.abs(ext_err)) < np.mean(np.abs(plain_err))


def test_surely_unreachable_is_a_safe_shortcut():
    """Never claims a target the full prediction reaches; catches hopeless configurations."""
    sde, initial = _smooth_regression_sde()
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(40):
        kw = {
            "lr": float(10 ** rng.uniform(-4, 0)),
            "momentum": float(rng.choice([0.0, 0.9])),
            "weight_decay": float(rng.choice([0.0, 1e-3])),
            "schedule": str(rng.choice(["constant", "linear"])),
            "max_steps": 500,
        }
        target = float(rng.choice([0.5, 0.3])) * initial
        sure = sde.surely_unreachable(target, **kw)
        est = sde.steps_to_loss(target, batch_size=16, **kw)
        assert not (sure and math.isfinite(est.steps)), kw
        caught += sure
    assert caught >= 5
    assert sde.surely_unreachable(0.5 * initial, lr=1e-5, max_steps=10)
    assert not sde.surely_unreachable(0.99 * initial, lr=0.3, max_steps=500)
