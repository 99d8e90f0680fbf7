"""StepsToTarget: a fine-tuning search's steps model, one object for the sampler.

It answers the two questions the planner asks of a configuration: how many steps to reach
the target loss (with an interval), and what the loss curve should look like on the way
(the band the pruner holds a trial to). Both come from the linearized SDE of the blocks the
configuration fine-tunes, built once per set of blocks from precomputed
:class:`~ttp_search.dynamics.BlockGrams`.

Example:
    .. code-block:: python

        grams = BlockGrams.load_or_compute(net, x, y, {"body": ["0."], "head": ["1."]})
        steps_model = StepsToTarget(grams, target=0.25 * initial_loss, max_steps=3000,
                                    tuned_blocks=lambda p: TUNED[p["tune"]])
        sampler = CostAwareSampler(..., steps_model=steps_model)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from ttp_search._checks import check_int, check_real
from ttp_search.budget.schedule import ScheduleLike
from ttp_search.dynamics.blocks import BlockGrams
from ttp_search.dynamics.model_error import ModelErrorInterval
from ttp_search.dynamics.samples import Noise, check_noise
from ttp_search.dynamics.sde import LinearizedSDE


class StepsToTarget:
    """Steps to ``target`` and the predicted band for a configuration's parameters.

    Args:
        grams: the per-block Grams of the pretrained network on the fine-tuning data.
        target: the training loss a trial must reach.
        max_steps: the longest budget considered (a configuration needing more is
            reported as unreachable, ``inf`` steps).
        tuned_blocks: ``params -> blocks fine-tuned`` (default: every block of ``grams``).
        schedule: the learning-rate schedule trials train under (``"linear"``: they anneal
            exactly at their budget, so the answer is the shortest budget that reaches the
            target at its end).
        extrapolate: carry the spectrum from the sampled points to the whole data set
            (see :class:`LinearizedSDE`).
        model_error: a fitted :class:`~ttp_search.dynamics.ModelErrorInterval` that widens
            every steps interval by the model error measured on reference fine-tunings
            (``None``: the SDE's own interval, its sampling noise only).
        noise: the SDE's minibatch noise model (see :class:`LinearizedSDE`): a search that
            prices every proposal may take ``"gaussian"`` (MSE) for millisecond predictions.

    Parameters are read by their PyTorch names: ``lr``, ``batch_size``, ``momentum`` and
    ``weight_decay`` (the last two default to 0). ``prediction_s_`` counts the seconds spent
    predicting, so a study can say what its predictions cost.
    """

    def __init__(
        self,
        grams: BlockGrams,
        target: float,
        *,
        max_steps: int,
        tuned_blocks: Callable[[dict], Sequence[str]] | None = None,
        schedule: ScheduleLike = "linear",
        extrapolate: bool = False,
        model_error: ModelErrorInterval | None = None,
        noise: Noise = "simulated",
    ) -> None:
        self.grams = grams
        self.noise = check_noise(noise, grams.loss)
        self.target = check_real("target", target, low=0.0)
        self.max_steps = check_int("max_steps", max_steps, 1)
        self.tuned_blocks = tuned_blocks
        self.schedule = schedule
        self.extrapolate = bool(extrapolate)
        self.model_error = model_error
        self.prediction_s_ = 0.0
        self._sdes: dict[tuple[str, ...], LinearizedSDE] = {}

    def sde(self, params: dict) -> LinearizedSDE:
        """The SDE of the blocks ``params`` fine-tunes (built once per set of blocks)."""
        blocks = tuple(self.tuned_blocks(params) if self.tuned_blocks else self.grams.blocks)
        if blocks not in self._sdes:
            self._sdes[blocks] = self.grams.sde(
                list(blocks), extrapolate=self.extrapolate, noise=self.noise
            )
        return self._sdes[blocks]

    @staticmethod
    def _hyper(params: dict) -> dict:
        return {
            "lr": float(params["lr"]),
            "momentum": float(params.get("momentum", 0.0)),
            "weight_decay": float(params.get("weight_decay", 0.0)),
        }

    def steps(self, params: dict) -> tuple[float, float, float]:
        """(steps, low, high) to the target; ``inf`` when it cannot be reached."""
        start = time.perf_counter()
        try:
            sde, hyper = self.sde(params), self._hyper(params)
            run = {"schedule": self.schedule, "max_steps": self.max_steps}
            if sde.surely_unreachable(self.target, **hyper, **run):
                return math.inf, math.inf, math.inf  # a bound says so: skip the search
            est = sde.steps_to_loss(
                self.target, **hyper, batch_size=int(params["batch_size"]), **run
            )
            if self.model_error is not None:
                est = self.model_error.widen(est)
            return est.steps, est.low, est.high
        finally:
            self.prediction_s_ += time.perf_counter() - start

    def band(self, params: dict, steps: int) -> dict:
        """The predicted loss curve over a budget of ``steps``: ``step``, ``low``, ``high``
        (80% band) and ``crossing``, the first step at the target (None if never)."""
        start = time.perf_counter()
        try:
            curve = self.sde(params).predict_curve(
                **self._hyper(params),
                batch_size=int(params["batch_size"]),
                steps=int(steps),
                schedule=self.schedule,
                points=60,
            )
            hit = curve.step[curve.loss <= self.target]
            return {
                "step": curve.step,
                "low": curve.loss_low,
                "high": curve.loss_high,
                "crossing": float(hit.iloc[0]) if len(hit) else None,
            }
        finally:
            self.prediction_s_ += time.perf_counter() - start
