"""Execution backends: where chunks train. Each yields chunk results as they finish; only the
caller (the driver) writes the store.

* ``local``: on this machine. One worker: in this process, one chunk after another, on the
  CPU or one GPU. Several workers (CPU only): that many chunks at a time, each in a worker
  process (forked on Linux, spawned elsewhere: a script then needs an ``if __name__ ==
  "__main__":`` guard) on ``cores // workers`` torch threads, so every chunk trains exactly
  as it would alone.

  Stopping: the workers ignore SIGINT and SIGTERM (Ctrl-C, systemd and SLURM signal the
  whole process group; the driver decides; only SIGKILL stops a worker from outside) and end
  with the driver: when it stops early (an exception, Ctrl-C, the generator closed) it kills
  them at once, without waiting for their chunks, and when it dies (even ``kill -9``) the
  kernel kills them on Linux (``PR_SET_PDEATHSIG``); elsewhere a thread in each worker waits
  for the driver to end. A worker that ends while training a chunk (the out-of-memory
  killer) stops the sweep with :class:`WorkerDied` and the other workers are killed.
* ``ray``: every chunk is a Ray task (``pip install -e ".[ray]"``). ``address="auto"`` (or a
  cluster address) joins a running cluster; without an address a local Ray is started and
  shut down afterwards; an already initialised Ray is used as it is. Tasks ask for one CPU,
  and for one GPU when the device is CUDA. Cluster nodes need superpose installed.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess

import torch

from superpose._checks import resolve_device
from superpose.runtime import available_cores
from superpose.sweep.cells import CellResult
from superpose.sweep.execute import run_chunk
from superpose.sweep.packing import Chunk

START_METHOD = "fork" if sys.platform == "linux" else "spawn"
"""How the local backend starts its worker processes: fork on Linux (as torch's DataLoader
does: at once, and a script needs no ``__main__`` guard); spawn elsewhere (on macOS fork is
unsafe with the system's frameworks; Windows has no fork)."""

Backend = Callable[[Sequence[Chunk], str, str | None, int], Iterator[list[CellResult]]]
"""``backend(chunks, device, address, workers)`` yields each chunk's results as it finishes."""

_PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal this process gets when the thread that started it ends."""


class WorkerDied(RuntimeError):
    """A worker process of the local backend ended while it trained a chunk.

    Attributes:
        chunk: the chunk it trained (its results are lost; finished chunks are stored).
        pid: the worker's process id.
        exitcode: its exit code; ``-N`` when signal ``N`` killed it.
    """

    def __init__(self, chunk: Chunk, pid: int, exitcode: int) -> None:
        if exitcode < 0:
            try:
                how = f"was killed by signal {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-exitcode}"
        else:
            how = f"exited with code {exitcode}"
        if exitcode == -signal.SIGKILL:
            how += (
                ", likely by the out-of-memory killer: use fewer workers (--workers) or a "
                "smaller memory_budget_mb"
            )
        cells = f"{len(chunk)} cell{'s' if len(chunk) != 1 else ''}"
        super().__init__(f"chunk {chunk.index} ({cells}) was lost: its worker (pid {pid}) {how}")
        self.chunk = chunk
        self.pid = pid
        self.exitcode = exitcode


def _follow_parent(parent: int) -> None:
    """Make this worker process end with its parent (pid ``parent``) and ignore SIGINT and
    SIGTERM (the parent decides when to stop; it kills its workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started us
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before the death signal was set
                os._exit(1)
            return
    parent_process = multiprocessing.parent_process()
    if parent_process is None or not parent_process.is_alive():
        os._exit(1)

    def watch() -> None:
        parent_process.join()  # returns when the parent ends
        os._exit(1)

    threading.Thread(target=watch, name="superpose-watch-parent", daemon=True).start()


def _serve(connection: Connection, device: str, threads: int, parent: int) -> None:
    """A worker process: train each chunk the parent sends, send back its results (or the
    exception), until the parent sends None."""
    _follow_parent(parent)
    while (chunk := connection.recv()) is not None:
        try:
            results = run_chunk(chunk, device, threads)
        except Exception as error:  # raised again in the parent
            connection.send(error)
        else:
            connection.send(results)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM in this thread (they stay pending, and are delivered at
    the end), so that a process started meanwhile has them blocked until it ignores them."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _start_worker(
    context: BaseContext, device: str, threads: int, processes: list[BaseProcess]
) -> Connection:
    """Start a worker process and add it to ``processes`` (first, so that an interrupt while
    it starts leaves none untracked); return the parent's end of its pipe."""
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_serve, args=(theirs, device, threads, os.getpid()), name="superpose-worker"
    )
    process.daemon = True
    processes.append(process)
    with _stop_signals_blocked(), warnings.catch_warnings():
        # Python 3.12+ warns of any fork with threads alive
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        process.start()
    theirs.close()  # so that workers started later do not inherit it
    return ours


def _give(connection: Connection, chunk: Chunk | None) -> None:
    """Send a worker its next chunk (None: stop); the next wait finds one that has ended."""
    try:
        connection.send(chunk)
    except OSError:
        pass


def _in_workers(
    chunks: Sequence[Chunk], device: str, workers: int, threads: int
) -> Iterator[list[CellResult]]:
    """Train ``chunks`` in ``workers`` worker processes, yielding results as they complete;
    kill the workers at once when stopped early."""
    context = multiprocessing.get_context(START_METHOD)
    todo = list(reversed(chunks))
    running: dict[Connection, tuple[BaseProcess, Chunk]] = {}
    processes: list[BaseProcess] = []
    finished = False
    try:
        for _ in range(min(workers, len(chunks))):
            connection = _start_worker(context, device, threads, processes)
            running[connection] = (processes[-1], todo.pop())
            _give(connection, running[connection][1])
        while running:
            ready = wait([*running, *(process.sentinel for process, _ in running.values())])
            for connection, (process, chunk) in list(running.items()):
                if connection not in ready and process.sentinel not in ready:
                    continue
                try:
                    results = connection.recv() if connection.poll() else None
                except (EOFError, OSError):  # it ended while sending
                    results = None
                if results is None:
                    process.join()
                    raise WorkerDied(chunk, process.pid, process.exitcode)
                if isinstance(results, BaseException):
                    raise results
                if todo:  # the worker goes on while the caller stores these results
                    running[connection] = (process, todo.pop())
                    _give(connection, running[connection][1])
                else:
                    _give(connection, None)
                    del running[connection]
                    connection.close()
                yield results
        finished = True
    finally:
        started = [process for process in processes if process.pid is not None]
        if not finished:  # do not wait for their chunks; all first, then wait for them
            for process in started:
                process.kill()
        for process in started:
            process.join()
        for connection in running:
            connection.close()


def run_local(
    chunks: Sequence[Chunk], device: str, address: str | None, workers: int = 1
) -> Iterator[list[CellResult]]:
    """Train the chunks on this machine: in this process and in order with one worker, else
    ``workers`` chunks at a time in worker processes (CPU only), yielding results in the order
    they complete.

    Raises:
        WorkerDied: a worker process ended while it trained a chunk (the others are killed).
    """
    if address is not None:
        raise ValueError("address applies only to backend='ray'")
    resolved = str(resolve_device(device))
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield run_chunk(chunk, resolved)
        return
    if resolved != "cpu":
        raise ValueError(f"workers > 1 needs device='cpu', got {resolved!r}")
    yield from _in_workers(chunks, resolved, workers, max(1, available_cores() // workers))


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
