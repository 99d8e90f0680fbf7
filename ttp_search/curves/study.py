"""A running trial's final value predicted from the trials its study has already finished.

A single curve's shape says little about its end when budgets and schedules differ; the study
says more: every finished trial is a worked example of how a partial curve, read at some
fraction of its own budget, relates to where it ended under this study's recipe. So the
predictor regresses finished trials' final values on the value each observed at the running
trial's fraction of its budget, as a monotone (isotonic) map: a trial ahead of another at the
same fraction is predicted to end no worse, so the prediction never ranks against what is
observed, while it learns how much of the remaining gain trials at that level got. Beyond the
finished trials' range the map continues with slope 1 (a running trial better than every
finished one is predicted to keep its lead, not capped at the best final value). Further curve
features (:mod:`ttp_search.curves.features`) enter as a ridge regression on what the map
leaves unexplained, only where named.

Intervals are conformal: the finished trials' cross-fitted residuals (5 folds, each fitted
without it), taken from the trials nearest in observed value, since the spread of the gain
still to come differs between the study's leaders and its stragglers.

Pruned trials have no final value. A pruned trial that reached the fraction is kept as a
censored example: its final is imputed by the same map fitted at the last fraction it
reached, which says more about its end than anything at the earlier fraction. Imputed finals
shape the map but never the interval: only trials with a measured final give residuals.

While fewer than ``min_trials`` finished trials reach the fraction, the prediction is the
single-curve extrapolation it is given; from ``min_trials`` to ``2 · min_trials`` the two are
mixed, the study's weight rising linearly to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.special import ndtr

from ttp_search._checks import check_int, check_real, check_value_range
from ttp_search.curves.extrapolate import Extrapolation, invert_cdf
from ttp_search.curves.features import FEATURES, PartialCurve, curve_features
from ttp_search.curves.stack import CurveStack, same_objects
from ttp_search.errors import InvalidInputError

#: What the ablation in BENCHMARKS.md (bench-ranking) kept: no other feature raised the tuning
#: sets' rank correlation over the observed value alone.
DEFAULT_FEATURES = ("observed",)
#: The features the monotone map can read (the first of ``features``).
LEVELS = ("observed", "best", "recent")
_FOLDS = 5


@dataclass(frozen=True)
class StudyPrediction:
    """A predicted final value: an empirical distribution (the prediction plus the study's
    leave-one-out residuals), mixed with the single-curve extrapolation by ``1 − weight``."""

    mean: float
    low: float
    high: float
    level: float
    direction: str
    n_trials: int
    weight: float
    samples: np.ndarray = field(repr=False)
    bandwidth: float = field(repr=False, default=0.0)
    fallback: Extrapolation | None = field(repr=False, default=None)
    # Another model's view (the trial's own extrapolation): ``prob_better_than`` takes the
    # larger of the two, so either model's doubt keeps a trial.
    second_opinion: Extrapolation | None = field(repr=False, default=None)

    def _study_cdf(self, x: float, unknown: float) -> float:
        # Conformal: the trial is the (n + 1)-th example, whose own residual could lie
        # anywhere; ``unknown`` is how much of its unit mass sits below ``x``.
        n = self.samples.size
        z = x - self.samples
        z /= self.bandwidth  # in place: Brent's method calls this some 60 times a decision
        near = float(ndtr(z, out=z).sum())
        return (near + unknown) / (n + 1)

    def _mixed(self, study: float, x: float) -> float:
        if self.weight >= 1 or self.fallback is None:
            return study
        return self.weight * study + (1 - self.weight) * self.fallback.cdf(x)

    def cdf(self, x: float) -> float:
        """P(final <= x), the unknown example's mass split evenly beyond both ends."""
        study = self._study_cdf(x, 0.5) if self.weight > 0 else 0.0
        return self._mixed(study, x)

    def prob_better_than(self, x: float) -> float:
        """Probability that the final value beats ``x`` (below it when minimising), with the
        unknown example on the better side: at least ``1 / (n + 1)`` of the study's part, so
        a trial is never called worse than ``x`` more surely than ``n`` examples can tell."""
        if self.weight <= 0:
            p = self.fallback.prob_better_than(x)
        elif self.direction == "minimize":
            p = self._mixed(self._study_cdf(x, 1.0), x)
        else:
            p = 1.0 - self._mixed(self._study_cdf(x, 0.0), x)
        if self.second_opinion is not None:
            p = max(p, self.second_opinion.prob_better_than(x))
        return p

    def chance_better_than(self, x: float) -> float:
        """The plain estimate of P(beats ``x``): the unknown example's mass split evenly,
        what the stop rule weighs against the cost (``prob_better_than`` is the guard)."""
        p = self.cdf(x)
        return p if self.direction == "minimize" else 1.0 - p

    def quantile(self, q: float) -> float:
        spread = 8 * self.bandwidth + float(np.ptp(self.samples))
        lo, hi = float(self.samples.min() - spread), float(self.samples.max() + spread)
        if self.fallback is not None and self.weight < 1:
            low, high = self.fallback.support()
            lo, hi = min(lo, low), max(hi, high)
        return invert_cdf(self.cdf, q, lo, hi)


