"""Benchmark the layer-time model against measured training steps (make bench-cost).

Ground truth: real training steps (warm-up, median of repeats) of 12 torchvision
classifiers and 3 models defined here, at 3x32x32 and 3x64x64, batch sizes 1/8/32/64,
SGD and Adam. None of these models is timed during calibration. Our model, FLOP-linear
regression and a roofline model (both fitted on the same calibration data) are compared
side by side; the table goes into BENCHMARKS.md and a predicted-vs-measured plot into docs/.

    python scripts/bench_cost_model.py                 # full grid, cached calibration
    python scripts/bench_cost_model.py --quick         # a few cases, for a smoke run
    python scripts/bench_cost_model.py --split held-out   # architectures never tuned on
    python scripts/bench_cost_model.py --split fresh      # architectures written later
    python scripts/bench_cost_model.py --split demo       # the main demo study's trials
    python scripts/bench_cost_model.py --split sequence   # 1-D models written later still

The held-out split (`scripts/held_out_models.py`: grouped/depthwise convolutions, wide MLPs,
token mixing, concatenations, upsampling, PyTorch's Transformer encoder, the demo's 1-D CNNs)
is scored in a section of its own and is never used to choose the model or its constants;
so is the demo split, 24 configurations of the main study's search space as its random
sampler draws them, trained with the study's optimizer. The fresh split
(`scripts/fresh_models.py`) was written after the held-out split had steered changes, and is
scored apart in the same way; so is the sequence split (`scripts/sequence_models.py`), 1-D
models written after the held-out split's depthwise 1-D CNN had steered a change.
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
import torchvision
from fresh_models import fresh_builders
from held_out_models import held_out_builders
from sequence_models import CHANNELS, LENGTH, sequence_builders
from torch import nn

from ttp_search.cost import LayerTimeModel, device_fingerprint
from ttp_search.cost.evaluate import METHODS, Case, evaluate, summarize

ROOT = Path(__file__).resolve().parents[1]

TORCHVISION = [
    "resnet18",
    "vgg11",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "squeezenet1_1",
    "mnasnet0_5",
    "convnext_tiny",
    "vit_b_16",
    "resnet50",
]


class MLP(nn.Module):
    def __init__(self, in_features: int, width: int = 1024, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, classes),
        )

    def forward(self, x):
        return self.net(x)


class PatchTransformer(nn.Module):
    """A small Transformer encoder written out by hand (pre-norm, SDPA attention)."""

    def __init__(self, image: int, patch: int = 4, dim: int = 192, depth: int = 4, heads: int = 3):
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "n1": nn.LayerNorm(dim),
                    "qkv": nn.Linear(dim, 3 * dim),
                    "proj": nn.Linear(dim, dim),
                    "n2": nn.LayerNorm(dim),
                    "mlp": nn.Sequential(
                        nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
                    ),
                }
            )
            for _ in range(depth)
        )
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        b, t, d = x.shape
        for blk in self.blocks:
            q, k, v = (
                blk["qkv"](blk["n1"](x))
                .view(b, t, 3, self.heads, d // self.heads)
                .permute(2, 0, 3, 1, 4)
            )
            a = nn.functional.scaled_dot_product_attention(q, k, v)
            x = x + blk["proj"](a.transpose(1, 2).reshape(b, t, d))
            x = x + blk["mlp"](blk["n2"](x))
        return self.head(x.mean(1))


class CNN1D(nn.Module):
    """A 1D CNN over the image read as a 3-channel sequence."""

    def __init__(self, width: int = 64):
        super().__init__()
        layers, c = [], 3
        for w in (width, width * 2, width * 4):
            layers += [nn.Conv1d(c, w, 5, padding=2), nn.BatchNorm1d(w), nn.ReLU(), nn.MaxPool1d(4)]
            c = w
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, 10))

    def forward(self, x):
        return self.net(x.flatten(2))


def _torchvision(name: str, image: int) -> nn.Module:
    kwargs = {"num_classes": 10}
    if name.startswith("vit"):
        kwargs["image_size"] = image
    return torchvision.models.get_model(name, weights=None, **kwargs)


def build_cases(quick: bool) -> list[Case]:
    models = [*TORCHVISION[:3], "mlp"] if quick else [*TORCHVISION, "mlp", "transformer", "cnn1d"]
    images = (32,) if quick else (32, 64)
    batches = (8,) if quick else (1, 8, 32, 64)
    optimizers = ("sgd", "adam")
    cases = []
    for name in models:
        for image in images:
            if name == "mlp":
                build = functools.partial(MLP, 3 * image * image)
            elif name == "transformer":
                build = functools.partial(PatchTransformer, image)
            elif name == "cnn1d":
                build = CNN1D
            else:
                build = functools.partial(_torchvision, name, image)
            for batch in batches:
                for opt in optimizers:
                    cases.append(Case(name, build, (3, image, image), batch, opt))
    return cases


def _architecture_cases(
    builders: dict, quick: bool, input_shape: tuple[int, ...] = (3, 32, 32)
) -> list[Case]:
    """Every architecture at ``input_shape``, batch 8 and 32, SGD and Adam (``quick``: three,
    batch 8)."""
    names = list(builders)[:3] if quick else list(builders)
    batches = (8,) if quick else (8, 32)
    return [
        Case(name, builders[name], input_shape, batch, opt)
        for name in names
        for batch in batches
        for opt in ("sgd", "adam")
    ]


def build_held_out_cases(quick: bool) -> list[Case]:
    """The held-out split (scripts/held_out_models.py): scored apart."""
    return _architecture_cases(held_out_builders(32), quick)


def build_fresh_cases(quick: bool) -> list[Case]:
    """The fresh split (scripts/fresh_models.py): written later than the held-out split,
    scored apart, never tuned on."""
    return _architecture_cases(fresh_builders(32), quick)


def build_sequence_cases(quick: bool) -> list[Case]:
    """The sequence split (scripts/sequence_models.py): 1-D models at (64, 256), written
    later than the fresh split, scored apart, never tuned on."""
    return _architecture_cases(sequence_builders(), quick, (CHANNELS, LENGTH))


def build_demo_cases(quick: bool) -> list[Case]:
    """The main demo's trials (studies/cost_aware_nas.py): configurations its search space
    gives a random sampler, each with the study's own optimizer. Scored apart, never tuned on.
    """
    sys.path.insert(0, str(ROOT / "studies"))
    import optuna
    from cost_aware_nas import OPTIMIZER, SEARCH_SPACE, build_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cases = []
    for _ in range(4 if quick else 24):
        p = study.ask(SEARCH_SPACE).params
        name = f"nas d{p['depth']} w{p['width']} k{p['kernel']}"
        build = functools.partial(build_model, p, (1, 40), 10)
        cases.append(Case(name, build, (1, 40), p["batch_size"], OPTIMIZER))
    return cases


def _drift_line(ltm: LayerTimeModel) -> str:
    """What the drift check at load saw and whether it rescaled the predictions below."""
    if ltm.drift is None:
        return "Drift check at load: none (a calibration made in this run)."
    applied = f"applied, x {ltm.slowdown:.2f}" if ltm.slowdown != 1.0 else "not applied"
    return f"Drift check at load: {ltm.drift.text()}; {applied}."


def markdown(
    summary: pd.DataFrame,
    results: pd.DataFrame,
    ltm: LayerTimeModel,
    device: str,
    wall_s: float | None,
    cv: dict,
) -> str:
    ok = results[results.status == "ok"]
    info = ltm.data.summary()
    lines = [
        f"Device: **{device}**, {torch.get_num_threads()} threads, torch {torch.__version__}. "
        f"Calibration: {info['elapsed_s']:.0f} s ({info['op_samples']} op timings of "
        f"{info['distinct_ops']} kinds, {info['network_samples']} random networks, "
        f"{info['optimizer_samples']} optimizer updates). Cases: {len(ok)} measured, "
        f"{len(results) - len(ok)} not trainable (batch norm with one value per channel). "
        + (f"Benchmark wall time {wall_s / 60:.1f} min." if wall_s else ""),
        "",
        _drift_line(ltm),
        "",
        "| method | median APE | mean APE | within ±10% | within ±25% | Spearman ρ | 80% interval coverage |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.itertuples():
        cov = "" if pd.isna(r.interval_coverage) else f"{r.interval_coverage:.0%}"
        lines.append(
            f"| {r.method} | {100 * r.median_ape:.1f}% | {100 * r.mean_ape:.1f}% | {r.within_10:.0%} | "
            f"{r.within_25:.0%} | {r.spearman:.3f} | {cov} |"
        )
    lines += [
        "",
        f"Op level, 5-fold cross-validation on the calibration's {cv['samples']} op timings "
        f"(held-out layer configurations, Justus et al.'s 10.9% mean): median APE "
        f"{100 * cv['median_ape']:.1f}%, mean APE {100 * cv['mean_ape']:.1f}%, "
        f"{cv['within_10']:.0%} within ±10%.",
        "",
        _latency_line(ok),
        "",
        "Per model (layer-time median APE over its cases):",
        "",
        "| model | cases | median APE | worst APE | median latency s | first prediction s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ok = ok.assign(ape=(ok.layer_time_s - ok.measured_s).abs() / ok.measured_s)
    for name, g in ok.groupby("model", sort=False):
        cold = g.latency_cold_s.median() if "latency_cold_s" in g else float("nan")
        lines.append(
            f"| {name} | {len(g)} | {100 * g.ape.median():.1f}% | {100 * g.ape.max():.1f}% "
            f"| {g.latency_s.median():.3f} | {cold:.3f} |"
        )
    return "\n".join(lines)


def _latency_line(ok: pd.DataFrame) -> str:
    lat = ok["latency_s"]
    line = (
        f"Prediction latency per call (trace + predict) in this sweep: median "
        f"{statistics.median(lat):.3f} s, max {lat.max():.3f} s ({ok.loc[lat.idxmax(), 'model']})."
    )
    if "latency_cold_s" not in ok:
        return line
    # The target is per model, as a fresh process's first prediction of it sees it (the
    # tracer's memo empty); within a sweep the memo holds the cases before.
    cold = ok.groupby("model", sort=False)["latency_cold_s"].median()
    return line + (
        f" A fresh process's first prediction of each model: median over models "
        f"{cold.median():.3f} s, max {cold.max():.3f} s ({cold.idxmax()})."
    )


def plot(results: pd.DataFrame, path: Path, device: str) -> None:
    ok = results[results.status == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), sharex=True, sharey=True)
    lo, hi = ok.measured_s.min() / 2, ok.measured_s.max() * 2
    for ax, method in zip(axes, METHODS, strict=True):
        if method == "layer_time":
            ax.errorbar(
                ok.measured_s,
                ok.layer_time_s,
                yerr=[ok.layer_time_s - ok.low_s, ok.high_s - ok.layer_time_s],
                fmt="o",
                ms=3,
                alpha=0.6,
                elinewidth=0.5,
            )
        else:
            ax.plot(ok.measured_s, ok[f"{method}_s"], "o", ms=3, alpha=0.6)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        for f in (0.9, 1.1):
            ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
        ax.set(
            xscale="log",
            yscale="log",
            xlim=(lo, hi),
            ylim=(lo, hi),
            title=method,
            xlabel="measured s/step",
        )
    axes[0].set_ylabel("predicted s/step")
    fig.suptitle(f"Training-step time, predicted vs measured ({device})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_section(path: Path, key: str, body: str) -> None:
    """Replace (or append) the block between <!-- key --> markers in BENCHMARKS.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"<!-- {key} -->\n{body}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->", re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a handful of cases")
    parser.add_argument(
        "--split",
        choices=("benchmark", "held-out", "fresh", "sequence", "demo"),
        default="benchmark",
        help="the 15 benchmark models, the held-out, fresh or sequence architectures, or the "
        "demo study's trials (all but the first scored apart)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--budget-s", type=float, default=280.0, help="calibration budget if none is cached"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--from-csv", type=Path, help="re-render from a saved results CSV")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    ltm = LayerTimeModel.load_or_calibrate(args.budget_s, device=args.device)
    fp = device_fingerprint(args.device)
    device = f"{fp['device_name']}"
    builders = {
        "benchmark": build_cases,
        "held-out": build_held_out_cases,
        "fresh": build_fresh_cases,
        "sequence": build_sequence_cases,
        "demo": build_demo_cases,
    }
    if args.from_csv is not None:
        # Re-render the tables and plot from a finished run's measurements.
        results = pd.read_csv(args.from_csv)
    else:
        cases = builders[args.split](args.quick)
        results = evaluate(ltm, cases, device=args.device, repeats=args.repeats)
    summary = summarize(results)
    wall = None if args.from_csv is not None else time.perf_counter() - start
    tag = ("gpu" if args.device.startswith("cuda") else "cpu") + (
        "" if args.split == "benchmark" else f"-{args.split}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_csv is None:
        results.to_csv(args.out / f"bench_cost_{tag}.csv", index=False)
    body = markdown(summary, results, ltm, device, wall, ltm.cross_validate_ops())
    print(body)
    if not args.no_write and not args.quick:
        img = ROOT / "docs" / f"bench_cost_{tag}.png"
        plot(results, img, device)
        write_section(
            ROOT / "BENCHMARKS.md",
            f"bench-cost:{tag}",
            body + f"\n\n![predicted vs measured](docs/{img.name})",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
