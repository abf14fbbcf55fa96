"""Running sweeps locally: packing correctness, the store, divergence, resume, concurrent reads."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import superpose.data
from superpose import sweep
from superpose.analysis import scalar_metrics
from superpose.sweep import Chunk, SweepSpec, pack, run_chunk
from superpose.sweep.store import DATABASE
from superpose.sweep.streams import CellStreams
from superpose.train import available_cores

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["final_loss", "dimensions_per_feature", "mean_superposition", "n_represented"]


def small_spec(name="t", steps=60, seeds=(0, 1), max_chunk_cells=2048, **training):
    return SweepSpec.from_dict(
        {
            "name": name,
            "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2, "importance_decay": 0.8},
            "axes": {
                "feature_probability": {"logspace": [1, 0.05], "num": 3},
                "relative_importance": [0.5, 2.0],
                "seed": list(seeds),
            },
            "training": {"steps": steps, "batch_size": 128, "lr": 0.01, "eval_samples": 2048}
            | training,
            "execution": {"max_chunk_cells": max_chunk_cells},
        }
    )


def by_hash(frame):
    return frame.set_index("config_hash").sort_index()


def test_streams_do_not_depend_on_packing():
    p = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.5, 0.5]])
    packed = CellStreams(p, [3, 5, 3])
    alone = CellStreams(p[1:2], [5])
    first, second = packed.draw(64, 3), packed.draw(64, 3)
    assert torch.equal(first[1:2], alone.draw(64, 1))
    assert torch.equal(second[1:2], alone.draw(64, 1))
    dense = CellStreams(p[1:2], [5]).sample_rows(64, 1, sparse=False)
    assert dense.repeats == (0,) and torch.equal(dense.parts[0], first[1:2])
    assert torch.equal(first[0], first[2])  # same seed, same probability: same batch
    assert not torch.equal(first, second)
    assert not torch.equal(
        packed.with_stream(1).draw(64, 3)[1], CellStreams(p[1:2], [5]).draw(64, 1)
    )


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Each instance's rows of ``x: (instance, rows, n)`` in lexicographic order."""
    for column in reversed(range(x.shape[2])):
        x = x.gather(1, x[:, :, column].argsort(dim=1, stable=True)[..., None].expand_as(x))
    return x


@pytest.mark.parametrize("magnitude", ["uniform", "constant"])
def test_compact_rows_are_the_drawn_rows_reordered(magnitude, monkeypatch):
    monkeypatch.setattr(superpose.data.sampling, "_PART_ELEMENTS", 3 * 60)  # parts of ~60 rows
    # instances ordered by probability, as the executor orders them; p = 0 and p = 1 included
    p = torch.tensor([0.0, 0.01, 0.02, 0.05, 0.05, 0.3, 1.0])[:, None].expand(-1, 3)
    p = p * torch.tensor([1.0, 0.5, 0.25])
    seeds = [0, 1, 0, 2, 1, 0, 1]
    dense = CellStreams(p, seeds, magnitude=magnitude).draw(512, 7)
    compact = CellStreams(p, seeds, magnitude=magnitude).sample_rows(512)
    assert torch.equal(_sorted_rows(compact.dense()), _sorted_rows(dense))
    assert len(compact.parts) > 2 and compact.n_instances == 7
    assert compact.repeats[0] > 480 and compact.repeats[-1] == 0  # p = 0.0, 0.01; p = 1
    assert all(
        repeats == 0 or not part[:, -1].any()
        for part, repeats in zip(compact.parts, compact.repeats, strict=True)
    )


def test_packed_cells_match_cells_trained_alone():
    cells = small_spec().cells()
    packed = run_chunk(Chunk(tuple(cells), 0))
    for k in (0, 5, 11):
        alone = run_chunk(Chunk((cells[k],), 0))[0]
        assert alone.cell == packed[k].cell and alone.status == "done"
        assert alone.final_loss == pytest.approx(packed[k].final_loss, rel=1e-5, abs=1e-7)
        for name, tensor in alone.weights.items():
            torch.testing.assert_close(tensor, packed[k].weights[name], rtol=1e-5, atol=1e-6)
        for name, value in alone.metrics.items():
            assert value == pytest.approx(packed[k].metrics[name], rel=1e-4, abs=1e-6)


