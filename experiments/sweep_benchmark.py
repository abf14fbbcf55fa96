"""Sweep throughput: a packed phase-diagram grid vs one cell at a time, and Ray's overhead.

The grid is the phase diagram's (n_features=2, n_hidden=1, ReLU output; relative importance
0.1-10 x feature probability 1-0.01, both log-spaced), one seed. Rows of the table:

* ``packed``: the whole grid through ``superpose.sweep.run`` (local backend, one worker),
  store included.
* ``one at a time``: ``--alone`` randomly chosen cells each trained as its own one-instance
  chunk; cells/s is extrapolated to the grid from that sample (said in the table).
* ``local, 2 chunks`` / ``ray, 2 chunks``: the same grid split in two chunks, on the local
  backend with two worker processes and on a local Ray with 2 CPUs (``ray start`` time is
  reported separately).

Usage::

    python experiments/sweep_benchmark.py                 # 40 x 40, 500 steps
    python experiments/sweep_benchmark.py --grid 10 --steps 100 --alone 4 --no-ray
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch

from superpose import sweep
from superpose.sweep import Chunk, SweepSpec, run_chunk


def grid_spec(grid: int, steps: int, max_chunk_cells: int) -> SweepSpec:
    return SweepSpec.from_dict(
        {
            "name": "sweep_benchmark",
            "fixed": {"kind": "relu", "n_features": 2, "n_hidden": 1},
            "axes": {
                "relative_importance": {"logspace": [0.1, 10], "num": grid},
                "feature_probability": {"logspace": [1, 0.01], "num": grid},
            },
            "training": {"steps": steps, "batch_size": 1024, "lr": 0.01, "eval_samples": 16384},
            "execution": {"max_chunk_cells": max_chunk_cells, "memory_budget_mb": 1024},
        }
    )


def timed_sweep(
    spec: SweepSpec, backend: str = "local", workers: int | None = None
) -> tuple[float, float]:
    """Wall and this-process CPU seconds of a fresh sweep into a temporary folder."""
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = sweep.run(spec, out=Path(out), backend=backend, progress=False, workers=workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert summary.done == len(spec.cells()), summary
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=40, help="cells per axis")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--alone", type=int, default=16, help="cells timed one at a time")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    args = parser.parse_args()
    n_cells = args.grid**2
    rows: list[tuple[str, int, float, float, str]] = []

    spec = grid_spec(args.grid, args.steps, n_cells)
    run_chunk(Chunk(tuple(spec.cells()[:2]), 0))  # warm-up: imports, allocator
    wall, cpu = timed_sweep(spec, workers=1)
    rows.append(("packed (1 chunk)", n_cells, wall, cpu, "measured"))

    sample = random.Random(0).sample(spec.cells(), args.alone)
    wall, cpu = time.perf_counter(), time.process_time()
    for cell in sample:
        run_chunk(Chunk((cell,), 0))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    scale = n_cells / args.alone
    note = f"{args.alone} cells timed, x{scale:g} extrapolated"
    rows.append(("one at a time", n_cells, wall * scale, cpu * scale, note))

    halves = grid_spec(args.grid, args.steps, -(-n_cells // 2))
    wall, cpu = timed_sweep(halves, workers=2)
    rows.append(("local, 2 chunks", n_cells, wall, cpu, "2 worker processes"))
    if not args.no_ray:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - start
        try:
            wall, cpu = timed_sweep(halves, backend="ray")
        finally:
            ray.shutdown()
        rows.append(("ray, 2 chunks", n_cells, wall, cpu, f"+ {startup:.1f} s ray.init"))

    print(
        f"\n{args.grid}x{args.grid} grid, n_features=2, n_hidden=1, {args.steps} steps, "
        f"batch 1024; torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| mode | cells | wall s | driver CPU s | cells/s (wall) | note |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for mode, cells, wall, cpu, note in rows:
        print(f"| {mode} | {cells} | {wall:.1f} | {cpu:.1f} | {cells / wall:.2f} | {note} |")


if __name__ == "__main__":
    main()
