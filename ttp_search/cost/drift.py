"""Has this device's speed moved since it was calibrated?

A calibration records how fast the device was when it was made (peak matmul FLOP/s, copy
bandwidth, the seconds of one small-op dispatch) and when. A shared machine's speed drifts:
other jobs, thermal and power limits, a noisy neighbour. Re-measuring those three reference
kernels takes about a second; their slowdown against the calibration, as one geometric
mean, rescales later predictions when it is large enough to matter, and a drift beyond
``stale_ratio`` says the calibration no longer describes the machine (recalibrate).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ttp_search._checks import check_int
from ttp_search.cost._timing import median_time


def measure_dispatch_s(device: torch.device | str = "cpu") -> float:
    """Seconds of one tiny op (dispatch and allocation, no arithmetic to speak of): what
    dominates the training steps of small models."""
    device = torch.device(device)
    x = torch.ones(8, device=device)
    return median_time(
        lambda: x + x, warmup=50, repeats=7, min_block_s=0.02, device=device
    ).median_s


def _peak_kernels(device: torch.device) -> Callable[[], tuple[float, float]]:
    """A measurement of peak matmul FLOP/s and copy bandwidth (bytes/s) of ``device``, its
    operands allocated once so that repeated rounds time the kernels, not the allocation."""
    n = 1024 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    src = torch.randn(16 * 1024 * 1024, device=device)  # 64 MiB: beyond any CPU cache
    dst = torch.empty_like(src)

    def measure() -> tuple[float, float]:
        t_mm = median_time(lambda: a @ b, warmup=2, repeats=5, device=device).median_s
        t_copy = median_time(lambda: dst.copy_(src), warmup=2, repeats=5, device=device).median_s
        return 2 * n**3 / t_mm, 2 * src.numel() * src.element_size() / t_copy

    return measure


def reference_speeds(device: torch.device | str = "cpu", rounds: int = 5) -> dict[str, float]:
    """Peak FLOP/s, bandwidth (bytes/s) and dispatch seconds of ``device`` now: each the
    median over ``rounds`` interleaved rounds, after one untimed round.

    A single round in a fresh process reads matmul up to 15% slow (the first round warms the
    kernels up) and the dispatch time of one round can jump by half, both beyond the drift
    worth correcting; the median of rounds taken in turn shrugs off one disturbed round.
    """
    device = torch.device(device)
    rounds = check_int("rounds", rounds, 1)
    peaks = _peak_kernels(device)
    peaks()  # warm-up: thread pool, kernels, first-touch pages
    samples = [(*peaks(), measure_dispatch_s(device)) for _ in range(rounds)]
    peak, bandwidth, dispatch = (statistics.median(column) for column in zip(*samples, strict=True))
    return {"peak_flops": peak, "bandwidth": bandwidth, "dispatch_s": dispatch}


@dataclass(frozen=True)
class DriftCheck:
    """How much slower (> 1) or faster (< 1) each reference kernel runs than at calibration.

    ``slowdown`` is their geometric mean: predicted seconds are multiplied by it when it is
    applied. ``stale`` when it is beyond ``stale_ratio`` either way.
    """

    compute: float
    memory: float
    dispatch: float | None
    slowdown: float
    stale: bool
    calibrated_at: str

    def text(self) -> str:
        parts = [f"matmul {self.compute:.2f}x", f"copy {self.memory:.2f}x"]
        if self.dispatch is not None:
            parts.append(f"dispatch {self.dispatch:.2f}x")
        state = "stale: recalibrate (`ttp time calibrate --force`)" if self.stale else "ok"
        return (
            f"device speed vs its calibration of {self.calibrated_at or 'unknown date'}: "
            f"{', '.join(parts)} the time; predictions x {self.slowdown:.2f} ({state})"
        )


def check_drift(
    calibrated: dict[str, float],
    now: dict[str, float],
    *,
    calibrated_at: str = "",
    stale_ratio: float = 2.0,
) -> DriftCheck:
    """Compare reference speeds measured now with those recorded at calibration (either
    dict as :func:`reference_speeds` returns it; a missing or non-finite dispatch time is
    left out)."""
    compute = calibrated["peak_flops"] / now["peak_flops"]
    memory = calibrated["bandwidth"] / now["bandwidth"]
    then_d, now_d = calibrated.get("dispatch_s", math.nan), now.get("dispatch_s", math.nan)
    dispatch = now_d / then_d if math.isfinite(then_d) and then_d > 0 and now_d > 0 else None
    ratios = [compute, memory] + ([dispatch] if dispatch is not None else [])
    slowdown = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    stale = abs(math.log(slowdown)) > math.log(stale_ratio)
    return DriftCheck(compute, memory, dispatch, slowdown, stale, calibrated_at)
