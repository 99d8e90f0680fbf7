"""Property-based tests (hypothesis) for the curve and budget functions."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from ttp_search.budget import LinearDecayLR, steps_for_budget, steps_for_fraction
from ttp_search.curves import extrapolate, lcga, linear_decay_schedule, rank, tse
from ttp_search.engine import BudgetPlanner

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
losses = arrays(
    np.float64,
    st.integers(1, 40),
    elements=st.floats(1e-4, 1e3, allow_nan=False, allow_infinity=False),
)


@FAST
@given(losses)
def test_tse_is_the_sum_and_grows_with_any_loss(values):
    assert math.isclose(tse(values), float(values.sum()), rel_tol=1e-9)
    bumped = values.copy()
    bumped[len(values) // 2] += 1.0
    assert tse(bumped) > tse(values)
    assert tse(values, "tse_e") == values[-1]
    assert 0 < tse(values, "tse_ema", gamma=0.5) <= tse(values) + 1e-9


@st.composite
def curves(draw, min_points=4):
    n = draw(st.integers(min_points, 60))
    start = draw(st.floats(0.5, 5.0))
    floor = draw(st.floats(0.0, 0.4))
    rate = draw(st.floats(0.01, 1.0))
    noise = draw(st.floats(0.0, 0.05))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    steps = np.arange(1, n + 1, dtype=np.float64) * draw(st.integers(1, 20))
    values = floor + (start - floor) * np.exp(-rate * np.arange(n)) + noise * rng.normal(size=n)
    return steps, np.abs(values) + 1e-3


@FAST
@given(curves(), st.floats(1.0, 10.0), st.sampled_from(["minimize", "maximize"]))
def test_extrapolation_is_finite_and_its_interval_holds_its_mean(curve, horizon, direction):
    steps, values = curve
    if direction == "maximize":
        values = -values
    est = extrapolate(steps, values, steps[-1] * horizon, direction=direction)
    assert all(math.isfinite(v) for v in (est.mean, est.low, est.high))
    assert est.low <= est.mean <= est.high
    assert est.budget == steps[-1] * horizon


@FAST
@given(curves(min_points=8))
def test_lcga_fits_any_finite_curve(curve):
    steps, values = curve
    fit = lcga(steps, values)
    assert all(math.isfinite(b) for b in (fit.beta1, fit.beta2, fit.beta3))


@FAST
@given(st.lists(curves(), min_size=1, max_size=6), st.sampled_from(["last", "tse", "extrapolated"]))
def test_rank_returns_every_curve_once(batch, by):
    table = rank({f"t{i}": c for i, c in enumerate(batch)}, by=by, budgets=2000.0)
    assert sorted(table.index) == sorted(f"t{i}" for i in range(len(batch)))
    scores = table["score"].to_numpy()
    assert np.all(np.diff(scores[np.isfinite(scores)]) >= 0)  # best (lowest) first


@FAST
@given(
    st.integers(1, 500),
    st.data(),
    st.floats(1e-4, 1.0),
    st.floats(0.0, 0.5),
)
def test_linear_decay_never_rises_after_warmup_and_ends_at_final_lr(total, data, lr, final_frac):
    warmup = data.draw(st.integers(0, total - 1))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = LinearDecayLR(opt, total, warmup_steps=warmup, final_lr=final_frac * lr)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(total):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    after = np.array(rates[warmup:])
    assert np.all(np.diff(after) <= 1e-12 * lr)
    assert math.isclose(rates[total], final_frac * lr, rel_tol=1e-9, abs_tol=1e-15)
    assert max(rates) <= lr * (1 + 1e-12)
    factor = linear_decay_schedule(total, warmup)(np.array([float(total)]))
    assert abs(factor[0]) < 1e-9


@FAST
@given(st.floats(1e-3, 1e5), st.floats(1e-6, 1e2))
def test_steps_for_budget_never_exceeds_the_budget(budget, step_s):
    steps = steps_for_budget(budget, step_s)
    assert steps >= 0 and steps * step_s <= budget * (1 + 1e-9)
    assert (steps + 1) * step_s > budget * (1 - 1e-9)


@FAST
@given(st.floats(1e-3, 4.0), st.integers(1, 100_000))
def test_steps_for_fraction_is_at_least_one_and_proportional(fraction, reference):
    steps = steps_for_fraction(fraction, reference)
    assert steps >= 1 and abs(steps - max(1.0, fraction * reference)) <= 0.5 + 1e-9 * reference


@FAST
@given(st.floats(1e-5, 1.0), st.floats(0.01, 100.0), st.integers(1, 10_000))
def test_planner_never_plans_past_the_cap(step_s, cap, max_steps):
    plan = BudgetPlanner(lambda p: step_s, trial_budget_s=cap, max_steps=max_steps).plan({})
    fits = math.floor(cap / step_s * (1 + 1e-12))
    assert plan.steps == min(fits, max_steps)
    assert plan.feasible == (plan.steps >= 1)
    if plan.feasible:
        assert plan.steps * plan.step_high_s <= cap * (1 + 1e-9)
    else:
        assert plan.limit == "trial_time" and "per-trial cap" in plan.reason
