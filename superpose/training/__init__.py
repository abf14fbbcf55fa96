"""The one training loop and what every trainer shares: config dataclasses, learning-rate
schedules, the divergence rule, the optimizer and thread accelerations, checkpoints.

Modules: :mod:`~superpose.training.loop` (the loop), :mod:`~superpose.training.trainable`
(:class:`Trainable`, what a trainer hands it),
:mod:`~superpose.training.config` (:class:`LoopConfig`, :func:`setting`),
:mod:`~superpose.training.schedule`, :mod:`~superpose.training.divergence`,
:mod:`~superpose.training.optim`, :mod:`~superpose.training.checkpoint`;
threads and cores come from :mod:`superpose.runtime`.
"""

from superpose.runtime import auto_threads, available_cores, cpu_threads
from superpose.training.config import LoopConfig, setting
from superpose.training.divergence import DIVERGENCE_FACTOR, TrainingDiverged
from superpose.training.loop import History, Metrics, OnLog, Trainable, run, threads_for
from superpose.training.optim import direct_adamw
from superpose.training.result import METHODS, PRECISIONS, TrainResult, resolve_method
from superpose.training.schedule import SCHEDULES, lr_factor

__all__ = [
    "DIVERGENCE_FACTOR",
    "METHODS",
    "PRECISIONS",
    "SCHEDULES",
    "History",
    "LoopConfig",
    "Metrics",
    "OnLog",
    "TrainResult",
    "Trainable",
    "TrainingDiverged",
    "auto_threads",
    "available_cores",
    "cpu_threads",
    "direct_adamw",
    "lr_factor",
    "resolve_method",
    "run",
    "setting",
    "threads_for",
]
