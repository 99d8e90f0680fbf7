"""LayerTimeModel: predictions, persistence, cache errors and bad input."""

from __future__ import annotations

import json
import math
import time
import zipfile

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from ttp_search.cost import (
    CalibrationData,
    FlopLinearModel,
    LayerTimeModel,
    RooflineModel,
    UnsupportedOpWarning,
    calibration_path,
    device_fingerprint,
    trace_training_step,
)
from ttp_search.cost.cache import FORMAT_VERSION
from ttp_search.errors import CalibrationError, CalibrationNotFoundError, InvalidInputError


def test_prediction_has_ordered_interval_and_consistent_breakdown(calibrated):
    model = torchvision.models.resnet18(num_classes=10)
    pred = calibrated.predict(model, (3, 32, 32), 8, optimizer="adam")
    assert 0 < pred.low_s <= pred.step_time_s <= pred.high_s
    assert math.isclose(pred.breakdown["time_s"].sum(), pred.step_time_s, rel_tol=1e-9)
    assert {"layer", "module_type", "forward_s", "backward_s", "time_s", "share"} <= set(
        pred.breakdown.columns
    )
    assert "conv1" in set(pred.breakdown.layer)
    assert pred.threads == torch.get_num_threads()
    assert pred.unsupported == []
    json.dumps(pred.to_dict(), default=float)


def test_more_work_costs_more(calibrated):
    model = torchvision.models.resnet18(num_classes=10)
    small = calibrated.predict(model, (3, 32, 32), 2).step_time_s
    large = calibrated.predict(model, (3, 64, 64), 32).step_time_s
    assert large > 2 * small
    sgd = calibrated.predict(model, (3, 32, 32), 8, "sgd").step_time_s
    adam = calibrated.predict(model, (3, 32, 32), 8, "adam").step_time_s
    assert adam > sgd


def test_unsupported_ops_use_fallback_and_are_listed(calibrated):
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.cumsum(torch.special.erfinv(torch.tanh(x) * 0.5), dim=1))

    with pytest.warns(UnsupportedOpWarning, match="cumsum"):
        pred = calibrated.predict(Odd(), (8,), 4)
    assert "aten.cumsum" in pred.unsupported
    assert math.isfinite(pred.step_time_s) and pred.step_time_s > 0


def test_save_load_round_trip(calibrated, tmp_path):
    path = calibrated.save(tmp_path / "cal.npz")
    loaded = LayerTimeModel.load(path)
    model = torchvision.models.mobilenet_v3_small(num_classes=10)
    a = calibrated.predict(model, (3, 32, 32), 4, "adamw")
    b = loaded.predict(model, (3, 32, 32), 4, "adamw")
    assert a.step_time_s == pytest.approx(b.step_time_s, rel=1e-9)
    assert (a.low_s, a.high_s) == pytest.approx((b.low_s, b.high_s), rel=1e-9)


def test_default_cache_location_follows_fingerprint(calibrated, cache_root):
    path = calibration_path(device_fingerprint("cpu"))
    assert str(path).startswith(cache_root)
    assert path.exists()
    assert LayerTimeModel.load().path == path


def test_missing_calibration_says_how_to_calibrate(tmp_path):
    with pytest.raises(CalibrationNotFoundError, match="ttp time calibrate"):
        LayerTimeModel.load(tmp_path / "nothing.npz")


def test_corrupt_cache_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a calibration")
    with pytest.raises(CalibrationError, match=r"corrupt.*ttp time calibrate"):
        LayerTimeModel.load(bad)


def test_truncated_cache_is_a_clear_error(calibrated, tmp_path):
    path = calibrated.save(tmp_path / "cal.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CalibrationError, match="ttp time calibrate"):
        LayerTimeModel.load(path)


def test_incompatible_version_and_foreign_device_are_refused(calibrated, tmp_path):
    path = calibrated.save(tmp_path / "cal.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 999
    old = tmp_path / "old.npz"
    np.savez(old, **{**arrays, "meta": np.array(json.dumps(meta))})
    with pytest.raises(CalibrationError, match="format version 999"):
        LayerTimeModel.load(old)
    meta["format_version"] = FORMAT_VERSION
    meta["fingerprint"] = {**meta["fingerprint"], "device_name": "Some Other CPU"}
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, **{**arrays, "meta": np.array(json.dumps(meta))})
    with pytest.raises(CalibrationError, match="Some Other CPU"):
        LayerTimeModel.load(foreign)
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size.*0"),
        ({"batch_size": -3}, "batch_size.*-3"),
        ({"batch_size": True}, "batch_size.*True"),
        ({"input_shape": (3, 0, 32)}, r"input_shape.*\(3, 0, 32\)"),
        ({"input_shape": "abc"}, "input_shape.*abc"),
        ({"optimizer": "lamb"}, "optimizer 'lamb'"),
    ],
)
def test_bad_input_names_the_value(calibrated, kwargs, match):
    args = {"model": nn.Linear(3, 2), "input_shape": (3,), "batch_size": 4, "optimizer": "sgd"}
    args.update(kwargs)
    with pytest.raises(InvalidInputError, match=match):
        calibrated.predict(**args)


