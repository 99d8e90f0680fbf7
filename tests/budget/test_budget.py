"""Budget-aware linear decay and budget conversions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ttp_search.budget import LinearDecayLR, steps_for_budget, steps_for_fraction
from ttp_search.errors import InvalidInputError


def _opt(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _run(sched: LinearDecayLR, opt: torch.optim.Optimizer, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_linear_decay_reaches_final_lr_exactly_at_budget():
    opt = _opt(0.1)
    lrs = _run(LinearDecayLR(opt, total_steps=10), opt, 12)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.05)
    assert lrs[10] == pytest.approx(0.0)
    assert lrs[11] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_warmup_then_decay_to_final_lr():
    opt = _opt(0.2)
    lrs = _run(LinearDecayLR(opt, total_steps=12, warmup_steps=3, final_lr=0.02), opt, 14)
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.15])
    assert lrs[3] == pytest.approx(0.2)
    assert lrs[12] == pytest.approx(0.02)
    assert lrs[13] == pytest.approx(0.02)


def test_state_dict_round_trip_resumes_identically():
    opt_a = _opt()
    sched_a = LinearDecayLR(opt_a, total_steps=20, warmup_steps=2)
    _run(sched_a, opt_a, 7)
    state = sched_a.state_dict()
    opt_b = _opt()
    sched_b = LinearDecayLR(opt_b, total_steps=99)
    sched_b.load_state_dict(state)
    opt_b.load_state_dict(opt_a.state_dict())
    assert _run(sched_b, opt_b, 10) == pytest.approx(_run(sched_a, opt_a, 10))


def test_several_param_groups_keep_their_own_base_lr():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 0.1}])
    sched = LinearDecayLR(opt, total_steps=4)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.75, 0.075])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0}, "total_steps.*0"),
        ({"total_steps": 2.5}, "total_steps.*2.5"),
        ({"total_steps": 10, "warmup_steps": -1}, "warmup_steps.*-1"),
        ({"total_steps": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"total_steps": 10, "final_lr": float("nan")}, "final_lr"),
        ({"total_steps": 10, "final_lr": -0.1}, "final_lr.*-0.1"),
    ],
)
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        LinearDecayLR(_opt(), **kwargs)


def test_steps_for_budget_and_fraction():
    assert steps_for_budget(10.0, 0.1) == 100
    assert steps_for_budget(1.0, 3.0) == 0
    assert steps_for_fraction(0.25, 1000) == 250
    assert steps_for_fraction(0.0001, 10) == 1
    for bad in (0, -1, float("inf"), float("nan"), "10"):
        with pytest.raises(InvalidInputError, match="trial_budget_s"):
            steps_for_budget(bad, 0.1)
        with pytest.raises(InvalidInputError, match="step_time_s"):
            steps_for_budget(10, bad)
    with pytest.raises(InvalidInputError, match="reference_steps"):
        steps_for_fraction(0.5, 0)


@given(
    total=st.integers(1, 500),
    warmup_frac=st.floats(0, 0.9),
    final=st.floats(0, 0.05),
    base=st.floats(0.06, 10),
)
def test_schedule_stays_between_final_and_base(total, warmup_frac, final, base):
    warmup = min(total - 1, int(warmup_frac * total))
    opt = _opt(base)
    sched = LinearDecayLR(opt, total, warmup_steps=warmup, final_lr=final)
    for step in range(total + 3):
        lr = sched.lr_at(step, base)
        assert min(final, base / (warmup + 1)) - 1e-12 <= lr <= base + 1e-12
    assert sched.lr_at(total, base) == pytest.approx(final)


def test_model_budget_uses_the_cost_model(calibrated):
    from ttp_search.budget import steps_for_model_budget

    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    budget = steps_for_model_budget(5.0, model, (32,), 16, "adam", cost_model=calibrated)
    assert budget.low <= budget.steps <= budget.high
    assert budget.steps == steps_for_budget(5.0, budget.step_time_s)


def test_one_schedule_type_for_every_engine():
    from ttp_search.budget import Schedule
    from ttp_search.curves import linear_decay_schedule
    from ttp_search.dynamics import schedule_factors

    # The SDE's named schedules are the Schedule's shapes.
    for kind in ("constant", "linear", "cosine", "step"):
        assert np.allclose(schedule_factors(kind, 37), Schedule(kind).factors(37))
    # LinearDecayLR's real rates are its Schedule's, warm-up and final rate included.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = LinearDecayLR(opt, 20, warmup_steps=3, final_lr=0.02)
    rates = []
    for _ in range(20):
        rates.append(opt.param_groups[0]["lr"] / 0.2)
        opt.step()
        sched.step()
    assert np.allclose(rates, sched.schedule().factors(20))
    assert np.allclose(linear_decay_schedule(20, 3, 0.1)(np.arange(20.0)), rates)


def test_the_pruner_extrapolates_a_warm_up_cosine_trial_under_its_schedule():
    from ttp_search.budget import Schedule
    from ttp_search.engine import DecisionCore, TrialCurve

    core = DecisionCore(n_startup_trials=0, min_points=3)
    k = np.arange(1, 31, dtype=np.float64)
    warm_cosine = Schedule("cosine", warmup_steps=10)
    rate = warm_cosine.rate(100)(k)
    cumulative = np.cumsum(rate)
    values = 0.1 + 1.0 / (1.0 + cumulative / 5.0)  # progress runs on cumulative rate
    under = core.predict(TrialCurve(k, values, budget_steps=100, schedule=warm_cosine))
    flat = core.predict(TrialCurve(k, values, budget_steps=100))
    truth = 0.1 + 1.0 / (1.0 + np.cumsum(warm_cosine.rate(100)(np.arange(1, 101.0)))[-1] / 5.0)
    assert abs(under.mean - truth) < abs(flat.mean - truth)
