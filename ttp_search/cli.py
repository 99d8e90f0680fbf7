"""The ``ttp`` command."""

from __future__ import annotations

import functools
import json
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import numpy as np
import torch
import typer
from rich.console import Console
from rich.table import Table

from ttp_search.errors import CalibrationNotFoundError, InvalidInputError, TTPSearchError

app = typer.Typer(
    help="Training-time-aware search: predict and measure the cost of training.",
    no_args_is_help=True,
)
time_app = typer.Typer(
    help="Seconds per training step: calibrate, predict, measure.", no_args_is_help=True
)
app.add_typer(time_app, name="time")
steps_app = typer.Typer(
    help="Steps to a target loss, predicted without training (linearized SDE).",
    no_args_is_help=True,
)
app.add_typer(steps_app, name="steps")

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

ModelArg = Annotated[str, typer.Argument(help="torchvision:NAME or path/to/file.py:FACTORY")]
InputOpt = Annotated[str, typer.Option("--input", help="input shape without batch, e.g. 3x32x32")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="batch size (> 0)")]
OptimizerOpt = Annotated[str, typer.Option("--optimizer", help="sgd | momentum | adam | adamw")]
KwargsOpt = Annotated[
    str, typer.Option("--model-kwargs", help="JSON, e.g. '{\"num_classes\": 10}'")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
DeviceOpt = Annotated[str, typer.Option("--device", help="device to calibrate/predict for")]


def _fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _typed_errors(command: Callable) -> Callable:
    """Turn the library's typed errors into one line on stderr and exit status 2.

    Commands raise :class:`TTPSearchError` for anything the user can fix; nothing else is
    caught, so a bug still shows its traceback.
    """

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CalibrationNotFoundError as exc:
            _fail(f"{exc}\n  e.g. `ttp time calibrate --budget-s 120`")
        except TTPSearchError as exc:
            _fail(str(exc))

    return run


def _kwargs(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--model-kwargs {text!r} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"--model-kwargs must be a JSON object, got {text!r}")
    return value


def _device(text: str) -> torch.device:
    """``--device``, checked against what this machine has."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"--device {text!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {text!r}: torch sees no CUDA device on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise InvalidInputError(
            f"--device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"--device {text!r}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"--device {text!r}: ttp_search times cpu, cuda and mps devices")
    return device


def _load_weights(net: torch.nn.Module, path: str) -> None:
    if not Path(path).is_file():
        raise InvalidInputError(f"--weights {path!r} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: not a torch file
        raise InvalidInputError(
            f"--weights {path!r} is not a torch state_dict file (torch.load raised "
            f"{type(exc).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise InvalidInputError(
            f"--weights {path!r} holds a {type(state).__name__}, not a state_dict"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InvalidInputError(f"--weights {path!r} do not fit the model: {exc}") from None


def _json_safe(value):
    """Non-finite floats as ``null`` (JSON has no Infinity or NaN)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _print_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(_json_safe(payload), allow_nan=False, default=float) + "\n")


def _build(model: str, input_shape: str, batch_size: int, model_kwargs: str, device: str):
    from ttp_search.model_specs import load_model, parse_input_shape

    if batch_size <= 0:
        raise InvalidInputError(f"--batch-size must be a positive integer, got {batch_size}")
    shape = parse_input_shape(input_shape)
    target = _device(device)
    net = load_model(model, _kwargs(model_kwargs)).to(target)
    return net, shape


