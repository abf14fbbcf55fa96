"""Training of attention-only transformers on a token task: next-token cross entropy, AdamW.

Follows the core trainer's conventions (:func:`superpose.train.train`): a ``seed`` fixing the
data stream, the same learning-rate schedules with optional warm-up, a progress bar that
``progress=False`` turns off, a loss history logged every ``log_every`` steps (plus any
evaluation metrics logged alongside), and :class:`~superpose.train.TrainingDiverged` on a NaN
or infinite loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from superpose._checks import make_generator, positive_int, resolve_device
from superpose.circuits.model import AttnOnlyTransformer
from superpose.circuits.tasks import Batch
from superpose.train import TrainingDiverged, check_optimizer_settings, lr_factor


class Task(Protocol):
    """What :func:`train` needs of a task (see :mod:`superpose.circuits.tasks`)."""

    d_vocab: int
    n_ctx: int

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch: ...


@dataclass
class TrainResult:
    """History of one training run.

    Attributes:
        history_steps: ``(n_logs,)`` the step at the end of each logging interval.
        history_loss: ``(n_logs,)`` mean training loss over each interval.
        history_metrics: each evaluation metric's values ``(n_logs,)`` at those steps.
        wall_time: seconds spent in the training loop, evaluations included.
        steps: optimisation steps taken.
        device: where it ran.
    """

    history_steps: torch.Tensor
    history_loss: torch.Tensor
    history_metrics: dict[str, torch.Tensor]
    wall_time: float
    steps: int
    device: str


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


def train(
    model: AttnOnlyTransformer,
    task: Task,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    log_every: int = 10,
    evaluate: Callable[[AttnOnlyTransformer], dict[str, float]] | None = None,
    seed: int | torch.Generator | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place on fresh batches of ``task`` with AdamW.

    Args:
        model: the transformer; its ``d_vocab`` and ``n_ctx`` must cover the task's.
        task: a token task with ``sample(n_seq, seed)``.
        steps: optimisation steps.
        batch_size: sequences per step.
        lr: peak learning rate, scaled by :func:`superpose.train.lr_factor` each step.
        schedule: one of :data:`superpose.train.SCHEDULES`, after ``warmup_steps`` of warm-up.
        warmup_steps: linear warm-up steps, in ``[0, steps]``.
        weight_decay: AdamW's decoupled weight decay (>= 0).
        log_every: steps per history entry (and per NaN/inf check and ``evaluate`` call).
        evaluate: optional function of the model returning named floats to log; called under
            ``torch.no_grad`` with the model in eval mode.
        seed: int or ``torch.Generator`` for the stream of batches; None: torch's global
            generator, so ``torch.manual_seed`` governs them.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: show a tqdm progress bar.

    Raises:
        TrainingDiverged: the loss became NaN/inf; the error names the step (instance 0).
    """
    if not isinstance(model, AttnOnlyTransformer):
        raise TypeError(f"model must be an AttnOnlyTransformer, got {type(model).__name__}")
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    log_every = positive_int("log_every", log_every)
    check_optimizer_settings(steps, lr, schedule, warmup_steps, weight_decay)
    if task.d_vocab > model.d_vocab or task.n_ctx > model.n_ctx:
        raise ValueError(
            f"task (d_vocab={task.d_vocab}, n_ctx={task.n_ctx}) does not fit the model "
            f"(d_vocab={model.d_vocab}, n_ctx={model.n_ctx})"
        )
    device = resolve_device(device)
    model.to(device)
    generator = make_generator(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    interval = torch.zeros(log_every)
    logged_steps: list[int] = []
    logged_loss: list[float] = []
    metrics: dict[str, list[float]] = {}
    bar = tqdm(total=steps, disable=not progress, desc="train transformer", unit="step")
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, schedule, warmup_steps)
        tokens = task.sample(batch_size, generator).tokens.to(device)
        loss = next_token_losses(model(tokens), tokens).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        interval[step % log_every] = loss.detach().cpu()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            filled = interval[: step % log_every + 1]
            if not torch.isfinite(filled).all():
                bad = int((~torch.isfinite(filled)).nonzero()[0])
                raise TrainingDiverged(step - step % log_every + bad, [0])
            logged_steps.append(step + 1)
            logged_loss.append(filled.mean().item())
            bar.update(step % log_every + 1)
            bar.set_postfix(loss=f"{logged_loss[-1]:.4g}")
            if evaluate is not None:
                model.eval()
                with torch.no_grad():
                    for name, value in evaluate(model).items():
                        metrics.setdefault(name, []).append(float(value))
                model.train()
    wall_time = time.perf_counter() - start
    bar.close()
    return TrainResult(
        history_steps=torch.tensor(logged_steps),
        history_loss=torch.tensor(logged_loss),
        history_metrics={name: torch.tensor(values) for name, values in metrics.items()},
        wall_time=wall_time,
        steps=steps,
        device=str(device),
    )
