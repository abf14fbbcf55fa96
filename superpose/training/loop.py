"""The one training loop every trainer runs.

A trainer (:func:`superpose.train`, :func:`superpose.sae.train`,
:func:`superpose.circuits.train`) checks its arguments, builds its module and optimizer and
hands the loop a :class:`Trainable`: a function that sets every gradient for one step and
returns that step's per-instance loss parts. The loop owns the rest, the same for everyone:

* the learning-rate schedule and warm-up (:func:`~superpose.training.schedule.lr_factor`),
* the optimizer update, through AdamW's fused kernel called directly where it applies
  (:func:`~superpose.training.optim.direct_adamw`), and on CUDA, where the trainer allows
  it, the whole step recorded once as a CUDA graph and replayed
  (:class:`~superpose.cuda_graph.CudaGraphStep`),
* logging: every ``log_every`` steps each part's mean over the interval goes into the
  history, the divergence rule is applied (:mod:`~superpose.training.divergence`), the
  progress bar moves and ``on_log(step, metrics)`` is called,
* checkpoints every ``checkpoint_every`` steps and resuming from one, bit-identical to an
  uninterrupted run (:mod:`~superpose.training.checkpoint`).

Thread choice (:func:`threads_for`) wraps a trainer's whole run, evaluation included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from superpose._checks import positive_int
from superpose.cuda_graph import CudaGraphStep
from superpose.runtime import auto_threads, cpu_threads
from superpose.training import checkpoint as checkpoints
from superpose.training.config import LoopConfig
from superpose.training.divergence import check_interval
from superpose.training.optim import direct_adamw
from superpose.training.schedule import lr_factor
from superpose.training.trainable import Trainable

Metrics = dict[str, np.ndarray]
"""What ``on_log`` receives: each logged quantity's mean over the interval, ``(instance,)``."""

OnLog = Callable[[int, Metrics], None]
"""``on_log(step, metrics)``: called after each logging interval; ``step`` counts the steps
taken. Send the metrics to Weights & Biases, TensorBoard or a notebook plot from here."""


@dataclass
class History:
    """What :func:`run` returns.

    Attributes:
        steps: ``(n_logs,)`` the step at the end of each logging interval.
        values: name → ``(n_logs, instance)`` each logged quantity's mean over each interval.
        wall_time: seconds spent in the loop (of this process: a resumed run counts from the
            resume).
    """

    steps: torch.Tensor
    values: dict[str, torch.Tensor] = field(repr=False)
    wall_time: float


def progress_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a trainer's ``progress``: True shows the bar, False hides it,
    None shows it on a terminal only (not in a log file)."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    return None if progress is None else not progress


@contextmanager
def threads_for(device: torch.device, threads: int | None, elements: int) -> Iterator[None]:
    """Run a trainer's block on ``threads`` torch CPU threads, or where None on
    :func:`~superpose.runtime.auto_threads` of the step's ``elements``; nothing on CUDA."""
    if threads is not None:
        threads = positive_int("threads", threads)
    if device.type != "cpu":
        with nullcontext():
            yield
        return
    with cpu_threads(auto_threads(elements) if threads is None else threads):
        yield


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place where it is a tensor, as a recorded CUDA
    graph reads it)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def run(
    trainable: Trainable,
    config: LoopConfig,
    *,
    device: torch.device,
    progress: bool | None = None,
    on_log: OnLog | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
) -> History:
    """Train ``trainable`` for ``config.steps`` steps; see the module docstring.

    Args:
        trainable: the trainer's module, optimizer and step.
        config: steps, learning rate, schedule, warm-up and logging interval.
        device: where the parts live.
        progress: see :func:`progress_disabled`.
        on_log: see :data:`OnLog`.
        checkpoint: file a checkpoint is written to (atomically) every ``checkpoint_every``
            steps, a multiple of ``config.log_every``.
        checkpoint_every: see ``checkpoint``.
        resume_from: a checkpoint file written by a run with the same config: the run goes
            on from its step, with the module, optimizer, generators and history it saved.

    Raises:
        TrainingDiverged: see :mod:`superpose.training.divergence`.
    """
    steps, log_every = config.steps, config.log_every
    disable = progress_disabled(progress)
    if on_log is not None and not callable(on_log):
        raise TypeError(f"on_log must be callable as on_log(step, metrics), got {on_log!r}")
    checkpoints.check_options(checkpoint, checkpoint_every, log_every)
    optimizer = trainable.optimizer
    update = optimizer.step if trainable.cuda_graph else direct_adamw(optimizer)

    def one_step(step: int = 0) -> Mapping[str, torch.Tensor]:
        parts = trainable.gradients(step)
        update()
        return parts

    graph = CudaGraphStep(one_step, trainable.generators) if trainable.cuda_graph else None
    n_logs = steps // log_every + (steps % log_every > 0)
    history: dict[str, torch.Tensor] = {}
    interval: dict[str, torch.Tensor] = {}
    reference = None  # (instance,) the first step's loss
    start_step = 0
    if resume_from is not None:
        saved = checkpoints.load(resume_from, trainable, asdict(config))
        start_step, reference = saved.step, saved.reference
        history = {name: torch.zeros(n_logs, trainable.n_instances) for name in saved.history}
        for name, values in saved.history.items():
            history[name][: len(values)] = values

    bar = tqdm(total=steps, initial=start_step, disable=disable, desc=trainable.name, unit="step")
    start = time.perf_counter()
    step_lr = None
    for step in range(start_step, steps):
        if (
            new_lr := config.lr * lr_factor(step, steps, config.schedule, config.warmup_steps)
        ) != step_lr:
            step_lr = new_lr
            set_lr(optimizer, step_lr)
        parts = graph() if graph is not None else one_step(step)
        if trainable.after_update is not None:
            trainable.after_update(step)
        if reference is None:
            reference = parts["loss"].clone()
        row = step % log_every
        for name, value in parts.items():
            if name not in interval:
                interval[name] = torch.zeros(log_every, trainable.n_instances, device=device)
            interval[name][row] = value
        if (step + 1) % log_every and step + 1 != steps:
            continue
        log = step // log_every
        check_interval(interval["loss"][: row + 1], step - row, reference)
        means = {name: values[: row + 1].mean(0).cpu() for name, values in interval.items()}
        if trainable.evaluate is not None:
            means |= {
                name: torch.as_tensor(value, dtype=torch.float32)
                .cpu()
                .expand(trainable.n_instances)
                for name, value in trainable.evaluate().items()
            }
        for name, value in means.items():
            if name not in history:
                history[name] = torch.zeros(n_logs, trainable.n_instances)
            history[name][log] = value
        bar.update(row + 1)
        bar.set_postfix(loss=f"{history['loss'][log].mean().item():.4g}")
        if on_log is not None:
            on_log(step + 1, {name: value.numpy().copy() for name, value in means.items()})
        if checkpoint_every is not None and (step + 1) % checkpoint_every == 0:
            checkpoints.save(
                checkpoint,
                trainable,
                asdict(config),
                step + 1,
                reference,
                {name: values[: log + 1] for name, values in history.items()},
            )
    wall_time = time.perf_counter() - start
    bar.close()
    history_steps = torch.clamp(torch.arange(1, n_logs + 1) * log_every, max=steps)
    return History(history_steps, history, wall_time)
