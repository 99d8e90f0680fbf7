from __future__ import annotations

import statistics

import pytest

from ttp_search.cost._timing import median_time


def test_median_time_warmup_and_repeats_counted():
    calls = []
    result = median_time(lambda: calls.append(1), warmup=2, repeats=4)
    assert len(result.samples_s) == 4
    # warm-up + one sizing call + the remaining blocks of one call each
    assert len(calls) == 2 + 1 + 3
    assert result.median_s == statistics.median(result.samples_s)
    assert all(s > 0 for s in result.samples_s)


def test_min_block_batches_short_calls():
    result = median_time(lambda: None, warmup=0, repeats=3, min_block_s=1e-3)
    assert result.calls_per_sample > 1
    assert len(result.samples_s) == 3


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)
