"""Offline data sets and the learning-curve loader."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from ttp_search.data import digits, load_curves, mnist1d
from ttp_search.data.curves import DEFAULT_PATH
from ttp_search.errors import InvalidInputError


def test_mnist1d_is_generated_offline_with_expected_shapes(tmp_path, monkeypatch):
    monkeypatch.setenv("TTP_SEARCH_CACHE", str(tmp_path))  # nothing cached: it generates
    mnist1d.cache_clear()
    x, y, xt, _yt = mnist1d()
    assert x.shape == (4000, 1, 40) and xt.shape == (1000, 1, 40)
    assert set(y.tolist()) == set(range(10))
    state = np.random.get_state()[1][:3].copy()  # noqa: NPY002
    mnist1d(num_samples=200, seed=1)
    assert np.array_equal(np.random.get_state()[1][:3], state)  # noqa: NPY002


def test_mnist1d_is_reused_from_the_cache_and_a_broken_file_remade(tmp_path, monkeypatch):
    monkeypatch.setenv("TTP_SEARCH_CACHE", str(tmp_path))
    mnist1d.cache_clear()
    first = mnist1d(num_samples=100, seed=3)
    (path,) = tmp_path.glob("mnist1d_*_n100_s3.npz")
    mnist1d.cache_clear()
    with np.load(path) as cached:
        np.testing.assert_array_equal(
            cached["x_test"].astype(np.float32), first[2].squeeze(1).numpy()
        )
    again = mnist1d(num_samples=100, seed=3)  # read from the file
    assert all(a.equal(b) for a, b in zip(first, again, strict=True))
    path.write_bytes(b"not a zip file")  # torn or foreign: generated again, and rewritten
    mnist1d.cache_clear()
    remade = mnist1d(num_samples=100, seed=3)
    assert all(a.equal(b) for a, b in zip(first, remade, strict=True))
    with np.load(path) as cached:
        assert set(cached.files) == {"x", "y", "x_test", "y_test"}
    mnist1d.cache_clear()


def test_digits_split():
    x, y, _xt, yt = digits()
    assert x.shape[1:] == (1, 8, 8)
    assert len(y) + len(yt) == 1797
    assert float(x.max()) <= 1.0


def test_load_curves_round_trip(tmp_path):
    run = {
        "run_id": "nas-000",
        "space": "nas",
        "config": {"lr": 0.1},
        "steps_per_epoch": 2,
        "budget_steps": 4,
        "train_loss": [2.0, 1.5, None, 1.0],
        "val_loss": [1.2, 1.0],
        "val_acc": [0.5, 0.6],
        "step_time_s": [0.01, 0.01],
        "final_val_acc": 0.6,
        "final_val_loss": 1.0,
    }
    path = tmp_path / "c.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump({"runs": [run, {**run, "run_id": "hpo-000", "space": "hpo"}]}, handle)
    runs = load_curves(path)
    assert [r.run_id for r in runs] == ["nas-000", "hpo-000"]
    assert np.isnan(runs[0].train_loss[2])  # a diverged step stays visible as NaN
    assert list(runs[0].epoch_steps()) == [2, 4]
    assert [r.space for r in load_curves(path, space="hpo")] == ["hpo"]
    with pytest.raises(InvalidInputError, match="space"):
        load_curves(path, space="rl")
    with pytest.raises(InvalidInputError, match="make_curves"):
        load_curves(tmp_path / "missing.json.gz")


@pytest.mark.skipif(not DEFAULT_PATH.exists(), reason="data set not built yet")
def test_shipped_data_set_has_both_halves():
    runs = load_curves()
    nas = [r for r in runs if r.space == "nas"]
    hpo = [r for r in runs if r.space == "hpo"]
    assert len(nas) >= 60 and len(hpo) >= 60
    assert len({json.dumps(r.config, sort_keys=True) for r in nas}) == len(nas)
    assert len({r.budget_steps for r in hpo}) > 5
    assert DEFAULT_PATH.stat().st_size < 10 * 2**20