class StudyPredictor:
    """Predict a running trial's final value at its own budget from the study's finished trials.

    Args:
        direction: ``"minimize"`` or ``"maximize"`` (what "best so far" means).
        features: the curve features regressed on (:data:`ttp_search.curves.features.FEATURES`).
            A feature missing for some trial (training losses not reported) is left out of
            that fit.
        min_trials: finished trials reaching the fraction before the study is used at all.
        level: central probability of the interval.
        value_range: what the value can be (``(0, 1)`` for accuracies); predictions are
            clipped into it.

    The fit is made at fractions of a grid of ``1/100`` of the budget; a trial is read at the grid point at or below its own
    fraction, so the features of finished trials are computed once per grid point and kept.

    Example:
        >>> import numpy as np
        >>> from ttp_search.curves import PartialCurve, StudyPredictor
        >>> steps = np.arange(1, 11.0)
        >>> done = [PartialCurve(steps, 1 - 0.5 * a * steps / 10, 10) for a in (0.2, 0.5, 0.8, 1, 1.2, 1.4)]
        >>> finals = [c.values[-1] for c in done]
        >>> model = StudyPredictor(min_trials=3).fit(done, finals, fraction=0.3)
        >>> running = PartialCurve(steps[:3], 1 - 0.5 * 0.7 * steps[:3] / 10, 10)
        >>> round(model.predict(running).mean, 2)
        0.65
    """

    grid = 100

    def __init__(
        self,
        direction: str = "minimize",
        *,
        features: Sequence[str] = DEFAULT_FEATURES,
        min_trials: int = 5,
        level: float = 0.8,
        value_range: tuple[float, float] | None = None,
    ) -> None:
        if direction not in ("minimize", "maximize"):
            raise InvalidInputError(
                f"direction must be 'minimize' or 'maximize', got {direction!r}"
            )
        features = tuple(features)
        bad = [f for f in features if f not in FEATURES] or ([] if features else ["(none)"])
        if bad:
            raise InvalidInputError(
                f"unknown curve feature {bad[0]!r}; expected some of {FEATURES}"
            )
        if features[0] not in LEVELS:
            raise InvalidInputError(
                f"the first feature is the level the map reads: one of {LEVELS}, "
                f"got {features[0]!r}"
            )
        self.direction = direction
        self.features = features
        self.min_trials = check_int("min_trials", min_trials, 2)
        self.level = check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
        self.value_range = check_value_range(value_range)
        # Shared by copies (the decision core fits a copy per decision): feature rows per
        # (curve, grid point), and the finished trials' table of the latest fit.
        self._rows: dict = {}
        self._tables: dict = {}

    def grid_fraction(self, fraction: float) -> float | None:
        """The grid point a trial at ``fraction`` of its budget is read at (``None``: too early)."""
        k = math.floor(min(fraction, 1.0) * self.grid + 1e-9)
        return k / self.grid if k >= 1 else None

    def fit(
        self,
        curves: Sequence[PartialCurve],
        finals: Sequence[float],
        fraction: float,
        *,
        pruned: Sequence[PartialCurve] = (),
    ) -> StudyPredictor:
        """Fit at the grid point of ``fraction`` on the finished ``curves`` with their
        ``finals`` (those that do not reach it are skipped) and the ``pruned`` curves."""
        if len(curves) != len(finals):
            raise InvalidInputError(f"{len(curves)} curves but {len(finals)} final values")
        at = self.grid_fraction(check_real("fraction", fraction, low=0.0, high=1.0))
        if at is None:
            raise InvalidInputError(f"fraction {fraction!r} is before the first grid point")
        finals = np.asarray(finals, dtype=np.float64)
        table = self._table(curves)  # checked once per fit: it is 1,000 identity checks
        X, y = self._examples(table, finals, at)
        real = np.ones(y.size, dtype=bool)
        if pruned:
            X_more, y_more = self._censored(table, finals, pruned, at)
            X, y = np.vstack([X, X_more]), np.r_[y, y_more]
            real = np.r_[real, np.zeros(y_more.size, dtype=bool)]
        self.fraction_, self.n_trials_ = at, int(real.sum())
        self._fit_arrays(X, y, real)
        return self

    def count_reaching(self, curves: Sequence[PartialCurve], fraction: float) -> int:
        """How many of ``curves`` reach the grid point of ``fraction`` of their budgets."""
        at = self.grid_fraction(fraction)
        return 0 if at is None else int(self._table(curves).reaching(at).sum())

    def _table(self, curves: Sequence[PartialCurve]) -> _FinishedTable:
        table = self._tables.get("finished")
        if table is None or not table.holds(curves):
            table = self._tables["finished"] = _FinishedTable(curves)
        return table

    def _examples(
        self, table: _FinishedTable, finals: np.ndarray, at: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and finals of the finished curves that reach ``at`` (kept per grid
        point while the finished trials and their finals are the same)."""
        found = table.examples.get(at)
        if found is not None and np.array_equal(found[2], finals, equal_nan=True):
            return found[0], found[1]
        keep = np.flatnonzero(table.reaching(at) & np.isfinite(finals))
        if keep.size == 0:
            X = np.empty((0, len(self.features)))
        elif self.features == ("observed",):
            # The default feature, read for every finished curve at once.
            X = table.observed(at)[keep, None]
        else:
            X = np.vstack([self._row(table.curves[i], at) for i in keep])
        table.examples[at] = (X, finals[keep], finals.copy())
        return X, finals[keep]

    def _censored(self, table: _FinishedTable, finals, pruned, at):
        """Pruned curves reaching ``at``, with finals imputed at the last point they reached."""
        rows, targets = [], []
        by_last: dict[float, list[PartialCurve]] = {}
        for c in pruned:
            last = self.grid_fraction(c.steps[-1] / c.budget) if c.steps.size else None
            if last is not None and last > at and c.reaches(at):
                by_last.setdefault(last, []).append(c)
        for last, group in sorted(by_last.items()):
            found = self._map_at(table, finals, last)
            if found is None:
                continue
            fitted, usable = found
            for c in group:
                targets.append(float(self._apply(fitted, self._row(c, last)[None, usable])[0]))
                rows.append(self._row(c, at))
        if not rows:
            return np.empty((0, len(self.features))), np.empty(0)
        return np.vstack(rows), np.asarray(targets)

    def _map_at(self, table: _FinishedTable, finals: np.ndarray, at: float):
        """The map fitted on the finished examples at ``at`` and the columns it reads
        (``None`` below ``min_trials`` examples); kept with the examples it was fitted on."""
        X, y = self._examples(table, finals, at)
        found = table.maps.get(at)
        if found is None or found[0] is not X:
            fitted = None
            if y.size >= self.min_trials:
                usable = _usable_columns(X)
                fitted = (self._fit_map(X[:, usable], y), usable)
            found = table.maps[at] = (X, fitted)
        return found[1]

    def _fit_arrays(self, X: np.ndarray, y: np.ndarray, real: np.ndarray) -> None:
        """Fit the map on every row; keep residuals of ``real`` rows only: an imputed final
        is the map's own value, so its residual would show a spread nobody measured."""
        order = np.argsort(X[:, 0], kind="stable")
        X, y, real = X[order], y[order], real[order]
        self.n_rows_ = X.shape[0]
        self._usable = _usable_columns(X)
        self.used_ = tuple(f for f, u in zip(self.features, self._usable, strict=True) if u)
        if self.n_rows_ < 2:
            self.observed_, self.residuals_ = np.zeros(1), np.zeros(1)
            return
        X = X[:, self._usable]
        self._map = self._fit_map(X, y)
        # The folds' tied values are the whole set's, read once.
        knots, where = np.unique(X[:, 0], return_inverse=True)
        # Fold k holds every fifth trial in observed order, so each fold spans the range.
        folds = np.arange(self.n_rows_) % _FOLDS
        residuals = np.empty(self.n_rows_)
        for k in range(min(_FOLDS, self.n_rows_)):
            held = folds == k
            fitted = self._fit_map(X[~held], y[~held], ties=(knots, where[~held]))
            residuals[held] = y[held] - self._apply(fitted, X[held])
        if real.sum() >= 2:
            self.observed_, self.residuals_ = X[real, 0], residuals[real]
        else:
            self.observed_, self.residuals_ = X[:, 0], residuals

    def _fit_map(self, X: np.ndarray, y: np.ndarray, ties: tuple | None = None):
        iso = _monotone_map(X[:, 0], y, ties)
        extra = None
        if X.shape[1] > 1 and X.shape[0] > 2:
            left = y - np.interp(X[:, 0], *iso)
            center, scale = X[:, 1:].mean(axis=0), X[:, 1:].std(axis=0)
            scale = np.where(scale > 0, scale, 1.0)
            Z = (X[:, 1:] - center) / scale
            coef = np.linalg.solve(Z.T @ Z + np.eye(Z.shape[1]), Z.T @ (left - left.mean()))
            extra = (center, scale, coef, float(left.mean()))
        return iso, float(X[:, 0].min()), float(X[:, 0].max()), extra

    @staticmethod
    def _apply(fitted, X: np.ndarray) -> np.ndarray:
        iso, lo, hi, extra = fitted
        v = X[:, 0]
        # The tiny slope breaks the map's flat steps by what was observed: trials are never
        # tied where the observed values differ.
        out = np.interp(v, *iso) + np.maximum(v - hi, 0.0) + np.minimum(v - lo, 0.0) + 1e-9 * v
        if extra is not None:
            center, scale, coef, mean = extra
            out = out + mean + ((X[:, 1:] - center) / scale) @ coef
        return out

    def _row(self, curve: PartialCurve, at: float) -> np.ndarray:
        """Features of a finished or pruned curve at ``at``, computed once and kept."""
        key = (curve.key, at)
        row = self._rows.get(key)
        if row is None:
            row = curve_features(
                curve, at, self.features, direction=self.direction, value_range=self.value_range
            )
            self._rows[key] = row
        return row

    def _nearest_residuals(self, observed: float) -> np.ndarray:
        """Cross-fitted residuals of the trials nearest in observed value."""
        n = self.residuals_.size
        k = min(n, max(4 * self.min_trials, n // 4))
        nearest = np.argsort(np.abs(self.observed_ - observed), kind="stable")[:k]
        return self.residuals_[nearest]

    def predict(
        self, curve: PartialCurve, *, fallback: Extrapolation | None = None
    ) -> StudyPrediction:
        """The final value of ``curve`` (read at the fitted grid point) and its interval."""
        if not hasattr(self, "fraction_"):
            raise InvalidInputError("StudyPredictor.predict called before fit")
        weight = min(max((self.n_trials_ - self.min_trials + 1) / self.min_trials, 0.0), 1.0)
        if self.n_rows_ < 2:
            weight = 0.0
        if weight == 0 and fallback is None:
            raise InvalidInputError(
                f"{self.n_trials_} finished trials reach {self.fraction_:g} of their budget "
                f"(min_trials={self.min_trials}) and no fallback was given"
            )
        if not curve.reaches(self.fraction_):
            raise InvalidInputError(f"the curve has not reached {self.fraction_:g} of its budget")
        if weight > 0:
            # A running curve changes at every report: its row is not kept.
            row = curve_features(
                curve,
                self.fraction_,
                self.features,
                direction=self.direction,
                value_range=self.value_range,
            )
            point = float(self._clip(self._apply(self._map, row[None, self._usable]))[0])
            samples = self._clip(point + self._nearest_residuals(float(row[0])))
        else:
            samples = np.array([fallback.mean])
        n = samples.size
        spread = float(np.std(samples)) if n > 1 else 0.0
        bandwidth = max(0.5 * spread * n ** (-0.2), 1e-9)
        # The map's own value, not the samples' mean: the residuals nearest each trial differ,
        # and their means would reorder trials against what was observed.
        if weight >= 1:
            mean = point
        elif weight > 0:
            mean = weight * point + (1 - weight) * fallback.mean
        else:
            mean = fallback.mean
        out = StudyPrediction(
            mean,
            mean,
            mean,
            self.level,
            self.direction,
            self.n_trials_,
            weight,
            samples,
            bandwidth=bandwidth,
            fallback=fallback,
        )
        tail = (1 - self.level) / 2
        return replace(out, low=out.quantile(tail), high=out.quantile(1 - tail))

    def _clip(self, values: np.ndarray) -> np.ndarray:
        if self.value_range is None:
            return values
        return np.clip(values, *self.value_range)


class _FinishedTable:
    """The finished trials' curves of one fit and what was read from them, reused by the next
    decision while they are the same objects (an adapter keeps a finished trial's curve), so
    a decision among 1,000 finished trials does not read 1,000 curves again."""

    def __init__(self, curves: Sequence[PartialCurve]) -> None:
        self.curves = tuple(curves)
        self.last = np.array([c.steps[-1] if c.steps.size else -np.inf for c in self.curves])
        self.budget = np.array([c.budget for c in self.curves], dtype=np.float64)
        self.examples: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.maps: dict[float, tuple] = {}  # grid point -> (its examples, fitted map)

    def holds(self, curves: Sequence[PartialCurve]) -> bool:
        return same_objects(self.curves, curves)

    def reaching(self, at: float) -> np.ndarray:
        # The same arithmetic as ``PartialCurve.reaches``, for every curve at once.
        return self.last >= at * self.budget * (1 - 1e-9)

    @cached_property
    def _stacked(self) -> tuple[np.ndarray, CurveStack]:
        # Curves with a non-finite report are read one by one: ``np.interp`` has its own
        # rules for inf, which the stack does not copy.
        regular = np.array(
            [c.steps.size > 0 and bool(np.all(np.isfinite(c.values))) for c in self.curves],
            dtype=bool,
        )
        kept = [self.curves[i] for i in np.flatnonzero(regular)]
        stack = CurveStack(
            [c.steps for c in kept], [c.values for c in kept], [c.budget for c in kept]
        )
        return regular, stack

    def observed(self, at: float) -> np.ndarray:
        """Every curve's value at ``at`` of its budget (the ``observed`` feature; a curve
        without reports reads ``nan``)."""
        regular, stack = self._stacked
        out = np.full(len(self.curves), np.nan)
        out[regular] = stack.values_at(at)
        for i in np.flatnonzero(~regular):
            if self.curves[i].steps.size:
                out[i] = self.curves[i].upto(at)[1][-1]  # as ``curve_features`` reads it
        return out


def _monotone_map(
    x: np.ndarray, y: np.ndarray, ties: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing least-squares fit of ``y`` on ``x`` as knots for ``np.interp``
    (linear between them, flat beyond): tied ``x`` are pooled into their mean, as
    scikit-learn's ``IsotonicRegression`` does, without its per-call validation, since a
    decision fits this map six times. ``ties``: ``np.unique(x_all, return_inverse=True)``
    of a set ``x`` is a subset of, with the inverse restricted to ``x``'s rows (what
    ``np.unique(x)`` would find, without sorting again)."""
    if ties is None:
        knots, where, counts = np.unique(x, return_inverse=True, return_counts=True)
    else:
        all_knots, where_all = ties
        counts = np.bincount(where_all, minlength=all_knots.size)
        present = counts > 0
        knots, counts = all_knots[present], counts[present]
        where = (np.cumsum(present) - 1)[where_all]
    means = np.bincount(where, weights=y, minlength=knots.size) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64)).x
    return knots, fitted


def _usable_columns(X: np.ndarray) -> np.ndarray:
    """Columns every row has a value in (training losses may be missing); the level always."""
    usable = np.all(np.isfinite(X), axis=0) if X.shape[0] else np.zeros(X.shape[1], bool)
    usable[0] = True
    return usable
