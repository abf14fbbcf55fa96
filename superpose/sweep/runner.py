"""Running a sweep: skip finished cells, pack the rest, train chunks on a backend, store.

Resume: a cell is identified by the hash of its full config. Rerunning a spec (or a changed
spec whose cells partly match) skips every cell whose row says ``done`` or ``diverged`` and
trains only the others; results are written chunk by chunk, so a killed sweep loses only the
chunks in flight. Cells with status ``error`` are retried, and so are finished cells whose
weight file is missing, truncated or altered (checked against the size and SHA-256 in their
row). One process writes to a store at a time: a second ``run`` on the same folder raises
:class:`~superpose.sweep.lock.StoreLocked`; a lock left by a killed run is taken over.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from superpose.sweep.backends import BACKENDS
from superpose.sweep.packing import describe, pack
from superpose.sweep.spec import Cell, SweepSpec, as_spec
from superpose.sweep.store import DATABASE, CorruptWeights, ResultStore

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


def plan(spec: SweepSpec | str | Path, out: str | Path | None = None) -> str:
    """The dry-run text: cell count, grid, cells already finished at ``out`` (default
    ``results/<name>``), and the packing plan of the cells left to train."""
    spec = as_spec(spec)
    out = _out(spec, out)
    cells = spec.cells()
    finished: set[str] = set()
    damaged: list[CorruptWeights] = []
    if (out / DATABASE).is_file():
        with ResultStore(out, readonly=True) as store:
            finished, damaged = _finished(store, cells)
    todo = [cell for cell in cells if cell.config_hash not in finished]
    grid = " x ".join(f"{len(v)} {k}" for k, v in spec.axes.items()) or "no axes"
    fixed = " ".join(f"{k}={v}" for k, v in {**spec.fixed, **spec.training}.items())
    execution = spec.execution
    lines = [
        f"sweep {spec.name}: {len(cells)} cells ({grid})",
        f"fixed: {fixed}",
        f"results: {out} ({len(cells) - len(todo)} finished, {len(todo)} to train"
        + (f", {len(damaged)} of them for missing or corrupt weight files)" if damaged else ")"),
        f"packing: memory budget {execution['memory_budget_mb']:g} MB, "
        f"at most {execution['max_chunk_cells']} cells per chunk",
    ]
    if todo:
        lines.append(describe(pack(todo, **execution)))
    return "\n".join(lines)


def run(
    spec: SweepSpec | str | Path,
    out: str | Path | None = None,
    backend: str = "local",
    address: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> SweepSummary:
    """Train every unfinished cell of ``spec`` and store the results.

    Args:
        spec: a :class:`SweepSpec` or the path of a TOML spec.
        out: result folder (default ``results/<spec name>``); reused to resume.
        backend: ``"local"`` or ``"ray"`` (see :mod:`superpose.sweep.backends`).
        address: Ray cluster address (``"auto"`` joins a running cluster); Ray only.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: show a progress bar over cells.

    Notes go to stderr before training: a stale lock taken over, and finished cells whose
    weight files are missing or corrupt (they are retrained).

    Returns:
        A :class:`SweepSummary`; diverged or failed cells do not stop the sweep.

    Raises:
        StoreLocked: another live process is writing to ``out``.
        CorruptFile: ``out/sweep.sqlite`` is not an SQLite database, or a damaged one.
    """
    start = time.perf_counter()
    spec = as_spec(spec)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
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
        chunks = pack(todo, **spec.execution)
        bar = tqdm(total=len(todo), desc=spec.name, unit="cell", disable=not progress)
        results = BACKENDS[backend](chunks, device, address)
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
