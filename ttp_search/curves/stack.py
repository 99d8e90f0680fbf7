"""Many learning curves in flat arrays, each read at a fraction of its own budget at once.

A decision among 1,000 finished trials reads each of them at the running trial's fraction of
its budget. One ``np.interp`` per curve is a Python loop of 1,000 calls; concatenated (no
padding, so one curve's 100,000 reports cost no more than they are), the same reads are a
few array operations. The result is what ``np.interp`` gives, to the bit, for curves with
finite values (callers keep the others apart: ``np.interp`` has its own rules for inf).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class CurveStack:
    """Curves (``steps[i]``, ``values[i]``, ``budgets[i]``) read at a shared fraction of
    each budget. Steps must increase within a curve; an empty curve is refused."""

    def __init__(
        self,
        steps: Sequence[np.ndarray],
        values: Sequence[np.ndarray],
        budgets: Sequence[float],
    ) -> None:
        lengths = np.array([s.size for s in steps], dtype=np.int64)
        if np.any(lengths == 0):
            raise ValueError("every curve of a CurveStack needs at least one report")
        self.size = lengths.size
        self.starts, self.lengths = np.cumsum(lengths) - lengths, lengths
        self.row = np.repeat(np.arange(self.size), lengths)
        self.steps = np.concatenate(steps).astype(np.float64) if self.size else np.empty(0)
        self.values = np.concatenate(values).astype(np.float64) if self.size else np.empty(0)
        self.budgets = np.asarray(budgets, dtype=np.float64).reshape(self.size)
        self.last = self.steps[self.starts + lengths - 1] if self.size else np.empty(0)

    def values_at(self, fraction: float) -> np.ndarray:
        """Every curve's value at ``fraction`` of its budget (its last value past its end,
        its first before its start), as ``np.interp(fraction * budget, steps, values)``."""
        if self.size == 0:
            return np.empty(0)
        at = fraction * self.budgets
        # The last report at or before ``at`` (the first when ``at`` precedes every report).
        reached = (self.steps <= at[self.row]).view(np.int8)
        seen = np.add.reduceat(reached, self.starts, dtype=np.int64)  # no curve is empty
        j = np.maximum(seen - 1, 0)
        nxt = np.minimum(j + 1, self.lengths - 1)
        x0, y0 = self.steps[self.starts + j], self.values[self.starts + j]
        x1, y1 = self.steps[self.starts + nxt], self.values[self.starts + nxt]
        with np.errstate(invalid="ignore", divide="ignore"):
            between = (y1 - y0) / (x1 - x0) * (at - x0) + y0
        return np.where((x0 >= at) | (nxt == j), y0, between)


def same_objects(kept: Sequence, given: Sequence) -> bool:
    """``given`` holds the very objects of ``kept``, in the same order: what a cache of reads
    from ended trials' curves is keyed on (the objects do not change; adapters keep them)."""
    if given is kept:  # the same tuple it was built from (immutable)
        return True
    return len(given) == len(kept) and all(a is b for a, b in zip(given, kept, strict=True))
