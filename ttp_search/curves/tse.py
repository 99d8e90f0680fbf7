"""Training speed estimation (Ru, Lyle, Schut, Fil, van der Wilk & Gal, NeurIPS 2021).

The sum of training losses over training predicts generalisation: a network that fits its
training data fast generalises well. Lower is better. With ``L̄_t`` the mean minibatch loss of
epoch ``t``:

* ``TSE = Σ_{t≤T} L̄_t``
* ``TSE-E = Σ_{t=T−E+1..T} L̄_t`` (the last ``E`` epochs; ``E = 1`` is the usual choice)
* ``TSE-EMA = Σ_t γ^{T−t} L̄_t``
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ttp_search.curves._validate import as_curve
from ttp_search.errors import InvalidInputError

Variant = Literal["tse", "tse_e", "tse_ema"]


def epoch_means(step_losses, steps_per_epoch: int) -> np.ndarray:
    """Mean per-step loss of each complete epoch (a trailing partial epoch is averaged too)."""
    if (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, int)
        or steps_per_epoch < 1
    ):
        raise InvalidInputError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
    _, v = as_curve(np.arange(len(step_losses)), step_losses, min_points=1)
    n = int(np.ceil(v.size / steps_per_epoch))
    return np.array([v[i * steps_per_epoch : (i + 1) * steps_per_epoch].mean() for i in range(n)])


def tse(
    losses,
    variant: Variant = "tse",
    *,
    steps_per_epoch: int | None = None,
    last_epochs: int = 1,
    gamma: float = 0.9,
) -> float:
    """TSE, TSE-E or TSE-EMA of a training-loss curve; lower is better.

    ``losses`` are per-epoch mean training losses, or per-step losses when
    ``steps_per_epoch`` is given (they are averaged per epoch first, as in the paper).
    """
    if steps_per_epoch is not None:
        per_epoch = epoch_means(losses, steps_per_epoch)
    else:
        _, per_epoch = as_curve(np.arange(len(losses)), losses, min_points=1)
    if variant == "tse":
        return float(per_epoch.sum())
    if variant == "tse_e":
        if isinstance(last_epochs, bool) or not isinstance(last_epochs, int) or last_epochs < 1:
            raise InvalidInputError(f"last_epochs must be an integer >= 1, got {last_epochs!r}")
        return float(per_epoch[-last_epochs:].sum())
    if variant == "tse_ema":
        if not 0 < gamma <= 1:
            raise InvalidInputError(f"gamma must be in (0, 1], got {gamma!r}")
        weights = gamma ** np.arange(per_epoch.size - 1, -1, -1, dtype=np.float64)
        return float((weights * per_epoch).sum())
    raise InvalidInputError(f"unknown TSE variant {variant!r}; expected tse, tse_e or tse_ema")
