"""The SDE against exact linearized SGD and real fine-tuning on a real pretrained backbone.

A CIFAR-10 ResNet (real pretrained weights from ``../shared/pretrained``) fine-tuned with its
own head on images it never trained on (``../shared/data/cifar10_test.npz``), cross-entropy,
BatchNorm in eval mode. Per configuration: steps to 50 / 25 / 10% of the initial training
loss for (1) the real network trained by SGD, (2) the exact linearization trained by the
same SGD (``ttp_search.testing.linearized_sgd``; with ``--exact-seeds K``, K minibatch orders
and their mean loss curve, since one order's crossing moves by as much as the error being
scored), (3) the ``LinearizedSDE``. The SDE's
design was chosen on small MLPs (tests/dynamics/test_fidelity.py) and two of its causes of
error were found on ResNet-20, so ResNet-20 is the tuning split; ResNet-44 is held out.
Cost: the SDE's setup and predictions against the real fine-tuning's step, in seconds and in
per-sample gradient evaluations, and the fine-tuning length at which a prediction breaks even.
Baselines against the real network, side by side: (i) the reference configuration's real steps
(``REFERENCE``) rescaled by the effective learning rate lr / (1 - momentum); (ii) the real run's
first 10% of the fine-tuning's steps, its loss read at every step, extrapolated
(``ttp_search.curves.extrapolate``) until it reaches the level. (i) costs one real
fine-tuning for the whole grid, (ii) a tenth of each one.

    python scripts/bench_fidelity.py [--depth 20] [--samples 500] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ttp_search.budget import LinearDecayLR
from ttp_search.curves import extrapolate
from ttp_search.data.pretrained import SharedDataMissing, cifar10_images, cifar_resnet
from ttp_search.dynamics import LinearizedSDE
from ttp_search.testing import linearized_sgd, shuffled_batches

CONFIGS = [  # lr, batch, momentum, weight decay
    (0.01, 32, 0.9, 0.0),
    (0.1, 32, 0.0, 0.0),
    (0.002, 32, 0.9, 0.0),
    (0.05, 64, 0.0, 0.0),
    (0.01, 32, 0.9, 5e-4),
]
# More configurations for the linearity check (real network and SDE only; --more).
MORE_CONFIGS = [
    (0.005, 32, 0.9, 0.0),
    (0.001, 32, 0.9, 0.0),
    (0.02, 32, 0.0, 0.0),
    (0.005, 64, 0.0, 5e-4),
    (0.003, 64, 0.9, 0.0),
    (0.0005, 32, 0.9, 0.0),
]
FRACTIONS = (0.5, 0.25, 0.1)
# Baseline (i)'s reference, chosen on the tuning backbone's real runs before any baseline was
# scored: of the configurations whose real run reaches all three levels on ResNet-20, the one
# with the median effective rate.
REFERENCE = (0.002, 32, 0.9, 0.0)


def real_sgd(
    model,
    x,
    y,
    lr,
    batch,
    momentum,
    wd,
    steps,
    every,
    seed=0,
    bn_train=False,
    schedule="constant",
    loss_fn=F.cross_entropy,
) -> pd.DataFrame:
    """The real network, fine-tuned by SGD on the same batches as linearized_sgd draws, with
    BatchNorm in eval mode (or, ``bn_train``, in train mode: batch statistics in each step,
    running statistics updated); the full training loss is read in eval mode every ``every``
    steps and at every step of the first tenth (what the extrapolation baseline sees,
    ``attrs["head"]``). ``schedule="linear"``: the rate decays linearly to 0 at ``steps``
    (``LinearDecayLR``, the budget-aware schedule). ``loss_fn(outputs, y)``: the loss trained
    and read (cross-entropy on labels, or MSE on one-hot targets)."""
    net = copy.deepcopy(model).eval()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    decay = LinearDecayLR(opt, steps) if schedule == "linear" else None
    batches, rows, step_s = shuffled_batches(len(y), batch, seed), [], []
    head = max(steps // 10, 1)
    for step in range(steps + 1):
        if step % every == 0 or step <= head:
            with torch.no_grad():
                rows.append((step, float(loss_fn(net(x), y))))
        if step == steps:
            break
        idx = next(batches)
        start = time.perf_counter()
        net.train(bn_train)
        opt.zero_grad()
        loss_fn(net(x[idx]), y[idx]).backward()
        opt.step()
        if decay is not None:
            decay.step()
        net.eval()
        step_s.append(time.perf_counter() - start)
    read = pd.DataFrame(rows, columns=["step", "loss"])
    out = read[read.step % every == 0].reset_index(drop=True)
    # Plain arrays: attrs travel with every slice of the frame.
    out.attrs["head"] = read[read.step <= head].to_numpy()
    out.attrs["step_s"] = float(np.median(step_s))  # training steps only, not the loss reads
    return out


def first_below(curve: pd.DataFrame, level: float, column: str = "loss") -> float:
    hit = curve.step[curve[column] <= level]
    return float(hit.iloc[0]) if len(hit) else math.inf


def fmt(values) -> str:
    return " / ".join("–" if math.isinf(v) else f"{v:.0f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--no-exact", action="store_true", help="skip exact linearized SGD")
    ap.add_argument(
        "--exact-seeds",
        type=int,
        default=1,
        help="exact runs per configuration (minibatch orders); the SDE is scored against "
        "their mean loss curve, the replay against seed 0's run",
    )
    ap.add_argument("--more", action="store_true", help="add the MORE_CONFIGS")
    ap.add_argument("--csv-dir", default="docs", help="where the per-level CSV goes")
    ap.add_argument(
        "--bn-train",
        action="store_true",
        help="fine-tune the real network with BatchNorm in train mode (the SDE and the exact "
        "run linearize the eval-mode network either way)",
    )
    ap.add_argument(
        "--schedule",
        choices=("constant", "linear"),
        default="constant",
        help="the learning-rate schedule of every run: constant, or a linear decay to 0 at "
        "--steps (the budget-aware schedule; steps to a level are then read on that one run)",
    )
    ap.add_argument(
        "--loss",
        choices=("ce", "mse"),
        default="ce",
        help="the fine-tuning loss: cross-entropy on the labels, or MSE (mean over samples and "
        "outputs) on one-hot targets, for the real network, the exact run and the SDE alike",
    )
    args = ap.parse_args()
    if args.schedule != "constant" and not args.no_exact:
        ap.error("--schedule linear runs with --no-exact (the replay needs a constant rate)")
    if args.exact_seeds < 1:
        ap.error(f"--exact-seeds must be at least 1, got {args.exact_seeds}")
    configs = CONFIGS + (MORE_CONFIGS if args.more else [])
    torch.manual_seed(0)
    try:
        model = cifar_resnet(args.depth, shared=args.shared)
        x, y = cifar10_images(args.samples, seed=0, shared=args.shared)
    except SharedDataMissing as exc:
        print(f"skipped: {exc}")
        sys.exit(0)
    if args.loss == "mse":
        y = F.one_hot(y, 10).to(torch.float32)
    loss_fn = F.cross_entropy if args.loss == "ce" else F.mse_loss
    loss0 = float(loss_fn(model(x), y).detach())
    levels = [f * loss0 for f in FRACTIONS]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sde = LinearizedSDE(model, x, y, loss=args.loss, num_samples=args.samples)
    setup_s = time.perf_counter() - start
    print(
        f"ResNet-{args.depth}, {args.samples} images, {args.loss}, initial loss {loss0:.3f}; "
        f"SDE setup {setup_s:.1f} s (rank {sde.rank})"
    )
    rows, scored, step_times, checked, records = [], [], [], [], []
    for lr, batch, momentum, wd in tqdm(configs, desc="configurations"):
        hyper = dict(lr=lr, batch_size=batch, momentum=momentum, weight_decay=wd)
        t0 = time.perf_counter()
        exact = first_seed = pd.DataFrame({"step": [0], "loss": [math.inf]})  # reaches none
        if not args.no_exact:
            runs = [
                linearized_sgd(
                    model,
                    x,
                    y,
                    steps=args.steps,
                    eval_every=args.every,
                    seed=s,
                    schedule=args.schedule,
                    loss=args.loss,
                    **hyper,
                )
                for s in range(args.exact_seeds)
            ]
            first_seed = runs[0]
            exact = pd.concat(runs).groupby("step", as_index=False)["loss"].mean()
        exact_s = (time.perf_counter() - t0) / max(1, args.exact_seeds)
        t0 = time.perf_counter()
        real = real_sgd(
            model,
            x,
            y,
            lr,
            batch,
            momentum,
            wd,
            args.steps,
            args.every,
            bn_train=args.bn_train,
            schedule=args.schedule,
            loss_fn=loss_fn,
        )
        real_s = time.perf_counter() - t0
        if args.schedule == "linear":
            t0 = time.perf_counter()
            estimates = sde.crossings(
                levels, steps=args.steps, schedule="linear", every=args.every, **hyper
            )
            sde_s = shared_s = time.perf_counter() - t0  # one predicted run for every level
            t0 = time.perf_counter()
            # The run's end is where its weights are furthest from w0: one check there speaks
            # for every level the run crosses on the way.
            end_check = sde.check_linearity(args.steps, schedule="linear", **hyper)
            checks = [end_check if math.isfinite(e.steps) else None for e in estimates]
            check_s = time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            estimates = [sde.steps_to_loss(v, max_steps=args.steps, **hyper) for v in levels]
            sde_s = (time.perf_counter() - t0) / len(levels)
            t0 = time.perf_counter()
            shared = sde.steps_to_losses(levels, max_steps=args.steps, **hyper)
            shared_s = time.perf_counter() - t0
            if shared != estimates:
                print(f"steps_to_losses differs from steps_to_loss at {hyper}: {shared}")
            t0 = time.perf_counter()
            checks = [
                sde.check_linearity(int(e.steps), **hyper) if math.isfinite(e.steps) else None
                for e in estimates
            ]
            check_s = (time.perf_counter() - t0) / max(1, sum(c is not None for c in checks))
        replayed = [math.inf] * len(levels)
        if not args.no_exact and args.schedule == "constant":
            # The SDE on the exact run's own batches: what is left is the function-space
            # approximation (sketch, float32), not the sampling noise of either run.
            batches = itertools.islice(shuffled_batches(len(y), batch, seed=0), args.steps)
            curve = sde.replay(torch.stack(list(batches)).numpy(), **without_batch(hyper))
            curve = curve[curve.step % args.every == 0]
            replayed = [first_below(curve, v) for v in levels]
            scored.append(
                (
                    [first_below(exact, v) for v in levels],
                    estimates,
                    replayed,
                    [first_below(first_seed, v) for v in levels],
                )
            )
        for fraction, v, e, c in zip(FRACTIONS, levels, estimates, checks, strict=True):
            checked.append((first_below(real, v), e, c))
            record = level_record(args.depth, hyper, fraction, first_below(real, v), e, c)
            record["extrapolated_steps"] = extrapolated_steps(real.attrs["head"], v, args.steps)
            records.append(record)
        rows.append(
            {
                "lr, batch, momentum, wd": f"{lr}, {batch}, {momentum}, {wd}",
                "real network": fmt(first_below(real, v) for v in levels),
                "exact linearized SGD": fmt(first_below(exact, v) for v in levels),  # seeds' mean
                "LinearizedSDE": fmt(e.steps for e in estimates),
                "SDE replay, exact's batches": fmt(replayed),
                "SDE 80% interval": " / ".join(
                    f"[{fmt([e.low])}, {fmt([e.high])}]" for e in estimates
                ),
                "stable": estimates[0].stable,
                "network / linear loss": " / ".join(
                    "–" if c is None else f"{c.loss_ratio:.2f}" for c in checks
                ),
                "‖Δw‖ / ‖w0‖": " / ".join(
                    "–" if c is None else f"{c.weight_change:.2f}" for c in checks
                ),
                "s per check": round(check_s, 2),
                "edge ratio": round(sde.edge_ratio(lr, momentum, wd), 2),
                "s per steps_to_loss": round(sde_s, 2),
                "s per steps_to_losses (3 levels)": round(shared_s, 2),
                "exact s (per seed)": round(exact_s, 1),
                "real s": round(real_s, 1),
                "real s per step": round(real.attrs["step_s"], 4),
                # The setup is shared by the benchmark's configurations; one prediction each.
                "break-even steps": round((setup_s / len(configs) + sde_s) / real.attrs["step_s"]),
            }
        )
        step_times.append((batch, real.attrs["step_s"]))
    table = pd.DataFrame(rows)
    print(
        f"steps to {' / '.join(f'{int(f * 100)}%' for f in FRACTIONS)} of the initial loss "
        f"('–': not within {args.steps} steps; losses read every {args.every} steps)"
    )
    if args.no_exact:
        table = table.drop(
            columns=["exact linearized SGD", "SDE replay, exact's batches", "exact s (per seed)"]
        )
    print(table.to_markdown(index=False))
    print(linearity_summary(checked, args.steps))
    per_level = with_rescaled_reference(pd.DataFrame(records), args.steps)
    if args.bn_train:
        per_level["backbone"] += " (BN train)"  # plot_fidelity.py's tables keep them apart
    if args.schedule != "constant":
        per_level["backbone"] += f" ({args.schedule} decay)"
    if args.loss != "ce":
        per_level["backbone"] += f" ({args.loss})"
    print(baseline_summary(per_level))
    # The BN-train and schedule rows stay out of plot_fidelity.py's bench_fidelity_resnet*.csv.
    mode = (
        ("bn_train_" if args.bn_train else "")
        + ("" if args.schedule == "constant" else f"{args.schedule}_")
        + ("" if args.loss == "ce" else f"{args.loss}_")
    )
    csv = Path(args.csv_dir) / f"bench_fidelity_{mode}resnet{args.depth}.csv"
    per_level.to_csv(csv, index=False)
    print(f"per-level rows: {csv} (plot: python scripts/plot_fidelity.py)")
    if args.no_exact:
        print(cost_line(sde, setup_s, step_times))
        return
    errors, replay_errors, covered, cases = [], [], 0, 0
    for exact_steps, estimates, replayed, seed0_steps in scored:
        for truth, e, r, t0 in zip(exact_steps, estimates, replayed, seed0_steps, strict=True):
            if math.isfinite(t0):
                replay_errors.append(abs(r - t0) / t0)
            if math.isinf(truth):
                continue
            cases += 1
            covered += e.low <= truth <= e.high
            if math.isfinite(e.steps):
                errors.append(abs(e.steps - truth) / truth)
    errors, replay_errors = np.array(errors), np.array(replay_errors)
    print(
        f"SDE replayed on the exact run's batches (seed 0): median error {100 * np.median(replay_errors):.1f}%, "
        f"{100 * np.mean(replay_errors <= 0.2):.0f}% within 20%, "
        f"{100 * np.mean(replay_errors == 0):.0f}% on the same read (the approximation alone)"
    )
    print(
        f"SDE vs exact linearized SGD over the {cases} levels the exact run reaches: median "
        f"error {100 * np.median(errors):.1f}% where both reach it ({len(errors)}), "
        f"{100 * np.sum(errors <= 0.2) / cases:.0f}% within 20%, exact inside the SDE's 80% "
        f"interval {covered}/{cases} (the mean loss curve of {args.exact_seeds} exact run(s); "
        f"its resolution is {args.every} steps)"
    )
    print(cost_line(sde, setup_s, step_times))


def without_batch(hyper: dict) -> dict:
    return {k: v for k, v in hyper.items() if k != "batch_size"}


def level_record(depth, hyper, fraction, real_steps, estimate, check) -> dict:
    """One (configuration, level) row of the per-level CSV the plot reads."""
    return {
        "backbone": f"resnet{depth}",
        **hyper,
        "level": fraction,
        "real_steps": real_steps,
        "sde_steps": estimate.steps,
        "sde_low": estimate.low,
        "sde_high": estimate.high,
        "stable": estimate.stable,
        "loss_ratio": math.nan if check is None else check.loss_ratio,
        "weight_change": math.nan if check is None else check.weight_change,
        "check_holds": None if check is None else check.holds,
    }


def extrapolated_steps(head: np.ndarray, level: float, max_steps: int) -> float:
    """Baseline (ii): the first step at which the extrapolation of the real run's first
    tenth (``head``: rows of step, loss) reaches ``level``; inf past ``max_steps``."""
    steps, losses = head[:, 0] + 1.0, head[:, 1]  # extrapolate counts steps from 1
    hit = np.flatnonzero(losses <= level)
    if hit.size:
        return float(head[hit[0], 0])
    finite = np.cumprod(np.isfinite(losses)).astype(bool)  # a diverged run: what came before
    steps, losses = steps[finite], losses[finite]
    if extrapolate(steps, losses, max_steps + 1.0).mean > level:
        return math.inf
    lo, hi = float(steps[-1]), max_steps + 1.0
    while hi - lo > 0.5:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if extrapolate(steps, losses, mid).mean > level else (lo, mid)
    return float(math.ceil(hi - 1.0))


def with_rescaled_reference(per_level: pd.DataFrame, max_steps: int) -> pd.DataFrame:
    """Baseline (i): the REFERENCE configuration's real steps at each level, times its
    effective learning rate over the configuration's; NaN where the grid lacks REFERENCE."""
    lr, _, momentum, _ = REFERENCE
    ref = per_level[is_reference(per_level)].set_index("level")["real_steps"]
    effective = per_level.lr / (1 - per_level.momentum)
    scaled = per_level.level.map(ref) * (lr / (1 - momentum)) / effective
    per_level["rescaled_steps"] = scaled.where(scaled.isna() | (scaled <= max_steps), math.inf)
    per_level["rescaled_steps"] = per_level["rescaled_steps"].round()
    return per_level


