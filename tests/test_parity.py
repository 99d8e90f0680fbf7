"""Optuna and Ray decide alike: the same histories fed to TTPPruner and TTPScheduler give the
same decision at every report, and CostAwareSampler and CostAwareSearcher give the same
budgets and calibrations for the same proposals and finished trials."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from ttp_search.optuna import CostAwareSampler, TTPPruner, get_budget, keys, report, set_budget

ray = pytest.importorskip("ray")
from ray.tune.search import Searcher  # noqa: E402

from ttp_search.ray import CostAwareSearcher, TTPScheduler  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
OPTIONS = dict(n_startup_trials=2, n_warmup_steps=4, interval_steps=3, n_min_trials=2)


def _curve(floor: float, budget: int, every: int = 2) -> list[tuple[int, float]]:
    steps = range(every, budget + 1, every)
    return [(s, floor + 1.0 / (1.0 + s / 10.0)) for s in steps]


# (floor, budget, schedule, final): completed trials, then the running ones judged; one
# running trial turns NaN halfway, one has no budget (judged by the shared default rule).
COMPLETED = [(0.2, 40, "constant", None), (0.25, 60, "linear", 0.24), (0.3, 30, "constant", None)]
RUNNING = [(0.9, 60, "linear"), (0.21, 40, "constant"), (0.5, None, "constant"), (0.1, 40, "nan")]


def _optuna_decisions(study_budget_s=None) -> tuple[list[list[tuple]], float]:
    """Each running trial's decisions, and when the study's first trial started."""
    study = optuna.create_study(pruner=TTPPruner(study_budget_s=study_budget_s, **OPTIONS))
    for floor, budget, schedule, final in COMPLETED:
        trial = study.ask()
        set_budget(trial, budget, schedule=schedule)
        curve = _curve(floor, budget)
        for step, value in curve:
            report(trial, value, step, elapsed_s=0.01 * step)
        study.tell(trial, final if final is not None else curve[-1][1])
    out = []
    for floor, budget, schedule in RUNNING:
        trial = study.ask()
        if budget is not None:
            set_budget(trial, budget, schedule="constant" if schedule == "nan" else schedule)
        seen = []
        for i, (step, value) in enumerate(_curve(floor, budget or 40)):
            value = math.nan if schedule == "nan" and i == 6 else value
            report(trial, value, step, elapsed_s=0.01 * step)
            frozen = study._storage.get_trial(trial._trial_id)
            # Every decision, including those the pruner does not write (engine.recording).
            decision = study.pruner.decide(study, frozen)
            pruned = study.pruner.prune(study, frozen)
            if study.pruner.options.should_judge(sorted(frozen.intermediate_values), value):
                assert pruned == decision.prune
                seen.append(_key(pruned, decision.to_dict()))
            if pruned:
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        out.append(seen)
    return out, min(t.datetime_start for t in study.trials).timestamp()


class _Trial:
    def __init__(self, tid, config):
        self.trial_id, self.config = tid, config


def _ray_decisions(study_budget_s=None, started_at=None) -> list[list[tuple]]:
    sched = TTPScheduler(metric="loss", mode="min", study_budget_s=study_budget_s, **OPTIONS)
    for n, (floor, budget, schedule, final) in enumerate(COMPLETED):
        trial = _Trial(f"done{n}", {"ttp_budget_steps": budget, "ttp_schedule": schedule})
        sched.on_trial_add(None, trial)
        if started_at is not None:
            sched.clock.started_at = started_at
        curve = _curve(floor, budget)
        for step, value in curve:
            sched.on_trial_result(None, trial, _result(value, step))
        sched._trials[trial.trial_id].status = "running"  # a trial that ran to its end
        sched.on_trial_complete(None, trial, {"loss": final if final is not None else value})
    out = []
    for n, (floor, budget, schedule) in enumerate(RUNNING):
        config = {}
        if budget is not None:
            config = {
                "ttp_budget_steps": budget,
                "ttp_schedule": schedule.replace("nan", "constant"),
            }
        trial = _Trial(f"run{n}", config)
        sched.on_trial_add(None, trial)
        seen = []
        for i, (step, value) in enumerate(_curve(floor, budget or 40)):
            value = math.nan if schedule == "nan" and i == 6 else value
            before = sched.decisions.get(trial.trial_id)
            action = sched.on_trial_result(None, trial, _result(value, step))
            decision = sched.decisions.get(trial.trial_id)
            if decision is not None and decision is not before:
                seen.append(_key(action == "STOP", decision.to_dict()))
            if action == "STOP":
                break
        # Optuna's side tells every running trial PRUNED at its end: stopped here too, so
        # both keep it as the same censored example.
        sched._trials[trial.trial_id].status = "stopped"
        out.append(seen)
    return out


def _result(value: float, step: int) -> dict:
    return {"loss": value, "ttp_step": step, "time_total_s": 0.01 * step}


def _key(pruned: bool, decision: dict) -> tuple:
    predicted = decision.get("predicted_final")
    return (pruned, decision["rule"], None if predicted is None else round(predicted, 9))


def test_pruner_and_scheduler_decide_identically():
    (a, _), b = _optuna_decisions(), _ray_decisions()
    assert a == b
    rules = {d[1] for trial in a for d in trial}
    # The histories exercise the rules that matter: judged and kept, pruned, non-finite.
    assert "non_finite" in rules and rules & {"unlikely", "not_worth_cost"}, rules
    assert all(len(trial) >= 1 for trial in a)


def test_pruner_and_scheduler_share_the_study_clock():
    # A budget of 1 ms, spent before the first running trial reports: both stop every
    # running trial for time, counting from the same start.
    a, started = _optuna_decisions(study_budget_s=1e-3)
    b = _ray_decisions(study_budget_s=1e-3, started_at=started)
    assert a == b and all(d[1] == "study_time" and d[0] for trial in a for d in trial)


# -- sampler and searcher ---------------------------------------------------------------------

PROPOSALS = [{"width": w, "lr": lr} for w, lr in ((64, 0.1), (16, 0.3), (128, 0.05), (32, 0.2))]
SPACE = {"width": IntDistribution(8, 256), "lr": FloatDistribution(0.01, 1.0, log=True)}


def _cost(params) -> float:
    return 1e-4 * params["width"]


class _ListSampler(optuna.samplers.BaseSampler):
    """Proposes PROPOSALS in order, one per trial."""

    def __init__(self):
        self.next = 0

    def infer_relative_search_space(self, study, trial):
        return dict(SPACE)

    def sample_relative(self, study, trial, search_space):
        params = dict(PROPOSALS[self.next % len(PROPOSALS)])
        self.next += 1
        return params

    def sample_independent(self, study, trial, name, dist):
        raise AssertionError("everything is proposed jointly")


class _ListSearcher(Searcher):
    def __init__(self):
        super().__init__(metric="loss", mode="min")
        self.next = 0

    def suggest(self, trial_id):
        params = dict(PROPOSALS[self.next % len(PROPOSALS)])
        self.next += 1
        return params

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def test_sampler_and_searcher_plan_alike_and_calibrate_alike():
    options = dict(cost_fn=_cost, trial_budget_s=1.0, max_steps=500, n_candidates=1)
    sampler = CostAwareSampler(_ListSampler(), search_space=SPACE, **options)
    searcher = CostAwareSearcher(_ListSearcher(), **options)
    from ray import tune

    param_space = {"width": tune.randint(8, 257), "lr": tune.loguniform(0.01, 1.0)}
    searcher.set_search_properties("loss", "min", param_space)
    study = optuna.create_study(sampler=sampler)
    optuna_plans, ray_plans = [], []
    for n in range(len(PROPOSALS)):
        trial = study.ask()
        params = {"width": trial.suggest_int("width", 8, 256)}
        params["lr"] = trial.suggest_float("lr", 0.01, 1.0, log=True)
        steps = get_budget(trial)
        plan = keys.plan_of(study._storage.get_trial(trial._trial_id))
        optuna_plans.append((params, steps, round(plan["step_s"], 12)))
        config = searcher.suggest(f"t{n}")
        ray_plans.append(
            (
                {k: config[k] for k in ("width", "lr")},
                config["ttp_budget_steps"],
                round(config["ttp_predicted_step_s"], 12),
            )
        )
        # Every trial runs 1.5x as slow as the model says, over its whole budget.
        measured = 1.5 * _cost(params) * steps
        report(trial, 0.5, steps, elapsed_s=measured)
        study.tell(trial, 0.5)
        result = {"loss": 0.5, "ttp_step": steps, "time_total_s": measured}
        searcher.on_trial_complete(f"t{n}", result)
    assert optuna_plans == ray_plans
    ratios = [p[2] / _cost(p[0]) for p in optuna_plans]
    assert ratios[0] == pytest.approx(1.0) and ratios[-1] > 1.2  # both learnt the 1.5x
    assert np.all(np.diff(ratios) >= -1e-9)
