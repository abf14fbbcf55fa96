"""Execution backends: where chunks train. Each yields chunk results as they finish; only the
caller (the driver) writes the store.

* ``local``: in this process, one chunk after another, on the CPU or one GPU.
* ``ray``: every chunk is a Ray task (``pip install -e ".[ray]"``). ``address="auto"`` (or a
  cluster address) joins a running cluster; without an address a local Ray is started and
  shut down afterwards; an already initialised Ray is used as it is. Tasks ask for one CPU,
  and for one GPU when the device is CUDA. Cluster nodes need superpose installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from superpose._checks import resolve_device
from superpose.sweep.execute import CellResult, run_chunk
from superpose.sweep.packing import Chunk

Backend = Callable[[Sequence[Chunk], str, str | None], Iterator[list[CellResult]]]
"""``backend(chunks, device, address)`` yields each chunk's results as it finishes."""


def run_local(
    chunks: Sequence[Chunk], device: str, address: str | None
) -> Iterator[list[CellResult]]:
    """Train the chunks here, in order."""
    if address is not None:
        raise ValueError("address applies only to backend='ray'")
    resolved = str(resolve_device(device))
    for chunk in chunks:
        yield run_chunk(chunk, resolved)


def run_ray(
    chunks: Sequence[Chunk], device: str, address: str | None
) -> Iterator[list[CellResult]]:
    """Train the chunks as Ray tasks, yielding results in the order they complete."""
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
