"""Build ttp_search's learning-curve data set on MNIST-1D (generated, nothing downloaded).

(a) NAS half: 60+ random 1D CNN architectures, one shared recipe (SGD, momentum 0.9,
    constant lr 0.02, batch 64, 20 epochs).
(b) HPO half: 60+ configurations of one architecture where learning rate, batch size, weight
    decay and budget (4–30 epochs) vary; each trains with the budget-aware linear-decay
    schedule to its own budget (Li et al. 2020).

Per run: per-step training loss, per-epoch validation loss and accuracy, mean step time per
epoch, final values. Output: ttp_search/data/learning_curves.json.gz (a few MB at most).

    python scripts/make_curves.py [--nas 60] [--hpo 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train import sig, train

from ttp_search.data import mnist1d
from ttp_search.data.curves import DEFAULT_PATH

NAS_RECIPE = {
    "lr": 0.02,
    "batch_size": 64,
    "epochs": 20,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "constant",
}
HPO_ARCH = {
    "depth": 3,
    "width": 32,
    "growth": 1,
    "kernel": 5,
    "act": "relu",
    "bn": True,
    "pool": "max",
    "head": 0,
}
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def build_cnn(arch: dict, length: int = 40, classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = []
    c_in, width = 1, arch["width"]
    for _ in range(arch["depth"]):
        layers.append(nn.Conv1d(c_in, width, arch["kernel"], padding=arch["kernel"] // 2))
        if arch["bn"]:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTS[arch["act"]]())
        if arch["pool"] != "none" and length >= 4:
            layers.append(nn.MaxPool1d(2) if arch["pool"] == "max" else nn.AvgPool1d(2))
            length //= 2
        c_in, width = width, width * arch["growth"]
    layers.append(nn.Flatten())
    features = c_in * length
    if arch["head"]:
        layers += [nn.Linear(features, arch["head"]), nn.ReLU(), nn.Linear(arch["head"], classes)]
    else:
        layers.append(nn.Linear(features, classes))
    return nn.Sequential(*layers)


def nas_space(n: int, rng: np.random.Generator) -> list[dict]:
    seen, out = set(), []
    while len(out) < n:
        arch = {
            "depth": int(rng.integers(1, 5)),
            "width": int(rng.choice([4, 8, 16, 32, 64])),
            "growth": int(rng.choice([1, 2])),
            "kernel": int(rng.choice([3, 5, 7, 9])),
            "act": str(rng.choice(list(ACTS))),
            "bn": bool(rng.integers(2)),
            "pool": str(rng.choice(["none", "max", "avg"])),
            "head": int(rng.choice([0, 0, 64])),
        }
        key = json.dumps(arch, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out


def hpo_space(n: int, rng: np.random.Generator) -> list[dict]:
    return [
        {
            "lr": float(math.exp(rng.uniform(math.log(3e-3), math.log(0.3)))),
            "batch_size": int(rng.choice([16, 32, 64, 128])),
            "weight_decay": float(math.exp(rng.uniform(math.log(1e-5), math.log(1e-2)))),
            "epochs": int(rng.integers(4, 31)),
            "momentum": 0.9,
            "schedule": "linear",
        }
        for _ in range(n)
    ]


def run_one(run_id: str, space: str, arch: dict, recipe: dict, data, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_cnn(arch)
    steps_per_epoch = math.ceil(len(data[1]) / recipe["batch_size"])
    budget = recipe["epochs"] * steps_per_epoch
    rec = train(
        model,
        data,
        lr=recipe["lr"],
        batch_size=recipe["batch_size"],
        total_steps=budget,
        schedule=recipe["schedule"],
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        seed=seed,
    )
    return {
        "run_id": run_id,
        "space": space,
        "config": {**arch, **recipe},
        "steps_per_epoch": steps_per_epoch,
        "budget_steps": budget,
        "train_loss": sig(rec.train_loss),
        "val_loss": sig(rec.val_loss),
        "val_acc": sig(rec.val_acc),
        "step_time_s": sig(rec.step_time_s, 4),
        "final_val_acc": rec.val_acc[-1],
        "final_val_loss": rec.val_loss[-1],
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nas", type=int, default=64)
    parser.add_argument("--hpo", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small models: one thread is faster and steadier
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr, x_te, y_te = mnist1d()
    data = (x_tr, y_tr, x_te, y_te)
    jobs = [
        (f"nas-{i:03d}", "nas", arch, NAS_RECIPE) for i, arch in enumerate(nas_space(args.nas, rng))
    ]
    jobs += [
        (f"hpo-{i:03d}", "hpo", HPO_ARCH, rec) for i, rec in enumerate(hpo_space(args.hpo, rng))
    ]
    start = time.perf_counter()
    runs = [
        run_one(rid, space, arch, recipe, data, args.seed + i)
        for i, (rid, space, arch, recipe) in enumerate(tqdm(jobs, desc="training runs"))
    ]
    payload = {
        "description": "MNIST-1D learning curves: NAS half (shared recipe) and HPO half "
        "(lr, batch, weight decay, budget vary; linear decay to budget)",
        "dataset": "mnist1d (num_samples=5000, seed=42; 4000 train / 1000 validation)",
        "torch": torch.__version__,
        "threads": 1,
        "wall_s": time.perf_counter() - start,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", compresslevel=9) as handle:
        json.dump(payload, handle, separators=(",", ":"))
    print(
        f"{len(runs)} runs in {payload['wall_s'] / 60:.1f} min -> {args.out} "
        f"({args.out.stat().st_size / 1e6:.2f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
