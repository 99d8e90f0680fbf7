"""The drift check: a calibration rescaled by how much the device's speed has moved."""

from __future__ import annotations

import math

import pytest
import torch

from ttp_search.cost import LayerTimeModel
from ttp_search.cost import model as model_module
from ttp_search.cost.drift import check_drift, reference_speeds
from ttp_search.errors import InvalidInputError

THEN = {"peak_flops": 2e11, "bandwidth": 1e10, "dispatch_s": 4e-6}


def test_slowdown_is_the_geometric_mean_of_the_reference_kernels():
    now = {"peak_flops": 1e11, "bandwidth": 5e9, "dispatch_s": 8e-6}  # everything 2x slower
    drift = check_drift(THEN, now, calibrated_at="2026-12-01")
    assert (drift.compute, drift.memory, drift.dispatch) == (2.0, 2.0, 2.0)
    assert drift.slowdown == pytest.approx(2.0) and not drift.stale
    mixed = check_drift(THEN, {**THEN, "peak_flops": 5e10})  # only matmul 4x slower
    assert mixed.slowdown == pytest.approx(4 ** (1 / 3))
    old_file = check_drift({**THEN, "dispatch_s": math.nan}, now, stale_ratio=1.5)
    assert old_file.dispatch is None and old_file.slowdown == pytest.approx(2.0)
    assert old_file.stale and "recalibrate" in old_file.text()


def test_reference_speeds_are_positive_finite_medians_of_rounds():
    speeds = reference_speeds("cpu")
    assert set(speeds) == set(THEN) and all(v > 0 and math.isfinite(v) for v in speeds.values())
    one = reference_speeds("cpu", rounds=1)
    assert set(one) == set(THEN) and all(v > 0 and math.isfinite(v) for v in one.values())
    for bad in (0, 2.5, True):
        with pytest.raises(InvalidInputError, match="rounds"):
            reference_speeds("cpu", rounds=bad)


def _speeds_times(factor: float):
    def measured(device):  # the device now runs ``factor`` times slower than calibrated
        return {"peak_flops": THEN["peak_flops"] / factor, "bandwidth": THEN["bandwidth"] / factor,
                "dispatch_s": THEN["dispatch_s"] * factor}  # fmt: skip

    return measured


def test_a_drifted_device_rescales_predictions(calibrated, tmp_path, monkeypatch, caplog):
    path = tmp_path / "cal.npz"
    calibrated.save(path)
    model = LayerTimeModel.load(path)
    model.data.peak_flops, model.data.bandwidth = THEN["peak_flops"], THEN["bandwidth"]
    model.data.dispatch_s = THEN["dispatch_s"]
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))  # fmt: skip
    before = model.predict(net, (3, 4, 4), 8, "sgd")

    monkeypatch.setattr(model_module, "reference_speeds", _speeds_times(1.05))
    model.check_drift()  # within the kernels' noise: unchanged
    assert model.slowdown == 1.0
    assert model.predict(net, (3, 4, 4), 8, "sgd").step_time_s == before.step_time_s

    monkeypatch.setattr(model_module, "reference_speeds", _speeds_times(1.6))
    drift = model.check_drift()
    after = model.predict(net, (3, 4, 4), 8, "sgd")
    assert drift.slowdown == pytest.approx(1.6) and not drift.stale
    assert after.step_time_s == pytest.approx(1.6 * before.step_time_s)
    assert after.low_s == pytest.approx(1.6 * before.low_s)
    assert after.breakdown.time_s.sum() == pytest.approx(after.step_time_s)

    monkeypatch.setattr(model_module, "reference_speeds", _speeds_times(3.0))
    with caplog.at_level("WARNING", logger="ttp_search"):
        assert model.check_drift().stale
    assert "stale" in caplog.text
    with pytest.raises(InvalidInputError, match="stale_ratio"):
        model.check_drift(stale_ratio=0.5)


def test_load_or_calibrate_checks_drift_of_a_cached_calibration(calibrated, monkeypatch):
    calibrated.save()  # into the session cache, for this device
    monkeypatch.setattr(model_module, "reference_speeds", _speeds_times(1.0))
    model = LayerTimeModel.load_or_calibrate()
    assert model.calibrated_here is False and model.drift is not None
    assert LayerTimeModel.load_or_calibrate(drift_check=False).drift is None
