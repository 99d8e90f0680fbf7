"""The main job, `studies/cost_aware_nas.py`, end to end on a tiny budget."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import torch

STUDY = Path(__file__).resolve().parents[1] / "studies" / "cost_aware_nas.py"
COLUMNS = {
    "number",
    "state",
    "depth",
    "width",
    "kernel",
    "batch_size",
    "lr",
    "budget_steps",
    "predicted_seconds",
    "predicted_low",
    "predicted_high",
    "measured_seconds",
    "value",
    "prune_reason",
}


def _load_study_module():
    spec = importlib.util.spec_from_file_location("cost_aware_nas", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nas_study_writes_trials_and_plots(calibrated, tmp_path):
    study = _load_study_module()
    out = tmp_path / "out"
    args = ["--budget", "12", "--max-steps", "120", "--out", str(out), "--study-name", "smoke"]
    args += ["--threads", str(torch.get_num_threads())]  # the session's calibration applies
    assert study.main(args) == 0
    df = pd.read_csv(out / "trials.csv")
    assert COLUMNS <= set(df.columns)
    assert len(df) >= 2 and (df.state == "COMPLETE").any()
    ran = df[df.state == "COMPLETE"]
    assert (ran.budget_steps <= 120).all() and (ran.predicted_seconds > 0).all()
    assert (ran.predicted_low <= ran.predicted_seconds).all()
    assert ran.value.between(0, 1).all()
    for name in ("predicted_vs_measured_cost.png", "accuracy_vs_cost.png", "learning_curves.png"):
        assert (out / name).stat().st_size > 1000
    # A second worker with the same storage and name joins the study (its budget is spent).
    assert study.main(args) == 0
    assert len(pd.read_csv(out / "trials.csv")) == len(df)


def test_ray_study_runs_end_to_end(calibrated, tmp_path):
    import sys

    sys.path.insert(0, str(STUDY.parent))
    import ray_nas

    out = tmp_path / "ray"
    args = ["--budget", "30", "--max-steps", "100", "--out", str(out), "--name", "smoke"]
    # A per-trial cap that holds 50 steps even when the calibrated step time is several
    # times the model's (the searcher calibrates it from the first finished trial).
    args += ["--trial-budget", "6"]
    args += ["--threads", str(torch.get_num_threads()), "--num-samples", "6", "--num-cpus", "1"]
    assert ray_nas.main(args) == 0
    df = pd.read_csv(out / "trials.csv")
    assert COLUMNS <= set(df.columns) and len(df) >= 2
    assert (df.state != "FAIL").all() and (df.budget_steps <= 100).all()
    assert (df.predicted_seconds > 0).all()
    stopped = df[df.state == "PRUNED"]
    assert stopped.prune_reason.notna().all()
    assert (out / "learning_curves.png").exists()
