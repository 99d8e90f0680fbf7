"""Benchmark the linearized SDE's steps-to-target against real SGD fine-tuning (make bench-steps).

Pretraining happens here (no downloads), for three backbones (``steps_setups.py``): a small
CNN on digits, a 1-D CNN on MNIST-1D and torchvision's ResNet-18 at a quarter width, each
pretrained on classes 0-4; a fresh head is linear-probed on classes 5-9 (with the
configuration's loss) and then the whole network is fine-tuned on them (LP-FT). Ground truth:
real SGD fine-tuning of every configuration of a grid (learning rate x batch size x momentum x
loss, plus weight decay and a linear-decay schedule), 2 seeds, recording the full training
loss every few steps; the true steps to a target are the first step at which the mean over
seeds reaches it. Targets: 50%, 25% and 10% of the initial loss (where reached).
Baselines side by side: (i) a reference configuration's measured steps rescaled by the
effective learning rate lr/(1 - momentum); (ii) the measured loss curve's first 10% of the steps the
target took, extrapolated (ttp_search.curves.extrapolate) until it reaches the target.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cost_model import write_section
from steps_setups import SETUPS, Setup, targets_for

from ttp_search.curves import extrapolate
from ttp_search.dynamics import (
    LinearizedSDE,
    ModelErrorInterval,
    StepsEstimate,
    schedule_factors,
)

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.5, 0.25, 0.1)


def train_curve(model, x, y, cfg, seed, setup: Setup) -> np.ndarray:
    """Full-training-set loss every ``setup.every`` steps of real SGD fine-tuning (the model
    stays in eval mode: BatchNorm statistics frozen, as in the linearization)."""
    net = _copy(model)
    opt = torch.optim.SGD(
        net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["wd"]
    )
    factors = schedule_factors(cfg["schedule"], setup.max_steps)
    gen = torch.Generator().manual_seed(seed)
    t = targets_for(cfg["loss"], y)
    lossf = F.cross_entropy if cfg["loss"] == "ce" else F.mse_loss
    out = []
    for step in range(setup.max_steps + 1):
        if step % setup.every == 0:
            with torch.no_grad():
                out.append(lossf(net(x), t).item())
        if step == setup.max_steps:
            break
        for group in opt.param_groups:
            group["lr"] = cfg["lr"] * factors[step]
        perm = torch.randperm(len(y), generator=gen)[: cfg["batch_size"]]
        loss = lossf(net(x[perm]), t[perm])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return np.array(out)


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def first_step(curve: np.ndarray, target: float, every: int) -> float:
    hit = np.flatnonzero(curve <= target)
    return float(hit[0] * every) if hit.size else math.inf


def extrapolation_baseline(curve, target: float, true_steps: float, setup: Setup) -> float:
    """Extrapolate the measured curve's first 10% of the steps the target really took."""
    n = int(0.1 * true_steps) // setup.every + 1
    if n < 3:
        return math.inf  # too few recorded points to fit anything: counted as a miss
    steps = np.arange(n) * setup.every + 1.0
    seen = curve[:n]

    def end(budget):
        return extrapolate(steps, seen, budget).mean

    lo, hi = float(steps[-1]), float(setup.max_steps * 8)
    if end(hi) > target:
        return math.inf
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if end(mid) > target else (lo, mid)
    return hi


def grid() -> list[dict]:
    cfgs = [
        {"lr": lr, "batch_size": bs, "momentum": m, "wd": 0.0, "schedule": "constant", "loss": lo}
        for lr, bs, m, lo in itertools.product(
            (0.01, 0.03, 0.1), (16, 64), (0.0, 0.9), ("ce", "mse")
        )
    ]
    cfgs += [
        {
            "lr": lr,
            "batch_size": 32,
            "momentum": 0.9,
            "wd": 1e-3,
            "schedule": "constant",
            "loss": lo,
        }
        for lr, lo in itertools.product((0.01, 0.03, 0.1), ("ce", "mse"))
    ]
    cfgs += [
        {"lr": lr, "batch_size": 32, "momentum": 0.9, "wd": 0.0, "schedule": "linear", "loss": lo}
        for lr, lo in itertools.product((0.01, 0.03, 0.1), ("ce", "mse"))
    ]
    return cfgs


