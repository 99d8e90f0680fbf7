"""The `ttp time` command: JSON contract and clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttp_search.cli import app

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_predict_json_contract(calibrated):
    result = runner.invoke(
        app,
        [
            "time",
            "predict",
            "torchvision:resnet18",
            "--input",
            "3x32x32",
            "--batch-size",
            "4",
            "--optimizer",
            "adam",
            "--model-kwargs",
            '{"num_classes": 10}',
            "--json",
        ],
    )
    out = _json(result)
    for key in ("step_time_s", "low_s", "high_s", "device", "threads", "unsupported"):
        assert key in out
    assert out["low_s"] <= out["step_time_s"] <= out["high_s"]
    assert out["unsupported"] == []


def test_predict_table(calibrated):
    result = runner.invoke(
        app,
        ["time", "predict", "torchvision:squeezenet1_1", "--input", "3x32x32", "--batch-size", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "predicted step time" in result.stdout


def test_measure_json_contract():
    result = runner.invoke(
        app,
        [
            "time",
            "measure",
            "torchvision:squeezenet1_1",
            "--input",
            "3x32x32",
            "--batch-size",
            "2",
            "--repeats",
            "2",
            "--json",
        ],
    )
    out = _json(result)
    assert out["step_time_s"] > 0
    assert {"device", "threads"} <= set(out)


def test_factory_file(tmp_path, calibrated):
    src = tmp_path / "nets.py"
    src.write_text(
        "from torch import nn\n"
        "def mlp(width=32):\n    return nn.Sequential(nn.Linear(10, width), nn.ReLU(), nn.Linear(width, 3))\n"
        "def not_a_model():\n    return 42\n"
    )
    out = _json(
        runner.invoke(
            app,
            [
                "time",
                "predict",
                f"{src}:mlp",
                "--input",
                "10",
                "--batch-size",
                "8",
                "--model-kwargs",
                '{"width": 64}',
                "--json",
            ],
        )
    )
    assert out["n_params"] == 10 * 64 + 64 + 64 * 3 + 3
    bad = runner.invoke(
        app, ["time", "predict", f"{src}:not_a_model", "--input", "10", "--batch-size", "8"]
    )
    assert bad.exit_code == 2
    assert "returned int, not a torch.nn.Module" in bad.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["torchvision:resnet1800", "--input", "3x32x32", "--batch-size", "4"], "resnet1800"),
        (["torchvision:resnet18", "--input", "3by32", "--batch-size", "4"], "3by32"),
        (["torchvision:resnet18", "--input", "3x32x32", "--batch-size", "0"], "--batch-size"),
        (
            [
                "torchvision:resnet18",
                "--input",
                "3x32x32",
                "--batch-size",
                "4",
                "--optimizer",
                "rmsprop",
            ],
            "rmsprop",
        ),
        (["resnet18", "--input", "3x32x32", "--batch-size", "4"], "resnet18"),
        (
            [
                "torchvision:resnet18",
                "--input",
                "3x32x32",
                "--batch-size",
                "4",
                "--model-kwargs",
                "{oops",
            ],
            "{oops",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_value(calibrated, args, message):
    for command in ("predict", "measure"):
        result = runner.invoke(app, ["time", command, *args])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_corrupt_cache_tells_how_to_recalibrate(calibrated, monkeypatch, tmp_path):
    from ttp_search.cost import calibration_path, device_fingerprint

    monkeypatch.setenv("TTP_SEARCH_CACHE", str(tmp_path))
    path = calibration_path(device_fingerprint("cpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    result = runner.invoke(
        app, ["time", "predict", "torchvision:resnet18", "--input", "3x32x32", "--batch-size", "4"]
    )
    assert result.exit_code == 2
    assert "corrupt" in result.output and "ttp time calibrate --force" in result.output


DIGITS_NET = """
from torch import nn
def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
"""


def test_steps_predict_json_and_errors(tmp_path):
    factory = tmp_path / "digits_net.py"
    factory.write_text(DIGITS_NET)
    spec = f"{factory}:make"
    common = ["steps", "predict", spec, "--num-samples", "32", "--steps", "100"]
    out = _json(runner.invoke(app, [*common, "--lr", "0.1", "--target-loss", "2.0", "--json"]))
    assert out["weight_decay_mode"] == "standard"
    assert set(out["curve"]) == {"step", "loss", "loss_low", "loss_high", "accuracy"}
    assert out["steps_to"]["loss"]["low"] <= out["steps_to"]["loss"]["steps"]
    checked = out["steps_to"]["loss"]
    assert checked["network_over_linear_loss"] > 0 and isinstance(checked["trusted"], bool)
    table = runner.invoke(app, [*common, "--lr", "0.1", "--target-accuracy", "0.5"])
    assert table.exit_code == 0 and "steps to accuracy 0.5" in table.stdout
    for args, message in (
        (["--lr", "0"], "lr must be"),
        (["--lr", "0.1", "--batch-size", "100000"], "larger than the data set"),
        (["--lr", "0.1", "--data", "cifar"], "--data must be"),
        (["--lr", "0.1", "--schedule", "exp"], "unknown schedule"),
    ):
        result = runner.invoke(app, [*common, *args])
        assert result.exit_code == 2 and message in result.output, result.output


def test_predict_calibrates_on_first_use_and_says_so(calibrated, tmp_path, monkeypatch, caplog):
    from ttp_search.cost import LayerTimeModel

    monkeypatch.setenv("TTP_SEARCH_CACHE", str(tmp_path))  # nothing cached here
    budgets = []

    def calibrate(budget_s, *, device="cpu", progress=True, **kwargs):
        budgets.append(budget_s)  # stands in for the real minutes of measuring
        calibrated.save(None)  # into this cache, under this device's fingerprint
        return LayerTimeModel.load(device=device)

    monkeypatch.setattr(LayerTimeModel, "calibrate", calibrate)
    args = ["time", "predict", "torchvision:resnet18", "--input", "3x32x32", "--batch-size"]
    args += ["2", "--json", "--calibration-budget-s", "30"]
    with caplog.at_level("WARNING", logger="ttp_search"):
        first = _json(runner.invoke(app, args))
    assert budgets == [30] and first["step_time_s"] > 0
    assert "calibrating now for about 30 s, once" in caplog.text
    assert list(tmp_path.glob("layer_time_*.npz"))
    assert _json(runner.invoke(app, args))["step_time_s"] > 0  # (drift-checked: may differ)
    assert budgets == [30]  # the second use loads the cached calibration
    bad = runner.invoke(app, [*args[:-1], "1"])
    assert bad.exit_code == 2 and "budget_s" in bad.output
