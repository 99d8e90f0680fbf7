"""One timing protocol for calibration and ground truth: warm-up, then the median of repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued kernels so wall-clock timing sees the work (no-op on CPU)."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class TimingResult:
    """Median seconds per call, with the individual block medians it came from."""

    median_s: float
    samples_s: list[float] = field(default_factory=list)
    calls_per_sample: int = 1

    @property
    def spread(self) -> float:
        """Relative interquartile range of the samples: how noisy this timing was."""
        if len(self.samples_s) < 4:
            return 0.0
        q = statistics.quantiles(self.samples_s, n=4)
        return (q[2] - q[0]) / self.median_s if self.median_s > 0 else 0.0


def median_time(
    fn: Callable[[], object],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_block_s: float = 0.0,
    max_total_s: float | None = None,
    min_repeats: int = 1,
    device: torch.device | str | None = None,
) -> TimingResult:
    """Time ``fn``: ``warmup`` untimed calls, then the median over ``repeats`` blocks.

    Short functions are called several times per block so that each block lasts at least
    ``min_block_s``; timer resolution and Python overhead then stop dominating.
    ``max_total_s`` stops early (after at least ``min_repeats`` blocks) when a call is slow.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    first = time.perf_counter()
    fn()
    synchronize(device)
    one_call = time.perf_counter() - first
    calls = 1
    if min_block_s > 0 and one_call < min_block_s:
        calls = min(10_000, max(1, int(min_block_s / max(one_call, 1e-7))))
    samples = [one_call] if calls == 1 else []
    while len(samples) < repeats:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - t0) / calls)
        if (
            max_total_s is not None
            and len(samples) >= min_repeats
            and time.perf_counter() - start > max_total_s
        ):
            break
    return TimingResult(statistics.median(samples), samples, calls)
