"""The user attributes ttp_search keeps on Optuna trials (visible in optuna-dashboard).

Read them through these names, not as strings, and a trial's plan through :func:`plan_of`:

.. code-block:: python

    from ttp_search.optuna import keys

    for t in study.trials:
        plan = keys.plan_of(t)
        print(t.number, plan.get("seconds"), t.user_attrs.get(keys.PRUNE_REASON))
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

PREFIX = "ttp:"
#: The trial's step budget (int): assigned by CostAwareSampler or set with set_budget.
BUDGET = PREFIX + "budget_steps"
#: The learning-rate schedule the budget runs under (a schedule name, see budget.Schedule).
SCHEDULE = PREFIX + "schedule"
#: {"elapsed_s", "step", "prev_elapsed_s", "prev_step"}: the latest report's clock.
CLOCK = PREFIX + "clock"
#: The sampler's plan for the trial, one dict (``PlanRecord``): the parameters priced,
#: predicted and model seconds per step, budget, predicted seconds with interval, why it
#: was chosen ("note") or ruled out ("reason", "limit"), and for fine-tuning searches the
#: predicted steps to the target, the calibration ratios and the predicted band.
PLAN = PREFIX + "plan"
#: get_budget handed out the budget: the plan is final.
BUDGET_GIVEN = PREFIX + "budget_given"
#: The pruner's latest recorded decision (Decision.to_dict(), with "step" and "rule"),
#: at most 5% of the trial's budget behind (``ttp_search.engine.recording``).
DECISION = PREFIX + "decision"
#: Why the trial was pruned (the decision's reason).
PRUNE_REASON = PREFIX + "prune_reason"
#: Why the objective failed ("ValueError: ...", "returned nan"), written by record_failures.
FAIL_REASON = PREFIX + "fail_reason"
#: Which worker ran the trial ("host:pid"), written by run_training.
WORKER = PREFIX + "worker"
#: The first step at which the trial reached the search's training target.
TARGET_REACHED = PREFIX + "target_reached_step"
#: Training losses reported beside the values, ``[[step, loss], ...]`` (``report(train_loss=)``).
TRAIN_LOSS = PREFIX + "train_loss"


def plan_of(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's plan (empty when no CostAwareSampler priced it)."""
    return dict(trial.user_attrs.get(PLAN) or {})


def fixed_params(trial: FrozenTrial) -> dict:
    """The values ``study.enqueue_trial`` fixed for this trial (Optuna keeps them in the
    system attribute ``fixed_params``, which its ``Trial`` reads the same way)."""
    return dict(trial.system_attrs.get("fixed_params") or {})
