"""When the latest decision is written to a shared storage (engine.recording)."""

from __future__ import annotations

import math

import optuna
import pytest

from ttp_search.engine import Decision, Rule
from ttp_search.engine.recording import RECORD_EVERY, record_due
from ttp_search.optuna import TTPPruner, keys, report, set_budget


def _decision(prune=False, rule=Rule.MAY_BEAT, low=0.4, high=0.6, budget=100.0) -> Decision:
    extra = {} if budget is None else {"budget_steps": budget}
    return Decision(
        prune, "why", predicted_final=(low + high) / 2, predicted_low=low,
        predicted_high=high, rule=rule, extra=extra,
    )  # fmt: skip


def _stored(decision: Decision, step: float) -> dict:
    return {**decision.to_dict(), "step": step}


def _due(decision, previous, step, best=0.9, direction="maximize") -> bool:
    return record_due(decision, previous, step=step, best_result=best, direction=direction)


def test_a_kept_trial_is_written_once_per_share_of_its_budget():
    previous = _stored(_decision(), 10)
    assert not _due(_decision(low=0.41), previous, 10 + RECORD_EVERY * 100 - 1)
    assert _due(_decision(low=0.41), previous, 10 + RECORD_EVERY * 100)
    # Without a budget the share is unknown: every decision is written.
    assert _due(_decision(budget=None), _stored(_decision(budget=None), 10), 11)


@pytest.mark.parametrize(
    "change",
    [
        dict(prune=True, rule=Rule.UNLIKELY),  # a stop says why
        dict(rule=Rule.AHEAD_OF_PEERS),  # the rule changed
    ],
)
def test_stops_and_new_rules_are_written_at_once(change):
    assert _due(_decision(**change), _stored(_decision(), 10), 11)


def test_nothing_stored_or_nothing_finished_is_written():
    assert _due(_decision(), None, 11)
    assert _due(_decision(), _stored(_decision(), 10), 11, best=None)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_record_other_workers_read_as_the_incumbent_is_kept_current(direction):
    # Maximising, the pessimistic end is the low one; minimising, the high one.
    best = 0.5
    beats = (
        _decision(low=0.55, high=0.7) if direction == "maximize" else _decision(low=0.3, high=0.45)
    )
    behind = (
        _decision(low=0.3, high=0.45) if direction == "maximize" else _decision(low=0.55, high=0.7)
    )
    for new, old in ((beats, behind), (behind, beats), (beats, beats)):
        assert _due(new, _stored(old, 10), 11, best=best, direction=direction)
    assert not _due(behind, _stored(behind, 10), 11, best=best, direction=direction)


def test_a_record_without_a_finite_pessimistic_end_is_never_the_incumbent():
    nan = _decision(low=math.nan, high=0.7)
    assert not _due(nan, _stored(nan, 10), 11, best=0.5)


def _finished_study(pruner: TTPPruner) -> optuna.Study:
    study = optuna.create_study(pruner=pruner)
    for floor in (0.1, 0.2, 0.3):
        done = study.ask()
        set_budget(done, 100)
        for step in range(1, 101):
            report(done, floor + 1.0 / step, step, elapsed_s=0.01 * step)
        study.tell(done, floor + 0.01)
    return study


def test_the_pruner_writes_a_kept_trial_at_a_share_of_its_budget():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _finished_study(TTPPruner(n_startup_trials=1))
    trial = study.ask()
    set_budget(trial, 100)
    written = []
    for step in range(1, 41):
        report(trial, 0.15 + 1.0 / step, step, elapsed_s=0.01 * step)  # kept, not the best
        assert not trial.should_prune()
        written.append(study._storage.get_trial(trial._trial_id).user_attrs[keys.DECISION])
    assert len({d["step"] for d in written}) < 20  # fewer writes than decisions
    assert all(s - d["step"] < RECORD_EVERY * 100 for s, d in enumerate(written, start=1))


def _interleaved_decisions(monkeypatch, write_every: bool) -> tuple[list[tuple], list[int]]:
    """Every decision of three trials judged in turn on one storage: one ends best, one is
    kept behind, one is pruned."""
    if write_every:
        monkeypatch.setattr("ttp_search.optuna.pruner.record_due", lambda *a, **k: True)
    study = _finished_study(TTPPruner(n_startup_trials=1))
    trials = [study.ask() for _ in range(3)]
    for trial in trials:
        set_budget(trial, 100)
    out, live = [], dict(zip(trials, (0.0, 0.15, 0.6), strict=True))
    for step in range(1, 61):
        for trial, floor in list(live.items()):
            report(trial, floor + 1.0 / step, step, elapsed_s=0.01 * step)
            decision = study.pruner.decide(study, study._storage.get_trial(trial._trial_id))
            seen = decision.extra.get("incumbent_trial")
            out.append((trial.number, step, decision.rule, decision.predicted_final, seen))
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                del live[trial]
    return out, [t.number for t in trials]


def test_other_trials_decide_as_if_every_decision_were_written(monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fewer, trials = _interleaved_decisions(monkeypatch, write_every=False)
    every, _ = _interleaved_decisions(monkeypatch, write_every=True)
    assert fewer == every
    # The replay exercises what the record is read for: a running trial taken as the
    # incumbent by the others, and a stop.
    assert any(n != trials[0] and seen == trials[0] for n, *_, seen in fewer)
    assert {Rule.UNLIKELY, Rule.NOT_WORTH_COST} & {rule for _, _, rule, *_ in fewer}
