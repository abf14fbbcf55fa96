"""Checkpoints of a training run: everything needed to go on bit-identically.

One safetensors file (written atomically by :func:`superpose.io.save_tensors`) holds the
module's state dict (``module.*``), the optimizer's per-parameter state (``optimizer.<i>.*``),
the state of every generator the steps draw from (``generator.<i>``), the trainer's own
state (``trainer.*``), the history logged so far (``history.*``) and the divergence rule's
reference losses; its JSON metadata holds the step reached, the optimizer's parameter
groups, the config and the superpose version. Resuming needs the same config: the
schedule and the logging depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from superpose import io
from superpose._checks import positive_int
from superpose._version import __version__
from superpose.training.trainable import Trainable

FORMAT = "superpose.checkpoint/1"
"""The metadata's ``format`` entry."""


def check_options(
    checkpoint: str | Path | None, checkpoint_every: int | None, log_every: int
) -> None:
    """Raise a ValueError/TypeError for checkpoint options that do not fit together."""
    if checkpoint_every is None:
        if checkpoint is not None:
            raise ValueError("checkpoint needs checkpoint_every (steps between checkpoints)")
        return
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    if checkpoint is None:
        raise ValueError("checkpoint_every needs checkpoint (the file to write)")
    if checkpoint_every % log_every:
        raise ValueError(
            f"checkpoint_every must be a multiple of log_every={log_every}, got {checkpoint_every}"
        )


def save(
    path: str | Path,
    trainable: Trainable,
    config: Mapping[str, Any],
    step: int,
    reference: torch.Tensor,
    history: Mapping[str, torch.Tensor],
) -> Path:
    """Write a checkpoint of ``trainable`` after ``step`` steps; returns the path."""
    tensors = {f"module.{k}": v for k, v in trainable.module.state_dict().items()}
    optimizer = trainable.optimizer.state_dict()
    for index, state in optimizer["state"].items():
        tensors |= {f"optimizer.{index}.{k}": torch.as_tensor(v) for k, v in state.items()}
    for index, generator in enumerate(trainable.generators):
        tensors[f"generator.{index}"] = generator.get_state()
    if trainable.state is not None:
        tensors |= {f"trainer.{k}": v for k, v in trainable.state().items()}
    tensors |= {f"history.{k}": v for k, v in history.items()}
    tensors["reference"] = reference
    groups = [
        {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in group.items()}
        for group in optimizer["param_groups"]
    ]
    metadata = {
        "format": FORMAT,
        "step": step,
        "config": dict(config),
        "param_groups": groups,
        "version": __version__,
    }
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return io.save_tensors(cpu, path, metadata)


@dataclass
class Saved:
    """What :func:`load` restored into a trainable and what the loop needs back."""

    step: int
    reference: torch.Tensor
    history: dict[str, torch.Tensor]


def load(path: str | Path, trainable: Trainable, config: Mapping[str, Any]) -> Saved:
    """Restore a checkpoint written by :func:`save` into ``trainable``.

    Raises:
        FileNotFoundError: no file at ``path``.
        superpose.io.CorruptFile: not a readable checkpoint.
        ValueError: it was written by a run with another config.
    """
    metadata = io.load_metadata(path)
    if metadata.get("format") != FORMAT:
        raise io.CorruptFile(
            path, f"not a superpose checkpoint (format {metadata.get('format')!r})"
        )
    saved_config = metadata["config"]
    config = json.loads(json.dumps(dict(config)))  # as it was saved: tuples are lists
    differ = sorted(k for k in {**saved_config, **config} if saved_config.get(k) != config.get(k))
    if differ:
        raise ValueError(
            f"resume_from={str(path)!r} was written with other settings: "
            + ", ".join(f"{k}={saved_config.get(k)!r} (now {config.get(k)!r})" for k in differ)
        )
    tensors = io.load_tensors(path)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    trainable.module.load_state_dict(part("module."))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optimizer.").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = metadata["param_groups"]
    for group, current in zip(groups, trainable.optimizer.param_groups, strict=True):
        if isinstance(current["lr"], torch.Tensor):  # a CUDA graph's learning rate tensor
            group["lr"] = current["lr"].fill_(group["lr"])
    trainable.optimizer.load_state_dict({"state": state, "param_groups": groups})
    for index, generator in enumerate(trainable.generators):
        generator.set_state(tensors[f"generator.{index}"])
    if trainable.load_state is not None:
        trainable.load_state(part("trainer."))
    device = next(trainable.module.parameters()).device
    return Saved(int(metadata["step"]), tensors["reference"].to(device), part("history."))
