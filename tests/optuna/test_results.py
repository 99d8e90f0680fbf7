"""The helpers every study uses: suggest, run_training, the trials table, the summary, the
plots and ``ttp report`` — on small ask/tell and optimize studies."""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from typer.testing import CliRunner

from ttp_search.cli import app
from ttp_search.errors import InvalidInputError
from ttp_search.optuna import (
    CostAwareSampler,
    TTPPruner,
    keys,
    print_report,
    run_training,
    save_plots,
    study_summary,
    suggest,
    trials_dataframe,
)
from ttp_search.ray import TTPScheduler
from ttp_search.reporting import COLUMNS

SPACE = {
    "width": IntDistribution(4, 64, log=True),
    "lr": FloatDistribution(1e-3, 1.0, log=True),
    "act": CategoricalDistribution(["relu", "tanh"]),
    "q": FloatDistribution(0.0, 1.0, step=0.25),
}


def test_suggest_draws_every_parameter_of_the_space_within_it():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = suggest(trial, SPACE)
    assert list(params) == list(SPACE)
    for name, dist in SPACE.items():
        assert dist._contains(dist.to_internal_repr(params[name]))
    assert params["q"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    with pytest.raises(InvalidInputError, match="'bad'"):
        suggest(optuna.create_study().ask(), {"bad": (1, 2)})


def _objective(trial: optuna.Trial, steps: int = 40, slow_lr: float = 0.3) -> float:
    """A 'training' whose value climbs to lr-dependent heights; each step sleeps a little."""
    p = suggest(trial, {"lr": FloatDistribution(0.01, 1.0, log=True)})
    state = {"step": 0}

    def train_step(batch):
        state["step"] += 1
        torch.tensor(batch).sum()

    def evaluate():
        return (1 - math.exp(-state["step"] / 10)) * (1 - abs(math.log(p["lr"] / slow_lr)))

    return run_training(trial, train_step, evaluate, range(7), steps=steps, n_reports=8)


def test_run_training_reports_times_and_records_the_pruners_reason():
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    study.optimize(_objective, n_trials=12)
    trials = study.trials
    assert all(len(t.intermediate_values) >= 1 for t in trials)
    assert sorted(trials[0].intermediate_values) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert all(t.user_attrs[keys.CLOCK]["elapsed_s"] >= 0 for t in trials)
    assert all(keys.WORKER in t.user_attrs for t in trials)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped nothing: the test proves nothing"
    for t in pruned:  # a plain Optuna pruner: the reason names it and the step
        assert t.user_attrs[keys.PRUNE_REASON] == f"MedianPruner pruned at step {t.last_step}"


def test_run_training_stops_at_the_target_and_records_its_step():
    study = optuna.create_study(direction="maximize")
    trial = study.ask({"lr": FloatDistribution(0.3, 0.3)})
    steps = iter(range(1, 1000))
    value = run_training(
        trial, lambda b: None, lambda: next(steps) / 10, [0], steps=100, n_reports=100,
        reached=lambda v: v >= 0.5,
    )  # fmt: skip
    assert value == 0.5 and trial.user_attrs[keys.TARGET_REACHED] == 5
    with pytest.raises(InvalidInputError, match="empty"):
        run_training(study.ask(), lambda b: None, lambda: 0.0, [], steps=3)


def test_trials_table_and_summary_of_a_cost_aware_study(tmp_path):
    sampler = CostAwareSampler(
        optuna.samplers.RandomSampler(seed=0),
        cost_fn=lambda p: 1e-4 * (1 + p["lr"]),  # seconds per step
        trial_budget_s=4e-3,
        max_steps=40,
        search_space={"lr": FloatDistribution(0.01, 1.0, log=True)},
    )
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=TTPPruner(n_startup_trials=3)
    )
    study.optimize(lambda t: _objective(t, steps=None), n_trials=10)
    df = trials_dataframe(study)
    assert set(COLUMNS) <= set(df.columns) and "params_lr" in df.columns
    assert len(df) == 10 and (df.budget_steps <= 40).all()
    assert (df.predicted_step_s > 0).all() and (df.measured_step_s > 0).all()
    assert (df.steps_run <= df.budget_steps).all()
    done = df[df.state == "COMPLETE"]
    assert (done.full_budget_seconds - done.measured_seconds).abs().max() < 1e-9
    summary = study_summary(study, df)
    assert summary.n_trials == 10 and summary.best_number == study.best_trial.number
    assert summary.best_params == study.best_params
    assert summary.spent_seconds == pytest.approx(df.measured_seconds.sum())
    assert summary.saved_seconds >= 0
    assert sum(summary.saved_by_rule.values()) == pytest.approx(summary.saved_seconds)
    assert set(summary.saved_by_rule) <= {
        "unlikely",
        "not_worth_cost",
        "study_time",
        "non_finite",
        "other",
    }
    assert not math.isnan(summary.step_time_error)
    text = summary.text()
    assert "median error" in text and f"best: trial {study.best_trial.number}" in text
    paths = save_plots(study, tmp_path)
    assert {p.name for p in paths} == {
        "predicted_vs_measured_cost.png",
        "value_vs_cost.png",
        "learning_curves.png",
    }


