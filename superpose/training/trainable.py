"""What a trainer hands the shared loop (:func:`superpose.training.loop.run`): its module,
optimizer and step, and the state the loop checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Trainable:
    """What a trainer hands the loop.

    Attributes:
        module: the parameters being trained (checkpointed with their buffers).
        optimizer: its optimizer, one parameter group; with ``cuda_graph`` its learning
            rate is a CUDA tensor and it is ``capturable``.
        gradients: ``gradients(step)`` sets every parameter's ``.grad`` for step ``step``
            (0-based) and returns the step's detached parts, each ``(instance,)``; ``"loss"``
            (the objective, which the divergence rule watches) is required. With
            ``cuda_graph`` it must not depend on ``step`` (it is recorded once).
        n_instances: the instance axis of every part.
        after_update: ``after_update(step)``, run after the optimizer's update (e.g. decoder
            renormalisation, dead-latent bookkeeping); never recorded in a CUDA graph.
        evaluate: optional extra measurements at each log, name → float or ``(instance,)``
            values (logged with the parts).
        generators: every generator the steps draw from (checkpointed; registered with a
            CUDA graph).
        cuda_graph: record ``gradients`` + update as a CUDA graph after a few eager steps.
        state: the trainer's own state for checkpoints, name → tensor (e.g. how long each
            latent has been silent); ``load_state`` puts it back.
        load_state: see ``state``.
        name: the progress bar's label.
    """

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gradients: Callable[[int], Mapping[str, torch.Tensor]]
    n_instances: int
    after_update: Callable[[int], None] | None = None
    evaluate: Callable[[], Mapping[str, float | torch.Tensor]] | None = None
    generators: Sequence[torch.Generator] = ()
    cuda_graph: bool = False
    state: Callable[[], dict[str, torch.Tensor]] | None = None
    load_state: Callable[[Mapping[str, torch.Tensor]], None] | None = None
    name: str = "train"
