"""Learning-rate schedules: a linear warm-up, then constant, linear or cosine decay."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "linear", "cosine")
"""The schedules :func:`lr_factor` knows."""


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at ``step`` (0-based) of ``steps``.

    A linear warm-up from ~0 to 1 over ``warmup_steps``, then ``schedule`` over the rest:
    ``"constant"`` (1), ``"linear"`` (1 → 0) or ``"cosine"`` (1 → 0 along a half cosine).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0
