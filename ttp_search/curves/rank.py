"""Order a set of partial learning curves by one early-ranking estimator."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
import pandas as pd

from ttp_search.curves._validate import as_curve
from ttp_search.curves.extrapolate import extrapolate
from ttp_search.curves.lcga import lcga
from ttp_search.curves.tse import tse
from ttp_search.errors import InvalidInputError

Estimator = Literal["tse", "tse_e", "tse_ema", "lcga", "last", "extrapolated"]
ESTIMATORS: tuple[str, ...] = ("tse", "tse_e", "tse_ema", "lcga", "last", "extrapolated")
_LOSS_ONLY = ("tse", "tse_e", "tse_ema", "lcga")


def rank(
    curves: Mapping,
    by: Estimator = "extrapolated",
    *,
    direction: Literal["minimize", "maximize"] = "minimize",
    budgets: Mapping | float | None = None,
    lr_schedules: Mapping[object, Callable[[np.ndarray], np.ndarray] | None] | None = None,
    steps_per_epoch: int | None = None,
    lcga_summary: str = "fit_final",
    value_range: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Rank partial curves, best first.

    ``curves`` maps a key (a trial number, a run name) to ``(steps, values)``. Returns a
    DataFrame indexed by key with ``score`` (the estimator's value, in the metric's units
    for ``last`` and ``extrapolated``), ``rank`` (1 = best, ties share the lower rank) and,
    for ``extrapolated``, the interval ``low``/``high``. A curve with non-finite values
    (a diverged trial), or one too short for LCGA's fit, is ranked last with a NaN score
    instead of failing the whole call.

    TSE and LCGA score training losses (``direction="minimize"`` only). ``extrapolated``
    predicts each curve's value at its own budget (``budgets``: one number or one per key),
    so trials with different budgets and schedules are compared where each one ends.

    Example:
        >>> import numpy as np
        >>> k = np.arange(1, 40)
        >>> table = rank({"fast": (k, 1 / k), "slow": (k, 2 / k)}, by="tse")
        >>> list(table.index)
        ['fast', 'slow']
    """
    if by not in ESTIMATORS:
        raise InvalidInputError(f"unknown estimator {by!r}; expected one of {ESTIMATORS}")
    if direction not in ("minimize", "maximize"):
        raise InvalidInputError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if by in _LOSS_ONLY and direction != "minimize":
        raise InvalidInputError(f"{by} scores training losses: use direction='minimize'")
    if not isinstance(curves, Mapping) or not curves:
        raise InvalidInputError("curves must be a non-empty mapping of key -> (steps, values)")
    if by == "extrapolated" and budgets is None:
        raise InvalidInputError("by='extrapolated' needs budgets (one number or one per key)")

    rows = []
    for key, curve in curves.items():
        try:
            steps, values = curve
        except (TypeError, ValueError):
            raise InvalidInputError(f"curve {key!r} must be a (steps, values) pair") from None
        row = {"key": key, "score": math.nan, "low": math.nan, "high": math.nan}
        try:
            s, v = as_curve(steps, values, min_points=1)
        except InvalidInputError as err:
            if "non-finite" not in str(err):
                raise InvalidInputError(f"curve {key!r}: {err}") from None
            rows.append(row)
            continue
        row.update(
            _score(
                by,
                s,
                v,
                direction=direction,
                budget=_per_key(budgets, key, "budgets"),
                lr_schedule=_per_key(lr_schedules, key, "lr_schedules"),
                steps_per_epoch=steps_per_epoch,
                lcga_summary=lcga_summary,
                value_range=value_range,
            )
        )
        rows.append(row)
    table = pd.DataFrame(rows).set_index("key")
    oriented = table["score"] if direction == "minimize" else -table["score"]
    if by == "lcga":
        oriented = table["score"]  # LCGA summaries are already "lower is better"
    table["rank"] = oriented.rank(method="min", na_option="bottom").astype(int)
    if by != "extrapolated":
        table = table.drop(columns=["low", "high"])
    return table.sort_values("rank", kind="stable")


def _per_key(value, key, name):
    if isinstance(value, Mapping):
        if key not in value:
            raise InvalidInputError(f"{name} has no entry for curve {key!r}")
        return value[key]
    return value


def _score(by, s, v, *, direction, budget, lr_schedule, steps_per_epoch, lcga_summary, value_range):
    if by in ("tse", "tse_e", "tse_ema"):
        return {"score": tse(v, by, steps_per_epoch=steps_per_epoch)}
    if by == "lcga":
        if s.size < 4:
            return {}
        return {"score": lcga(s, v).summary(lcga_summary)}
    if by == "last":
        return {"score": float(v[-1])}
    est = extrapolate(
        s, v, budget, direction=direction, lr_schedule=lr_schedule, value_range=value_range
    )
    return {"score": est.mean, "low": est.low, "high": est.high}
