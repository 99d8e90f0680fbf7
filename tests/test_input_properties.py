"""Property-based tests of the public boundary: any value for any option of the adapters'
constructors, and any text for the CLI's options, gives a working object or a typed error
(the CLI: exit status 0 or 2, one line, no traceback); never a raw ``TypeError``,
``OverflowError`` or ``ZeroDivisionError`` from inside the library."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ttp_search.cli import app
from ttp_search.engine import BudgetPlanner, TrialCurve
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import CostAwareSampler, TTPPruner

# derandomize: the same examples in every run, so the suite stays deterministic.
BOUNDARY = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Values a user might pass by mistake (or on purpose): numbers of every kind and size,
#: numpy scalars, booleans, None, text, sequences.
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**6).map(np.int64),
    st.floats(-1e6, 1e6, allow_nan=False, width=32).map(np.float32),
    st.sampled_from(["", "10", "abc", "inf"]),
    st.tuples(st.floats(allow_nan=True), st.floats(allow_nan=True)),
    st.lists(st.integers(-2, 5), max_size=3),
)

PRUNER_OPTIONS = [
    "threshold",
    "n_startup_trials",
    "n_warmup_steps",
    "interval_steps",
    "min_points",
    "study_budget_s",
    "value_range",
    "default_budget_steps",
    "margin",
    "peer_percentile",
    "band_tolerance",
]
PLANNER_OPTIONS = ["trial_budget_s", "max_steps", "min_steps", "input_shape", "steps_margin"]
SAMPLER_OPTIONS = [
    "study_budget_s",
    "n_candidates",
    "n_startup_trials",
    "cost_exponent",
    "max_gp_points",
    "calibration_bandwidth",
]


def _curve() -> TrialCurve:
    k = np.arange(1, 11, dtype=np.float64)
    return TrialCurve(k, 0.2 + 1 / k, budget_steps=50.0, elapsed_s=1.0)


def _done(value: float) -> TrialCurve:
    k = np.arange(1, 51, dtype=np.float64)
    return TrialCurve(k, value + 1 / k, budget_steps=50.0, finished=True, final=value)


@BOUNDARY
@given(name=st.sampled_from(PRUNER_OPTIONS), value=anything)
def test_any_pruner_option_gives_a_pruner_or_a_typed_error(name, value):
    try:
        pruner = TTPPruner(**{name: value})
    except InvalidInputError:
        return
    # Accepted: the options it handed to the core decide without an untyped error.
    others = [_done(0.1), _done(0.3)]
    decision = pruner.options.judge("minimize", _curve(), others, pruner.study_budget_s)
    assert isinstance(decision.prune, bool)


@BOUNDARY
@given(name=st.sampled_from(PLANNER_OPTIONS), value=anything)
def test_any_planner_option_gives_a_plan_or_a_typed_error(name, value):
    options = {"trial_budget_s": 1.0, name: value}
    try:
        planner = BudgetPlanner(lambda p: 0.01, **options)
    except InvalidInputError:
        return
    plan = planner.plan({}, time_left_s=10.0)
    assert plan.steps >= 0 and (plan.feasible or plan.reason)


@BOUNDARY
@given(cost=anything)
def test_any_cost_gives_a_plan_or_a_typed_error(cost):
    planner = BudgetPlanner(lambda p: cost, trial_budget_s=1.0, max_steps=100)
    try:
        plan = planner.plan({}, time_left_s=5.0)
    except InvalidInputError:
        return
    assert 0 <= plan.steps <= 100
    assert plan.feasible == (plan.steps >= 1 and math.isfinite(plan.step_s))


@BOUNDARY
@given(name=st.sampled_from(SAMPLER_OPTIONS), value=anything)
def test_any_sampler_option_gives_a_sampler_or_a_typed_error(name, value):
    try:
        CostAwareSampler(cost_fn=lambda p: 0.01, max_steps=10, **{name: value})
    except InvalidInputError:
        pass


@BOUNDARY
@given(
    name=st.sampled_from(["study_budget_s", "default_budget_steps", "max_retries"]), value=anything
)
def test_any_ray_option_gives_an_adapter_or_a_typed_error(name, value):
    pytest.importorskip("ray")
    from ray.tune.search import Searcher

    from ttp_search.ray import CostAwareSearcher, TTPScheduler

    class One(Searcher):
        def suggest(self, trial_id):
            return {"w": 1}

    try:
        if name == "max_retries":
            CostAwareSearcher(
                One(metric="loss", mode="min"),
                cost_fn=lambda p: 0.1,
                max_steps=5,
                max_retries=value,
            )
        else:
            TTPScheduler(metric="loss", mode="min", **{name: value})
    except InvalidInputError:
        pass


SMALL = Path(tempfile.mkdtemp()) / "small.py"
SMALL.write_text(
    "import torch\n\n\ndef small():\n"
    "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))\n"
)
cli_text = st.one_of(
    st.sampled_from(["", "64", "1x8x8", "3x9x8", "0", "-1", "x", "64x", "{}", "[1]", "{oops"]),
    st.text(alphabet="0123456789x{}[]:,\"' abc.-", max_size=8),
)


@settings(BOUNDARY, max_examples=25)
@given(
    shape=cli_text,
    kwargs=cli_text,
    device=st.one_of(st.sampled_from(["cpu", "cuda", "cuda:3", "banana", "meta", ""]), cli_text),
    batch=st.sampled_from(["4", "0", "-3", "1"]),
)
def test_any_cli_text_exits_0_or_2_in_one_line(shape, kwargs, device, batch):
    args = ["time", "measure", f"{SMALL}:small", "--input", shape, "--batch-size", batch]
    args += ["--device", device, "--model-kwargs", kwargs, "--repeats", "1", "--warmup", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2 and result.output.startswith("error:"):
        assert len(result.output.strip().splitlines()) == 1, result.output
