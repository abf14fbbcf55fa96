"""What every trainer returns, and how a trainer picks its gradient method and precision."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

METHODS = ("auto", "reference", "fast")
"""Ways to compute each step's gradients: ``"reference"`` (autograd on the module's own
loss), ``"fast"`` (hand-written gradients), ``"auto"`` (fast where the trainer supports the
module)."""

PRECISIONS = ("fp32", "bf16")
"""Operand precisions of a fast path's products (``"bf16"`` needs ``method="fast"``)."""


def resolve_method(method: str, supported: bool, unsupported: str) -> str:
    """The gradient method a trainer runs: ``method`` from :data:`METHODS`, with ``"auto"``
    resolved to ``"fast"`` where ``supported`` and ``"reference"`` otherwise.

    Raises:
        ValueError: an unknown ``method``, or ``"fast"`` where it is not ``supported``
            (``unsupported`` completes the message ``method='fast' ...``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "fast" and not supported:
        raise ValueError(f"method='fast' {unsupported}; use method='auto' or 'reference'")
    if method == "auto":
        return "fast" if supported else "reference"
    return method


def check_precision(precision: str, method: str, fast_covers: str) -> None:
    """Raise a ValueError for a ``precision`` outside :data:`PRECISIONS`, or for bfloat16
    without the (resolved) fast ``method``, which covers ``fast_covers``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "fp32" and method != "fast":
        raise ValueError(
            f"precision={precision!r} needs method='fast' ({fast_covers}); the reference "
            "method is float32"
        )


@dataclass
class TrainResult:
    """What every trainer returns.

    Attributes:
        history_steps: ``(n_logs,)`` the step at the end of each logging interval.
        history: name → each logged quantity's mean over each interval, ``(n_logs,
            instance)`` (``(n_logs,)`` for the circuits trainer, which trains one model):
            ``"loss"`` (the training objective) and the trainer's parts and measurements
            (the SAE trainer's ``mse``, ``sparsity``, ``aux``, ``l0``, ``dead_fraction``; the
            circuits trainer's ``evaluate`` metrics).
        wall_time: seconds spent in the training loop (not the final evaluation).
        steps: optimisation steps taken.
        device: where it ran.
        method: how the gradients were computed, ``"fast"`` or ``"reference"``.
        precision: the fast path's product precision, ``"fp32"`` or ``"bf16"``.
        loss: ``(instance,)`` final loss per instance on a held-out sample of fresh data
            (the toy-model trainer), else None.
        samples_per_step: samples each instance sees per step (its batch).
    """

    history_steps: torch.Tensor
    history: dict[str, torch.Tensor] = field(repr=False)
    wall_time: float
    steps: int
    device: str
    method: str = "reference"
    precision: str = "fp32"
    loss: torch.Tensor | None = None
    samples_per_step: int = 0

    @property
    def history_loss(self) -> torch.Tensor:
        """``history["loss"]``: the training loss over each interval."""
        return self.history["loss"]

    @property
    def history_metrics(self) -> dict[str, torch.Tensor]:
        """Every logged quantity but the loss."""
        return {name: values for name, values in self.history.items() if name != "loss"}

    @property
    def samples_per_second(self) -> float:
        """Samples per second per instance: ``steps · samples_per_step / wall_time``."""
        return self.steps * self.samples_per_step / self.wall_time
