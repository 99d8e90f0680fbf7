"""Optuna adapters, tested with study.ask()/tell() as Optuna's own pruner tests are."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ttp_search.budget import LinearDecayLR, Schedule
from ttp_search.engine import DecisionCore, TrialCurve
from ttp_search.engine.choice import Completed, ExpectedImprovementPerSecond
from ttp_search.engine.space import Numeric
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    get_budget,
    keys,
    linear_decay_lr,
    report,
    set_budget,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _loss(step, floor, scale=1.0):
    return floor + scale / (1.0 + step / 10.0)


def _finish(study, floor, budget=50, direction_sign=1.0):
    """Complete one trial whose loss curve decays to ``floor`` (negated when maximising)."""
    trial = study.ask()
    set_budget(trial, budget)
    value = None
    for step in range(1, budget + 1):
        value = direction_sign * _loss(step, floor)
        report(trial, value, step, elapsed_s=0.01 * step)
    study.tell(trial, value)
    return value


def _prune_at(study, trial) -> bool:
    return study.pruner.prune(study, study._storage.get_trial(trial._trial_id))


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_clearly_worse_trial_is_pruned_and_better_one_is_not(direction):
    sign = 1.0 if direction == "minimize" else -1.0
    study = optuna.create_study(direction=direction, pruner=TTPPruner(n_startup_trials=2))
    for floor in (0.20, 0.25):
        _finish(study, floor, direction_sign=sign)

    worse, better = study.ask(), study.ask()
    for trial in (worse, better):
        set_budget(trial, 50)
    for step in range(1, 16):
        report(worse, sign * _loss(step, 1.0), step, elapsed_s=0.01 * step)
        report(better, sign * _loss(step, 0.05), step, elapsed_s=0.01 * step)
    assert _prune_at(study, worse)
    assert not _prune_at(study, better)
    attrs = study._storage.get_trial(worse._trial_id).user_attrs
    assert "P(ends better than" in attrs["ttp:prune_reason"]
    assert attrs["ttp:decision"]["predicted_low"] <= attrs["ttp:decision"]["predicted_high"]
    assert attrs["ttp:decision"]["step"] == 15


def test_startup_and_warmup_keep_trials_running():
    study = optuna.create_study(pruner=TTPPruner(n_startup_trials=3, n_warmup_steps=10))
    for floor in (0.2, 0.25):
        _finish(study, floor)
    trial = study.ask()
    set_budget(trial, 50)
    for step in range(1, 6):
        report(trial, _loss(step, 5.0), step)
    assert not _prune_at(study, trial)
    # Before step n_warmup_steps a report is not judged at all, as in Optuna's pruners.
    assert "ttp:decision" not in study._storage.get_trial(trial._trial_id).user_attrs
    _finish(study, 0.3)
    assert not _prune_at(study, trial)  # still inside the warm-up
    for step in range(6, 11):
        report(trial, _loss(step, 5.0), step)
    # A report at step n_warmup_steps itself is judged, as in Optuna's pruners.
    assert _prune_at(study, trial)


def test_trials_are_judged_at_their_own_budget():
    core = DecisionCore(n_startup_trials=1)
    k = np.arange(1, 21, dtype=float)
    done = TrialCurve(np.r_[k, 21.0], np.r_[_loss(k, 0.3, 0.2), 0.35], 20, finished=True)
    slow = 0.1 + 2.0 / (1.0 + k / 200.0)  # far behind now, far ahead after 4000 steps
    assert core.decide(TrialCurve(k, slow, budget_steps=30), [done]).prune
    long_run = core.decide(TrialCurve(k, slow, budget_steps=4000), [done])
    assert not long_run.prune and long_run.prob_better > 0.05
    assert long_run.predicted_final < slow[-1]


def test_a_trial_that_cannot_finish_in_the_time_left_is_pruned():
    core = DecisionCore(n_startup_trials=0)
    k = np.arange(1, 11, dtype=float)
    trial = TrialCurve(k, _loss(k, 0.1), budget_steps=1000, elapsed_s=1.0)  # 0.1 s per step
    decision = core.decide(trial, [], time_left_s=50.0)
    assert decision.prune and "needs 99 s, 50 s left" in decision.reason
    assert not core.decide(trial, [], time_left_s=200.0).prune


def test_pruner_uses_the_study_time_budget():
    study = optuna.create_study(pruner=TTPPruner(n_startup_trials=0, study_budget_s=1e-3))
    trial = study.ask()
    set_budget(trial, 10_000)
    report(trial, 1.0, 1, elapsed_s=0.5)
    assert _prune_at(study, trial)
    assert "time budget" in study._storage.get_trial(trial._trial_id).user_attrs["ttp:prune_reason"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reports_prune_with_a_reason_and_the_study_goes_on(bad):
    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        set_budget(trial, 5)
        for step in range(1, 6):
            report(trial, bad if trial.number == 1 and step == 3 else x + 1 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    study = optuna.create_study(pruner=TTPPruner(n_startup_trials=0))
    study.optimize(objective, n_trials=4)
    bad_trial = study.trials[1]
    assert bad_trial.state == TrialState.PRUNED
    assert "non-finite" in bad_trial.user_attrs["ttp:prune_reason"]
    assert len(study.trials) == 4 and study.trials[0].state == TrialState.COMPLETE
    assert all(t.state != TrialState.FAIL and "ttp:decision" in t.user_attrs for t in study.trials)


def test_report_rejects_steps_that_do_not_increase_and_bad_elapsed():
    study = optuna.create_study()
    trial = study.ask()
    report(trial, 1.0, 5)
    with pytest.raises(InvalidInputError, match="step 3 is not after the last reported step 5"):
        report(trial, 0.9, 3)
    with pytest.raises(InvalidInputError, match="elapsed_s"):
        report(trial, 0.9, 6, elapsed_s=-1.0)
    with pytest.raises(InvalidInputError, match="step"):
        report(trial, 0.9, -1)
    assert trial.user_attrs["ttp:clock"]["step"] == 5
    assert trial.user_attrs["ttp:clock"]["elapsed_s"] >= 0


def test_plain_trial_report_works_and_elapsed_is_measured():
    study = optuna.create_study(pruner=TTPPruner(n_startup_trials=0))
    trial = study.ask()
    for step in range(1, 6):
        trial.report(_loss(step, 0.1), step)
    assert not trial.should_prune()
    decision = study._storage.get_trial(trial._trial_id).user_attrs["ttp:decision"]
    assert decision["reason"] == "no completed trial to compare with"


def test_budget_helpers():
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(InvalidInputError, match="no step budget"):
        get_budget(trial)
    assert get_budget(trial, default=30) == 30
    set_budget(trial, 40)
    assert get_budget(trial) == 40
    with pytest.raises(InvalidInputError, match="steps"):
        set_budget(trial, 0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = linear_decay_lr(trial, opt)
    assert isinstance(sched, LinearDecayLR) and sched.total_steps == 40
    assert trial.user_attrs["ttp:schedule"] == "linear"


def _space():
    return {"width": IntDistribution(8, 512, log=True), "lr": FloatDistribution(1e-3, 1.0)}


def test_sampler_never_runs_a_configuration_predicted_over_the_cap():
    ran = []

    def objective(trial):
        width = trial.suggest_int("width", 8, 512, log=True)
        trial.suggest_float("lr", 1e-3, 1.0)
        steps = get_budget(trial)
        ran.append((width, steps))
        return width / steps

    # 100 steps must fit in 1 s: widths over 100 (1e-4 s per unit per step) cannot run.
    sampler = CostAwareSampler(
        cost_fn=lambda p: 1e-4 * p["width"],
        trial_budget_s=1.0,
        max_steps=200,
        min_steps=100,
        search_space=_space(),
        n_candidates=2,
        seed=1,
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    assert ran and all(w <= 100 and 100 <= s <= 200 for w, s in ran)
    for t in study.trials:
        plan = keys.plan_of(t)
        assert plan["step_s"] == pytest.approx(1e-4 * t.params["width"])
        if t.state == TrialState.COMPLETE:
            budget = t.user_attrs[keys.BUDGET]
            assert budget == min(200, math.floor(1.0 / (1e-4 * t.params["width"])))
            assert plan["seconds"] == pytest.approx(budget * 1e-4 * t.params["width"])
        else:
            assert not plan["feasible"] and plan["limit"] == "trial_time"
            assert "over the per-trial cap" in plan["reason"]


def _mean_cost_rank(cost_exponent: float, seed: int) -> float:
    sampler = CostAwareSampler(
        cost_fn=lambda p: 1e-3 * p["width"],
        max_steps=10,
        search_space=_space(),
        n_startup_trials=4,
        cost_exponent=cost_exponent,
        seed=seed,
    )
    study = optuna.create_study(sampler=sampler)
    # Width costs time and does nothing for the value: cost should steer it down.
    study.optimize(
        lambda t: (
            (t.suggest_float("lr", 1e-3, 1.0) - 0.5) ** 2
            + 0 * t.suggest_int("width", 8, 512, log=True)
        ),
        n_trials=20,
    )
    notes = [keys.plan_of(t)["note"] for t in study.trials[5:]]
    assert all("EI per second" in n for n in notes)
    return float(np.mean([int(re.search(r"cost rank (\d+)", n).group(1)) for n in notes]))


def test_cost_enters_the_choice_among_proposals():
    # Proposals alike in everything the GP sees (lr) have the same expected improvement:
    # with cost in the score the cheapest runs, without it the first.
    space = {"lr": Numeric(1e-3, 1.0)}
    done = [Completed({"lr": lr}, (lr - 0.5) ** 2) for lr in (0.1, 0.3, 0.7, 0.9)]
    proposals = [{"lr": 0.45, "width": w} for w in (300, 40, 8, 120)]
    seconds = [1e-3 * p["width"] for p in proposals]
    weighted = ExpectedImprovementPerSecond(n_startup_trials=2, cost_exponent=1.0, seed=0)
    assert weighted.choose(proposals, seconds, done, space)[0] == 2
    plain = ExpectedImprovementPerSecond(n_startup_trials=2, cost_exponent=0.0, seed=0)
    assert plain.choose(proposals, seconds, done, space)[0] == 0
    # In a study, every choice after the startup trials says it weighed EI per second.
    assert _mean_cost_rank(3.0, seed=0) <= 8


def test_sampler_prices_define_by_run_trials_without_a_search_space():
    sampler = CostAwareSampler(cost_fn=lambda p: 0.01, trial_budget_s=1.0, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0 * get_budget(t), n_trials=3)
    assert [t.user_attrs["ttp:budget_steps"] for t in study.trials] == [100, 100, 100]


def test_sampler_bad_input():
    with pytest.raises(InvalidInputError, match="trial_budget_s, max_steps"):
        CostAwareSampler(cost_fn=lambda p: 1.0)
    with pytest.raises(InvalidInputError, match="callable"):
        CostAwareSampler(cost_fn=3.0, max_steps=10)
    sampler = CostAwareSampler(cost_fn=lambda p: -1.0, max_steps=10)
    with pytest.raises(InvalidInputError, match="seconds per step must be a number > 0"):
        sampler.step_cost({})
    with pytest.raises(InvalidInputError, match="threshold"):
        TTPPruner(threshold=1.5)


WORKER = textwrap.dedent(
    """
    import sys, optuna
    from ttp_search.optuna import TTPPruner, report, set_budget
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        floor = trial.suggest_float("floor", 0.0, 1.0)
        set_budget(trial, 20)
        for step in range(1, 21):
            report(trial, floor + 1.0 / step, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return floor + 1.0 / 20

    study = optuna.create_study(
        study_name="shared", storage=sys.argv[1], load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(seed=int(sys.argv[2])),
        pruner=TTPPruner(n_startup_trials=2),
    )
    study.optimize(objective, n_trials=8)
    """
)


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=storage)  # created once, joined twice
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), storage, str(seed)]) for seed in (0, 1)]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    assert len(trials) == 16
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all("ttp:decision" in t.user_attrs for t in trials)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all(t.user_attrs["ttp:prune_reason"] for t in pruned)


def test_margin_keeps_trials_tied_with_the_best():
    k = np.arange(1, 31, dtype=float)
    done = [TrialCurve(np.r_[k, 31.0], np.r_[_loss(k, 0.3), _loss(30.0, 0.3)], 30, finished=True)]
    tied = TrialCurve(k[:28], _loss(k[:28], 0.34), budget_steps=30)  # ends 0.04 behind
    strict = DecisionCore(n_startup_trials=1, peer_percentile=None)
    lenient = DecisionCore(n_startup_trials=1, peer_percentile=None, margin=0.05)
    assert strict.decide(tied, done).prune
    assert not lenient.decide(tied, done).prune


def test_peer_guard_compares_at_the_same_fraction_of_each_budget():
    core = DecisionCore(n_startup_trials=2, n_min_trials=2)
    k = np.arange(1, 101, dtype=float)
    # Peers with budget 100 at value 2.0 after 10% of their budget; the trial, whose budget
    # is 1000, is at 1.0 after 10% of its own: ahead of all of them, so it is kept even if
    # its extrapolation is pessimistic.
    peers = [TrialCurve(k, np.full(100, 2.0), 100, finished=True, final=0.01) for _ in range(3)]
    trial = TrialCurve(np.arange(1, 101, dtype=float), np.full(100, 1.0), budget_steps=1000)
    assert core.peer_rank(trial, peers) == 1.0
    decision = core.decide(trial, peers)
    assert not decision.prune and "ahead of 100%" in decision.reason
    behind = TrialCurve(np.arange(1, 101, dtype=float), np.full(100, 3.0), budget_steps=1000)
    assert core.peer_rank(behind, peers) == 0.0
    assert core.decide(behind, peers).prune


def test_decision_core_bad_input():
    for kwargs, match in (
        ({"direction": "up"}, "direction"),
        ({"margin": -1.0}, "margin"),
        ({"peer_percentile": 120.0}, "peer_percentile"),
        ({"min_points": 0}, "min_points"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            DecisionCore(**kwargs)
    with pytest.raises(InvalidInputError, match="schedule 'exp'"):
        TrialCurve([1.0], [1.0], schedule="exp")


def test_remaining_cost_uses_the_recent_rate_not_start_up_time():
    core = DecisionCore(n_startup_trials=0)
    k = np.arange(1, 11, dtype=float)
    # 10 s at step 10 is mostly start-up; the last steps ran at 0.01 s each.
    trial = TrialCurve(k, _loss(k, 0.1), budget_steps=1000, elapsed_s=10.0, recent_step_s=0.01)
    assert not core.decide(trial, [], time_left_s=50.0).prune
    trial.recent_step_s = None
    assert core.decide(trial, [], time_left_s=50.0).prune


def test_report_stores_the_previous_clock_for_the_recent_rate():
    study = optuna.create_study(pruner=TTPPruner(n_startup_trials=0, study_budget_s=60))
    trial = study.ask()
    set_budget(trial, 1000)
    report(trial, 1.0, 10, elapsed_s=10.0)
    report(trial, 0.9, 20, elapsed_s=10.1)
    assert not trial.should_prune()  # 980 steps at 0.01 s fit in the minute left
    attrs = study._storage.get_trial(trial._trial_id).user_attrs
    assert attrs["ttp:clock"] == {
        "elapsed_s": 10.1,
        "step": 20,
        "prev_elapsed_s": 10.0,
        "prev_step": 10,
    }


def test_set_budget_records_the_schedule():
    study = optuna.create_study()
    trial = study.ask()
    set_budget(trial, 100, schedule="linear")
    assert trial.user_attrs[keys.SCHEDULE] == "linear"
    set_budget(trial, 100, schedule=Schedule("cosine", warmup_steps=5))
    assert trial.user_attrs[keys.SCHEDULE] == {
        "kind": "cosine",
        "warmup_steps": 5,
        "final_fraction": 0.0,
    }
    with pytest.raises(InvalidInputError, match="schedule 'exp'"):
        set_budget(trial, 100, schedule="exp")


def test_planner_sizes_against_the_slow_end_when_the_study_is_ending():
    from ttp_search.engine import BudgetPlanner

    class Pred:
        step_time_s, low_s, high_s = 0.01, 0.008, 0.02

    planner = BudgetPlanner(lambda p: Pred(), trial_budget_s=10.0, max_steps=5000, min_steps=10)
    assert planner.plan({}).steps == 1000  # the per-trial cap at the predicted rate
    late = planner.plan({}, time_left_s=2.0)
    assert late.steps == 100 and late.feasible  # 2 s at the slow end, 0.02 s per step
    over = planner.plan({}, time_left_s=0.1)
    assert not over.feasible and "remaining time" in over.reason
