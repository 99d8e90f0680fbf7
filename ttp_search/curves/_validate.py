"""Validation of partial learning curves at the boundary of the curves engine."""

from __future__ import annotations

import numpy as np

from ttp_search.errors import InvalidInputError


def as_curve(steps, values, *, min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Finite float arrays of equal length with strictly increasing steps.

    Non-finite values (a diverged step reporting NaN or inf) are an error naming their
    position, not silently dropped: a search should see that a trial diverged.
    """
    try:
        s = np.asarray(steps, dtype=np.float64).ravel()
        v = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"steps and values must be numeric sequences, got {steps!r}, {values!r}"
        ) from None
    if s.shape != v.shape:
        raise InvalidInputError(f"steps ({s.size}) and values ({v.size}) differ in length")
    if s.size < min_points:
        raise InvalidInputError(f"need at least {min_points} points, got {s.size}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise InvalidInputError(f"values[{bad[0]}] is {v[bad[0]]}: the curve has non-finite values")
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("steps must be finite")
    if s.size > 1 and np.any(np.diff(s) <= 0):
        i = int(np.flatnonzero(np.diff(s) <= 0)[0])
        raise InvalidInputError(
            f"steps must be strictly increasing: steps[{i}]={s[i]} then steps[{i + 1}]={s[i + 1]}"
        )
    return s, v