def predict(sde: LinearizedSDE, cfg: dict, target: float, setup: Setup) -> StepsEstimate:
    if cfg["schedule"] == "constant":
        return sde.steps_to_loss(
            target,
            lr=cfg["lr"],
            batch_size=cfg["batch_size"],
            momentum=cfg["momentum"],
            weight_decay=cfg["wd"],
            max_steps=setup.max_steps * 4,
        )
    # The linear run decays over max_steps: predict its curve and read the target off it.
    c = sde.predict_curve(
        cfg["lr"],
        cfg["batch_size"],
        cfg["momentum"],
        cfg["wd"],
        setup.max_steps,
        cfg["schedule"],
        points=setup.max_steps // setup.every + 1,
    )
    # The flag as steps_to_loss sets it: the schedule's peak rate against the edge.
    peak = cfg["lr"] * float(schedule_factors(cfg["schedule"], setup.max_steps).max())
    return StepsEstimate(
        first_step(c.loss.to_numpy(), target, setup.every),
        first_step(c.loss_low.to_numpy(), target, setup.every),
        first_step(c.loss_high.to_numpy(), target, setup.every),
        target,
        c.attrs["weight_decay"],
        stable=sde.edge_ratio(peak, cfg["momentum"], cfg["wd"]) <= 1.0,
    )


def ground_truth(setup: Setup, models, data, seeds: int) -> pd.DataFrame:
    """Real SGD fine-tuning of every configuration: the (configuration, target) cases reached."""
    rows = []
    for i, cfg in enumerate(tqdm(grid(), desc=f"fine-tuning {setup.name} (ground truth)")):
        x, y = data[cfg["loss"]]
        t0 = time.perf_counter()
        runs = [train_curve(models[cfg["loss"]], x, y, cfg, s, setup) for s in range(seeds)]
        curves = np.mean(runs, 0)
        train_s = (time.perf_counter() - t0) / seeds
        for frac in FRACTIONS:
            target = frac * curves[0]
            true = first_step(curves, target, setup.every)
            if math.isfinite(true):
                rows.append(
                    {
                        **cfg,
                        "config": i,
                        "fraction": frac,
                        "target": target,
                        "true_steps": true,
                        "extrap_steps": extrapolation_baseline(curves, target, true, setup),
                        "train_to_target_s": train_s * true / setup.max_steps,
                    }
                )
    columns = [*grid()[0], "config", "fraction", "target", "true_steps", "extrap_steps"]
    df = pd.DataFrame(rows, columns=[*columns, "train_to_target_s"])
    # Baseline (i): the reference configuration's steps rescaled by the effective lr.
    eff = df.lr / (1 - df.momentum)
    df["rescale_steps"] = np.nan  # where the grid lacks the reference
    for _, g in df.groupby(["loss", "fraction"]):
        ref = g[(g.lr == 0.03) & (g.batch_size == 64) & (g.momentum == 0.0) & (g.wd == 0)]
        if len(ref):
            r = ref.iloc[0]
            df.loc[g.index, "rescale_steps"] = r.true_steps * (r.lr / eff[g.index])
    return df