def is_reference(per_level: pd.DataFrame) -> pd.Series:
    lr, batch, momentum, wd = REFERENCE
    return (
        (per_level.lr == lr)
        & (per_level.batch_size == batch)
        & (per_level.momentum == momentum)
        & (per_level.weight_decay == wd)
    )


def baseline_summary(per_level: pd.DataFrame) -> str:
    """Each predictor against the real network over the levels the real network reaches,
    all of them and those where the SDE is trusted (stable, linearity check holds); a level
    a predictor says is out of reach counts as a miss. The reference configuration is left
    out (baseline (i) reproduces it by construction)."""
    rows = per_level[~is_reference(per_level) & np.isfinite(per_level.real_steps)]
    trusted = rows.stable.astype(bool) & (rows.check_holds == True)  # noqa: E712 (None too)
    table = []
    for name, column in (
        ("LinearizedSDE", "sde_steps"),
        ("rescaled reference run", "rescaled_steps"),
        ("extrapolated first 10%", "extrapolated_steps"),
    ):
        errors = (rows[column] - rows.real_steps).abs() / rows.real_steps
        entry = {"predictor": name}
        if rows[column].isna().all():  # the grid lacks the reference
            table.append(entry)
            continue
        for part, mask in (("all", slice(None)), ("SDE trusted", trusted)):
            e = errors[mask]
            entry[f"{part}: median error"] = f"{100 * e.median():.1f}%"
            entry[f"{part}: within 20%"] = f"{100 * (e <= 0.2).mean():.0f}%"
        table.append(entry)
    return (
        f"Against the real network over the {len(rows)} levels it reaches ({int(trusted.sum())} "
        f"where the SDE is trusted; reference {REFERENCE} left out):\n"
        + pd.DataFrame(table).to_markdown(index=False)
    )


