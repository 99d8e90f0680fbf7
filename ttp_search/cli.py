"""The ``ttp`` command."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from ttp_search.errors import CalibrationNotFoundError, TTPSearchError

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


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _kwargs(text: str) -> dict:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        _fail(f"--model-kwargs {text!r} is not valid JSON: {exc}")
    if not isinstance(value, dict):
        _fail(f"--model-kwargs must be a JSON object, got {text!r}")
    return value


def _build(model: str, input_shape: str, batch_size: int, model_kwargs: str, device: str):
    from ttp_search.model_specs import load_model, parse_input_shape

    if batch_size <= 0:
        _fail(f"--batch-size must be a positive integer, got {batch_size}")
    shape = parse_input_shape(input_shape)
    net = load_model(model, _kwargs(model_kwargs)).to(device)
    return net, shape


@time_app.command("calibrate")
def time_calibrate(
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="seconds to spend measuring")
    ] = 240.0,
    force: Annotated[bool, typer.Option("--force", help="recalibrate even if cached")] = False,
    device: DeviceOpt = "cpu",
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Time random layers, networks and optimizer updates on this device and cache the fit."""
    from ttp_search.cost import LayerTimeModel, calibration_path, device_fingerprint

    try:
        path = calibration_path(device_fingerprint(device))
        if path.exists() and not force:
            console.print(f"calibration already cached at {path} (use --force to redo it)")
            return
        model = LayerTimeModel.calibrate(budget_s, device=device, seed=seed, progress=True)
    except TTPSearchError as exc:
        _fail(str(exc))
    summary = model.data.summary()
    console.print(
        f"calibrated in {summary['elapsed_s']:.0f} s: {summary['op_samples']} op timings "
        f"({summary['distinct_ops']} kinds), {summary['network_samples']} networks, "
        f"{summary['optimizer_samples']} optimizer updates; saved to {model.path}"
    )


@time_app.command("predict")
def time_predict(
    model: ModelArg,
    input_shape: InputOpt,
    batch_size: BatchOpt,
    optimizer: OptimizerOpt = "sgd",
    model_kwargs: KwargsOpt = "",
    as_json: JsonOpt = False,
    device: DeviceOpt = "cpu",
    top: Annotated[int, typer.Option("--top", help="layers to show")] = 12,
) -> None:
    """Predict seconds per training step without running the model."""
    from ttp_search.cost import LayerTimeModel, UnsupportedOpWarning

    try:
        net, shape = _build(model, input_shape, batch_size, model_kwargs, device)
        ltm = LayerTimeModel.load(device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnsupportedOpWarning)
            pred = ltm.predict(net, shape, batch_size, optimizer)
    except CalibrationNotFoundError as exc:
        _fail(f"{exc}\n  e.g. `ttp time calibrate --budget-s 240`")
    except TTPSearchError as exc:
        _fail(str(exc))
    if pred.unsupported:
        err_console.print(
            f"[yellow]warning:[/] priced by the generic FLOPs/bytes fallback: "
            f"{', '.join(pred.unsupported)}",
            highlight=False,
        )
    if as_json:
        out = pred.to_dict()
        out["model"] = model
        sys.stdout.write(json.dumps(out, default=float) + "\n")
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

    try:
        net, shape = _build(model, input_shape, batch_size, model_kwargs, device)
        if repeats < 1 or warmup < 0:
            _fail(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")
        result = measure_step_time(
            net, shape, batch_size, optimizer, warmup=warmup, repeats=repeats, max_total_s=None
        )
    except TTPSearchError as exc:
        _fail(str(exc))
    except RuntimeError as exc:
        _fail(f"{model} failed a training step: {exc}")
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
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    console.print(
        f"measured step time: [bold]{result.step_time_s * 1e3:.2f} ms[/] (median of "
        f"{len(result.samples_s)}) on {result.device}, {torch.get_num_threads()} threads"
    )


@steps_app.command("predict")
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
    from ttp_search.dynamics.sde import check_hyperparameters
    from ttp_search.model_specs import load_model

    if data not in ("digits", "mnist1d"):
        _fail(f"--data must be digits or mnist1d, got {data!r}")
    if loss not in ("ce", "mse"):
        _fail(f"--loss must be ce or mse, got {loss!r}")
    try:  # the cheap checks first: the Jacobian takes seconds
        check_hyperparameters(lr, batch_size, momentum, weight_decay, steps)
        schedule_factors(schedule, 1)
    except TTPSearchError as exc:
        _fail(str(exc))
    try:
        net = load_model(model, _kwargs(model_kwargs))
        if weights:
            try:
                net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            except (OSError, RuntimeError) as exc:
                _fail(f"--weights {weights!r} could not be loaded: {exc}")
        x, y, _, _ = digits() if data == "digits" else mnist1d()
        if loss == "mse":
            y = torch.nn.functional.one_hot(y, int(y.max()) + 1).float()
        sde = LinearizedSDE(net.float(), x, y, loss=loss, num_samples=num_samples)
        hp = dict(lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
        curve = sde.predict_curve(**hp, steps=steps, schedule=schedule, points=11)
        estimates = {}
        if target_loss is not None:
            estimates["loss"] = sde.steps_to_loss(target_loss, **hp, schedule=schedule)
        if target_accuracy is not None:
            estimates["accuracy"] = sde.steps_to_accuracy(target_accuracy, **hp, schedule=schedule)
    except TTPSearchError as exc:
        _fail(str(exc))
    except RuntimeError as exc:  # the model cannot take this data set's inputs
        _fail(f"{model} cannot run on {data} inputs {tuple(x.shape[1:])}: {exc}")
    if as_json:
        out = {
            "model": model,
            "data": data,
            "loss": loss,
            "weight_decay_mode": curve.attrs["weight_decay"],
            "curve": curve.to_dict(orient="list"),
            "steps_to": {
                k: {"target": e.target, "steps": e.steps, "low": e.low, "high": e.high}
                for k, e in estimates.items()
            },
        }
        sys.stdout.write(json.dumps(out, default=float) + "\n")
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