def test_run_store_load_and_rerun_skips(tmp_path):
    spec = small_spec(max_chunk_cells=5)
    summary = sweep.run(spec, out=tmp_path, progress=False, workers=1)
    assert (summary.cells, summary.done, summary.skipped, summary.failed) == (12, 12, 0, 0)
    assert "12 cells: 12 done, 0 skipped, 0 failed" in str(summary)
    frame = sweep.load(tmp_path)
    assert len(frame) == 12 and set(frame.status) == {"done"}
    assert set(frame.config_hash) == {c.config_hash for c in spec.cells()}
    assert set(frame.chunk_cells) == {4}  # 12 cells, at most 5 per chunk: 3 chunks of 4
    for column in ["kind", "n_features", "seed", "lr", "version", "wall_time", *METRICS]:
        assert frame[column].notna().all(), column
    row = frame.iloc[3]
    weights = sweep.load_weights(tmp_path, row.config_hash)
    assert weights["W"].shape == (2, 3)
    model = sweep.load_model(tmp_path, row.config_hash)
    assert torch.equal(model.W[0], weights["W"])
    assert model.importance[0].tolist() == pytest.approx([1.0, 0.8, 0.64 * row.relative_importance])
    for name, value in scalar_metrics(model.W).items():
        assert float(value[0]) == pytest.approx(row[name], rel=1e-5, abs=1e-7), name

    again = sweep.run(spec, out=tmp_path, progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 12, 0)
    pd.testing.assert_frame_equal(sweep.load(tmp_path), frame)


def test_changed_spec_reuses_matching_cells(tmp_path):
    sweep.run(small_spec(seeds=(0,)), out=tmp_path, progress=False)
    before = by_hash(sweep.load(tmp_path))
    summary = sweep.run(small_spec(seeds=(0, 1)), out=tmp_path, progress=False)
    assert (summary.done, summary.skipped) == (6, 6)
    after = by_hash(sweep.load(tmp_path))
    assert len(after) == 12
    pd.testing.assert_frame_equal(after.loc[before.index], before)
    assert "12 finished, 0 to train" in sweep.plan(small_spec(seeds=(0, 1)), out=tmp_path)


def test_diverged_cells_are_recorded_and_the_rest_train_as_alone(tmp_path):
    spec = SweepSpec.from_dict(
        {
            "name": "diverge",
            "fixed": {"kind": "linear", "n_features": 2, "n_hidden": 1},
            # importance 3e38 overflows float32 at once; importance 1 trains at lr 1 (at lr 1e4,
            # the 0.4 setting, importance 1 blows up too: its loss rises above 1e4× its start)
            "axes": {"relative_importance": [1.0, 3e38, 0.5], "seed": [0, 1]},
            "training": {"steps": 20, "batch_size": 32, "lr": 1.0, "eval_samples": 256},
        }
    )
    summary = sweep.run(spec, out=tmp_path, progress=False)
    assert (summary.done, summary.failed) == (4, 2)
    assert "diverged" in str(summary)
    frame = by_hash(sweep.load(tmp_path))
    bad = frame[frame.relative_importance > 1e38]
    assert set(bad.status) == {"diverged"} and bad.final_loss.isna().all()
    assert bad.error.str.contains("NaN/inf").all()
    good = spec.cells()[4]
    alone = run_chunk(Chunk((good,), 0))[0]
    assert alone.final_loss == pytest.approx(frame.loc[good.config_hash, "final_loss"], rel=1e-5)
    with pytest.raises(KeyError, match="no weights"):
        sweep.load_weights(tmp_path, bad.index[0])
    rerun = sweep.run(spec, out=tmp_path, progress=False)
    assert (rerun.done, rerun.skipped, rerun.failed) == (0, 6, 0)  # divergence is not retried


