"""Execution backends: where chunks train. Each yields chunk results as they finish; only the
caller (the driver) writes the store.

* ``local``: on this machine. One worker: in this process, one chunk after another, on the
  CPU or one GPU. Several workers (CPU only): that many chunks at a time, each in a worker
  process (forked on Linux, spawned elsewhere: a script then needs an ``if __name__ ==
  "__main__":`` guard) on ``cores // workers`` torch threads, so every chunk trains exactly
  as it would alone.
* ``ray``: every chunk is a Ray task (``pip install -e ".[ray]"``). ``address="auto"`` (or a
  cluster address) joins a running cluster; without an address a local Ray is started and
  shut down afterwards; an already initialised Ray is used as it is. Tasks ask for one CPU,
  and for one GPU when the device is CUDA. Cluster nodes need superpose installed.
"""

from __future__ import annotations

import multiprocessing
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import torch

from superpose._checks import resolve_device
from superpose.sweep.cells import CellResult
from superpose.sweep.execute import run_chunk
from superpose.sweep.packing import Chunk
from superpose.train import available_cores

START_METHOD = "fork" if sys.platform == "linux" else "spawn"
"""How the local backend starts its worker processes: fork on Linux (as torch's DataLoader
does: at once, and a script needs no ``__main__`` guard); spawn elsewhere (on macOS fork is
unsafe with the system's frameworks; Windows has no fork)."""

Backend = Callable[[Sequence[Chunk], str, str | None, int], Iterator[list[CellResult]]]
"""``backend(chunks, device, address, workers)`` yields each chunk's results as it finishes."""


def run_local(
    chunks: Sequence[Chunk], device: str, address: str | None, workers: int = 1
) -> Iterator[list[CellResult]]:
    """Train the chunks on this machine: in this process and in order with one worker, else
    ``workers`` chunks at a time in worker processes (CPU only), yielding results in the order
    they complete."""
    if address is not None:
        raise ValueError("address applies only to backend='ray'")
    resolved = str(resolve_device(device))
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield run_chunk(chunk, resolved)
        return
    if resolved != "cpu":
        raise ValueError(f"workers > 1 needs device='cpu', got {resolved!r}")
    threads = max(1, available_cores() // workers)
    context = multiprocessing.get_context(START_METHOD)
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context)
    with warnings.catch_warnings():  # Python 3.12+ warns of any fork with threads alive
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pending = {pool.submit(run_chunk, chunk, resolved, threads) for chunk in chunks}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(cancel_futures=True)


def run_ray(
    chunks: Sequence[Chunk], device: str, address: str | None, workers: int = 1
) -> Iterator[list[CellResult]]:
    """Train the chunks as Ray tasks, yielding results in the order they complete (Ray runs
    as many at a time as the cluster has CPUs or GPUs; ``workers`` only shaped the packing)."""
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "backend='ray' needs Ray: pip install -e \".[ray]\" (or pip install 'ray>=2.9')"
        ) from error
    owned = not ray.is_initialized()
    if owned:
        if address is None:
            ray.init(include_dashboard=False)
        else:
            ray.init(address=address)
    pending: list = []
    try:
        if device in (None, "auto"):
            device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
        # Ray hands each GPU task its own device through CUDA_VISIBLE_DEVICES.
        gpu = torch.device(device).type == "cuda"
        task = ray.remote(run_chunk).options(num_cpus=1, num_gpus=1 if gpu else 0)
        pending = [task.remote(chunk, "cuda" if gpu else "cpu") for chunk in chunks]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        for ref in pending:
            ray.cancel(ref)
        if owned:
            ray.shutdown()


BACKENDS: dict[str, Backend] = {"local": run_local, "ray": run_ray}
