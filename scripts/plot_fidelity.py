"""Predicted against real steps on the real backbones, from bench-fidelity's per-level CSVs.

Reads ``docs/bench_fidelity_resnet*.csv`` (one per backbone, written by
``scripts/bench_fidelity.py``), prints the SDE's accuracy against the real network by
verdict (trusted: stable and the linearity check holds; stable but the check fails; past the
edge of stability) and saves ``docs/bench_fidelity.png``.

    python scripts/plot_fidelity.py [--docs docs] [--steps 150]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

VERDICTS = {  # name: (marker, colour)
    "trusted": ("o", "tab:green"),
    "check fails": ("x", "tab:orange"),
    "unstable": ("^", "tab:red"),
}


def verdict(row) -> str:
    if not row.stable:
        return "unstable"
    return "trusted" if row.check_holds is True or row.check_holds == "True" else "check fails"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per backbone and verdict: levels the SDE reaches, how many the real network reaches,
    the median error there, and the share of all levels within 20% (a level the real
    network never reaches counts as missed: the SDE gave a number for it)."""
    rows = []
    for (backbone, name), part in df[np.isfinite(df.sde_steps)].groupby(["backbone", "verdict"]):
        reached = part[np.isfinite(part.real_steps)]
        error = (reached.sde_steps - reached.real_steps).abs() / reached.real_steps
        rows.append(
            {
                "backbone": backbone,
                "verdict": name,
                "levels": len(part),
                "real network reaches": len(reached),
                "median error where reached": round(float(error.median()), 3)
                if len(error)
                else math.nan,
                "within 20% (of all levels)": round(float((error <= 0.2).sum() / len(part)), 2),
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="docs")
    ap.add_argument("--steps", type=int, default=150, help="the fine-tunings' length")
    ap.add_argument(
        "--schedule",
        choices=("constant", "linear"),
        default="constant",
        help="the runs of bench_fidelity.py --schedule (linear: bench_fidelity_linear_*.csv)",
    )
    ap.add_argument(
        "--loss",
        choices=("ce", "mse"),
        default="ce",
        help="the runs of bench_fidelity.py --loss (mse: bench_fidelity_mse_*.csv)",
    )
    args = ap.parse_args()
    mode = ("" if args.schedule == "constant" else f"{args.schedule}_") + (
        "" if args.loss == "ce" else f"{args.loss}_"
    )
    files = sorted(Path(args.docs).glob(f"bench_fidelity_{mode}resnet*.csv"))
    if not files:
        print(f"no bench_fidelity_{mode}resnet*.csv in {args.docs}: run bench_fidelity.py")
        return
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    df["verdict"] = [verdict(r) for r in df.itertuples()]
    print(summary(df).to_markdown(index=False))
    backbones = sorted(
        df.backbone.unique(), key=lambda b: int(b.split(" ")[0].removeprefix("resnet"))
    )
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 4.2))
    never = args.steps * 1.25  # where "the real network never reached it" is drawn
    for ax, backbone in zip(np.atleast_1d(axes), backbones, strict=True):
        part = df[(df.backbone == backbone) & np.isfinite(df.sde_steps)]
        for name, (marker, colour) in VERDICTS.items():
            sel = part[part.verdict == name]
            real = sel.real_steps.where(np.isfinite(sel.real_steps), never)
            ax.scatter(real, sel.sde_steps, marker=marker, color=colour, label=name)
        grid = np.array([5, args.steps])
        ax.plot(grid, grid, color="black", lw=0.8)
        ax.fill_between(grid, grid * 0.8, grid * 1.2, color="grey", alpha=0.2, lw=0)
        ax.axvline(args.steps * 1.12, color="grey", ls=":", lw=0.8)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=f"real fine-tuning steps (right of dotted: not in {args.steps})",
            ylabel="LinearizedSDE steps",
            title=backbone,
        )
        ax.legend(fontsize=8)
    under = "" if args.schedule == "constant" else f" ({args.schedule} decay)"
    under += "" if args.loss == "ce" else f", {args.loss}"
    fig.suptitle(f"Steps to 50/25/10% of the initial loss{under}: SDE against the real network")
    fig.tight_layout()
    out = Path(args.docs) / f"bench_fidelity{'' if not mode else '_' + mode.rstrip('_')}.png"
    fig.savefig(out, dpi=120)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