def test_errors_are_recorded_and_retried(tmp_path, monkeypatch):
    spec = small_spec(seeds=(0,), steps=5)

    def broken(*args, **kwargs):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr("superpose.sweep.execute.train", broken)
    summary = sweep.run(spec, out=tmp_path, progress=False)
    assert (summary.done, summary.failed) == (0, 6)
    assert "RuntimeError: out of cheese" in str(summary)
    assert set(sweep.load(tmp_path).status) == {"error"}
    monkeypatch.undo()
    retry = sweep.run(spec, out=tmp_path, progress=False)
    assert (retry.done, retry.skipped) == (6, 0)


def test_pack_gives_parallel_workers_equal_shares():
    cells = SweepSpec.from_dict(
        {
            "name": "grid",
            "fixed": {"kind": "relu", "n_features": 2, "n_hidden": 1},
            "axes": {"feature_probability": {"logspace": [1, 0.01], "num": 48}},
            "training": {"steps": 1},
        }
    ).cells()
    sizes = {
        workers: [len(chunk) for chunk in pack(cells, 256, 16, workers)] for workers in (1, 2, 4)
    }
    assert sizes == {1: [16, 16, 16], 2: [12, 12, 12, 12], 4: [12, 12, 12, 12]}
    assert [len(chunk) for chunk in pack(cells[:3], 256, 16, workers=4)] == [1, 1, 1]


def test_worker_processes_give_the_in_process_results(tmp_path):
    spec = small_spec(steps=40, max_chunk_cells=3)  # 12 cells in 4 chunks either way
    one = sweep.run(spec, out=tmp_path / "one", progress=False, workers=1)
    two = sweep.run(spec, out=tmp_path / "two", progress=False, workers=2)
    assert one.done == two.done == 12
    a, b = by_hash(sweep.load(tmp_path / "one")), by_hash(sweep.load(tmp_path / "two"))
    assert a[METRICS].equals(b[METRICS])
    for config_hash in a.index:
        first = sweep.load_weights(tmp_path / "one", config_hash)
        second = sweep.load_weights(tmp_path / "two", config_hash)
        assert all(torch.equal(first[name], second[name]) for name in first)


def test_spawned_workers_give_the_forked_results(tmp_path, monkeypatch):
    spec = small_spec(steps=20, seeds=(0,), max_chunk_cells=3)  # 6 cells in 2 chunks
    forked = sweep.run(spec, out=tmp_path / "fork", progress=False, workers=2)
    monkeypatch.setattr(sweep.backends, "START_METHOD", "spawn")  # macOS and Windows
    spawned = sweep.run(spec, out=tmp_path / "spawn", progress=False, workers=2)
    assert forked.done == spawned.done == 6
    a, b = by_hash(sweep.load(tmp_path / "fork")), by_hash(sweep.load(tmp_path / "spawn"))
    assert a[METRICS].equals(b[METRICS])


def test_workers_are_checked():
    assert sweep.resolve_workers(None) == available_cores()
    assert sweep.resolve_workers(3) == 3
    assert sweep.resolve_workers(None, backend="ray") == 1
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        sweep.resolve_workers(0)
    with pytest.raises(TypeError, match="workers must be an int or None"):
        sweep.resolve_workers(2.0)
    with pytest.raises(ValueError, match="workers applies only to backend='local'"):
        sweep.resolve_workers(2, backend="ray")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        sweep.run(small_spec(), out=tmp_path, backend="dask")
    with pytest.raises(ValueError, match="address applies only to backend='ray'"):
        sweep.run(small_spec(), out=tmp_path, address="auto", progress=False)
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        sweep.load(tmp_path / "missing")


