"""When an adapter that keeps each trial's latest decision in a shared storage writes it.

A write to an RDB storage costs about as much as the decision it records, and a decision is
made at every judged report. Other workers read a running trial's record for one thing: the
incumbent rule (a running trial whose pessimistic predicted end beats the best finished
result is the incumbent). So the record is written again only when

* the trial is stopped (the record says why);
* the rule that decided has changed;
* the new record, or the one stored, would be read as the incumbent, or nothing has finished
  yet: other workers then decide exactly as they would if every decision were written;
* the stored record is ``RECORD_EVERY`` of the trial's budget behind (a trial judged without
  a budget: at every decision), so a person reading it sees the prediction that recent.
"""

from __future__ import annotations

from collections.abc import Mapping

from ttp_search.engine.decision import Decision, Direction, running_incumbent_value

#: How far behind, as a fraction of the trial's budget, a stored record may fall.
RECORD_EVERY = 0.05


def record_due(
    decision: Decision,
    previous: Mapping | None,
    *,
    step: float,
    best_result: float | None,
    direction: Direction,
) -> bool:
    """Whether ``decision``, made at ``step``, should replace the ``previous`` record (the
    stored ``Decision.to_dict()`` with its ``"step"``; ``None``: nothing stored).
    ``best_result``: the best finished result the decision saw."""
    if decision.prune or not previous or best_result is None:
        return True
    rule = None if decision.rule is None else decision.rule.value
    if previous.get("rule") != rule:
        return True
    new = (decision.predicted_final, decision.predicted_low, decision.predicted_high)
    stored = tuple(previous.get(k) for k in ("predicted_final", "predicted_low", "predicted_high"))
    for final, low, high in (new, stored):
        # Read as other workers read a stored prediction (``DecisionCore.incumbent``).
        if final is None:
            continue
        if running_incumbent_value(low, high, best_result, direction) is not None:
            return True
    budget, last = decision.extra.get("budget_steps"), previous.get("step")
    if not budget or last is None:
        return True
    return step - last >= RECORD_EVERY * budget