def run(
    setup: Setup, seeds: int, num_samples: int, truth_cache: Path | None = None
) -> tuple[pd.DataFrame, dict, dict]:
    """One backbone's cases with ground truth and the SDE's predictions, its pretrained
    models and data (by loss).

    ``truth_cache``: a pickle of the ground truth, written after the first run and read by
    later ones (the fine-tuning runs are most of the benchmark's time).
    """
    models, data, sdes, init_s = {}, {}, {}, {}
    for loss in ("ce", "mse"):
        models[loss], (x, y) = setup.build(loss)
        data[loss] = (x, y)
        t0 = time.perf_counter()
        sdes[loss] = LinearizedSDE(
            _copy(models[loss]), x, targets_for(loss, y), loss=loss, num_samples=num_samples
        )
        init_s[loss] = time.perf_counter() - t0
    if truth_cache is not None and truth_cache.exists():
        df = pd.read_pickle(truth_cache)
    else:
        df = ground_truth(setup, models, data, seeds)
        if truth_cache is not None:
            truth_cache.parent.mkdir(parents=True, exist_ok=True)
            df.to_pickle(truth_cache)
    for col in ("pred_steps", "pred_low", "pred_high", "predict_s", "init_s"):
        df[col] = np.nan
    df["stable"] = True
    for i in tqdm(df.index, desc=f"predictions {setup.name}"):
        cfg = df.loc[i]
        t0 = time.perf_counter()
        est = predict(sdes[cfg["loss"]], cfg, cfg["target"], setup)
        df.loc[i, ["pred_steps", "pred_low", "pred_high", "predict_s", "init_s"]] = (
            est.steps,
            min(est.low, est.high),
            max(est.low, est.high),
            time.perf_counter() - t0,
            init_s[cfg["loss"]],
        )
        # False: past the linear model's edge of stability, "not predictable here" (the
        # estimate's documented meaning), scored apart below as well as with the rest.
        df.loc[i, "stable"] = bool(est.stable)
    df.insert(0, "setup", setup.name)
    df["N"] = len(data["ce"][1])
    return df, models, data