def test_spec_path_and_default_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "tiny"\n[fixed]\nkind = "linear"\nn_features = 2\nn_hidden = 1\n'
        "[axes]\nseed = [0, 1]\n[training]\nsteps = 3\neval_samples = 16\n"
    )
    summary = sweep.run(path, progress=False)
    assert summary.out == Path("results/tiny") and summary.done == 2
    assert len(sweep.load(tmp_path / "results" / "tiny")) == 2


def _done_rows(out: Path) -> int:
    try:
        with sqlite3.connect(out / DATABASE, timeout=30) as connection:
            return connection.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    spec_path = tmp_path / "resume.toml"
    spec_path.write_text(
        'name = "resume"\n[fixed]\nkind = "relu"\nn_features = 3\nn_hidden = 2\n'
        "[axes]\nfeature_probability = { logspace = [1, 0.05], num = 3 }\nseed = [0, 1]\n"
        "[training]\nsteps = 100\nbatch_size = 128\nlr = 0.01\neval_samples = 2048\n"
        "[execution]\nmax_chunk_cells = 1\n"
    )
    killed = tmp_path / "killed"
    code = (
        "import sys; from superpose import sweep; "
        "sweep.run(sys.argv[1], out=sys.argv[2], progress=False)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(spec_path), str(killed)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while _done_rows(killed) == 0 and process.poll() is None:
            assert time.monotonic() < deadline, "the sweep stored nothing in 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    stored = _done_rows(killed)
    assert 1 <= stored < 6, "kill the sweep mid-way"
    assert len(sweep.load(killed)) == stored  # the store opens cleanly after the kill

    resumed = sweep.run(spec_path, out=killed, progress=False)
    assert (resumed.skipped, resumed.done) == (stored, 6 - stored)
    sweep.run(spec_path, out=tmp_path / "whole", progress=False)
    a, b = by_hash(sweep.load(killed)), by_hash(sweep.load(tmp_path / "whole"))
    assert list(a.index) == list(b.index)
    np.testing.assert_allclose(a[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=1e-5, atol=1e-7)
    for config_hash in a.index:
        torch.testing.assert_close(
            sweep.load_weights(killed, config_hash),
            sweep.load_weights(tmp_path / "whole", config_hash),
            rtol=1e-5,
            atol=1e-6,
        )


def test_readers_see_consistent_results_while_a_sweep_writes(tmp_path):
    spec = small_spec(steps=100, max_chunk_cells=1)
    writer = threading.Thread(
        target=sweep.run, args=(spec,), kwargs={"out": tmp_path, "progress": False}
    )
    writer.start()
    counts = []
    try:
        while writer.is_alive():
            if not (tmp_path / DATABASE).exists():
                time.sleep(0.01)
                continue
            try:
                frame = sweep.load(tmp_path)
            except FileNotFoundError:  # the database exists but its tables do not yet
                continue
            counts.append(len(frame))
            for config_hash in frame.config_hash:
                assert sweep.load_weights(tmp_path, config_hash)["W"].shape == (2, 3)
            time.sleep(0.01)
    finally:
        writer.join()
    assert counts == sorted(counts) and len(set(counts)) > 2, counts
    assert len(sweep.load(tmp_path)) == 12


def test_a_finite_blow_up_is_stored_as_diverged(tmp_path):
    """0.4 stored cells at lr = 1e6 as done with final losses near 1e22."""
    spec = SweepSpec.from_dict(
        {
            "name": "blow-up",
            "fixed": {"kind": "relu", "n_features": 5, "n_hidden": 2},
            "axes": {"lr": [1e-3, 1e6]},
            "training": {"steps": 200, "batch_size": 64, "eval_samples": 256},
        }
    )
    summary = sweep.run(spec, out=tmp_path, progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    frame = sweep.load(tmp_path).set_index("lr")
    assert frame.loc[1e6, "status"] == "diverged" and "rose above" in frame.loc[1e6, "error"]
    assert frame.loc[1e-3, "status"] == "done" and frame.loc[1e-3, "final_loss"] < 1
