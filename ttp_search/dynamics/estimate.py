"""What a steps-to-target search answers: the steps, their interval and whether to trust them."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import pandas as pd

from ttp_search.dynamics.linearity import LinearityCheck
from ttp_search.errors import InvalidInputError


@dataclass(frozen=True)
class StepsEstimate:
    """Steps to a target, with an interval; ``math.inf`` when the target is unreachable."""

    steps: float
    low: float
    high: float
    target: float
    weight_decay: str
    #: False when the learning rate puts some direction past the edge of stability
    #: (η × curvature > 2 (1 + m) at the start): the linearized network diverges there (MSE)
    #: or overshoots (cross-entropy), and a real network leaves the linear regime. The
    #: numbers are then the linear model's, not to be trusted as a fine-tuning's.
    stable: bool = True
    #: The network against its linearization at the weights the predicted run reaches at
    #: ``steps`` (``steps_to_loss(check_linearity=True)``; None when not asked or the target
    #: is not reached): ``linearity.holds`` False says the fine-tuning leaves the linear
    #: regime on the way, even where ``stable`` is True.
    linearity: LinearityCheck | None = None

    @property
    def trusted(self) -> bool:
        """Stable, and the linearization holds where it was checked."""
        return self.stable and (self.linearity is None or self.linearity.holds)


def first_hits(df: pd.DataFrame, reached) -> dict[str, float]:
    """First step at which the mean and each band edge reach the target (inf: never)."""
    found = {}
    for col in ("loss", "loss_low", "loss_high"):
        hit = df.step[reached(df, col)]
        found[col] = float(hit.iloc[0]) if len(hit) else math.inf
    return found


def check_target_loss(target) -> None:
    if not (isinstance(target, numbers.Real) and math.isfinite(target) and target >= 0):
        raise InvalidInputError(f"target must be a finite loss >= 0, got {target!r}")
