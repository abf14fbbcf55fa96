"""Training of attention-only transformers on a token task: next-token cross entropy, AdamW.

Follows the core trainer's conventions: a ``seed`` fixing the data stream, a learning-rate
schedule with optional warm-up, a progress bar that ``progress=False`` turns off, and a loss
history logged at a chosen interval (plus any evaluation metrics logged alongside).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from superpose._checks import make_generator, positive_int, resolve_device
from superpose.circuits.model import AttnOnlyTransformer
from superpose.circuits.tasks import Batch

SCHEDULES = ("constant", "linear", "cosine")


class Task(Protocol):
    """What :func:`train` needs of a task (see :mod:`superpose.circuits.tasks`)."""

    d_vocab: int
    n_ctx: int

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch: ...


@dataclass
class TrainResult:
    """History of one training run.

    Attributes:
        steps: the steps at which the history was logged (after that many updates).
        loss: mean training loss over the updates since the previous log, one per step logged.
        metrics: each evaluation metric's values at the logged steps.
        wall_time: seconds spent training.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    wall_time: float = 0.0


def next_token_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross entropy of predicting ``tokens[:, p + 1]`` from ``logits[:, p]``.

    Args:
        logits: ``(batch, pos, d_vocab)``.
        tokens: ``(batch, pos)``.

    Returns:
        ``(batch, pos - 1)`` losses in nats; column ``p`` is the loss of the prediction made at
        position ``p``.
    """
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def learning_rate_factor(step: int, steps: int, schedule: str, warmup_steps: int) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``steps``.

    Linear warm-up from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps, then
    ``schedule``: ``constant`` (1), ``linear`` (decay to 0 at the end) or ``cosine`` (half a
    cosine down to 0 at the end).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def train(
    model: AttnOnlyTransformer,
    task: Task,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    seed: int | torch.Generator | None = 0,
    log_every: int = 10,
    evaluate: Callable[[AttnOnlyTransformer], dict[str, float]] | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on fresh batches of ``task`` with AdamW.

    Args:
        model: the transformer; its ``d_vocab`` and ``n_ctx`` must cover the task's.
        task: a token task with ``sample(n_seq, seed)``.
        steps: number of updates.
        batch_size: sequences per update.
        lr: peak learning rate (> 0).
        weight_decay: AdamW weight decay (>= 0).
        schedule: one of :data:`SCHEDULES`.
        warmup_steps: linear warm-up steps, in ``[0, steps]``.
        seed: int or ``torch.Generator`` for the stream of batches.
        log_every: log the mean training loss (and ``evaluate``) every this many steps and
            after the last step.
        evaluate: optional function of the model returning named floats to log; called under
            ``torch.no_grad`` with the model in eval mode.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: show a tqdm progress bar.

    Returns:
        The :class:`TrainResult`. Raises ``FloatingPointError`` naming the step if the loss
        becomes NaN or infinite.
    """
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    log_every = positive_int("log_every", log_every)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not 0 <= warmup_steps <= steps:
        raise ValueError(f"warmup_steps must lie in [0, steps={steps}], got {warmup_steps!r}")
    if task.d_vocab > model.d_vocab or task.n_ctx > model.n_ctx:
        raise ValueError(
            f"task (d_vocab={task.d_vocab}, n_ctx={task.n_ctx}) does not fit the "
            f"model (d_vocab={model.d_vocab}, n_ctx={model.n_ctx})"
        )
    target = resolve_device(device)
    generator = make_generator(seed)
    model.to(target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, steps, schedule, warmup_steps)
    )
    result = TrainResult()
    start = time.perf_counter()
    running, counted = 0.0, 0
    bar = tqdm(range(steps), disable=not progress, desc="train", leave=False)
    for step in bar:
        tokens = task.sample(batch_size, generator).tokens.to(target)
        loss = next_token_losses(model(tokens), tokens).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        running += loss.item()
        counted += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            result.steps.append(step + 1)
            result.loss.append(running / counted)
            bar.set_postfix(loss=f"{running / counted:.4f}")
            running, counted = 0.0, 0
            if evaluate is not None:
                model.eval()
                with torch.no_grad():
                    for name, value in evaluate(model).items():
                        result.metrics.setdefault(name, []).append(float(value))
                model.train()
    result.wall_time = time.perf_counter() - start
    return result
