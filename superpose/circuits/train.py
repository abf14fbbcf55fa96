"""Training of attention-only transformers on a token task: next-token cross entropy, AdamW.

The model is one instance, so every logged quantity is ``(n_logs,)``. Runs on the shared
loop (:mod:`superpose.training.loop`): the same schedules, logging, divergence rule, thread
choice, callbacks and checkpoints as the other trainers, with the task's batches from a
``seed``-ed stream and any evaluation metrics logged alongside the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from superpose._checks import make_generator, resolve_device
from superpose.circuits.model import AttnOnlyTransformer, next_token_losses
from superpose.circuits.tasks import Batch
from superpose.training import loop
from superpose.training.config import LoopConfig, non_negative, one_of, positive_integer, setting
from superpose.training.result import TrainResult
from superpose.training.schedule import SCHEDULES


class Task(Protocol):
    """What :func:`train` needs of a task (see :mod:`superpose.circuits.tasks`)."""

    d_vocab: int
    n_ctx: int

    def sample(self, n_seq: int, seed: int | torch.Generator | None) -> Batch: ...


@dataclass
class CircuitsTrainConfig(LoopConfig):
    """The circuits trainer's settings (:func:`train`): the loop's and its own."""

    schedule: str = setting("cosine", "learning-rate schedule after the warm-up", one_of(SCHEDULES))
    log_every: int = setting(
        10,
        "steps per history entry, divergence check, evaluation and on_log call",
        positive_integer,
    )
    batch_size: int = setting(64, "sequences per step", positive_integer)
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", non_negative)


def train(
    model: AttnOnlyTransformer,
    task: Task,
    *,
    steps: int,
    batch_size: int = CircuitsTrainConfig.batch_size,
    lr: float = CircuitsTrainConfig.lr,
    schedule: str = CircuitsTrainConfig.schedule,
    warmup_steps: int = CircuitsTrainConfig.warmup_steps,
    weight_decay: float = CircuitsTrainConfig.weight_decay,
    log_every: int = CircuitsTrainConfig.log_every,
    evaluate: Callable[[AttnOnlyTransformer], dict[str, float]] | None = None,
    seed: int | torch.Generator | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool | None = None,
    threads: int | None = None,
    on_log: loop.OnLog | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train ``model`` in place on fresh batches of ``task`` with AdamW.

    Args:
        model: the transformer; its ``d_vocab`` and ``n_ctx`` must cover the task's.
        task: a token task with ``sample(n_seq, seed)``.
        steps: optimisation steps.
        batch_size: sequences per step.
        lr: peak learning rate, scaled by :func:`superpose.training.lr_factor` each step.
        schedule: one of :data:`superpose.training.SCHEDULES`, after ``warmup_steps`` of
            warm-up.
        warmup_steps: linear warm-up steps, in ``[0, steps]``.
        weight_decay: AdamW's decoupled weight decay (>= 0).
        log_every: steps per history entry (and per divergence check and ``evaluate`` call).
        evaluate: optional function of the model returning named floats to log; called under
            ``torch.no_grad`` with the model in eval mode.
        seed: int or ``torch.Generator`` for the stream of batches; None: torch's global
            generator, so ``torch.manual_seed`` governs them.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: True shows a progress bar, False hides it, None (default) shows it on a
            terminal only.
        threads: torch CPU threads for the run; None picks them by the step's size,
            ``batch × n_ctx × d_vocab`` (:func:`superpose.runtime.auto_threads`).
        on_log: ``on_log(step, metrics)`` after each logging interval; ``metrics`` maps
            ``"loss"`` and each ``evaluate`` metric to a ``(1,)`` array.
        checkpoint: a file to write a checkpoint to every ``checkpoint_every`` steps (a
            multiple of ``log_every``), so that ``resume_from`` goes on bit-identically.
        checkpoint_every: see ``checkpoint``.
        resume_from: a checkpoint file from a run of the same model and settings.

    Returns:
        The run's :class:`~superpose.training.TrainResult`; ``history`` holds ``"loss"`` and
        each ``evaluate`` metric, ``(n_logs,)``.

    Raises:
        TrainingDiverged: the loss became NaN/inf or blew up (the rule is in
            :mod:`superpose.training.divergence`); the error names the step (instance 0).
    """
    if not isinstance(model, AttnOnlyTransformer):
        raise TypeError(f"model must be an AttnOnlyTransformer, got {type(model).__name__}")
    config = CircuitsTrainConfig(
        steps=steps,
        lr=lr,
        schedule=schedule,
        warmup_steps=warmup_steps,
        log_every=log_every,
        batch_size=batch_size,
        weight_decay=weight_decay,
    )
    if task.d_vocab > model.d_vocab or task.n_ctx > model.n_ctx:
        raise ValueError(
            f"task (d_vocab={task.d_vocab}, n_ctx={task.n_ctx}) does not fit the model "
            f"(d_vocab={model.d_vocab}, n_ctx={model.n_ctx})"
        )
    device = resolve_device(device)
    with loop.threads_for(device, threads, batch_size * task.n_ctx * model.d_vocab):
        model.to(device)
        generator = make_generator(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

        def gradients(step: int) -> dict[str, torch.Tensor]:
            tokens = task.sample(batch_size, generator).tokens.to(device)
            loss = next_token_losses(model(tokens), tokens).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return {"loss": loss.detach().reshape(1)}

        def measure() -> dict[str, float]:
            model.eval()
            with torch.no_grad():
                values = {name: float(value) for name, value in evaluate(model).items()}
            model.train()
            return values

        history = loop.run(
            loop.Trainable(
                module=model,
                optimizer=optimizer,
                gradients=gradients,
                n_instances=1,
                evaluate=None if evaluate is None else measure,
                generators=[generator],
                name="train transformer",
            ),
            config,
            device=device,
            progress=progress,
            on_log=on_log,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume_from=resume_from,
        )
    return TrainResult(
        history_steps=history.steps,
        history={name: values[:, 0] for name, values in history.values.items()},
        wall_time=history.wall_time,
        steps=steps,
        device=str(device),
        samples_per_step=batch_size,
    )
