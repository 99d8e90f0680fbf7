"""TTPPruner: stop trials that will not end better than the best, judged at their own budget."""

from __future__ import annotations

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ttp_search.engine import Decision, DecisionCore, TrialCurve
from ttp_search.engine.decision import Rule, adapter_options, check_default_budget, should_judge
from ttp_search.optuna import _storage as keys
from ttp_search.optuna._helpers import stop_study


class TTPPruner(BasePruner):
    """Prune by the probability of ending better than the incumbent, and by time left.

    At each report the trial's curve is extrapolated to its own step budget (set with
    :func:`set_budget` or assigned by :class:`CostAwareSampler`) under its own schedule, so a
    short linear-decay trial and a long constant-rate trial are compared where each ends,
    not step against step. The trial is pruned when

    * P(final value beats the incumbent) < ``threshold``; the incumbent is the best completed
      trial, or a running one whose pessimistic predicted end is better still;
    * its predicted cost to finish exceeds what is left of ``time_budget_s`` (counted from
      the study's first trial, so every worker on a shared storage agrees);
    * it reported NaN or inf.

    The latest decision (its reason, the predicted final value and interval, what it was
    compared with) is stored as the user attribute ``ttp:decision``, and a pruned trial's
    reason as ``ttp:prune_reason``, visible in optuna-dashboard.

    Args:
        threshold: probability below which a trial is pruned.
        n_startup_trials: no pruning until this many trials have completed.
        n_warmup_steps: no pruning of a trial until it has reported past this step.
        interval_steps: judge only every this many reports (extrapolation costs a few ms).
        min_points: reports needed before a curve is extrapolated.
        time_budget_s: the study's total time budget in seconds, or ``None``.
        value_range: what the value can be, e.g. ``(0, 1)`` for accuracy; bounds the fits.
        margin: keep a trial while it may end within ``margin`` of the incumbent (for
            accuracy, e.g. 0.005: configurations tied with the best up to noise survive).
        peer_percentile: keep a trial that is ahead of this percentile of the other trials,
            each read at the same fraction of its own budget, whatever its extrapolation
            says (a guard against overconfident fits); ``None`` disables it.
        band_tolerance: a trial whose sampler stored a predicted curve (``ttp:band``, e.g.
            the linearized SDE's for its configuration) is stopped when its latest value is
            worse than the band's edge by more than this fraction (``None``: ignore bands).
        default_budget_steps: the budget of trials that have none; by default the largest
            last step among completed trials (with none, a trial is judged at its current step).

    Example:
        .. code-block:: python

            import optuna
            from ttp_search.optuna import TTPPruner, report, set_budget

            def objective(trial):
                lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
                set_budget(trial, 50)
                for step in range(1, 51):
                    loss = 1.0 / (lr * step) + 0.1
                    report(trial, loss, step)
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
        interval_steps: int = 1,
        min_points: int = 3,
        time_budget_s: float | None = None,
        value_range: tuple[float, float] | None = None,
        default_budget_steps: int | None = None,
        margin: float = 0.0,
        peer_percentile: float | None = 50.0,
        band_tolerance: float | None = 0.5,
    ) -> None:
        self._options = adapter_options(
            interval_steps=interval_steps,
            time_budget_s=time_budget_s,
            threshold=threshold,
            n_startup_trials=n_startup_trials,
            n_warmup_steps=n_warmup_steps,
            min_points=min_points,
            value_range=value_range,
            margin=margin,
            peer_percentile=peer_percentile,
            band_tolerance=band_tolerance,
        )
        self.interval_steps = interval_steps
        self.time_budget_s = time_budget_s
        self.default_budget_steps = check_default_budget(default_budget_steps)
        self._finished: dict[tuple[int, int], TrialCurve] = {}

    def core(self, study: optuna.Study) -> DecisionCore:
        direction = "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize"
        return DecisionCore(direction, **self._options)

    def decide(self, study: optuna.Study, trial: FrozenTrial) -> Decision:
        """The decision for ``trial`` at its latest report, without storing anything."""
        trials = study.get_trials(deepcopy=False)  # one read of the storage per decision
        curves = [self._curve(study, t) for t in trials if t.number != trial.number]
        curves = [c for c in curves if c is not None]
        me = keys.trial_curve(trial, measure_now=True)
        if me.budget_steps is None:
            me.budget_steps = self._default_budget(curves)
        time_left = keys.study_time_left(study, self.time_budget_s, trials)
        return self.core(study).decide(me, curves, time_left_s=time_left)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        n_reports = len(trial.intermediate_values)
        value = trial.intermediate_values[step]
        if not should_judge(n_reports, value, self.interval_steps):
            return False
        decision = self.decide(study, trial)
        # One write per decision (prediction included); the reason is added when pruning.
        record = {k: v for k, v in decision.to_dict().items() if v is not None}
        record["step"] = step
        keys.set_attr(study, trial, keys.DECISION, record)
        if decision.prune:
            keys.set_attr(study, trial, keys.PRUNE_REASON, decision.reason)
        if decision.rule == Rule.STUDY_TIME and self._spent(study):
            stop_study(study, decision.reason)
        return decision.prune

    def _spent(self, study: optuna.Study) -> bool:
        left = keys.study_time_left(study, self.time_budget_s)
        return left is not None and left <= 0

    def _curve(self, study: optuna.Study, trial: FrozenTrial):
        """The core's view of another trial; a completed trial's is built once and kept
        (Optuna refuses changes to finished trials), so a decision among 1,000 trials does
        not rebuild 1,000 curves."""
        if trial.state == TrialState.RUNNING:
            return keys.trial_curve(trial)
        if trial.state != TrialState.COMPLETE:
            return None
        key = (id(study._storage), trial._trial_id)
        curve = self._finished.get(key)
        if curve is None:
            curve = self._finished[key] = keys.trial_curve(trial)
        return curve

    def _default_budget(self, curves) -> float | None:
        if self.default_budget_steps is not None:
            return self.default_budget_steps
        # Without a budget of its own a trial is assumed to run as long as completed ones.
        done = [c.steps[-2] for c in curves if c.finished and c.steps.size > 1]
        return max(done) if done else None