def test_not_a_module_and_untrainable_input(calibrated):
    with pytest.raises(InvalidInputError, match="Module, got str"):
        calibrated.predict("resnet18", (3, 32, 32), 4)
    with pytest.raises(InvalidInputError, match="cannot run a training step"):
        calibrated.predict(nn.Linear(3, 2), (5,), 4)


def test_uncalibrated_model_refuses_to_predict():
    with pytest.raises(CalibrationError, match="not calibrated"):
        LayerTimeModel().predict(nn.Linear(2, 2), (2,), 1)


def test_baselines_fit_on_the_same_data(calibrated):
    data: CalibrationData = calibrated.data
    trace = trace_training_step(torchvision.models.resnet18(num_classes=10), (3, 32, 32), 8)
    flop = FlopLinearModel().fit(data).predict_trace(trace)
    roof = RooflineModel().fit(data).predict_trace(trace)
    assert flop > 0 and roof > 0
    assert RooflineModel().fit(data).utilisation_ > 0


def test_budget_must_be_reasonable():
    with pytest.raises(InvalidInputError, match="budget_s"):
        LayerTimeModel.calibrate(0.5, progress=False, save=False)


def test_a_resaved_calibration_reuses_its_cached_fit(calibrated, tmp_path, monkeypatch):
    path = tmp_path / "calibration.npz"
    calibrated.save(path)
    first = LayerTimeModel.load(path)  # fits once and caches the fit
    time.sleep(2.1)  # zip entries are stamped to 2 s: the re-save's bytes differ
    calibrated.save(path)

    def refit(self, data):
        raise AssertionError("refitted a calibration whose samples did not change")

    monkeypatch.setattr(LayerTimeModel, "fit", refit)
    again = LayerTimeModel.load(path)
    assert again.data.digest() == first.data.digest() == calibrated.data.digest()


def test_a_calibration_past_its_deadline_still_times_every_optimizer_three_times():
    """On a loaded machine the optimizer stage used to stop at 4 timings, one per kind: the
    fit then pooled them and priced Adam exactly like SGD."""
    from tqdm.auto import tqdm

    from ttp_search.cost.calibrate import MIN_UPDATE_TIMINGS, _sample_optimizer
    from ttp_search.cost.step import OPTIMIZERS

    data = CalibrationData(fingerprint={}, peak_flops=1e9, bandwidth=1e9)
    with tqdm(total=1.0, disable=True) as bar:
        _sample_optimizer(data, np.random.default_rng(0), time.perf_counter() - 1, "cpu", bar)
    kinds = [data.opt_kind.count(k) for k in OPTIMIZERS]
    assert min(kinds) >= MIN_UPDATE_TIMINGS


def _fitted_updates(seconds_per_param: dict[str, float]) -> LayerTimeModel:
    """A model fitted to three exact update timings per optimizer (10 tensors each)."""
    data = CalibrationData(fingerprint={}, peak_flops=1e9, bandwidth=1e9)
    for kind, per_param in seconds_per_param.items():
        for numel in (1e4, 1e5, 1e6):
            data.opt_kind.append(kind)
            data.opt_n_tensors.append(10)
            data.opt_numel.append(numel)
            data.opt_time.append(1e-5 + per_param * numel)
    model = LayerTimeModel()
    model._fit_optimizer(data)
    return model


def test_each_optimizer_gets_its_own_update_model_from_three_timings():
    model = _fitted_updates({"sgd": 1e-9, "adam": 4e-9})
    sgd, adam = (model.optimizer_seconds(k, 10, 10**6) for k in ("sgd", "adam"))
    assert adam == pytest.approx(4 * sgd, rel=0.05)


def test_a_heavier_optimizer_is_never_priced_below_a_lighter_one():
    """Timing noise (a loaded machine) measured Adam's updates below SGD's."""
    model = _fitted_updates({"sgd": 4e-9, "momentum": 2e-9, "adam": 1e-9, "adamw": 3e-9})
    cost = [model.optimizer_seconds(k, 10, 10**6) for k in ("sgd", "momentum", "adam", "adamw")]
    assert cost == sorted(cost)
    assert cost[3] == pytest.approx(1e-5 + 4e-3, rel=0.05)  # measured below SGD: floored there