def sweep_samples(
    df: pd.DataFrame, models, data, sizes: dict[str, tuple], setup: Setup, draws: int = 2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How the error moves with the subset size n, with and without the spectrum's
    extrapolation to N (``draws`` random subsets per n), and what the sketch costs (MSE: the
    exact Jacobian at n = N).

    The subsets are sub-blocks of the all-samples Gram (the same Jacobian rows a subset run
    would compute), so they share one sketch; their reference "linear model" is the SDE on all
    N samples with that sketch: the error against it is the subset's and the extrapolation's
    alone, without the linearization's. Returns (table, per-case predictions).
    """
    preds = []
    for loss in ("ce", "mse"):
        if not sizes.get(loss):
            continue
        model, (x, y) = models[loss], data[loss]
        N = len(y)
        t = targets_for(loss, y)
        sketched = LinearizedSDE(_copy(model), x, t, loss=loss, num_samples=N)
        gram = sketched.U @ np.diag(sketched.eigenvalues) @ sketched.U.T
        C = sketched.C
        variants = {(f"{N} (all)", False, 0): sketched}
        if loss == "mse":  # cross-entropy at N costs minutes per variant: MSE shows the sketch
            variants[(f"{N}, exact Jacobian", False, 0)] = LinearizedSDE(
                _copy(model), x, t, loss=loss, num_samples=N, projection_dim=10**7
            )
        for n in sizes[loss]:
            for draw in range(draws):
                idx = np.random.default_rng(draw).permutation(N)[:n]
                r = (idx[:, None] * C + np.arange(C)).ravel()
                args = (gram[np.ix_(r, r)], sketched.f0[idx], sketched.d0[idx], sketched.Y[idx])
                for ext in (False, True):
                    variants[(str(n), ext, draw)] = LinearizedSDE.from_gram(
                        *args, loss=loss, num_data=N, extrapolate=ext
                    )
        cases = df[df.loss == loss]
        for (name, ext, draw), sde in tqdm(variants.items(), desc=f"n sweep ({loss})"):
            for i in cases.index:
                steps = predict(sde, df.loc[i], df.loc[i, "target"], setup).steps
                preds.append(
                    {"loss": loss, "n": name, "extrapolated": ext, "draw": draw, "case": i,
                     "pred_steps": steps, "true_steps": df.true_steps[i]}
                )  # fmt: skip
    preds = pd.DataFrame(preds)
    linear = preds[preds.n.str.endswith("(all)")].set_index(["loss", "case"]).pred_steps
    preds["linear_steps"] = linear.reindex(pd.MultiIndex.from_frame(preds[["loss", "case"]])).values
    rows = []
    for (loss, name, ext), g in preds.groupby(["loss", "n", "extrapolated"], sort=False):
        err = (g.pred_steps - g.true_steps).abs() / g.true_steps
        lin_err = (g.pred_steps - g.linear_steps).abs() / g.linear_steps
        rows.append(
            {
                "loss": loss,
                "n": name,
                "extrapolated to N": "yes" if ext else "no",
                "draws": g.draw.nunique(),
                "cases": len(g),
                "median_rel_error (vs SGD)": float(err.median()),
                "within_20pct (vs SGD)": float((err <= 0.2).mean()),
                "median_ratio pred/SGD": float((g.pred_steps / g.true_steps).median()),
                "median_rel_error (vs linear model at N)": float(lin_err.median()),
            }
        )
    return pd.DataFrame(rows), preds


def _median_error(df: pd.DataFrame) -> float:
    return float(((df.pred_steps - df.true_steps).abs() / df.true_steps).median())


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name, col in (
        ("linearized SDE", "pred_steps"),
        ("rescaled reference", "rescale_steps"),
        ("extrapolated first 10%", "extrap_steps"),
    ):
        err = (df[col] - df.true_steps).abs() / df.true_steps
        rows.append(
            {
                "method": name,
                "cases": int(err.notna().sum()),
                "median_rel_error": float(err.median()),
                "within_20pct": float((err <= 0.2).mean()),
                "p90_rel_error": float(err.quantile(0.9, interpolation="higher")),
            }
        )
    out = pd.DataFrame(rows).set_index("method")
    covered = (df.pred_low <= df.true_steps) & (df.true_steps <= df.pred_high)
    out.loc["linearized SDE", "interval_coverage"] = float(covered.mean())
    # The SDE's set-up (Jacobian, Gram) serves every case of its backbone and loss.
    amortized = df.predict_s + df.init_s / df.groupby(["setup", "loss"]).init_s.transform("size")
    out.loc["linearized SDE", "cost_ratio_median"] = float(
        (df.train_to_target_s / amortized).median()
    )
    return out


def model_error_coverage(df: pd.DataFrame, level: float = 0.8) -> pd.DataFrame:
    """Leave one backbone out: each backbone's cases (one loss at a time) scored with the
    SDE's interval widened by ``ModelErrorInterval`` fitted on the other backbones' cases of
    that loss. A case the SDE calls unreachable is not covered."""
    rows = []
    for (setup, loss), held in df.groupby(["setup", "loss"], sort=False):
        refs = df[(df.setup != setup) & (df.loss == loss)]
        widen = ModelErrorInterval(level).fit(
            list(zip(refs.pred_steps, refs.pred_low, refs.pred_high, strict=True)),
            refs.true_steps.tolist(),
        )
        low, high = (
            np.array(
                [widen.bounds(lo, hi) for lo, hi in zip(held.pred_low, held.pred_high, strict=True)]
            )
            .reshape(-1, 2)
            .T
        )
        finite = np.isfinite(held.pred_high).to_numpy()
        rows.append(
            {
                "held out": setup,
                "loss": loss,
                "cases": len(held),
                "references": widen.n_references_,
                "margin_log": widen.margin_,
                "own coverage": float(((held.pred_low <= held.true_steps)
                                       & (held.true_steps <= held.pred_high)).mean()),
                "widened coverage": float(((low <= held.true_steps) & (held.true_steps <= high)
                                           & finite).mean()),
                "widened width (median high/low)": float(np.median(high[finite] / low[finite])),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    for setup, color in zip(df.setup.unique(), ("C0", "C1", "C2", "C3"), strict=False):
        for loss, marker in (("ce", "o"), ("mse", "s")):
            d = df[(df.setup == setup) & (df.loss == loss)]
            pred = d.pred_steps.replace(np.inf, np.nan)
            ax.scatter(d.true_steps, pred, marker=marker, color=color, label=f"{setup}, {loss}")
    lim = [max(1, df.true_steps.min() / 2), df.true_steps.max() * 4]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.fill_between(lim, [v * 0.8 for v in lim], [v * 1.2 for v in lim], color="k", alpha=0.08)
    ax.set(xscale="log", yscale="log", xlabel="true steps to target", ylabel="predicted steps")
    ax.set_title("Steps to target loss: linearized SDE vs real SGD")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument(
        "--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS), help="backbones"
    )
    parser.add_argument(
        "--sweep-mse", type=int, nargs="*", default=[64, 128, 256, 512], help="subset sizes n"
    )
    # Cross-entropy predictions integrate a 1,024-dimensional ODE (seconds each): fewer sizes.
    parser.add_argument("--sweep-ce", type=int, nargs="*", default=[128, 256])
    parser.add_argument(
        "--truth-cache",
        type=Path,
        help="reuse the ground truth: one pickle per backbone, named after this path",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    frames, sweep = [], None
    sizes = {"mse": tuple(args.sweep_mse), "ce": tuple(args.sweep_ce)}
    for name in args.setups:
        setup = SETUPS[name]
        cache = None
        if args.truth_cache is not None:
            cache = args.truth_cache.with_name(
                f"{args.truth_cache.stem}_{name}{args.truth_cache.suffix}"
            )
        df, models, data = run(setup, args.seeds, args.num_samples, cache)
        frames.append(df)
        # The n sweep on the first backbone (digits-cnn by default): its cases are the
        # cheapest to predict dozens of times.
        if sweep is None and any(sizes.values()):
            sweep, sweep_preds = sweep_samples(df, models, data, sizes, setup)
            sweep.insert(0, "setup", name)
    df = pd.concat(frames, ignore_index=True)
    summary = summarize(df)
    parts = []
    for (setup, loss), g in df.groupby(["setup", "loss"], sort=False):
        row = summarize(g)
        parts.append(
            {
                "setup": setup,
                "loss": loss,
                "N": int(g.N.iloc[0]),
                "cases": len(g),
                "SDE median_rel_error": row.loc["linearized SDE", "median_rel_error"],
                "SDE within_20pct": row.loc["linearized SDE", "within_20pct"],
                "SDE median ratio pred/true": float((g.pred_steps / g.true_steps).median()),
                "rescaled reference median_rel_error": row.loc[
                    "rescaled reference", "median_rel_error"
                ],
                "SDE cost_ratio_median": row.loc["linearized SDE", "cost_ratio_median"],
                "flagged unstable": int((~g.stable).sum()),
                "SDE median_rel_error, stable only": _median_error(g[g.stable]),
            }
        )
    body = "\n".join(
        [
            f"{len(df)} (configuration, target) cases with a reached target; "
            f"{len(grid())} configurations x {len(args.setups)} backbones "
            f"({', '.join(args.setups)}), {args.seeds} seeds; the SDE as a user runs it: "
            f"n = {args.num_samples} samples, spectrum extrapolated to N, Jacobian sketched "
            "to 2000 coordinates per tensor.",
            "",
            summary.round(3).to_markdown(),
            "",
            "By backbone and loss:",
            "",
            pd.DataFrame(parts).round(3).to_markdown(index=False),
            "",
            "80% intervals widened by the model error of the other backbones "
            "(`ModelErrorInterval`, leave one backbone out, per loss):",
            "",
            model_error_coverage(df).round(3).to_markdown(index=False),
            "",
        ]
    )
    if sweep is not None:
        body += "\n".join(
            [
                "",
                "How the error moves with the subset size n (2 random subsets per n; the "
                "linear model: the SDE on all N samples, same sketched Jacobian; per-case "
                "rows in `docs/bench_steps_sweep.csv`):",
                "",
                sweep.round(3).to_markdown(index=False),
                "",
            ]
        )
    body += f"\nRun time {time.perf_counter() - started:.0f} s (2-core CPU, 1 thread).\n"
    print(body)
    if not args.no_write:
        df.drop(columns=["config"]).to_csv(ROOT / "docs" / "bench_steps.csv", index=False)
        if sweep is not None:
            sweep_preds.to_csv(ROOT / "docs" / "bench_steps_sweep.csv", index=False)
        img = ROOT / "docs" / "bench_steps.png"
        plot(df, img)
        write_section(ROOT / "BENCHMARKS.md", "bench-steps", body + f"\n![steps](docs/{img.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
