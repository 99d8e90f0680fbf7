"""Validation of numbers at the public boundary, shared by every engine and adapter.

One rule everywhere: any ``numbers.Integral`` is an integer and any ``numbers.Real`` a real
(so ``np.int64(100)`` and ``np.float32(0.5)`` work like ``100`` and ``0.5``), ``bool`` is
neither (``True`` is a typo, not a budget of 1), and every error names the parameter and the
value it got.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

from ttp_search.errors import InvalidInputError


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``, or an error naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidInputError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    hint: str = "",
) -> float:
    """``value`` as a ``float`` within the bounds (open where asked), or an error naming it.

    ``finite=False`` admits ``inf`` (never NaN). ``hint`` is appended to the message.
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and not math.isnan(value)
        and (math.isfinite(value) or not finite)
    )
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return float(value)
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    what = ("a finite number" if finite else "a number") + (
        f" {' and '.join(parts)}" if parts else ""
    )
    raise InvalidInputError(f"{name} must be {what}, got {value!r}{hint}")


def check_positive_seconds(name: str, value: object) -> float | None:
    """A time limit in seconds: ``None`` (no limit) or a finite number > 0."""
    if value is None:
        return None
    return check_real(name, value, low=0.0, low_open=True, hint=" (None means no limit)")


def check_shape(name: str, value: object) -> tuple[int, ...]:
    """A tensor shape: a non-empty sequence of integers >= 1 (``(4.7,)`` is refused, not
    truncated to ``(4,)``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise InvalidInputError(f"{name} must be a sequence of integers >= 1, got {value!r}")
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise InvalidInputError(f"{name} must be a sequence of integers >= 1, got {value!r}")
    return tuple(int(d) for d in value)


def check_value_range(value: object) -> tuple[float, float] | None:
    """``None`` or a finite ``(low, high)`` with ``low < high``."""
    if value is None:
        return None
    try:
        low, high = value  # type: ignore[misc]
        low = check_real("value_range", low)
        high = check_real("value_range", high)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"value_range must be a finite (low, high) with low < high, got {value!r}"
        ) from None
    if not low < high:
        raise InvalidInputError(
            f"value_range must be a finite (low, high) with low < high, got {value!r}"
        )
    return low, high


def renamed_option(options: dict, old: str, new: str, owner: str, value: object = None) -> object:
    """The value of ``new``, taking it from the deprecated keyword ``old`` in ``options``
    (popped, with a FutureWarning) when ``value`` is ``None``; both given is an error.

    One vocabulary across adapters: ``study_budget_s``, ``trial_budget_s``, ``max_steps``.
    """
    if old not in options:
        return value
    if value is not None:
        raise InvalidInputError(f"{owner}: give {new}, not both {new} and {old} (its old name)")
    warnings.warn(
        f"{owner}({old}=...) is renamed {new}=...; the old name will be removed",
        FutureWarning,
        stacklevel=3,
    )
    return options.pop(old)
