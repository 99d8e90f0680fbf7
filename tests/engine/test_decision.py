"""The decision core with the study-informed predictor: the cost-weighing stop rule, the
censored pruned trials, and the same decisions in any process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ttp_search.engine import TrialCurve
from ttp_search.engine.decision import Rule
from ttp_search.engine.ended import PeerTable
from ttp_search.engine.judging import DecisionOptions

BUDGET = 40


def _curve(ceiling: float, upto: int = BUDGET, **kw) -> TrialCurve:
    steps = np.arange(2, upto + 1, 2, dtype=np.float64)
    values = ceiling * (1 - np.exp(-steps / 10))
    return TrialCurve(steps, values, budget_steps=BUDGET, elapsed_s=0.1 * steps[-1], **kw)


def _finished(n: int, seed: int = 0) -> list[TrialCurve]:
    rng = np.random.default_rng(seed)
    out = [_curve(0.95, finished=True, label=0)]
    out += [_curve(c, finished=True, label=i + 1) for i, c in enumerate(rng.uniform(0.3, 0.7, n))]
    return out


def _judge(trial, others, **options):
    return DecisionOptions(n_startup_trials=5, **options).judge("maximize", trial, others, None)


def test_a_hopeless_trial_early_costs_more_than_a_new_one_and_is_stopped():
    decision = _judge(_curve(0.35, upto=10), _finished(40))
    assert decision.prune and decision.rule == Rule.NOT_WORTH_COST
    assert "a new trial is worth more per second" in decision.reason


def test_a_hopeless_trial_near_its_end_is_cheaper_to_finish():
    # P(beats the best) is small, but so is the cost of the last step, against the mean
    # cost of a new trial with its small chance.
    decision = _judge(_curve(0.35, upto=38), _finished(40))
    assert not decision.prune and decision.rule == Rule.WORTH_FINISHING
    assert "worth more per second" in decision.reason


def test_a_trial_the_predictor_cannot_tell_from_the_best_is_kept():
    decision = _judge(_curve(0.94, upto=10), _finished(40))
    assert not decision.prune and decision.rule == Rule.MAY_BEAT


def test_without_clocks_the_plain_threshold_rule_stops():
    others = [
        TrialCurve(c.steps, c.values, budget_steps=BUDGET, finished=True) for c in _finished(40)
    ]
    trial = TrialCurve(_curve(0.35, upto=10).steps, _curve(0.35, upto=10).values, BUDGET)
    decision = _judge(trial, others)
    assert decision.prune and decision.rule == Rule.UNLIKELY


def test_pruned_trials_count_as_misses_and_never_as_the_incumbent():
    others = _finished(20)
    stopped = _curve(0.99, upto=8, pruned=True, predicted_final=(0.99, 0.98, 0.995))
    core = DecisionOptions(n_startup_trials=5).core("maximize")
    best, _, label = core.incumbent([*others, stopped])
    assert best == pytest.approx(others[0].result) and label == 0
    with_pruned = core.new_trial_rate([*others, stopped], best)
    without = core.new_trial_rate(others, best)
    assert with_pruned[0] < without[0]


def test_extrapolation_only_when_the_predictor_is_off():
    on = _judge(_curve(0.5, upto=12), _finished(30))
    off = _judge(_curve(0.5, upto=12), _finished(30), study_features=None)
    assert on.predicted_final != off.predicted_final


_REPLAY = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from engine.test_decision import _curve, _finished
    from ttp_search.engine.judging import DecisionOptions
    options = DecisionOptions(n_startup_trials=5)
    others, out = _finished(30, seed=1), []
    rng = np.random.default_rng(2)
    for ceiling in rng.uniform(0.3, 1.0, 12):
        for upto in range(6, 40, 4):
            d = options.judge("maximize", _curve(float(ceiling), upto=upto), others, None)
            out.append([d.prune, d.rule.value, d.predicted_final, d.prob_better])
            if d.prune:
                others.append(_curve(float(ceiling), upto=upto, pruned=True))
                break
        else:
            others.append(_curve(float(ceiling), finished=True))
    print(json.dumps(out))
    """
)


def test_the_same_replay_decides_identically_in_two_processes():
    from pathlib import Path

    code = _REPLAY.format(tests=str(Path(__file__).resolve().parents[1]))
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    first, second = (json.loads(r.stdout) for r in runs)
    assert first == second
    assert {d[1] for d in first} >= {"not_worth_cost"} and len(first) > 12


def test_peer_table_reads_what_np_interp_reads_bit_for_bit():
    rng = np.random.default_rng(3)
    trials = []
    for _ in range(200):
        steps = np.unique(np.cumsum(rng.uniform(0.5, 3, rng.integers(1, 25))).round(1))
        values = rng.normal(size=steps.size)
        trials.append(TrialCurve(steps, values, budget_steps=float(rng.uniform(5, 50))))
    table = PeerTable(trials)
    fractions = list(rng.uniform(0, 1.2, 50)) + [
        t.steps[1] / t.budget_steps for t in trials[:30] if t.steps.size > 1
    ]
    for frac in fractions:
        expected = [
            float(np.interp(frac * t.budget_steps, t.steps, t.values))
            for t in trials
            if t.steps[-1] >= frac * t.budget_steps
        ]
        np.testing.assert_array_equal(table.values_at(frac), np.array(expected))
    assert PeerTable([]).values_at(0.5).size == 0
    assert PeerTable([TrialCurve([1.0], [np.nan], budget_steps=4)]).values_at(0.1).size == 0


def test_the_kept_core_reads_ended_trials_again_only_when_a_trial_ends():
    options = DecisionOptions(n_startup_trials=5)
    others = _finished(12)
    running = _curve(0.5, upto=20)
    first = options.judge("maximize", running, others, None)
    ended = options.core("maximize")._ended
    assert options.judge("maximize", running, others, None) == first
    assert options.core("maximize")._ended is ended  # the same trials: reused
    others = [*others, _curve(0.99, finished=True, label=99)]
    later = options.judge("maximize", running, others, None)
    assert options.core("maximize")._ended is not ended
    assert later == DecisionOptions(n_startup_trials=5).judge("maximize", running, others, None)


@pytest.mark.parametrize("features", [("observed",), ("observed", "slope"), None])
def test_a_kept_core_decides_as_a_fresh_one_at_every_report(features):
    # What is kept from ended trials (incumbent, peers, fits per grid point, a new trial's
    # chance) must never change a decision: replay a study and judge every report twice.
    rng = np.random.default_rng(5)
    kept = DecisionOptions(n_startup_trials=3, study_features=features, margin=0.01)
    others: list[TrialCurve] = []
    for label, ceiling in enumerate(rng.uniform(0.3, 1.0, 30)):
        budget = None if label % 3 == 0 else BUDGET
        for upto in range(4, BUDGET + 1, 2):
            trial = _curve(float(ceiling), upto=upto, label=label)
            trial.budget_steps = budget
            fresh = DecisionOptions(n_startup_trials=3, study_features=features, margin=0.01)
            decision = kept.judge("maximize", trial, others, None)
            assert decision == fresh.judge("maximize", trial, others, None)
            if decision.prune:
                others.append(_curve(float(ceiling), upto=upto, pruned=True, label=label))
                break
        else:
            others.append(_curve(float(ceiling), finished=True, label=label))
        others[-1].budget_steps = budget  # a completed trial without one is judged at its end
    assert any(t.pruned for t in others) and sum(t.finished for t in others) > 10
    assert any(t.finished and t.budget_steps is None for t in others)
