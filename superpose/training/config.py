"""Config dataclasses: every trainer's settings, each with its default, its check and its
documentation in one place.

A setting is a dataclass field made by :func:`setting`; its metadata holds the check (a
function of the field's name and value that raises ``ValueError``/``TypeError`` naming the
field), a one-line doc, and whether the value may differ between the instances of one
batched run (``per_instance``). A config checks every field when it is built, so a bad
value fails before any training starts. The trainers' keyword defaults read the config
classes (``steps: int = TrainConfig.steps``) and :mod:`superpose.sweep` derives its field
tables from them: a default exists once.

:class:`LoopConfig` holds what the shared loop (:mod:`superpose.training.loop`) needs; each
trainer's config (:class:`superpose.TrainConfig`, :class:`superpose.sae.SAETrainConfig`,
:class:`superpose.circuits.CircuitsTrainConfig`) extends it with its own fields and
defaults.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from superpose._checks import positive_int
from superpose.training.schedule import SCHEDULES

Check = Callable[[str, Any], None]
"""Raises ``ValueError``/``TypeError`` naming the field (its first argument) when the value
(its second) is wrong."""


def setting(default: Any, doc: str, check: Check | None = None, *, per_instance: bool = False):
    """A config field with ``default``, a one-line ``doc`` and a ``check`` (see :data:`Check`)."""
    return dataclasses.field(
        default=default, metadata={"doc": doc, "check": check, "per_instance": per_instance}
    )


def check_fields(config: Any) -> None:
    """Run every field's check on ``config`` (a config dataclass), in field order."""
    for field in dataclasses.fields(config):
        check = field.metadata.get("check")
        if check is not None:
            check(field.name, getattr(config, field.name))


def settings(cls: type) -> Iterator[dataclasses.Field]:
    """The fields of the config class ``cls`` that are settings (made by :func:`setting`)."""
    return (field for field in dataclasses.fields(cls) if "doc" in field.metadata)


# --- checks ------------------------------------------------------------------------------


def positive_integer(name: str, value: Any) -> None:
    """An int ≥ 1."""
    positive_int(name, value)


def non_negative_integer(name: str, value: Any) -> None:
    """An int ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def optional_positive_integer(name: str, value: Any) -> None:
    """None or an int ≥ 1."""
    if value is not None:
        positive_int(name, value)


def positive_finite(name: str, value: Any) -> None:
    """A finite number > 0."""
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and value > 0 and math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def non_negative(name: str, value: Any) -> None:
    """A number ≥ 0."""
    if isinstance(value, bool) or not (isinstance(value, int | float) and value >= 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def one_of(choices: tuple[str, ...]) -> Check:
    """One of ``choices``."""

    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")

    check.__doc__ = f"One of {', '.join(choices)}."
    return check


def steps_within_run(name: str, value: Any, steps: int) -> None:
    """An int in ``[0, steps]``."""
    if isinstance(value, bool) or not (isinstance(value, int) and 0 <= value <= steps):
        raise ValueError(f"{name} must be an int in [0, steps={steps}], got {value!r}")


# --- the loop's settings -----------------------------------------------------------------


@dataclass
class LoopConfig:
    """The settings every trainer shares: what :func:`superpose.training.loop.run` needs.

    Each trainer's config extends it with its own fields; a trainer may redeclare a field to
    give it another default (the circuits trainer's ``schedule`` is ``"cosine"``). Settings
    describe *what* is trained (a sweep cell's identity); how a run executes (device,
    threads, progress bar, callbacks, checkpoints) are the loop's own arguments.
    """

    steps: int = setting(10_000, "optimisation steps", positive_integer)
    lr: float = setting(1e-3, "peak learning rate", positive_finite)
    schedule: str = setting(
        "constant", "learning-rate schedule after the warm-up", one_of(SCHEDULES)
    )
    warmup_steps: int = setting(
        0, "linear learning-rate warm-up steps, in [0, steps]", non_negative_integer
    )
    log_every: int = setting(
        100, "steps per history entry, divergence check and on_log call", positive_integer
    )

    def __post_init__(self) -> None:
        check_fields(self)
        steps_within_run("warmup_steps", self.warmup_steps, self.steps)
