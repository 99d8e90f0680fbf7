"""Ray Tune adapters: result dicts fed to the scheduler, checkpointing, and one local run."""

from __future__ import annotations

import math
import os
import signal
import sys
from types import SimpleNamespace

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.schedulers import TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from ttp_search.errors import InvalidInputError  # noqa: E402
from ttp_search.ray import CostAwareSearcher, TTPScheduler, budget_steps, report  # noqa: E402

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _trial(tid, budget=50):
    return SimpleNamespace(trial_id=tid, config={"ttp_budget_steps": budget})


def _loss(step, floor):
    return floor + 1.0 / (1.0 + step / 10.0)


def _run(sched, trial, floor, steps, sign=1.0, key="loss"):
    sched.on_trial_add(None, trial)
    action = CONTINUE
    for step in steps:
        result = {key: sign * _loss(step, floor), "training_iteration": step}
        action = sched.on_trial_result(None, trial, result)
        if action == STOP:
            return action, step
    return action, None


def _finish(sched, tid, floor, sign=1.0, key="loss"):
    trial = _trial(tid)
    _run(sched, trial, floor, range(1, 51), sign, key)
    sched.on_trial_complete(None, trial, {key: sign * _loss(50, floor)})


@pytest.mark.parametrize(("mode", "sign"), [("min", 1.0), ("max", -1.0)])
def test_scheduler_stops_the_worse_trial_in_both_modes(mode, sign):
    sched = TTPScheduler(metric="loss", mode=mode, n_startup_trials=2)
    for i, floor in enumerate((0.2, 0.25)):
        _finish(sched, f"done{i}", floor, sign)
    action, at = _run(sched, _trial("worse"), 1.0, range(1, 40), sign)
    assert action == STOP and at < 40
    assert "P(ends better than" in sched.decisions["worse"].reason
    action, _ = _run(sched, _trial("better"), 0.05, range(1, 40), sign)
    assert action == CONTINUE


def test_missing_metric_is_ignored_and_nan_stops():
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=0)
    trial = _trial("t")
    sched.on_trial_add(None, trial)
    assert sched.on_trial_result(None, trial, {"training_iteration": 1, "other": 3}) == CONTINUE
    assert sched.on_trial_result(None, trial, {"training_iteration": 2, "loss": math.nan}) == STOP
    assert "non-finite" in sched.decisions["t"].reason


def test_metric_and_mode_come_from_tune_config():
    sched = TTPScheduler()
    with pytest.raises(InvalidInputError, match="metric and mode"):
        sched.on_trial_result(None, _trial("t"), {"loss": 1.0, "training_iteration": 1})
    assert sched.set_search_properties("loss", "min", time_budget_s=30)
    assert sched.study_budget_s == 30
    assert not sched.set_search_properties("acc", "max")


def test_a_trial_that_cannot_finish_in_the_time_left_stops():
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=0, study_budget_s=5.0)
    trial = _trial("slow", budget=1000)
    sched.on_trial_add(None, trial)
    result = {"loss": 1.0, "training_iteration": 10, "time_total_s": 1.0}  # 0.1 s per step
    assert sched.on_trial_result(None, trial, result) == STOP
    assert "time budget" in sched.decisions["slow"].reason


def test_errored_and_removed_trials_are_not_peers():
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=1)
    _finish(sched, "done", 0.2)
    bad = _trial("bad")
    _run(sched, bad, 0.1, range(1, 5))
    sched.on_trial_error(None, bad)
    assert [c.finished for c in sched._peers("x")] == [True]


def test_save_restore_round_trip(tmp_path):
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=2, study_budget_s=100)
    for i, floor in enumerate((0.2, 0.25)):
        _finish(sched, f"done{i}", floor)
    trial = _trial("live")
    _run(sched, trial, 1.0, range(1, 4))
    sched.save(str(tmp_path / "sched.pkl"))
    fresh = TTPScheduler(n_startup_trials=2)
    fresh.restore(str(tmp_path / "sched.pkl"))
    assert fresh.metric == "loss" and fresh.study_budget_s == 100
    assert fresh._time_left() <= 100
    results = [{"loss": _loss(s, 1.0), "training_iteration": s} for s in range(4, 40)]
    a = [sched.on_trial_result(None, trial, r) for r in results]
    b = [fresh.on_trial_result(None, trial, r) for r in results]
    assert a == b and STOP in a


