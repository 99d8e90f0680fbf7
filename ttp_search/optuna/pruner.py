"""TTPPruner: Optuna's side of the decision core (the twin of ray.TTPScheduler)."""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ttp_search._checks import renamed_option
from ttp_search.engine import Decision, TrialCurve
from ttp_search.engine.decision import Rule
from ttp_search.engine.judging import DecisionOptions
from ttp_search.engine.recording import record_due
from ttp_search.optuna import _storage as storage
from ttp_search.optuna import keys
from ttp_search.optuna._helpers import stop_study
from ttp_search.optuna._private import storage_of, trial_id


class TTPPruner(BasePruner):
    """Prune by the probability of ending better than the incumbent, its cost, and time left.

    At each judged report the trial's final value at its own step budget (set with
    :func:`set_budget` or assigned by :class:`CostAwareSampler`) is predicted from the
    study's finished trials read at the same fraction of their budgets
    (:class:`ttp_search.curves.StudyPredictor`, pruned trials as censored examples), with
    the trial's own extrapolation under its schedule while few have finished and as a
    second opinion after, so a short linear-decay trial and a long constant-rate trial are
    compared where each ends, not step against step. The trial is pruned when

    * P(final value beats the incumbent − ``margin``) < ``threshold``, it is behind
      ``peer_percentile`` of its peers at the same fraction of their budgets, and its
      chance per second of its remaining cost is below a new trial's (the share of finished
      trials that ended within ``margin`` of the incumbent, per mean second they cost); the
      incumbent is the best completed trial, or a running one whose pessimistic predicted
      end is better still;
    * its predicted cost to finish exceeds what is left of ``study_budget_s`` (counted from
      the study's first trial, so every worker on a shared storage agrees); once that budget
      is spent the study is stopped (``study.stop()``);
    * it reported NaN or inf.

    The options are :class:`~ttp_search.engine.decision.DecisionOptions`' (the same object
    and rules as :class:`ttp_search.ray.TTPScheduler`); ``n_startup_trials``,
    ``n_warmup_steps``, ``interval_steps`` and ``n_min_trials`` mean what they mean in
    Optuna's ``MedianPruner``. The latest decision (its ``rule``, reason, the predicted
    final value and interval, what it was compared with, the step) is stored as
    ``keys.DECISION``, a pruned trial's reason as ``keys.PRUNE_REASON``. The record is
    rewritten when the trial is pruned, its rule changes, it could be read as the
    incumbent, or it is 5% of the budget old (:mod:`ttp_search.engine.recording`): other
    workers decide as if every decision were written, at a fraction of the writes.

    Example:
        .. code-block:: python

            import optuna
            from ttp_search.optuna import TTPPruner, report, set_budget

            def objective(trial):
                lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
                set_budget(trial, 50)
                for step in range(1, 51):
                    loss = 1.0 / (lr * step) + 0.1
                    # train_loss is optional (for the TSE/LCGA features); plain
                    # trial.report(loss, step) works too.
                    report(trial, loss, step, train_loss=loss)
                    if trial.should_prune():
                        raise optuna.TrialPruned()
                return loss

            study = optuna.create_study(pruner=TTPPruner(n_startup_trials=2))
            study.optimize(objective, n_trials=10)
    """

    def __init__(
        self,
        threshold: float = 0.05,
        *,
        n_startup_trials: int = 5,
        n_warmup_steps: int = 0,
        study_budget_s: float | None = None,
        value_range: tuple[float, float] | None = None,
        options: DecisionOptions | None = None,
        **more_options,
    ) -> None:
        study_budget_s = renamed_option(  # the name before ttp_search 0.2
            more_options, "time_budget_s", "study_budget_s", "TTPPruner", study_budget_s
        )
        if options is None:
            options = DecisionOptions(
                threshold=threshold,
                n_startup_trials=n_startup_trials,
                n_warmup_steps=n_warmup_steps,
                study_budget_s=study_budget_s,
                value_range=value_range,
                **more_options,
            )
        self.options = options
        self._ended: dict[object, dict[int, TrialCurve]] = {}
        # The decision record last written for each running trial judged here (Optuna hands
        # the pruner the trial's own cache, which does not see writes through the storage).
        self._written: dict[object, dict[int, dict]] = {}

    @property
    def study_budget_s(self) -> float | None:
        return self.options.study_budget_s

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> Decision:
        """The decision for ``trial`` at its latest report, without storing anything."""
        trials = study.get_trials(deepcopy=False)  # one read of the storage per decision
        # Ended trials' curves are kept per storage (not per storage id, which a later
        # storage could reuse) and storage trial id.
        ended = self._ended.setdefault(storage_of(study), {})
        written = self._written.setdefault(storage_of(study), {})
        curves = []
        for t in trials:
            curve = ended.get(trial_id(t))
            if curve is None and t.number != trial.number:
                curve = self._curve(ended, t)
                if t.state != TrialState.RUNNING:
                    written.pop(trial_id(t), None)  # it will not be judged again
            if curve is not None:
                curves.append(curve)
        me = storage.trial_curve(trial, measure_now=True)
        time_left = storage.study_time_left(study, self.options.study_budget_s, trials)
        return self.options.judge(_direction(study), me, curves, time_left)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        steps = sorted(trial.intermediate_values)
        if not self.options.should_judge(steps, trial.intermediate_values[step]):
            return False
        decision = self.decide(study, trial)
        # A write costs about as much as the decision: made when other workers or a reader
        # would see a difference (engine.recording); the reason is added when pruning.
        direction = _direction(study)
        best = self.options.core(direction).best_result
        written = self._written.setdefault(storage_of(study), {})
        previous = written.get(trial_id(trial))
        if record_due(decision, previous, step=step, best_result=best, direction=direction):
            record = {k: v for k, v in decision.to_dict().items() if v is not None}
            record["step"] = step
            storage.set_attr(study, trial, keys.DECISION, record)
            written[trial_id(trial)] = record
        if decision.prune:
            storage.set_attr(study, trial, keys.PRUNE_REASON, decision.reason)
        if decision.rule == Rule.STUDY_TIME and self._spent(study):
            stop_study(study, decision.reason)
        return decision.prune

    def _spent(self, study: optuna.Study) -> bool:
        left = storage.study_time_left(study, self.options.study_budget_s)
        return left is not None and left <= 0

    def _curve(self, ended: dict[int, TrialCurve], trial: FrozenTrial) -> TrialCurve | None:
        """The core's view of another trial; a completed or pruned trial's is kept in
        ``ended`` (Optuna refuses changes to finished trials), so a decision among 1,000
        trials does not rebuild 1,000 curves. Pruned trials are censored examples."""
        if trial.state == TrialState.RUNNING:
            return storage.trial_curve(trial)
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return None
        curve = ended[trial_id(trial)] = storage.trial_curve(trial)
        return curve


def _direction(study: optuna.Study) -> str:
    return "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
