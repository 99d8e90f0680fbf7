"""Budget-aware linear decay (Li, Yumer & Ramanan, ICLR 2020).

Given a budget of ``T`` steps, ``η_t = η0·(1 − t/T)`` (after an optional linear warm-up)
drives the learning rate to ``final_lr`` exactly when the budget ends, so a trial stopped at
its budget has annealed instead of being cut off mid-schedule ("budgeted convergence").
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler

from ttp_search._checks import check_int, check_real
from ttp_search.budget.schedule import Schedule
from ttp_search.errors import InvalidInputError

__all__ = ["LinearDecayLR", "check_int"]


class LinearDecayLR(LRScheduler):
    """Linear warm-up to each group's initial lr, then linear decay to ``final_lr`` at step
    ``total_steps``; ``final_lr`` after that. Call ``step()`` once per optimizer step.

    Example:
        >>> import torch
        >>> from ttp_search.budget import LinearDecayLR
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = LinearDecayLR(opt, total_steps=4)
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.1, 0.075, 0.05, 0.025, 0.0]
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        final_lr: float = 0.0,
        last_epoch: int = -1,
    ):
        self.total_steps = check_int("total_steps", total_steps, 1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self.total_steps:
            raise InvalidInputError(
                f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})"
            )
        self.final_lr = check_real("final_lr", final_lr, low=0.0)
        # A final rate above the initial one would make the "decay" rise toward the end.
        for i, group in enumerate(optimizer.param_groups):
            start = group.get("initial_lr", group["lr"]) if last_epoch != -1 else group["lr"]
            if self.final_lr > start:
                raise InvalidInputError(
                    f"final_lr ({final_lr!r}) is above param group {i}'s initial lr ({start!r}): "
                    "the rate would rise instead of decaying"
                )
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, base_lr: float) -> float:
        """The learning rate at ``step`` (0-based) for a group whose initial lr is ``base_lr``."""
        if step < self.warmup_steps:
            return base_lr * (step + 1) / (self.warmup_steps + 1)
        span = self.total_steps - self.warmup_steps
        frac = min(1.0, (step - self.warmup_steps) / span)
        return self.final_lr + (base_lr - self.final_lr) * (1.0 - frac)

    def schedule(self) -> Schedule:
        """This scheduler's shape as the engines' :class:`Schedule` (the first group's)."""
        start = self.base_lrs[0] if self.base_lrs else 0.0
        final = self.final_lr / start if start > 0 else 0.0
        return Schedule("linear", self.warmup_steps, min(final, 1.0))

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