class _ListSearcher(Searcher):
    """Suggests widths from a list, and records what it was told."""

    def __init__(self, widths):
        super().__init__(metric="loss", mode="min")
        self.widths, self.completed = list(widths), {}

    def suggest(self, trial_id):
        return {"width": self.widths.pop(0)} if self.widths else Searcher.FINISHED

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed[trial_id] = error


def test_searcher_prices_configs_and_never_returns_one_over_the_cap():
    base = _ListSearcher([500, 50, 400, 20])
    searcher = CostAwareSearcher(
        base, cost_fn=lambda p: 1e-3 * p["width"], trial_budget_s=1.0, max_steps=100, min_steps=10
    )
    first = searcher.suggest("t1")
    assert first["width"] == 50 and first["ttp_budget_steps"] == 20
    assert first["ttp_predicted_seconds"] == pytest.approx(20 * 0.05)
    assert searcher.rejected[0][0] == {"width": 500}
    assert base.completed == {"t1": True}  # told the rejected suggestion will not run
    second = searcher.suggest("t2")
    assert second["width"] == 20 and second["ttp_budget_steps"] == 50
    searcher.on_trial_complete("t1", {"loss": 0.1})
    assert base.completed["t1_ttp1"] is False  # the result reaches the id the base suggested
    assert searcher.suggest("t3") == Searcher.FINISHED


def test_trainable_helpers():
    assert budget_steps({"ttp_budget_steps": 40}) == 40
    assert budget_steps({}, default=7) == 7
    with pytest.raises(InvalidInputError, match="ttp_budget_steps"):
        budget_steps({})


@pytest.fixture(scope="module")
def local_ray():
    # Workers cannot import this test module: ship its functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _claim_fault(folder: str) -> str | None:
    """The first trial to start raises, the second is killed, the rest run normally
    (claimed with O_EXCL files, so the order does not depend on the sampled values)."""
    for fault in ("raise", "kill"):
        try:
            os.close(os.open(os.path.join(folder, fault), os.O_CREAT | os.O_EXCL))
            return fault
        except FileExistsError:
            continue
    return None


def _trainable(config, fault_dir: str):
    steps = budget_steps(config)
    fault = _claim_fault(fault_dir)
    for step in range(1, steps + 1):
        if fault == "raise" and step == 3:
            raise RuntimeError("this trial is broken on purpose")
        if fault == "kill" and step == 5:
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-trial
        report({"loss": _loss(step, config["floor"])}, step, config)


def test_tuner_end_to_end_with_failing_and_killed_trainables(local_ray, tmp_path):
    searcher = CostAwareSearcher(
        OptunaSearch(seed=0),
        cost_fn=lambda p: 0.001,
        trial_budget_s=0.02,
        max_steps=30,
        step_time_calibration=False,  # this test is about faults; budgets stay 20 steps
    )
    faults = tmp_path / "faults"
    faults.mkdir()
    tuner = tune.Tuner(
        tune.with_parameters(_trainable, fault_dir=str(faults)),
        param_space={"floor": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            num_samples=6,
            search_alg=searcher,
            scheduler=TTPScheduler(n_startup_trials=2),
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert len(results) == 6  # the experiment ran every sample to the end
    errored = [r for r in results if r.error is not None]
    ok = [r for r in results if r.error is None]
    assert len(errored) == 2
    messages = " ".join(str(r.error) for r in errored)
    assert "broken on purpose" in messages
    from ray.exceptions import RayActorError

    killed = [r.error for r in errored if "broken on purpose" not in str(r.error)]
    assert len(killed) == 1 and isinstance(killed[0], RayActorError), [type(e) for e in killed]
    assert len(ok) == 4 and all(r.config["ttp_budget_steps"] == 20 for r in ok)
    best = results.get_best_result()
    assert best.metrics["ttp_step"] == 20 and np.isfinite(best.metrics["loss"])


def test_scheduler_and_pruner_validate_the_same_options_the_same_way():
    from ttp_search.optuna import TTPPruner

    for kwargs, match in (
        ({"interval_steps": 0}, "interval_steps"),
        ({"study_budget_s": -1.0}, "study_budget_s"),
        ({"threshold": 2.0}, "threshold"),
        ({"peer_percentile": -5.0}, "peer_percentile"),
    ):
        for cls in (TTPPruner, TTPScheduler):
            with pytest.raises(InvalidInputError, match=match):
                cls(**kwargs)
    with pytest.raises(InvalidInputError, match="mode"):
        TTPScheduler(mode="up")
