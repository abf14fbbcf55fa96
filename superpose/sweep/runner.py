"""Running a sweep: skip finished cells, pack the rest, train chunks on a backend, store.

Resume: a cell is identified by the hash of its full config. Rerunning a spec (or a changed
spec whose cells partly match) skips every cell whose row says ``done`` or ``diverged`` and
trains only the others; results are written chunk by chunk, so a killed or interrupted sweep
loses only the chunks in flight. Cells with status ``error`` are retried, and so are finished
cells whose weight file is missing, truncated or altered (checked against the size and
SHA-256 in their row). One process writes to a store at a time: a second ``run`` on the same
folder raises :class:`~superpose.sweep.lock.StoreLocked`; a lock left by a killed run is taken
over.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from superpose._checks import resolve_device
from superpose.runtime import available_cores
from superpose.sweep.backends import BACKENDS
from superpose.sweep.packing import describe, pack
from superpose.sweep.spec import Cell, SweepSpec, as_spec
from superpose.sweep.store import DATABASE, CorruptWeights, ResultStore
from superpose.training.loop import progress_disabled

RESULTS = Path("results")
"""Default parent folder of sweep results: ``results/<spec name>``."""


@dataclass
class SweepSummary:
    """How a sweep run went; ``str()`` gives the end-of-run summary.

    Attributes:
        name: the spec's name.
        out: the result folder.
        cells: cells in the spec.
        done: cells trained now.
        skipped: cells already finished in the store.
        damaged: finished cells whose weight file was missing or corrupt, retrained now.
        failed: cells that diverged or errored now.
        wall_time: seconds the run took.
        errors: up to five distinct error messages.
    """

    name: str
    out: Path
    cells: int
    done: int = 0
    skipped: int = 0
    damaged: int = 0
    failed: int = 0
    wall_time: float = 0.0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"sweep {self.name}: {self.cells} cells: {self.done} done, {self.skipped} skipped, "
            f"{self.failed} failed in {self.wall_time:.1f} s -> {self.out}"
        )
        if self.damaged:
            text += f" ({self.damaged} retrained for missing or corrupt weight files)"
        return "\n".join([text, *(f"  error: {message}" for message in self.errors)])


def _out(spec: SweepSpec, out: str | Path | None) -> Path:
    return RESULTS / spec.name if out is None else Path(out)


def _finished(store: ResultStore, cells: list[Cell]) -> tuple[set[str], list[CorruptWeights]]:
    """Hashes of the finished cells that need no rerun, and the errors of the finished cells
    whose weight files are missing or corrupt (to retrain)."""
    damaged = store.damaged(cell.config_hash for cell in cells)
    return store.finished() - {error.config_hash for error in damaged}, damaged


def finished_cells(spec: SweepSpec | str | Path, out: str | Path | None = None) -> int:
    """How many cells of ``spec`` have a finished row (``done`` or ``diverged``) in the store
    at ``out`` (default ``results/<name>``): 0 when there is no store yet. Weight files are not
    checked (:func:`plan` does)."""
    spec = as_spec(spec)
    out = _out(spec, out)
    if not (out / DATABASE).is_file():
        return 0
    with ResultStore(out, readonly=True) as store:
        finished = store.finished()
    return sum(cell.config_hash in finished for cell in spec.cells())


def resolve_workers(workers: int | None, backend: str = "local", device: str = "cpu") -> int:
    """Chunks trained at a time by the local backend: ``workers``, or by default one per CPU
    core this process may use (:func:`~superpose.runtime.available_cores`) on the CPU and 1 on
    a GPU. The Ray backend takes no ``workers`` (the cluster decides) and packs for 1."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)):
        raise TypeError(f"workers must be an int or None, got {workers!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if backend != "local":
        if workers is not None:
            raise ValueError("workers applies only to backend='local'")
        return 1
    if str(resolve_device(device)) != "cpu":
        if workers not in (None, 1):
            raise ValueError(f"workers > 1 needs device='cpu', got device={device!r}")
        return 1
    return available_cores() if workers is None else workers


def plan(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    workers: int | None = None,
    backend: str = "local",
    device: str = "cpu",
) -> str:
    """The dry-run text: cell count, grid, cells already finished at ``out`` (default
    ``results/<name>``), and the packing plan of the cells left to train (for ``workers``,
    ``backend`` and ``device`` as :func:`run` takes them)."""
    spec = as_spec(spec)
    workers = resolve_workers(workers, backend, device)
    out = _out(spec, out)
    cells = spec.cells()
    finished: set[str] = set()
    damaged: list[CorruptWeights] = []
    if (out / DATABASE).is_file():
        with ResultStore(out, readonly=True) as store:
            finished, damaged = _finished(store, cells)
    todo = [cell for cell in cells if cell.config_hash not in finished]
    grid = " x ".join(f"{len(v)} {k}" for k, v in spec.axes.items()) or "no axes"
    points = math.prod(spec.shape)
    if points > len(cells):
        grid += f"; {points} grid points, one cell for those differing only in unused fields"
    fixed = " ".join(f"{k}={v}" for k, v in {**spec.fixed, **spec.training}.items())
    task = "" if spec.task == "toy" else f" (task {spec.task})"
    execution = spec.execution
    lines = [
        f"sweep {spec.name}{task}: {len(cells)} cells ({grid})",
        f"fixed: {fixed}",
        f"results: {out} ({len(cells) - len(todo)} finished, {len(todo)} to train"
        + (f", {len(damaged)} of them for missing or corrupt weight files)" if damaged else ")"),
        f"packing: memory budget {execution['memory_budget_mb']:g} MB, "
        f"at most {execution['max_chunk_cells']} cells per chunk, {workers} at a time",
    ]
    if todo:
        lines.append(describe(pack(todo, **execution, workers=workers)))
    return "\n".join(lines)


def run(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    backend: str = "local",
    address: str | None = None,
    device: str = "cpu",
    progress: bool | None = None,
    workers: int | None = None,
) -> SweepSummary:
    """Train every unfinished cell of ``spec`` and store the results.

    Args:
        spec: a :class:`SweepSpec` or the path of a TOML spec.
        out: result folder (default ``results/<spec name>``); reused to resume.
        backend: ``"local"`` or ``"ray"`` (see :mod:`superpose.sweep.backends`).
        address: Ray cluster address (``"auto"`` joins a running cluster); Ray only.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: a progress bar over cells: True shows it, False hides it, None (default)
            shows it on a terminal only.
        workers: local backend: chunks trained at a time, each in its own process on the
            CPU (:func:`resolve_workers`; default one per core on a CPU, 1 on a GPU). A
            cell's result does not depend on it (each cell trains as it would alone).

    Notes go to stderr before training: a stale lock taken over, and finished cells whose
    weight files are missing or corrupt (they are retrained).

    Returns:
        A :class:`SweepSummary`; diverged or failed cells do not stop the sweep.

    Stopping: an exception here, Ctrl-C (``KeyboardInterrupt``) included, kills the local
    backend's worker processes at once (their chunks are lost; finished chunks are stored),
    releases the store's lock and propagates. Rerunning resumes.

    Raises:
        StoreLocked: another live process is writing to ``out``.
        CorruptFile: ``out/sweep.sqlite`` is not an SQLite database, or a damaged one.
        WorkerDied: a local worker process ended while it trained a chunk (e.g. the
            out-of-memory killer); the other workers are killed.
    """
    start = time.perf_counter()
    spec = as_spec(spec)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    workers = resolve_workers(workers, backend, device)
    out = _out(spec, out)
    cells = spec.cells()
    summary = SweepSummary(spec.name, out, len(cells))
    with ResultStore(out) as store:
        if store.lock.took_over:
            owner = store.lock.took_over
            print(
                f"note: took over the lock of {out} left by a sweep that is gone (pid "
                f"{owner.get('pid')} on host {owner.get('host')}, started {owner.get('started')})",
                file=sys.stderr,
            )
        store.save_spec(spec)
        finished, damaged = _finished(store, cells)
        if damaged:
            print(
                f"{len(damaged)} cell{'s' if len(damaged) > 1 else ''} had missing or corrupt "
                "weight files; retraining them "
                f"(e.g. cell {damaged[0].config_hash}: {damaged[0].problem})",
                file=sys.stderr,
            )
            summary.damaged = len(damaged)
        todo = [cell for cell in cells if cell.config_hash not in finished]
        summary.skipped = len(cells) - len(todo)
        chunks = pack(todo, **spec.execution, workers=workers)
        bar = tqdm(
            total=len(todo), desc=spec.name, unit="cell", disable=progress_disabled(progress)
        )
        results = BACKENDS[backend](chunks, device, address, workers)
        try:
            for chunk_results in results:
                store.write(chunk_results)
                for result in chunk_results:
                    if result.status == "done":
                        summary.done += 1
                    else:
                        summary.failed += 1
                        if result.error not in summary.errors and len(summary.errors) < 5:
                            summary.errors.append(result.error)
                bar.update(len(chunk_results))
                bar.set_postfix(failed=summary.failed)
        finally:
            results.close()
            bar.close()
    summary.wall_time = time.perf_counter() - start
    return summary