def linearity_summary(checked: list, steps: int) -> str:
    """The SDE against the real network, split by the linearity check's verdict."""
    lines = ["SDE vs the real network, by the linearity check at the predicted crossing:"]
    for verdict, name in ((True, "holds"), (False, "fails")):
        cases = [(t, e) for t, e, c in checked if c is not None and c.holds is verdict]
        reached = [(t, e) for t, e in cases if math.isfinite(t)]
        errors = np.array([abs(e.steps - t) / t for t, e in reached])
        within = int(np.sum(errors <= 0.2)) if errors.size else 0
        median = f"{100 * np.median(errors):.1f}%" if errors.size else "–"
        lines.append(
            f"- check {name}: {len(cases)} levels; the real network reaches {len(reached)} "
            f"within {steps} steps; median error there {median}, {within} within 20%"
        )
    unchecked = [t for t, e, c in checked if c is None]
    lines.append(
        f"- not checked (the SDE never reaches the level): {len(unchecked)} levels, the real "
        f"network reaches {sum(math.isfinite(t) for t in unchecked)}"
    )
    return "\n".join(lines)


def cost_line(sde: LinearizedSDE, setup_s: float, step_times: list[tuple[int, float]]) -> str:
    """The SDE's setup against fine-tuning, in gradient evaluations and in seconds."""
    grads = sde.n * sde.C  # one per-sample gradient per (sample, output): the Jacobian
    parts = []
    for batch in sorted({b for b, _ in step_times}):
        step_s = float(np.median([s for b, s in step_times if b == batch]))
        parts.append(
            f"batch {batch}: {step_s * 1e3:.0f} ms per real step, so the setup equals "
            f"{setup_s / step_s:.0f} steps in seconds and {grads / batch:.0f} steps in "
            "per-sample gradients"
        )
    return (
        f"Cost: setup {setup_s:.1f} s, {grads} per-sample output gradients (a prediction "
        f"needs none); {'; '.join(parts)}."
    )


if __name__ == "__main__":
    main()
