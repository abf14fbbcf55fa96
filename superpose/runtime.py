"""Where code runs: the CPU cores this process may use and how many torch threads to give
a run. The trainers (through :mod:`superpose.training`) and the sweep's worker pools read
it; it knows nothing of models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from superpose._checks import positive_int

TWO_THREAD_ELEMENTS = 2**24
"""Work per step (a trainer's element count, e.g. ``instance × batch × n_features``) from
which :func:`auto_threads` picks a second thread; see there for the measurements."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def auto_threads(elements: int) -> int:
    """Torch CPU threads for training steps over ``elements`` elements of work (each trainer
    says what it counts: ``instance × batch × n_features`` for toy models): 2 from
    :data:`TWO_THREAD_ELEMENTS` on (where this process may use 2 cores), else 1. The choice
    depends on the step's size alone, so a seeded run gives the same numbers however busy
    the machine is (the thread count can change a product's rounding).

    A second thread splits each of a step's few dozen operations and waits for its core at
    every one. Measured on a 2-core AMD EPYC, fast path, ms per step on 1 / 2 threads. Loaded
    by other jobs (load average 6–12): 2 threads were 10–25× slower at every size (8.4 / 159
    for 51,200 elements, n=5 ×10; 77 / 777 for 3,276,800, the phase diagram's n=2 ×1,600
    chunk). Idle (load ≈ 1): 2 threads were faster, 0.90 / 0.78 for 51,200 elements, 14.7 /
    10.8 for 2,048,000 (n=100 ×20), 28.2 / 26.4 for 3,276,800. One thread is the safe default
    below the threshold; pass ``threads=2`` to a trainer on an idle machine.
    """
    return 2 if elements >= TWO_THREAD_ELEMENTS and available_cores() >= 2 else 1


@contextmanager
def cpu_threads(n_threads: int) -> Iterator[None]:
    """Run the enclosed block with ``torch.set_num_threads(n_threads)``, then restore.

    Toy models are small: one CPU thread often trains them fastest, above all on a machine
    shared with other jobs, where a second thread waits for a free core on every op.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(positive_int("n_threads", n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
