"""Rows of docs/RELIABILITY.md for input that used to break: tracebacks from the CLI, budgets
priced for another configuration, a study that never stopped, Ray results that poisoned the
scheduler, options accepted and then wrong, numbers at the edges, and curves or runs too long.

Each helper makes the call and checks the documented outcome itself (a "safe" row), or raises
the typed error the row names. The never-ending study and the wrong-configuration budgets
failed before their fixes: the study ran until the safety timeout, and the budgets were the
proposal's (65 steps for a trial that ran w=500).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from _reliability import Case, cli_error, runner
from optuna.distributions import IntDistribution
from torch import nn

from ttp_search.budget import LinearDecayLR, steps_for_budget
from ttp_search.cli import app
from ttp_search.cost import LayerTimeModel, calibration_path, device_fingerprint
from ttp_search.cost.calibrate import CalibrationData
from ttp_search.cost.features import FEATURE_COLUMNS
from ttp_search.cost.trace import trace_training_step
from ttp_search.curves import PartialCurve, StudyPredictor, extrapolate
from ttp_search.curves.extrapolate import MAX_FIT_POINTS, thin_curve
from ttp_search.data.pretrained import SharedDataMissing, cifar_resnet
from ttp_search.dynamics import LinearizedSDE
from ttp_search.engine import BudgetPlanner, DecisionCore, Limit, TrialCurve, ValueRangeWarning
from ttp_search.errors import CalibrationError, InvalidInputError, MissingParameterError
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    get_budget,
    keys,
    report,
    set_budget,
)
from ttp_search.testing import linearized_sgd

optuna.logging.set_verbosity(optuna.logging.WARNING)

SMALL_MODEL = Path(tempfile.mkdtemp()) / "small.py"
SMALL_MODEL.write_text(
    "import torch\n\n\ndef small():\n"
    "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
)
SMALL = f"{SMALL_MODEL}:small"


# -- CLI -------------------------------------------------------------------------------------


def _not_a_torch_file() -> None:
    path = Path(tempfile.mkdtemp()) / "w.pt"
    path.write_text("not torch")
    cli_error("steps", "predict", SMALL, "--weights", str(path))


def _calibrate_over_corrupt_cache(calibrated: LayerTimeModel) -> None:
    cache = Path(tempfile.mkdtemp())
    path = cache / calibration_path(device_fingerprint("cpu")).name
    path.write_bytes(b"not a calibration")
    calls = []

    def calibrate(cls, budget_s, **kw):  # the session's calibration stands in for a new one
        calls.append(budget_s)
        calibrated.save(path)
        return calibrated

    original = LayerTimeModel.calibrate
    LayerTimeModel.calibrate = classmethod(calibrate)
    try:
        args = ["time", "calibrate", "--budget-s", "5"]
        result = runner.invoke(app, args, env={"TTP_SEARCH_CACHE": str(cache)})
    finally:
        LayerTimeModel.calibrate = original
    assert result.exit_code == 0, result.output
    assert "calibrating anew" in result.output and "already cached" not in result.output
    assert calls == [5.0]
    LayerTimeModel.load(path)  # the new calibration is readable


def _json_without_infinity() -> None:
    args = ["steps", "predict", SMALL, "--loss", "mse", "--lr", "0.001", "--steps", "20"]
    result = runner.invoke(app, [*args, "--target-loss", "0", "--json", "--num-samples", "64"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("{"))

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    out = json.loads(line, parse_constant=refuse)
    assert out["steps_to"]["loss"]["reached"] is False
    assert out["steps_to"]["loss"]["steps"] is None


def _trace_bad_shape_is_quiet() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("torch").addHandler(handler)
    try:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        try:
            trace_training_step(net, (3, 9, 8), 4)
        finally:
            assert not records, [r.getMessage()[:200] for r in records]
    finally:
        logging.getLogger("torch").removeHandler(handler)


# -- a study with a time budget and no n_trials ------------------------------------------------


def _timed_study(storage=None, name=None) -> tuple[optuna.Study, float]:
    budget = 1.5
    sampler = CostAwareSampler(
        cost_fn=lambda p: 1e-3,
        trial_budget_s=0.5,
        study_budget_s=budget,
        max_steps=200,
        search_space={"x": optuna.distributions.FloatDistribution(0, 1)},
        seed=0,
    )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        load_if_exists=True,
        sampler=sampler,
        pruner=TTPPruner(study_budget_s=budget),
    )

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        for step in range(1, get_budget(trial) + 1):
            time.sleep(0.002)
            if step % 20 == 0:
                report(trial, x + 1 / step, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return x

    start = time.perf_counter()
    # The timeout is the test's safety net only: before the fix the study ran until it.
    study.optimize(objective, timeout=30)
    return study, time.perf_counter() - start


def _study_stops_when_spent() -> None:
    study, took = _timed_study()
    assert took < 10, f"the study ran {took:.0f} s past its 1.5 s budget"
    reasons = [
        t.user_attrs.get(keys.PRUNE_REASON) or keys.plan_of(t).get("reason") or ""
        for t in study.trials
    ]
    assert any("spent (" in r for r in reasons), reasons
    assert not any("0.0 s left" in r or "(0.0 s)" in r for r in reasons), reasons
    # Resumed from storage later, it stops at once instead of spinning.
    url = f"sqlite:///{tempfile.mkdtemp()}/study.db"
    first, _ = _timed_study(url, "resumed")
    before = len(first.trials)
    again, took = _timed_study(url, "resumed")
    assert took < 5 and len(again.trials) <= before + 1, (before, len(again.trials))


# -- budgets priced for the configuration that runs -----------------------------------------


def _width_sampler() -> CostAwareSampler:
    return CostAwareSampler(
        cost_fn=lambda p: 1e-3 * p["w"],
        trial_budget_s=5.0,
        max_steps=10**6,
        search_space={"w": IntDistribution(8, 512)},
        seed=0,
    )


def _budget_of(study: optuna.Study, objective, n_trials: int = 1) -> list[tuple[int, int]]:
    seen = []

    def wrapped(trial):
        seen.append(objective(trial))
        return 0.0

    study.optimize(wrapped, n_trials=n_trials)
    return seen


def _enqueued_trial_is_priced_as_run() -> None:
    study = optuna.create_study(sampler=_width_sampler())
    study.enqueue_trial({"w": 500})
    [(w, budget)] = _budget_of(study, lambda t: (t.suggest_int("w", 8, 512), get_budget(t)))
    assert (w, budget) == (500, 10), (w, budget)  # 5 s / (1e-3 s x 500)
    assert keys.plan_of(study.trials[0])["params"] == {"w": 500}


def _narrower_range_is_priced_as_run() -> None:
    study = optuna.create_study(sampler=_width_sampler())
    seen = _budget_of(study, lambda t: (t.suggest_int("w", 8, 30), get_budget(t)), n_trials=4)
    for w, budget in seen:
        assert budget == math.floor(5.0 / (1e-3 * w) * (1 + 1e-12)), (w, budget)


def _budget_before_suggest() -> None:
    study = optuna.create_study(sampler=_width_sampler())
    trial = study.ask()
    get_budget(trial)


def _budget_is_final_once_given() -> None:
    sampler = CostAwareSampler(
        cost_fn=lambda p: 0.01,
        trial_budget_s=1.0,
        search_space={"w": IntDistribution(8, 512)},
        seed=0,
    )
    study = optuna.create_study(sampler=sampler)
    trial = study.ask()
    budget = get_budget(trial)  # before any suggestion: Optuna samples relative params lazily
    trial.suggest_int("w", 8, 512)  # this runs the sampler's sample_relative
    assert get_budget(trial) == budget == 100
    assert study.trials[0].user_attrs["ttp:budget_steps"] == budget


# -- Ray -----------------------------------------------------------------------------------------


def _ray():
    pytest.importorskip("ray")
    from ray.tune.schedulers import TrialScheduler

    from ttp_search.ray import CostAwareSearcher, TTPScheduler

    return TrialScheduler, CostAwareSearcher, TTPScheduler


class _Trial:
    def __init__(self, tid: str, config: dict | None = None):
        self.trial_id, self.config = tid, config or {}


def _widths_searcher():
    """A Searcher that always suggests width 10 (and checkpoints nothing of its own)."""
    from ray.tune.search import Searcher

    class Widths(Searcher):
        def __init__(self):
            super().__init__(metric="loss", mode="min")

        def suggest(self, trial_id):
            return {"width": 10}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

        def save(self, path):
            Path(path).write_text("")

        def restore(self, path):
            pass

    return Widths


def _ray_none_metric_is_ignored() -> None:
    TrialScheduler, _, TTPScheduler = _ray()
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=0)
    a, b = _Trial("a", {"ttp_budget_steps": 20}), _Trial("b", {"ttp_budget_steps": 20})
    for t in (a, b):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a, {"loss": None, "training_iteration": 1}) == "CONTINUE"
    with pytest.warns(UserWarning, match="not a number"):
        sched.on_trial_result(None, a, {"loss": "n/a", "training_iteration": 2})
    for step in range(1, 6):  # every later result of every trial is judged normally
        for t in (a, b):
            result = {"loss": 1.0 / step, "training_iteration": step}
            assert sched.on_trial_result(None, t, result) == TrialScheduler.CONTINUE
    assert len(sched._trials["a"].steps) == len(sched._trials["a"].values) == 5


def _ray_budget_string() -> None:
    _, _, TTPScheduler = _ray()
    sched = TTPScheduler(metric="loss", mode="min")
    sched.on_trial_add(None, _Trial("t", {"ttp_budget_steps": "100"}))


def _ray_restore_keeps_clock_and_decisions() -> None:
    _, CostAwareSearcher, TTPScheduler = _ray()
    Widths = _widths_searcher()
    folder = Path(tempfile.mkdtemp())
    searcher = CostAwareSearcher(
        Widths(), cost_fn=lambda p: 0.1, max_steps=10**6, study_budget_s=30
    )
    searcher.suggest("t0")  # starts the experiment's clock
    searcher.planner.clock.started_at -= 20  # as if 20 s had passed: 10 s (100 steps) left
    searcher.save(str(folder / "searcher.pkl"))
    fresh = CostAwareSearcher(Widths(), cost_fn=lambda p: 0.1, max_steps=10**6)
    fresh.restore(str(folder / "searcher.pkl"))
    assert fresh.suggest("t1")["ttp_budget_steps"] <= 100
    sched = TTPScheduler(metric="loss", mode="min", n_startup_trials=0)
    trial = _Trial("t", {"ttp_budget_steps": 20})
    sched.on_trial_add(None, trial)
    sched.on_trial_result(None, trial, {"loss": 1.0, "training_iteration": 1})
    sched.save(str(folder / "sched.pkl"))
    restored = TTPScheduler()
    restored.restore(str(folder / "sched.pkl"))
    assert restored.decisions.keys() == {"t"}


# -- options accepted and then wrong -------------------------------------------------------


def _outside_value_range_is_not_clipped() -> None:
    core = DecisionCore(n_startup_trials=0, value_range=(0.0, 1.0))
    k = np.arange(1, 21.0)
    with pytest.warns(ValueRangeWarning, match="outside value_range"):
        est = core.predict(TrialCurve(k, 1.5 + 1.0 / k, budget_steps=100))
    assert est.mean > 1.2  # a loss near 1.5, not the range's edge 1


def _default_budget_not_a_step_count() -> None:
    for bad in (0, -10, 2.5, True):
        with pytest.raises(InvalidInputError, match="default_budget_steps"):
            TTPPruner(default_budget_steps=bad)
    raise InvalidInputError("default_budget_steps: every one refused")


def _numpy_numbers_work_like_python_numbers() -> None:
    i64, f32 = np.int64, np.float32
    DecisionCore(n_startup_trials=i64(3), threshold=f32(0.1), margin=f32(0.01))
    TTPPruner(interval_steps=i64(2), band_tolerance=f32(0.5), default_budget_steps=i64(50))
    plan = BudgetPlanner(lambda p: f32(0.01), trial_budget_s=f32(1.0), max_steps=i64(50)).plan({})
    assert plan.steps == 50
    CostAwareSampler(cost_fn=lambda p: 0.1, max_steps=i64(10), n_candidates=i64(4))
    set_budget(optuna.create_study().ask(), i64(100))
    LinearDecayLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), i64(10))
    assert math.isfinite(extrapolate([1, 2, 3, 4], [1.0, 0.6, 0.5, 0.45], i64(10)).mean)
    assert steps_for_budget(f32(1.0), i64(1)) == 1


def _searcher_retries() -> None:
    _, CostAwareSearcher, _ = _ray()
    searcher = _widths_searcher()()
    CostAwareSearcher(searcher, cost_fn=lambda p: 0.1, max_steps=10, max_retries=-1)


def _linear_decay_rising() -> None:
    LinearDecayLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), 10, final_lr=0.5)


# -- numbers at the edges ------------------------------------------------------------------------


def _inf_cost_is_infeasible() -> None:
    plan = BudgetPlanner(lambda p: math.inf, max_steps=10).plan({})
    assert not plan.feasible and plan.limit == Limit.COST and "inf seconds" in plan.reason


def _calibration_bad_contents() -> None:
    width = len(FEATURE_COLUMNS)
    data = CalibrationData(
        fingerprint=device_fingerprint("cpu"),
        peak_flops=1e11,
        bandwidth=1e10,
        op_names=["aten.mm.default"] * 8,
        op_X=[[1.0] * width] * 8,
        op_time=[1e-4] * 8,
    )  # well formed, but not one network or optimizer timing
    path = data.save(Path(tempfile.mkdtemp()) / "calib.npz")
    LayerTimeModel.load(path)


def _sde_nan_input() -> None:
    x = torch.randn(16, 4)
    x[3, 1] = math.nan
    LinearizedSDE(nn.Linear(4, 3), x, torch.randint(0, 3, (16,)), num_samples=16)


def _sde_tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    return LinearizedSDE(net, torch.randn(16, 4), torch.randint(0, 3, (16,)), num_samples=16)


def _long_curve_is_thinned() -> None:
    k = np.arange(1, 100_001, dtype=np.float64)
    v = 0.3 + 1 / np.sqrt(k)
    s, _ = thin_curve(k, v)
    assert s.size == MAX_FIT_POINTS and np.all(np.diff(s) > 0)
    assert np.array_equal(s[-32:], k[-32:])  # the recent points stay exact
    est = extrapolate(k, v, 200_000)
    assert abs(est.mean - (0.3 + 1 / math.sqrt(200_000))) < 0.01


def _fit_is_cached(calibrated: LayerTimeModel) -> None:
    path = calibrated.save(Path(tempfile.mkdtemp()) / "calib.npz")
    first = LayerTimeModel.load(path)
    assert path.with_name(path.name + ".fit.pkl").exists()
    original = LayerTimeModel.fit
    LayerTimeModel.fit = lambda self, data: pytest.fail("refitted a cached calibration")
    try:
        second = LayerTimeModel.load(path)
    finally:
        LayerTimeModel.fit = original
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = first.predict(net, (64,), 8), second.predict(net, (64,), 8)
    assert a.step_time_s == b.step_time_s


def _train_loss_nan() -> None:
    study = optuna.create_study()
    trial = study.ask()
    report(trial, 0.5, 1, train_loss=math.nan)


def _study_too_few() -> None:
    steps = np.arange(1, 11.0)
    done = [PartialCurve(steps, 1 / (a * steps), 10.0) for a in (1.0, 2.0)]
    model = StudyPredictor(min_trials=5).fit(done, [0.1, 0.05], fraction=0.5)
    model.predict(PartialCurve(steps[:5], 1 / steps[:5], 10.0))


def _cli(*args: str):
    return lambda: cli_error(*args)


EDGE_CASES = [
    # CLI
    Case(
        "cli-steps-kwargs",
        "ttp steps predict",
        "--model-kwargs '{oops'",
        _cli("steps", "predict", SMALL, "--model-kwargs", "{oops"),
        InvalidInputError,
        "{oops",
    ),
    Case(
        "cli-kwargs-list",
        "ttp steps predict",
        "--model-kwargs '[1]'",
        _cli("steps", "predict", SMALL, "--model-kwargs", "[1]"),
        InvalidInputError,
        "JSON object",
    ),
    Case(
        "cli-weights-missing",
        "ttp steps predict",
        "--weights missing.pt",
        _cli("steps", "predict", SMALL, "--weights", "missing.pt"),
        InvalidInputError,
        "missing.pt",
    ),
    Case(
        "cli-weights-garbage",
        "ttp steps predict",
        "--weights a file that is not a torch file",
        _not_a_torch_file,
        InvalidInputError,
        "not a torch state_dict",
    ),
    Case(
        "cli-measure-batch",
        "ttp time measure",
        "--batch-size 0 (one line, not a second 'failed a training step')",
        _cli("time", "measure", SMALL, "--input", "64", "--batch-size", "0"),
        InvalidInputError,
        "--batch-size",
    ),
    Case(
        "cli-device-cuda",
        "ttp time measure",
        "--device cuda:99 (no such GPU)",
        _cli("time", "measure", SMALL, "--input", "64", "--batch-size", "4", "--device", "cuda:99"),
        InvalidInputError,
        "cuda:99",
    ),
    Case(
        "cli-device-banana",
        "ttp time measure",
        "--device banana",
        _cli("time", "measure", SMALL, "--input", "64", "--batch-size", "4", "--device", "banana"),
        InvalidInputError,
        "banana",
    ),
    Case(
        "cli-download",
        "ttp time measure",
        '--model-kwargs \'{"weights": "DEFAULT"}\'',
        _cli(
            "time",
            "measure",
            "torchvision:resnet18",
            "--input",
            "3x32x32",
            "--batch-size",
            "2",
            "--model-kwargs",
            '{"weights": "DEFAULT"}',
        ),
        InvalidInputError,
        "never",
    ),
    Case(
        "cli-measure-shape",
        "ttp time measure",
        "--input 3x9x8 for a model of 64 inputs",
        _cli("time", "measure", SMALL, "--input", "3x9x8", "--batch-size", "4"),
        InvalidInputError,
        "cannot run a training step",
    ),
    Case(
        "trace-shape-quiet",
        "cost.trace_training_step (ttp time predict)",
        "an input shape the model cannot take",
        _trace_bad_shape_is_quiet,
        InvalidInputError,
        "cannot run a training step",
    ),
    Case(
        "cli-calibrate-corrupt",
        "ttp time calibrate",
        "a corrupt cached calibration",
        _calibrate_over_corrupt_cache,
        safe="a warning that it cannot be used, then a fresh calibration (exit 0)",
        fixture="calibrated",
    ),
    Case(
        "cli-json-inf",
        "ttp steps predict --json",
        "a target that is never reached",
        _json_without_infinity,
        safe='strict JSON: `"reached": false`, `"steps": null` (no `Infinity`)',
    ),
    # the study's time budget
    Case(
        "study-budget-spent",
        "study.optimize with CostAwareSampler(study_budget_s) + TTPPruner(study_budget_s)",
        "no n_trials; also resumed from SQLite after the budget is spent",
        _study_stops_when_spent,
        safe="the study stops (`study.stop()`, a log line saying why); reasons say how far "
        "over the budget it is, never '0.0 s'; the resumed study ends after at most one trial",
    ),
    # budgets for the configuration that runs
    Case(
        "budget-enqueued",
        "optuna.get_budget + CostAwareSampler",
        "enqueue_trial({'w': 500}) while the sampler proposes another w",
        _enqueued_trial_is_priced_as_run,
        safe="priced as w=500 (the plan's `params`), budget 10 steps",
    ),
    Case(
        "budget-narrow-range",
        "optuna.get_budget + CostAwareSampler",
        "the objective's range is narrower than search_space",
        _narrower_range_is_priced_as_run,
        safe="each trial priced at the value it runs with",
    ),
    Case(
        "budget-before-suggest",
        "optuna.get_budget + CostAwareSampler",
        "called before the parameter the cost needs is suggested",
        _budget_before_suggest,
        MissingParameterError,
        "'w'",
    ),
    Case(
        "budget-final",
        "optuna.get_budget + CostAwareSampler",
        "called before any suggestion, the sampler sampling afterwards",
        _budget_is_final_once_given,
        safe="the budget handed out stays the trial's budget (the later sampling writes nothing)",
    ),
    # Ray
    Case(
        "ray-metric-none",
        "ray.TTPScheduler",
        "a result with `loss: None` (or text)",
        _ray_none_metric_is_ignored,
        safe="ignored like a missing metric (text also warns); later results of every trial "
        "are judged normally",
    ),
    Case(
        "ray-budget-string",
        "ray.TTPScheduler",
        "config budget '100' (a string)",
        _ray_budget_string,
        InvalidInputError,
        "'100'",
    ),
    Case(
        "ray-restore",
        "ray.CostAwareSearcher / TTPScheduler save + restore",
        "an experiment restored from a checkpoint",
        _ray_restore_keeps_clock_and_decisions,
        safe="the searcher's clock goes on (budgets fit the time left); the scheduler's "
        "decisions are kept",
    ),
    Case(
        "ray-retries",
        "ray.CostAwareSearcher",
        "max_retries = -1",
        _searcher_retries,
        InvalidInputError,
        "max_retries",
    ),
    # options
    Case(
        "pruner-range-inf",
        "optuna.TTPPruner",
        "value_range = (0, inf)",
        lambda: TTPPruner(value_range=(0, math.inf)),
        InvalidInputError,
        "value_range",
    ),
    Case(
        "core-range-outside",
        "engine.DecisionCore",
        "a loss near 1.5 with value_range (0, 1)",
        _outside_value_range_is_not_clipped,
        safe="a `ValueRangeWarning` (once per range); the curve is extrapolated unclipped",
    ),
    Case(
        "pruner-default-budget",
        "optuna.TTPPruner / ray.TTPScheduler",
        "default_budget_steps 0, -10, 2.5 or True",
        _default_budget_not_a_step_count,
        InvalidInputError,
        "default_budget_steps",
    ),
    Case(
        "planner-input-shape",
        "engine.BudgetPlanner",
        "input_shape = (4.7,)",
        lambda: BudgetPlanner(lambda p: 0.1, max_steps=10, input_shape=(4.7,)),
        InvalidInputError,
        "input_shape",
    ),
    Case(
        "lineardecay-rising",
        "budget.LinearDecayLR",
        "final_lr 0.5 above the initial lr 0.1",
        _linear_decay_rising,
        InvalidInputError,
        "final_lr",
    ),
    Case(
        "planner-bool-budget",
        "engine.BudgetPlanner",
        "trial_budget_s = True",
        lambda: BudgetPlanner(lambda p: 0.1, trial_budget_s=True),
        InvalidInputError,
        "trial_budget_s",
    ),
    Case(
        "numpy-numbers",
        "engine, optuna, budget, curves",
        "np.int64 and np.float32 where Python numbers are accepted",
        _numpy_numbers_work_like_python_numbers,
        safe="accepted like int and float",
    ),
    # numbers at the edges
    Case(
        "planner-inf-budget",
        "engine.BudgetPlanner",
        "trial_budget_s = inf",
        lambda: BudgetPlanner(lambda p: 0.1, trial_budget_s=math.inf),
        InvalidInputError,
        "None means no limit",
    ),
    Case(
        "sampler-inf-budget",
        "optuna.CostAwareSampler",
        "study_budget_s = inf",
        lambda: CostAwareSampler(cost_fn=lambda p: 0.1, max_steps=10, study_budget_s=math.inf),
        InvalidInputError,
        "study_budget_s",
    ),
    Case(
        "planner-tiny-cost",
        "engine.BudgetPlanner.plan",
        "cost_fn returns 1e-320 s per step",
        lambda: BudgetPlanner(lambda p: 1e-320, trial_budget_s=1.0).plan({}),
        InvalidInputError,
        "too small",
    ),
    Case(
        "steps-budget-tiny",
        "budget.steps_for_budget",
        "step_time_s = 1e-320",
        lambda: steps_for_budget(1, 1e-320),
        InvalidInputError,
        "1e-320",
    ),
    Case(
        "planner-inf-cost",
        "engine.BudgetPlanner.plan",
        "cost_fn returns inf (only max_steps given)",
        _inf_cost_is_infeasible,
        safe="infeasible, reason 'cost_fn priced it at inf seconds per step'; never run",
    ),
    Case(
        "extrapolate-temperature",
        "curves.extrapolate",
        "temperature = 0",
        lambda: extrapolate([1, 2, 3, 4], [1.0, 0.6, 0.5, 0.45], 10, temperature=0),
        InvalidInputError,
        "temperature",
    ),
    Case(
        "cost-bad-contents",
        "cost.LayerTimeModel.load",
        "a well-formed calibration file without network or optimizer timings",
        _calibration_bad_contents,
        CalibrationError,
        "cannot be fitted",
    ),
    Case(
        "sde-nan",
        "dynamics.LinearizedSDE",
        "one NaN in the inputs",
        _sde_nan_input,
        InvalidInputError,
        "non-finite",
    ),
    Case(
        "linearized-batch",
        "testing.linearized_sgd",
        "batch_size above the data set",
        lambda: linearized_sgd(
            nn.Linear(4, 3),
            torch.randn(8, 4),
            torch.zeros(8).long(),
            lr=0.1,
            batch_size=9,
            steps=5,
        ),
        InvalidInputError,
        "larger than the data set",
    ),
    Case(
        "linearized-trainable",
        "testing.linearized_sgd",
        "trainable prefixes that match no parameter",
        lambda: linearized_sgd(
            nn.Linear(4, 3),
            torch.randn(8, 4),
            torch.zeros(8).long(),
            lr=0.1,
            batch_size=4,
            steps=5,
            trainable=["head"],
        ),
        InvalidInputError,
        "matches no parameter",
    ),
    Case(
        "pretrained-missing",
        "data.cifar_resnet",
        "a shared folder without the weights",
        lambda: cifar_resnet(20, shared=tempfile.mkdtemp()),
        SharedDataMissing,
        "cifar10_resnet20.pt is missing",
    ),
    Case(
        "pretrained-depth",
        "data.cifar_resnet",
        "depth 18 (not 6n + 2 with weights)",
        lambda: cifar_resnet(18),
        InvalidInputError,
        "20, 32 and 44",
    ),
    # scale
    Case(
        "extrapolate-long",
        "curves.extrapolate",
        "a curve of 100,000 points",
        _long_curve_is_thinned,
        safe=f"fitted on at most {MAX_FIT_POINTS} points (older reports averaged in bins, the "
        "latest 32 exact): the cost of a judgement does not grow with the curve",
    ),
    Case(
        "sde-steps-huge",
        "dynamics.LinearizedSDE.predict_curve",
        "steps = 10**9",
        lambda: _sde_tiny().predict_curve(0.1, 8, steps=10**9),
        InvalidInputError,
        "steps must be an integer in [1, 10000000]",
    ),
    Case(
        "cost-fit-cached",
        "cost.LayerTimeModel.load",
        "loading the same calibration again",
        _fit_is_cached,
        safe="the fit is cached next to the file (`.fit.pkl`, keyed by the file's bytes and "
        "the library versions) and not recomputed",
        fixture="calibrated",
    ),
    Case(
        "study-features",
        "optuna.TTPPruner",
        "study_features naming a feature that does not exist",
        lambda: TTPPruner(study_features=("observed", "loss_slope")),
        InvalidInputError,
        "unknown curve feature 'loss_slope'",
    ),
    Case(
        "train-loss-nan",
        "optuna.report",
        "train_loss=nan",
        _train_loss_nan,
        InvalidInputError,
        "train_loss",
    ),
    Case(
        "study-few-finished",
        "curves.StudyPredictor.predict",
        "fewer finished trials at the fraction than min_trials, no fallback",
        _study_too_few,
        InvalidInputError,
        "no fallback was given",
    ),
]