def test_a_plain_optuna_study_reports_what_it_can(tmp_path):
    study = optuna.create_study()
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2, n_trials=4)
    study.enqueue_trial({"x": 0.0})
    study.ask()  # left running
    df = trials_dataframe(study)
    assert list(df.state) == ["COMPLETE"] * 4 + ["RUNNING"]
    assert df.predicted_step_s.isna().all() and df.budget_steps.isna().all()
    summary = print_report(study, out=tmp_path)
    assert summary.best_value == study.best_value and summary.states["RUNNING"] == 1
    assert (tmp_path / "trials.csv").exists()
    assert trials_dataframe(optuna.create_study()).empty


def test_ttp_report_prints_any_study_and_names_a_bad_one(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    runner = CliRunner()
    ok = runner.invoke(app, ["report", "--storage", url, "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0, ok.output
    assert "3 trials (3 complete)" in ok.output and (tmp_path / "o" / "trials.csv").exists()
    missing = runner.invoke(app, ["report", "--storage", url, "--study-name", "nope"])
    assert missing.exit_code == 2 and "'nope'" in missing.output and "plain" in missing.output
    nofile = runner.invoke(app, ["report", "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert nofile.exit_code == 2 and "x.db" in nofile.output
    assert not (tmp_path / "x.db").exists()  # reporting never creates a database


def test_the_old_budget_keyword_still_works_with_a_warning():
    for make in (
        lambda **kw: TTPPruner(**kw),
        lambda **kw: TTPScheduler(metric="loss", mode="min", **kw),
    ):
        with pytest.warns(FutureWarning, match="study_budget_s"):
            assert make(time_budget_s=30).study_budget_s == 30
        with pytest.raises(InvalidInputError, match="not both"):
            make(time_budget_s=30, study_budget_s=20)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert make(study_budget_s=20).study_budget_s == 20


def test_the_table_describes_one_snapshot_while_other_workers_add_trials(monkeypatch, caplog):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    running = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    snapshot = study.get_trials(deepcopy=False)
    # Another worker finishes the running trial and starts one more between the two reads
    # a report makes; the table must still have one row per trial of the first read.
    later = study.get_trials

    def get_trials(*args, **kwargs):
        if kwargs.get("deepcopy", True) is False and get_trials.calls == 0:
            get_trials.calls += 1
            return snapshot
        return later(*args, **kwargs)

    get_trials.calls = 0
    monkeypatch.setattr(study, "get_trials", get_trials)
    study.tell(running, 0.5)
    study.ask()
    with caplog.at_level("INFO", logger="optuna"):
        df = trials_dataframe(study)
    assert list(df.number) == [0, 1, 2, 3]
    assert list(df.state) == ["COMPLETE"] * 3 + ["RUNNING"]
    assert np.isnan(df.value.iloc[3])
    assert "new study created" not in caplog.text
