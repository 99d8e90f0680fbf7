"""ModelErrorInterval: the SDE's interval widened by the model error of reference runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttp_search.dynamics import ModelErrorInterval, StepsEstimate
from ttp_search.errors import InvalidInputError


def _runs(rng: np.random.Generator, n: int) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """Predicted (steps, low, high) whose interval is too narrow for the real runs: the real
    steps scatter by a log-normal model error the sampling interval does not hold."""
    steps = rng.uniform(20, 500, n)
    predicted = [(s, 0.9 * s, 1.1 * s) for s in steps]
    return predicted, steps * np.exp(rng.normal(0.05, 0.3, n))


def _covered(model: ModelErrorInterval, predicted, real) -> float:
    bounds = np.array([model.bounds(low, high) for _, low, high in predicted])
    return float(np.mean((bounds[:, 0] <= real) & (real <= bounds[:, 1])))


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9])
def test_exchangeable_references_give_the_coverage_asked(level):
    rng = np.random.default_rng(0)
    fitted = ModelErrorInterval(level).fit(*_runs(rng, 300))
    predicted, real = _runs(rng, 4000)
    own = np.array([(low, high) for _, low, high in predicted])
    unwidened = np.mean((own[:, 0] <= real) & (real <= own[:, 1]))
    assert unwidened < 0.35  # the sampling interval alone misses most runs
    assert level - 0.04 <= _covered(fitted, predicted, real) <= level + 0.05


def test_references_inside_their_intervals_leave_them_as_they_are():
    model = ModelErrorInterval().fit([(10, 8, 12)] * 5, [8, 9, 10, 11, 12])
    assert model.margin_ == 0.0 and model.bounds(30.0, 40.0) == (30.0, 40.0)


def test_unreached_and_unreachable_references_are_left_out():
    predicted = [(10, 8, 12)] * 5 + [(math.inf, math.inf, math.inf), (10, 8, 12)]
    model = ModelErrorInterval().fit(predicted, [8, 9, 10, 11, 24, 30, math.inf])
    assert model.n_references_ == 5
    assert model.margin_ == pytest.approx(math.log(2))  # 24 against 12, the largest of five


def test_too_few_references_promise_nothing():
    model = ModelErrorInterval(0.8).fit([(10, 8, 12)] * 3, [10, 10, 10])
    assert model.margin_ == math.inf and model.bounds(5.0, 6.0) == (0.0, math.inf)


def test_widen_keeps_the_point_and_the_flags():
    estimate = StepsEstimate(50.0, 40.0, 60.0, 0.1, "none", stable=False)
    wide = ModelErrorInterval().fit([(10, 10, 10)] * 4, [10, 10, 10, 20]).widen(estimate)
    assert (wide.steps, wide.stable, wide.target) == (50.0, False, 0.1)
    assert (wide.low, wide.high) == pytest.approx((20.0, 120.0))


@pytest.mark.parametrize(
    ("predicted", "measured", "match"),
    [
        ([(10, 8, 12)], [10, 11], "1 predictions but 2"),
        ([(10, 8, 12)], [-1.0], "positive"),
        ([(10, 8, 12)], [float("nan")], "positive"),
        ([(10, 12, 8)], [10], "low 12 > high 8"),
        ([10.0], [10], "StepsEstimate or"),
    ],
)
def test_bad_references_are_refused_by_name(predicted, measured, match):
    with pytest.raises(InvalidInputError, match=match):
        ModelErrorInterval().fit(predicted, measured)


def test_bad_level_and_use_before_fit_are_refused():
    with pytest.raises(InvalidInputError, match="level"):
        ModelErrorInterval(1.0)
    with pytest.raises(InvalidInputError, match="before fit"):
        ModelErrorInterval().bounds(1.0, 2.0)
