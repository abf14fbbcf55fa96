"""The divergence rule every trainer applies, and the error that reports it.

An instance *diverges* when, over any logging interval, its training loss

* is NaN or infinite at some step (the step named is that one), or sums to an infinite
  interval mean (float32 overflow of huge losses; the step named is the interval's last), or
* has a mean above :data:`DIVERGENCE_FACTOR` times its loss at the first step, before any
  update (the step named is the interval's last; an instance whose first loss was exactly 0,
  say a first batch without an active feature, is held to the first rule only).

The loop checks at the end of every logging interval (``log_every`` steps), so a run stops
at most one interval after it blew up. A loss that merely stops falling, or rises a few
times over (a sparsity penalty warming up, a learning-rate spike), is not divergence.
"""

from __future__ import annotations

import torch

DIVERGENCE_FACTOR = 1e4
"""How many times its first step's loss an instance's mean loss over a logging interval may
reach before the run counts as diverged."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite, or blew up (see :mod:`superpose.training.divergence`).

    Attributes:
        step: the step (0-based) at which it was seen.
        instances: the instances that diverged.
        reason: ``"nan"`` (NaN/inf) or ``"blow-up"`` (above :data:`DIVERGENCE_FACTOR` times
            the first step's loss).
    """

    def __init__(self, step: int, instances: list[int], reason: str = "nan") -> None:
        self.step = step
        self.instances = instances
        self.reason = reason
        super().__init__(
            f"{self.what} at step {step} for instance(s) {instances}; "
            "try a smaller lr or check the data"
        )

    @property
    def what(self) -> str:
        """What happened, in words (without the step and instances)."""
        if self.reason == "nan":
            return "loss became NaN/inf"
        return f"loss rose above {DIVERGENCE_FACTOR:g} times its first step's value"


def check_interval(losses: torch.Tensor, first_step: int, reference: torch.Tensor) -> None:
    """Apply the rule to one logging interval.

    Args:
        losses: ``(steps in the interval, instance)`` training losses.
        first_step: the step of the interval's first row.
        reference: ``(instance,)`` each instance's loss at the first step.

    Raises:
        TrainingDiverged: naming the first bad step and every instance bad at it.
    """
    bad = ~torch.isfinite(losses)
    if bad.any():
        row = int(bad.any(dim=1).nonzero()[0])
        raise TrainingDiverged(first_step + row, bad[row].nonzero().flatten().tolist())
    last = first_step + losses.shape[0] - 1
    mean = losses.double().mean(0)  # float64: a blow-up is told apart from a float32 overflow
    blown = (mean > DIVERGENCE_FACTOR * reference.double()) & (reference > 0)
    if blown.any():
        raise TrainingDiverged(last, blown.nonzero().flatten().tolist(), "blow-up")
    overflow = ~torch.isfinite(losses.mean(0))  # the history's float32 mean
    if overflow.any():
        raise TrainingDiverged(last, overflow.nonzero().flatten().tolist())
