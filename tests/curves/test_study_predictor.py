"""StudyPredictor: the study-informed final-value predictor and its conformal intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from ttp_search.curves import PartialCurve, StudyPredictor, curve_features, extrapolate
from ttp_search.errors import InvalidInputError

STEPS = np.arange(1, 21, dtype=np.float64)


def _study(n: int, seed: int = 0) -> tuple[list[PartialCurve], np.ndarray]:
    """Accuracy curves rising to a per-trial ceiling, with noise; final = the last value."""
    rng = np.random.default_rng(seed)
    curves, finals = [], []
    for _ in range(n):
        ceiling, speed = rng.uniform(0.5, 0.95), rng.uniform(0.1, 0.4)
        values = ceiling * (1 - np.exp(-speed * STEPS)) + rng.normal(0, 0.01, STEPS.size)
        curves.append(PartialCurve(STEPS, values, 20.0))
        finals.append(values[-1])
    return curves, np.array(finals)


def _cut(curve: PartialCurve, k: int) -> PartialCurve:
    return PartialCurve(curve.steps[:k], curve.values[:k], curve.budget)


def test_prediction_keeps_the_observed_order_and_is_closer_than_it():
    curves, finals = _study(120)
    model = StudyPredictor("maximize").fit(curves[:60], finals[:60], fraction=0.25)
    test = [_cut(c, 5) for c in curves[60:]]
    predicted = np.array([model.predict(c).mean for c in test])
    observed = np.array([c.values[-1] for c in test])
    assert spearmanr(predicted, observed).statistic == pytest.approx(1.0)
    truth = finals[60:]
    assert np.median(np.abs(predicted - truth)) < 0.5 * np.median(np.abs(observed - truth))


def test_intervals_cover_about_their_level():
    curves, finals = _study(400, seed=1)
    model = StudyPredictor("maximize", level=0.8).fit(curves[:200], finals[:200], fraction=0.25)
    inside = [
        model.predict(_cut(c, 5)).low <= f <= model.predict(_cut(c, 5)).high
        for c, f in zip(curves[200:], finals[200:], strict=True)
    ]
    assert 0.7 <= np.mean(inside) <= 0.92


def test_probability_of_beating_is_never_below_one_in_n_plus_one():
    curves, finals = _study(30, seed=2)
    model = StudyPredictor("maximize", min_trials=5).fit(curves, finals, fraction=0.5)
    hopeless = PartialCurve(STEPS[:10], np.full(10, 0.01), 20.0)
    p = model.predict(hopeless).prob_better_than(0.99)
    assert p >= 1 / 21 - 1e-12  # 20 nearest residuals + the unknown example
    assert p < 0.06


def test_a_trial_ahead_of_every_finished_one_keeps_its_lead():
    curves, finals = _study(40, seed=3)
    model = StudyPredictor("maximize").fit(curves, finals, fraction=0.25)
    best_at = max(c.value_at(5.0) for c in curves)
    leader = PartialCurve(STEPS[:5], np.linspace(0.5, best_at + 0.2, 5), 20.0)
    assert model.predict(leader).mean > max(finals)


def test_few_finished_trials_fall_back_to_the_extrapolation_then_mix():
    curves, finals = _study(12, seed=4)
    running = _cut(curves[-1], 6)
    fallback = extrapolate(running.steps, running.values, 20.0, direction="maximize")
    few = StudyPredictor("maximize", min_trials=5).fit(curves[:4], finals[:4], fraction=0.3)
    alone = few.predict(running, fallback=fallback)
    assert alone.weight == 0 and alone.mean == pytest.approx(fallback.mean)
    with pytest.raises(InvalidInputError, match="no fallback"):
        few.predict(running)
    some = StudyPredictor("maximize", min_trials=5).fit(curves[:7], finals[:7], fraction=0.3)
    assert 0 < some.predict(running, fallback=fallback).weight < 1
    many = StudyPredictor("maximize", min_trials=5).fit(curves[:11], finals[:11], fraction=0.3)
    assert many.predict(running, fallback=fallback).weight == 1


def test_pruned_trials_enter_as_censored_examples():
    curves, finals = _study(40, seed=5)
    pruned = [_cut(c, 12) for c in curves[20:]]
    model = StudyPredictor("maximize").fit(curves[:20], finals[:20], 0.25, pruned=pruned)
    assert model.n_trials_ == 20 and model.n_rows_ == 40
    # A pruned trial that stopped before the fraction says nothing about it.
    early = [_cut(c, 3) for c in curves[20:]]
    assert (
        StudyPredictor("maximize").fit(curves[:20], finals[:20], 0.25, pruned=early).n_rows_ == 20
    )


def test_same_inputs_same_prediction_in_a_fresh_predictor():
    curves, finals = _study(50, seed=6)
    running = _cut(curves[0], 7)
    a = StudyPredictor("maximize").fit(curves[1:], finals[1:], 0.35).predict(running)
    b = StudyPredictor("maximize").fit(curves[1:], finals[1:], 0.35).predict(running)
    assert (a.mean, a.low, a.high, a.prob_better_than(0.8)) == (
        b.mean,
        b.low,
        b.high,
        b.prob_better_than(0.8),
    )


def test_training_loss_features_and_a_missing_one():
    steps = np.arange(1, 41.0)
    curve = PartialCurve(
        STEPS, np.linspace(0.1, 0.9, 20), 20.0, train_steps=steps / 2, train_losses=2 / steps
    )
    tse, tse_e, slope = curve_features(curve, 0.5, ("tse", "tse_e", "lcga_slope"))
    assert tse == pytest.approx(np.mean(2 / steps[:20]))
    assert tse_e < tse and slope < 0
    plain = PartialCurve(STEPS, np.linspace(0.1, 0.9, 20), 20.0)
    assert np.isnan(curve_features(plain, 0.5, ("tse",))[0])
    curves, finals = _study(20, seed=7)
    model = StudyPredictor("maximize", features=("observed", "tse")).fit(curves, finals, 0.5)
    assert model.used_ == ("observed",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": ("observed", "nope")}, "unknown curve feature 'nope'"),
        ({"features": ("slope",)}, "first feature is the level"),
        ({"direction": "up"}, "direction"),
        ({"min_trials": 1}, "min_trials"),
        ({"level": 1.0}, "level"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        StudyPredictor(**kwargs)


def test_bad_calls_are_named():
    curves, finals = _study(10)
    model = StudyPredictor()
    with pytest.raises(InvalidInputError, match="before fit"):
        model.predict(curves[0])
    with pytest.raises(InvalidInputError, match="before the first grid point"):
        model.fit(curves, finals, 0.001)
    with pytest.raises(InvalidInputError, match="10 curves but 9"):
        model.fit(curves, finals[:9], 0.5)
    model.fit(curves, finals, 0.5)
    with pytest.raises(InvalidInputError, match=r"has not reached 0\.5"):
        model.predict(_cut(curves[0], 3))


def test_the_monotone_map_is_scikit_learns_isotonic_regression():
    from sklearn.isotonic import IsotonicRegression

    from ttp_search.curves.study import _monotone_map

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 300):
        x = np.round(rng.normal(size=n), 1)  # ties pooled as scikit-learn pools them
        y = x + rng.normal(size=n)
        grid = np.linspace(-4, 4, 101)
        expected = IsotonicRegression(out_of_bounds="clip").fit(x, y).predict(grid)
        np.testing.assert_allclose(np.interp(grid, *_monotone_map(x, y)), expected, atol=1e-12)


def test_the_finished_table_is_reused_only_for_the_same_curves():
    curves, finals = _study(30)
    model = StudyPredictor(min_trials=5)
    model.fit(curves, finals, 0.5)
    table = model._tables["finished"]
    assert model.count_reaching(curves, 0.5) == 30
    assert model._tables["finished"] is table
    moved = [*curves[:-1], _cut(curves[-1], 5)]  # one trial replaced by a shorter curve
    assert model.count_reaching(moved, 0.5) == 29
    again = StudyPredictor(min_trials=5).fit(moved, finals, 0.5)
    assert model.fit(moved, finals, 0.5).n_trials_ == again.n_trials_ == 29
    changed = finals.copy()
    changed[0] += 1.0  # same curves, another final: the examples are read again
    probe = _cut(curves[1], 10)
    fresh = StudyPredictor(min_trials=5).fit(moved, changed, 0.5).predict(probe)
    assert model.fit(moved, changed, 0.5).predict(probe).mean == fresh.mean
    # Pruned trials' finals are imputed by the map at their last grid point, kept with the
    # examples it was fitted on: another final there fits it again.
    pruned = [_cut(c, 16) for c in _study(6, seed=7)[0]]
    probe = _cut(curves[1], 6)
    for finals_now in (finals, changed, finals):
        fresh = StudyPredictor(min_trials=5).fit(moved, finals_now, 0.25, pruned=pruned)
        kept = model.fit(moved, finals_now, 0.25, pruned=pruned)
        assert kept.n_rows_ == fresh.n_rows_ == 36  # 30 finished, 6 censored
        a, b = kept.predict(probe), fresh.predict(probe)
        assert (a.mean, a.low, a.high) == (b.mean, b.low, b.high)


def test_the_observed_feature_read_all_at_once_is_each_curves_own_read():
    from ttp_search.curves.study import _FinishedTable

    rng = np.random.default_rng(4)
    curves = []
    for i in range(120):
        steps = np.unique(np.cumsum(rng.uniform(0.5, 3, rng.integers(1, 30))).round(1))
        values = rng.normal(size=steps.size)
        if i % 10 == 0 and steps.size > 2:
            values[1] = [np.inf, -np.inf, np.nan][i % 3]  # np.interp's own rules apply
        curves.append(PartialCurve(steps, values, float(rng.uniform(5, 60))))
    curves.append(PartialCurve(np.empty(0), np.empty(0), 10.0))
    table = _FinishedTable(curves)
    for at in [*rng.uniform(0.01, 1.0, 40), curves[1].steps[1] / curves[1].budget]:
        expected = [
            curve_features(c, at, ("observed",))[0] if c.reaches(at) else None for c in curves
        ]
        got = table.observed(at)
        for i, value in enumerate(expected):
            if value is not None:
                np.testing.assert_array_equal(got[i], value)


def test_a_subsets_map_from_the_whole_sets_ties_is_its_own_map():
    from ttp_search.curves.study import _monotone_map

    rng = np.random.default_rng(1)
    for n in (2, 9, 400):
        x = np.sort(np.round(rng.normal(size=n), 1))
        x[-1] = np.nan if n > 2 else x[-1]  # np.unique pools NaNs into one knot
        y = rng.normal(size=n)
        knots, where = np.unique(x, return_inverse=True)
        for _ in range(5):
            keep = rng.random(n) < 0.8
            keep[0] = True
            own = _monotone_map(x[keep], y[keep])
            shared = _monotone_map(x[keep], y[keep], ties=(knots, where[keep]))
            np.testing.assert_array_equal(own[0], shared[0])
            np.testing.assert_array_equal(own[1], shared[1])
