"""Sweeps: grids of toy-model (or SAE) trainings, packed into batched models, stored resumably.

A sweep spec (TOML or :class:`SweepSpec`) names fixed fields and swept axes; every grid
point is a cell identified by a hash of its full config. Cells that share shapes train
together as instances of one :class:`~superpose.ToyModel` (:mod:`.packing`), each with its
own seed-keyed data stream so that packing never changes a cell's result (:mod:`.streams`).
A spec with ``task = "sae"`` sweeps sparse autoencoders on synthetic sources instead: a
chunk is one batched SAE on one shared stream (:mod:`.execute`), and the store's columns
hold its recovery scores.
Results go to an SQLite + safetensors store (:mod:`.store`) chunk by chunk, so a rerun
resumes where a killed one stopped (retraining cells whose weight files were damaged); one
process writes to a store at a time (:mod:`.lock`); chunks run in-process, in parallel worker
processes (one per CPU core by default) or as Ray tasks (:mod:`.backends`).

Example::

    from superpose import sweep
    summary = sweep.run("experiments/phase_diagram.toml")   # -> results/phase_diagram
    print(summary)
    df = sweep.load("results/phase_diagram")                # one row per cell
    W = sweep.load_weights("results/phase_diagram", df.config_hash[0])["W"]

    sweep.run("experiments/sae_grid.toml")                  # task = "sae"
    scores = sweep.load("results/sae_grid")                 # mcc, l0, f1, ... as columns
    model = sweep.load_model("results/sae_grid", scores.config_hash[0])  # a 1-instance SAE
"""

from superpose.sweep.backends import WorkerDied
from superpose.sweep.cells import CellResult
from superpose.sweep.execute import run_chunk, sae_source
from superpose.sweep.lock import StoreLocked
from superpose.sweep.packing import Chunk, pack
from superpose.sweep.runner import SweepSummary, finished_cells, plan, resolve_workers, run
from superpose.sweep.spec import (
    FIELDS,
    SAE_FIELDS,
    SAE_SPARSITY,
    TASKS,
    Cell,
    SweepSpec,
    fields_table,
)
from superpose.sweep.store import CorruptWeights, ResultStore, load, load_model, load_weights

__all__ = [
    "FIELDS",
    "SAE_FIELDS",
    "SAE_SPARSITY",
    "TASKS",
    "Cell",
    "CellResult",
    "Chunk",
    "CorruptWeights",
    "ResultStore",
    "StoreLocked",
    "SweepSpec",
    "SweepSummary",
    "WorkerDied",
    "fields_table",
    "finished_cells",
    "load",
    "load_model",
    "load_weights",
    "pack",
    "plan",
    "resolve_workers",
    "run",
    "run_chunk",
    "sae_source",
]
