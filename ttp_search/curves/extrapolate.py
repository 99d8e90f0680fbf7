"""Extrapolate a partial learning curve to the trial's budget, with an interval.

Every family is ``y(t) = c + a·g(t; τ, α)`` with ``g(0) = 1`` and ``g → 0`` as ``t → ∞``:
power law, exponential, hyperbola, Weibull and log-power. For a fixed ``(τ, α)`` the curve
is linear in ``(c, a)``, so each family is fitted over a grid of ``(τ, α)`` by closed-form
least squares (variable projection): no optimiser to fail, and fast. The grid points of all
families form one ensemble weighted by a tempered BIC (Domhan et al. 2015 average eleven
families with MCMC; this is the same idea at the cost of a few matrix products).

Learning-rate schedules: SGD's loss has a noise floor proportional to the learning rate, and
progress runs on cumulative learning rate, not on step count. Given the schedule, time is
``t = Σ_{i≤k} η_i/η_0`` and a term ``b·η_k/η_0`` is added, so a linear-decay run whose loss
drops late, as η → 0, is extrapolated to where its schedule actually ends.

Intervals: each fit's own least-squares error is widened by a model error proportional to the
change it predicts beyond the data (families agree on the data and disagree beyond it). With
two or three points only fixed-shape hyperbolas are fitted, half the weight staying on the last
value; with one point, or a curve no family fits from the right side, the result is the last
value with a wide interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.integrate import cumulative_trapezoid
from scipy.optimize import brentq, minimize, minimize_scalar
from scipy.special import ndtr

from ttp_search._checks import check_real
from ttp_search.budget.schedule import Schedule
from ttp_search.curves._validate import as_curve
from ttp_search.errors import InvalidInputError

Direction = Literal["minimize", "maximize"]

_TAUS = np.geomspace(0.01, 30.0, 18)  # as multiples of the last observed time
_ALPHAS = np.array([0.3, 0.6, 1.0, 1.6, 2.5])


_MIN_POINTS_FOR_ETA = 6
#: Points a fit uses at most (see :func:`thin_curve`); the latest ``_RECENT_POINTS`` stay exact.
MAX_FIT_POINTS = 256
_RECENT_POINTS = 32
# Relative spread of the predicted change (see ``extrapolate``), measured, not derived: on
# our curve data set 1.0 covered 53-80% of final NAS accuracies and 1.4 covers 62-84% at
# 10/25/50% of the budget, while the HPO half stays at 75-92% (BENCHMARKS.md, bench-curves).
_EXTRAPOLATION_SPREAD = 1.4
# A fraction of the fitted movement so far, per unit of log horizon (see ``extrapolate``):
# small, but it keeps curves that look saturated from getting needle-thin intervals.
_HORIZON_SPREAD = 0.05


def _spread(n: int) -> float:
    # Calibrated on curves of 2-10 points; longer curves pin the shape down better.
    return _EXTRAPOLATION_SPREAD * min(1.0, math.sqrt(8.0 / n))


FAMILIES = ("exponential", "hyperbola", "power_law", "weibull", "log_power")


def _g(family: str, t: np.ndarray, tau: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """g(t) for each (τ, α) row: 1 at t = 0, decreasing to 0 as t → ∞."""
    tau, alpha = tau[:, None], alpha[:, None]
    x = t[None, :] / tau
    with np.errstate(over="ignore", under="ignore"):
        return _g_shape(family, t, x, tau, alpha)


def _g_shape(family, t, x, tau, alpha):
    if family == "exponential":
        return np.exp(-x)
    if family == "hyperbola":
        return 1.0 / (1.0 + x)
    if family == "power_law":
        return (1.0 + x) ** -alpha
    if family == "weibull":
        return np.exp(-(x**alpha))
    return 1.0 / (1.0 + (np.log1p(t)[None, :] / np.log1p(tau)) ** alpha)


def _family_grid(t_ref: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    taus = _TAUS * t_ref
    grid = []
    for family in FAMILIES:
        if family in ("exponential", "hyperbola"):
            grid.append((family, taus, np.ones_like(taus)))
        else:
            tt, aa = np.meshgrid(taus, _ALPHAS)
            grid.append((family, tt.ravel(), aa.ravel()))
    return grid


def _projected_fit(G: np.ndarray, v: np.ndarray, extra: np.ndarray | None):
    """Closed-form least squares of v on [1, g, (η)] for every row of G at once.

    The normal equations are built from moments (row sums and matrix-vector products), which
    is several times faster than forming the (rows, points, columns) design tensor.
    """
    m, n = G.shape
    sg, sgg, gv = G.sum(axis=1), np.einsum("ij,ij->i", G, G), G @ v
    if extra is None:
        XtX = np.empty((m, 2, 2))
        XtX[:, 0, 0], XtX[:, 0, 1], XtX[:, 1, 1] = n, sg, sgg
        Xtv = np.stack([np.full(m, v.sum()), gv], axis=1)
    else:
        ge = G @ extra
        XtX = np.empty((m, 3, 3))
        XtX[:, 0, 0], XtX[:, 0, 1], XtX[:, 1, 1] = n, sg, sgg
        XtX[:, 0, 2], XtX[:, 1, 2], XtX[:, 2, 2] = extra.sum(), ge, extra @ extra
        Xtv = np.stack([np.full(m, v.sum()), gv, np.full(m, extra @ v)], axis=1)
    p = XtX.shape[1]
    iu = np.triu_indices(p, 1)
    XtX[:, iu[1], iu[0]] = XtX[:, iu[0], iu[1]]
    XtX += 1e-10 * np.eye(p)
    coef = np.linalg.solve(XtX, Xtv[..., None])[..., 0]
    # ||v - Xc||² = v·v - c·Xᵀv at the least-squares solution.
    sse = float(v @ v) - np.einsum("mi,mi->m", coef, Xtv)
    return coef, np.maximum(sse, 1e-300), XtX


@dataclass(frozen=True)
class Extrapolation:
    """Predicted value at ``budget`` as a weighted mixture of Gaussians (one per fit)."""

    budget: float
    mean: float
    low: float
    high: float
    level: float
    direction: Direction
    centers: np.ndarray = field(repr=False)
    scales: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    family_weights: dict = field(default_factory=dict)

    def cdf(self, x: float) -> float:
        return float(np.sum(self.weights * ndtr((x - self.centers) / self.scales)))

    def prob_better_than(self, x: float) -> float:
        """Probability that the value at the budget beats ``x`` (below it when minimising)."""
        p = self.cdf(x)
        return p if self.direction == "minimize" else 1.0 - p

    def chance_better_than(self, x: float) -> float:
        """The same as :meth:`prob_better_than` (the interface the study's prediction shares)."""
        return self.prob_better_than(x)

    def support(self) -> tuple[float, float]:
        """Where the mixture's mass lies (8 scales beyond every component)."""
        return (
            float(np.min(self.centers - 8 * self.scales)),
            float(np.max(self.centers + 8 * self.scales)),
        )

    def quantile(self, q: float) -> float:
        return invert_cdf(self.cdf, q, *self.support())


def invert_cdf(cdf: Callable[[float], float], q: float, lo: float, hi: float) -> float:
    """The ``q`` quantile of a continuous ``cdf`` on ``[lo, hi]`` (Brent's method; an end
    when the quantile lies beyond it)."""
    if cdf(lo) >= q:
        return lo
    if cdf(hi) < q:
        return hi
    return brentq(lambda x: cdf(x) - q, lo, hi, xtol=1e-12 * max(hi - lo, 1e-300))


def extrapolate(
    steps,
    values,
    budget: float,
    *,
    direction: Direction = "minimize",
    lr_schedule: Callable[[np.ndarray], np.ndarray] | None = None,
    level: float = 0.8,
    temperature: float | None = None,
    value_range: tuple[float, float] | None = None,
) -> Extrapolation:
    """Predict the curve's value at step ``budget`` from the observed ``(steps, values)``.

    ``value_range`` bounds what the metric can be (``(0, 1)`` for an accuracy): fits whose
    asymptote leaves it are discarded and predictions are clipped into it.
    ``lr_schedule`` maps step numbers to the learning rate relative to its initial value
    (e.g. ``lambda k: 1 - k / budget`` for linear decay); ``None`` means constant.
    ``temperature`` tempers the BIC weights (default ``sqrt(n)``: per-step values are
    autocorrelated, so the raw likelihood would be overconfident).
    """
    s, v = as_curve(steps, values, min_points=1)
    if direction not in ("minimize", "maximize"):
        raise InvalidInputError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    budget = check_real(
        "budget", budget, low=float(s[-1]), hint=f" (a step >= the last observed step {s[-1]:g})"
    )
    level = check_real("level", level, low=0.0, high=1.0, low_open=True, high_open=True)
    if temperature is not None:
        temperature = check_real("temperature", temperature, low=0.0, low_open=True)
    s, v = thin_curve(s, v)
    if value_range is not None and not (
        len(value_range) == 2
        and all(math.isfinite(b) for b in value_range)
        and value_range[0] < value_range[1]
    ):
        raise InvalidInputError(f"value_range must be finite (low, high), got {value_range!r}")
    n = s.size
    if n == 1 or float(np.ptp(v)) == 0.0:
        return _last_level(v, budget, level, direction, value_range)

    def rel_lr(k: np.ndarray) -> np.ndarray:
        if lr_schedule is None:
            return np.ones_like(k)
        r = np.asarray(lr_schedule(k), dtype=np.float64)
        if r.shape != k.shape or not np.all(np.isfinite(r)) or np.any(r < 0):
            raise InvalidInputError("lr_schedule must map steps to finite non-negative factors")
        return r

    # Intrinsic time: cumulative relative learning rate (the step count when lr is constant),
    # integrated on a grid so long budgets cost no more than short ones.
    grid_k = np.linspace(0.0, float(budget), int(min(math.floor(budget) + 1, 4097)))
    cum = cumulative_trapezoid(rel_lr(grid_k), grid_k, initial=0.0) if grid_k.size > 1 else grid_k
    time_of = lambda k: np.interp(k, grid_k, cum)  # noqa: E731
    t_obs, t_end = time_of(s), float(time_of(np.array([budget]))[0])
    eta_obs, eta_end = rel_lr(s), float(rel_lr(np.array([float(budget)]))[0])
    # The noise-floor term needs points enough to tell it from the curve's own shape;
    # with fewer, a three-parameter fit through a handful of points extrapolates wildly.
    use_eta = lr_schedule is not None and np.ptp(eta_obs) > 1e-6 and n >= _MIN_POINTS_FOR_ETA

    t_ref = max(t_obs[-1], 1e-9)
    t_all = np.append(t_obs, t_end)
    extra = eta_obs if use_eta else None
    sign = 1.0 if direction == "minimize" else -1.0
    if n < 4:
        return _few_points(t_obs, v, t_end, t_ref, sign, budget, level, direction, value_range)
    rows_tau, rows_alpha, names, best_sse, best_row = [], [], [], [], []
    grid = _family_grid(t_ref)
    for family, taus, alphas in grid:
        coef, sse, _ = _projected_fit(_g(family, t_obs, taus, alphas), v, extra)
        valid_sse = np.where(sign * coef[:, 1] >= 0, sse, np.inf)
        best_row.append(int(np.argmin(valid_sse)))
        best_sse.append(float(valid_sse[best_row[-1]]))
        rows_tau.append(taus)
        rows_alpha.append(alphas)
    # Refine the best grid point of each competitive family continuously (variable
    # projection), so a curve truly of one family is recovered exactly, not to grid resolution.
    ones = np.ones_like(v)
    vv = float(v @ v)

    def sse_of(family: str, tau: float, alpha: float) -> float:
        g = _g(family, t_obs, np.array([tau]), np.array([alpha]))[0]
        A = np.stack([ones, g] if extra is None else [ones, g, extra])
        rhs = A @ v
        c = np.linalg.solve(A @ A.T + 1e-10 * np.eye(A.shape[0]), rhs)
        return max(vv - float(c @ rhs), 1e-300)

    floor_sse = min(best_sse)
    log_lo, log_hi = math.log(1e-4 * t_ref), math.log(1e3 * t_ref)

    def tau_of(z: float) -> float:
        return math.exp(min(max(z, log_lo), log_hi))

    # Only the two best families are refined: the rest carry little weight, and each
    # refinement costs about as much as the whole grid.
    contenders = [i for i in np.argsort(best_sse)[:2] if np.isfinite(best_sse[i])]
    for i, (family, taus, alphas) in enumerate(grid):
        if i not in contenders or best_sse[i] > 4.0 * floor_sse + 1e-300:
            continue
        j = best_row[i]
        if family in ("exponential", "hyperbola"):
            res = minimize_scalar(
                lambda z, f=family: math.log(sse_of(f, math.exp(z), 1.0)),
                bounds=(math.log(taus[j]) - 0.5, math.log(taus[j]) + 0.5),
                method="bounded",
                options={"xatol": 1e-5},
            )
            tau, alpha = math.exp(res.x), 1.0
        else:
            res = minimize(
                lambda z, f=family: math.log(sse_of(f, tau_of(z[0]), min(max(z[1], 0.05), 20.0))),
                [math.log(taus[j]), alphas[j]],
                method="Nelder-Mead",
                options={"maxiter": 60, "xatol": 1e-4, "fatol": 1e-10},
            )
            tau, alpha = tau_of(res.x[0]), min(max(res.x[1], 0.05), 20.0)
        rows_tau[i] = np.append(taus, tau)
        rows_alpha[i] = np.append(alphas, alpha)
    for i, (family, _, _) in enumerate(grid):
        names += [family] * len(rows_tau[i])
    basis = np.concatenate(
        [_g(f, t_all, ta, al) for f, ta, al in zip(FAMILIES, rows_tau, rows_alpha, strict=True)]
    )
    G, g_end = basis[:, :-1], basis[:, -1]
    m = G.shape[0]
    coef, sse, XtX = _projected_fit(G, v, extra)
    p = coef.shape[1]
    x_end = np.stack([np.ones(m), g_end] + ([np.full(m, eta_end)] if use_eta else []), axis=1)
    centers = (x_end * coef).sum(axis=1)
    # Curves must approach their asymptote from the side the direction says.
    ok = np.isfinite(centers) & (sign * coef[:, 1] >= 0)
    if use_eta:
        ok &= sign * coef[:, 2] >= 0
    if value_range is not None:
        lo_v, hi_v = value_range
        ok &= (coef[:, 0] >= lo_v) & (coef[:, 0] <= hi_v)
        centers = np.clip(centers, lo_v, hi_v)
    if not ok.any():
        # No family approaches an admissible asymptote from the right side (a curve that
        # mostly got worse, say): the recent level, with an interval as wide as the data.
        return _last_level(v, budget, level, direction, value_range)
    sigma2 = sse / max(n - p, 1)
    cov = sigma2[:, None, None] * np.linalg.inv(XtX)
    scales = np.sqrt(np.maximum(np.einsum("mi,mij,mj->m", x_end, cov, x_end), 0))
    temp = temperature if temperature is not None else math.sqrt(n)
    bic = n * np.log(sse / n) + p * math.log(n)
    logw = np.where(ok, -0.5 * (bic - bic[ok].min()) / temp, -np.inf)
    w = np.exp(logw)
    w /= w.sum()
    keep = w > 1e-6
    # Floor the scale: per-model least squares ignores autocorrelation of per-step noise.
    floor = math.sqrt(float(np.sum(w * sigma2))) / math.sqrt(max(n / temp, 1.0))
    # Model error grows with how far the curve is carried beyond the data: every fit agrees
    # on the observed part and the families only disagree so much, so add a spread
    # proportional to the predicted change from the last fitted value.
    x_last = np.stack(
        [np.ones(m), G[:, -1]] + ([np.full(m, eta_obs[-1])] if use_eta else []), axis=1
    )
    fit_last = (x_last * coef).sum(axis=1)
    change = np.abs(centers - fit_last)
    # A curve that looks flat can still move: a fraction of how far it has moved so far,
    # growing with the log of how far it is carried (saturating accuracy curves taught this).
    x_first = np.stack(
        [np.ones(m), G[:, 0]] + ([np.full(m, eta_obs[0])] if use_eta else []), axis=1
    )
    moved = np.abs(fit_last - (x_first * coef).sum(axis=1))
    horizon = _HORIZON_SPREAD * moved * math.log(max(t_end, t_ref) / t_ref)
    scales = np.sqrt(scales**2 + (_spread(n) * change) ** 2 + horizon**2)
    fams: dict[str, float] = {}
    for name, weight in zip(names, w, strict=True):
        fams[name] = fams.get(name, 0.0) + float(weight)
    return _clip(
        value_range,
        _mixture(
            budget,
            centers[keep],
            np.maximum(scales[keep], floor + 1e-12),
            w[keep] / w[keep].sum(),
            level,
            direction,
            fams,
        ),
    )


def thin_curve(
    steps: np.ndarray, values: np.ndarray, max_points: int = MAX_FIT_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: the latest :data:`_RECENT_POINTS` as they are, the older
    ones averaged in bins of consecutive reports (mean step, mean value).

    A fit costs time linear in the points, and a pruner that judges every report of a
    per-step curve would pay it at every report; averaging old points keeps the curve's
    shape (its early drop is where most of the information about the family is) while
    the cost of a judgement stays bounded at any curve length.
    """
    n = steps.size
    if n <= max_points:
        return steps, values
    old = n - _RECENT_POINTS
    n_bins = max_points - _RECENT_POINTS
    edges = np.linspace(0, old, n_bins + 1).round().astype(int)
    counts = np.diff(edges)
    s_old = np.add.reduceat(steps[:old], edges[:-1]) / counts
    v_old = np.add.reduceat(values[:old], edges[:-1]) / counts
    return (
        np.concatenate([s_old, steps[old:]]),
        np.concatenate([v_old, values[old:]]),
    )


def _few_points(t_obs, v, t_end, t_ref, sign, budget, level, direction, value_range):
    """Two or three points: too few to choose a shape, enough to see the direction.

    Hyperbolas ``c + a/(1 + t/τ)`` with τ fixed at a few multiples of the observed time are
    fitted (two linear parameters each) and averaged with equal weight; the interval is the
    ensemble's spread plus the same extrapolation spread as the full fit.
    """
    taus = t_ref * np.array([0.1, 0.25, 0.5, 1.0, 2.0, 4.0])
    G = 1.0 / (1.0 + t_obs[None, :] / taus[:, None])
    coef, _, _ = _projected_fit(G, v, None)
    g_end = 1.0 / (1.0 + t_end / taus)
    centers = coef[:, 0] + coef[:, 1] * g_end
    ok = np.isfinite(centers) & (sign * coef[:, 1] >= 0)
    if value_range is not None:
        ok &= (coef[:, 0] >= value_range[0]) & (coef[:, 0] <= value_range[1])
        centers = np.clip(centers, *value_range)
    if not ok.any():
        return _last_level(v, budget, level, direction, value_range)
    change = np.abs(centers - (coef[:, 0] + coef[:, 1] * G[:, -1]))
    noise = max(float(np.std(np.diff(v))), 1e-12)
    scales = np.hypot(noise, _spread(t_obs.size) * change)[ok]
    # Half the weight stays on the last value: a gain read from two or three noisy points
    # ranks runs worse than the points themselves (measured on our curve data set).
    centers = np.append(centers[ok], v[-1])
    scales = np.append(scales, max(noise, _spread(t_obs.size) * float(change[ok].mean())))
    weights = np.append(np.full(int(ok.sum()), 0.5 / ok.sum()), 0.5)
    fams = {"hyperbola": 0.5, "last_value": 0.5}
    est = _mixture(budget, centers, scales, weights, level, direction, fams)
    return _clip(value_range, est)


def _last_level(v, budget, level, direction, value_range) -> Extrapolation:
    """Too little (or too odd) a curve to fit a shape: the last value, with a wide interval."""
    spread = float(np.std(v)) if v.size > 1 else abs(float(v[0])) * 0.1
    width = max(spread, abs(float(v[-1])) * 0.05, 1e-12)
    if value_range is not None:
        # Most of training may still be ahead: much of what the metric can be is plausible.
        width = max(width, (value_range[1] - value_range[0]) / 4)
    est = _mixture(
        budget, v[-1:], np.array([width]), np.array([1.0]), level, direction, {"last_value": 1.0}
    )
    return _clip(value_range, est)


def _clip(value_range, est: Extrapolation) -> Extrapolation:
    if value_range is None:
        return est
    lo, hi = value_range
    clip = lambda x: float(min(max(x, lo), hi))  # noqa: E731
    return replace(est, mean=clip(est.mean), low=clip(est.low), high=clip(est.high))


def _mixture(budget, centers, scales, weights, level, direction, fams) -> Extrapolation:
    mean = float(np.sum(weights * centers))
    tmp = Extrapolation(budget, mean, mean, mean, level, direction, centers, scales, weights, fams)
    low, high = tmp.quantile((1 - level) / 2), tmp.quantile((1 + level) / 2)
    low, high = min(low, mean), max(high, mean)
    return Extrapolation(
        float(budget), mean, low, high, level, direction, centers, scales, weights, fams
    )


def linear_decay_schedule(
    total_steps: float, warmup_steps: float = 0.0, final_fraction: float = 0.0
) -> Callable[[np.ndarray], np.ndarray]:
    """The relative learning rate of :class:`~ttp_search.budget.LinearDecayLR`, as a function."""
    if not (math.isfinite(total_steps) and total_steps > 0):
        raise InvalidInputError(f"total_steps must be > 0, got {total_steps!r}")
    if not (0 <= warmup_steps < total_steps):
        raise InvalidInputError(
            f"warmup_steps must be in [0, total_steps={total_steps:g}), got {warmup_steps!r}"
        )
    if warmup_steps != int(warmup_steps):
        raise InvalidInputError(f"warmup_steps must be a whole number, got {warmup_steps!r}")
    if not 0 <= final_fraction <= 1:
        raise InvalidInputError(f"final_fraction must be in [0, 1], got {final_fraction!r}")

    return Schedule("linear", int(warmup_steps), float(final_fraction)).rate(total_steps)
