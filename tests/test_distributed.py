"""Several workers on one PostgreSQL (or SQLite) study, and workers killed mid-trial.

The workers are real processes running `studies/cost_aware_nas.py`, the way users run them.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from ttp_search.data import mnist1d
from ttp_search.optuna import keys

STUDY = Path(__file__).resolve().parents[1] / "studies" / "cost_aware_nas.py"
ENDED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _worker(storage: str, name: str, out: Path, *extra: str, env=None) -> subprocess.Popen:
    cmd = [sys.executable, str(STUDY), "--storage", storage, "--study-name", name]
    cmd += ["--out", str(out), "--study-budget", "600", *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.postgres
@pytest.mark.slow
def test_four_workers_share_one_postgres_study(postgres_url, tmp_path, monkeypatch):
    cache = tmp_path / "fresh_cache"  # no calibration yet: exactly one worker must make it
    env = {**os.environ, "TTP_SEARCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    # The data set, though, is there already: four workers generating it at once on two
    # cores would only slow the test.
    monkeypatch.setenv("TTP_SEARCH_CACHE", str(cache))
    mnist1d.cache_clear()
    mnist1d(num_samples=5000)
    mnist1d.cache_clear()
    per_worker = 4
    args = ["--n-trials", str(per_worker), "--max-steps", "60", "--threads", "1"]
    args += ["--calibration-budget", "5", "--heartbeat", "2"]
    procs = [_worker(postgres_url, "dist", tmp_path / f"w{i}", *args, env=env) for i in range(4)]
    outputs = [_finish(p) for p in procs]

    study = optuna.load_study(study_name="dist", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    # Every requested trial is accounted for, none left running, numbers unique.
    assert len(trials) == 4 * per_worker
    assert all(t.state in ENDED for t in trials), [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(4 * per_worker))
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 4

    # The cost model was calibrated by one worker and loaded by the three others.
    assert sum("calibrated by this worker" in o for o in outputs) == 1
    assert sum("cost model: loaded" in o for o in outputs) == 3
    assert len(list(cache.glob("layer_time_*.npz"))) == 1

    # Each worker's pruner judged with the other workers' trials: some decision counted
    # more completed trials than its own worker ever completed, and named another's trial.
    worker = {t.number: t.user_attrs.get(keys.WORKER) for t in trials}
    assert len(set(worker.values())) == 4
    completed_by = collections.Counter(
        worker[t.number] for t in trials if t.state == TrialState.COMPLETE
    )
    decisions = [
        (t, t.user_attrs["ttp:decision"]) for t in trials if "ttp:decision" in t.user_attrs
    ]
    assert any(d["n_completed"] > completed_by[worker[t.number]] for t, d in decisions)
    named = [(t, d["incumbent_trial"]) for t, d in decisions if "incumbent_trial" in d]
    assert named and all(worker.get(n) is not None for _, n in named)
    assert any(worker[n] != worker[t.number] for t, n in named)


def _wait_for_running_trial(storage: str, name: str, proc, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number >= 1 and len(t.intermediate_values) >= 2:
                return t.number
        time.sleep(0.2)
    raise AssertionError("no trial reached its second report in time")


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_worker_killed_mid_trial_fails_its_trial_and_the_study_goes_on(
    backend, calibrated, tmp_path, request
):
    storage = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'study.db'}"
    )
    threads = ["--threads", str(torch.get_num_threads()), "--heartbeat", "1"]
    victim = _worker(
        storage,
        "kill",
        tmp_path / "a",
        "--n-trials",
        "3",
        "--max-steps",
        "4000",
        "--trial-budget",
        "3",
        *threads,
    )
    number = _wait_for_running_trial(storage, "kill", victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    before = {
        t.number: (t.state, dict(t.intermediate_values))
        for t in optuna.load_study(study_name="kill", storage=storage).trials
    }
    assert before[number][0] == TrialState.RUNNING  # nobody has noticed yet

    time.sleep(3.5)  # past the grace period (3 heartbeats)
    survivor = _worker(
        storage, "kill", tmp_path / "b", "--n-trials", "3", "--max-steps", "60", *threads
    )
    _finish(survivor)

    trials = optuna.load_study(study_name="kill", storage=storage).trials
    by_number = {t.number: t for t in trials}
    assert by_number[number].state == TrialState.FAIL
    # Its reports are kept, and it was retried once with the same configuration.
    assert dict(by_number[number].intermediate_values) == before[number][1]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == number]
    assert len(retries) == 1
    assert retries[0].params == by_number[number].params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    # Every other trial ended normally, and those that ended before the kill are unchanged.
    assert all(t.state in ENDED for t in trials)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [number]
    for n, (state, values) in before.items():
        if n != number:
            assert (by_number[n].state, dict(by_number[n].intermediate_values)) == (state, values)
    json.dumps([t.user_attrs for t in trials])  # nothing unserialisable was stored