@time_app.command("calibrate")
@_typed_errors
def time_calibrate(
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="seconds to spend measuring")
    ] = 120.0,
    force: Annotated[bool, typer.Option("--force", help="recalibrate even if cached")] = False,
    device: DeviceOpt = "cpu",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Time random layers, networks and optimizer updates on this device and cache the fit."""
    from ttp_search.cost import LayerTimeModel, calibration_path, device_fingerprint
    from ttp_search.cost.calibrate import check_calibration_budget
    from ttp_search.errors import CalibrationError

    check_calibration_budget(budget_s)
    path = calibration_path(device_fingerprint(_device(device)))
    if path.exists() and not force:
        try:
            LayerTimeModel.load(path, device=device)
        except CalibrationError as exc:
            err_console.print(
                f"[yellow]warning:[/] the cached calibration cannot be used ({exc}); "
                "calibrating anew",
                highlight=False,
            )
        else:
            console.print(f"calibration already cached at {path} (use --force to redo it)")
            return
    model = LayerTimeModel.calibrate(budget_s, device=device, seed=seed, progress=True)
    summary = model.data.summary()
    console.print(
        f"calibrated in {summary['elapsed_s']:.0f} s: {summary['op_samples']} op timings "
        f"({summary['distinct_ops']} kinds), {summary['network_samples']} networks, "
        f"{summary['optimizer_samples']} optimizer updates; saved to {model.path}"
    )


@time_app.command("predict")
@_typed_errors
def time_predict(
    model: ModelArg,
    input_shape: InputOpt,
    batch_size: BatchOpt,
    optimizer: OptimizerOpt = "sgd",
    model_kwargs: KwargsOpt = "",
    as_json: JsonOpt = False,
    device: DeviceOpt = "cpu",
    top: Annotated[int, typer.Option("--top", help="layers to show")] = 12,
    calibration_budget_s: Annotated[
        float,
        typer.Option("--calibration-budget-s", help="seconds to calibrate on first use"),
    ] = 120.0,
) -> None:
    """Predict seconds per training step without running the model (the first use on a
    device calibrates it, once, with a progress bar)."""
    from ttp_search.cost import LayerTimeModel, UnsupportedOpWarning
    from ttp_search.cost.calibrate import check_calibration_budget

    check_calibration_budget(calibration_budget_s)
    net, shape = _build(model, input_shape, batch_size, model_kwargs, device)
    # The first use on a device calibrates it and says so on stderr (stdout stays JSON).
    ltm = LayerTimeModel.load_or_calibrate(calibration_budget_s, device=device)
    if ltm.drift is not None and ltm.slowdown != 1.0:
        err_console.print(ltm.drift.text(), highlight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        pred = ltm.predict(net, shape, batch_size, optimizer)
    if pred.unsupported:
        err_console.print(
            f"[yellow]warning:[/] priced by the generic FLOPs/bytes fallback: "
            f"{', '.join(pred.unsupported)}",
            highlight=False,
        )
    if as_json:
        out = pred.to_dict()
        out["model"] = model
        _print_json(out)
        return
    table = Table(title=f"{model}  batch {batch_size}  input {input_shape}  {pred.optimizer}")
    for col in ("layer", "type", "ops", "GFLOP", "fwd ms", "bwd ms", "total ms", "share"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in pred.breakdown.sort_values("time_s", ascending=False).head(top).itertuples():
        table.add_row(
            row.layer,
            str(row.module_type),
            str(row.n_ops),
            f"{row.flops / 1e9:.3f}",
            f"{row.forward_s * 1e3:.2f}",
            f"{row.backward_s * 1e3:.2f}",
            f"{row.time_s * 1e3:.2f}",
            f"{row.share:.1%}",
        )
    console.print(table)
    console.print(
        f"predicted step time: [bold]{pred.step_time_s * 1e3:.2f} ms[/] "
        f"(80% interval {pred.low_s * 1e3:.2f}–{pred.high_s * 1e3:.2f} ms) on {pred.device}, "
        f"{pred.threads} threads; {pred.flops / 1e9:.2f} GFLOP, {pred.n_params:,} parameters"
    )


@time_app.command("measure")
@_typed_errors
def time_measure(
    model: ModelArg,
    input_shape: InputOpt,
    batch_size: BatchOpt,
    optimizer: OptimizerOpt = "sgd",
    model_kwargs: KwargsOpt = "",
    as_json: JsonOpt = False,
    device: DeviceOpt = "cpu",
    repeats: Annotated[int, typer.Option("--repeats", help="timed steps (median)")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed steps first")] = 2,
) -> None:
    """Run real training steps and report their median time (ground truth)."""
    from ttp_search.cost import measure_step_time

    if repeats < 1 or warmup < 0:
        raise InvalidInputError(
            f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}"
        )
    net, shape = _build(model, input_shape, batch_size, model_kwargs, device)
    try:
        result = measure_step_time(
            net, shape, batch_size, optimizer, warmup=warmup, repeats=repeats, max_total_s=None
        )
    except RuntimeError as exc:  # the model's own error, e.g. out of memory
        raise InvalidInputError(f"{model} failed a training step: {exc}") from None
    if as_json:
        payload = {
            "model": model,
            "step_time_s": result.step_time_s,
            "samples_s": result.samples_s,
            "device": result.device,
            "threads": result.threads,
            "optimizer": result.optimizer,
            "batch_size": result.batch_size,
            "input_shape": list(result.input_shape),
        }
        _print_json(payload)
        return
    console.print(
        f"measured step time: [bold]{result.step_time_s * 1e3:.2f} ms[/] (median of "
        f"{len(result.samples_s)}) on {result.device}, {torch.get_num_threads()} threads"
    )


@steps_app.command("predict")
@_typed_errors
def steps_predict(
    model: ModelArg,
    data: Annotated[str, typer.Option("--data", help="digits | mnist1d (bundled)")] = "digits",
    loss: Annotated[str, typer.Option("--loss", help="ce | mse (one-hot targets)")] = "ce",
    lr: Annotated[float, typer.Option("--lr", help="learning rate (> 0)")] = 0.01,
    batch_size: BatchOpt = 32,
    momentum: Annotated[float, typer.Option("--momentum")] = 0.0,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.0,
    steps: Annotated[int, typer.Option("--steps", help="steps of the predicted curve")] = 1000,
    schedule: Annotated[str, typer.Option("--schedule", help="constant|linear|cosine|step")] = (
        "constant"
    ),
    target_loss: Annotated[float | None, typer.Option("--target-loss")] = None,
    target_accuracy: Annotated[float | None, typer.Option("--target-accuracy")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples")] = 512,
    weights: Annotated[str | None, typer.Option("--weights", help="state_dict .pt file")] = None,
    model_kwargs: KwargsOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Predict the fine-tuning curve and the steps to a target, without training."""
    from ttp_search.data import digits, mnist1d
    from ttp_search.dynamics import LinearizedSDE, schedule_factors
    from ttp_search.dynamics.hyperparameters import check_hyperparameters
    from ttp_search.model_specs import load_model

    if data not in ("digits", "mnist1d"):
        raise InvalidInputError(f"--data must be digits or mnist1d, got {data!r}")
    if loss not in ("ce", "mse"):
        raise InvalidInputError(f"--loss must be ce or mse, got {loss!r}")
    # The cheap checks first: the Jacobian takes seconds.
    check_hyperparameters(lr, batch_size, momentum, weight_decay, steps)
    schedule_factors(schedule, 1)
    net = load_model(model, _kwargs(model_kwargs))
    if weights:
        _load_weights(net, weights)
    x, y, _, _ = digits() if data == "digits" else mnist1d()
    if loss == "mse":
        y = torch.nn.functional.one_hot(y, int(y.max()) + 1).float()
    try:
        sde = LinearizedSDE(net.float(), x, y, loss=loss, num_samples=num_samples)
    except RuntimeError as exc:  # the model cannot take this data set's inputs
        raise InvalidInputError(
            f"{model} cannot run on {data} inputs {tuple(x.shape[1:])}: {exc}"
        ) from None
    hp = dict(lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
    curve = sde.predict_curve(**hp, steps=steps, schedule=schedule, points=11)
    estimates = {}
    if target_loss is not None:
        # The network itself at the weights the prediction reaches: says when it leaves the
        # linear regime (one backward and two forward passes over the samples).
        estimates["loss"] = sde.steps_to_loss(
            target_loss, **hp, schedule=schedule, check_linearity=True
        )
    if target_accuracy is not None:
        estimates["accuracy"] = sde.steps_to_accuracy(target_accuracy, **hp, schedule=schedule)
    if as_json:
        out = {
            "model": model,
            "data": data,
            "loss": loss,
            "weight_decay_mode": curve.attrs["weight_decay"],
            "curve": curve.to_dict(orient="list"),
            # steps, low and high are null where the target is never reached ("reached"
            # false): JSON has no Infinity.
            "steps_to": {
                k: {
                    "target": e.target,
                    "reached": math.isfinite(e.steps),
                    "steps": e.steps,
                    "low": e.low,
                    "high": e.high,
                    "stable": e.stable,
                    "trusted": e.trusted,
                    # null when not checked, or when the network's loss is not finite there
                    "network_over_linear_loss": (
                        e.linearity.loss_ratio
                        if e.linearity is not None and math.isfinite(e.linearity.loss_ratio)
                        else None
                    ),
                }
                for k, e in estimates.items()
            },
        }
        _print_json(out)
        return
    table = Table(title=f"{model} on {data}: lr {lr:g}, batch {batch_size}, {schedule}")
    for col in ("step", "loss", "80% band", "accuracy"):
        table.add_column(col, justify="right")
    for r in curve.itertuples():
        acc = "" if r.accuracy != r.accuracy else f"{r.accuracy:.3f}"
        table.add_row(str(r.step), f"{r.loss:.4f}", f"{r.loss_low:.4f}–{r.loss_high:.4f}", acc)
    console.print(table)
    for kind, e in estimates.items():
        console.print(
            f"steps to {kind} {e.target:g}: [bold]{e.steps:g}[/] (80% interval {e.low:g}–{e.high:g})"
        )
        if not e.stable:
            console.print(
                "[yellow]the learning rate is past the edge of stability: these are the linear "
                "model's steps, not the network's[/]"
            )
        if e.linearity is not None and not e.linearity.holds:
            console.print(
                f"[yellow]at the weights the prediction reaches, the network's loss is "
                f"{e.linearity.loss_ratio:.3g}x its linearization's: fine-tuning leaves the "
                "linear regime, so these steps are the linear model's, not the network's[/]"
            )


@app.command("report")
@_typed_errors
def report_study(
    storage: Annotated[str, typer.Option("--storage", help="the study's Optuna storage URL")],
    study_name: Annotated[
        str | None,
        typer.Option("--study-name", help="the study (default: the storage's only study)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="also write trials.csv and the plots here")
    ] = None,
) -> None:
    """Print the trials table and the summary of an Optuna study (any study: one that did
    not use ttp_search gets its values, states, seconds and best trial)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from ttp_search.optuna import print_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).exists():
        _fail(f"no SQLite database at {storage.removeprefix('sqlite:///')} (from --storage)")
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except SQLAlchemyError as err:
        _fail(f"cannot open the storage {storage!r}: {type(err).__name__}: {err.args[0]}")
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        _fail(f"no study named {study_name!r} in {storage}; it holds {names}")
    except ValueError as err:  # several studies and no name, or a malformed URL
        _fail(f"cannot open a study in {storage!r}: {err}")
    print_report(study, out=out, console=console)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
