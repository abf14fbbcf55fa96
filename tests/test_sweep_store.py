"""The sweep store's safety: checked safetensors weights, one writer at a time, clear errors."""

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from superpose import sweep
from superpose.cli import main
from superpose.io import CorruptFile
from superpose.sweep import CorruptWeights, ResultStore, StoreLocked, SweepSpec
from superpose.sweep.lock import LOCK, _process_state
from superpose.sweep.store import DATABASE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def spec_dict(name="store", seeds=(0, 1, 2), steps=20, **execution):
    return {
        "name": name,
        "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
        "axes": {"feature_probability": [1.0, 0.1], "seed": list(seeds)},
        "training": {"steps": steps, "batch_size": 64, "eval_samples": 256},
        "execution": execution,
    }


def write_toml(path: Path, spec: dict) -> Path:
    """Write a ``spec_dict`` as a TOML spec (its values are JSON-compatible TOML)."""
    lines = [f'name = "{spec["name"]}"']
    for table in ("fixed", "axes", "training", "execution"):
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in spec[table].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(out: Path) -> int:
    try:
        with sqlite3.connect(out / DATABASE, timeout=30) as connection:
            return connection.execute("SELECT count(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def lock_record(pid: int, host: str | None = None, process_start=None) -> str:
    return json.dumps(
        {
            "pid": pid,
            "host": host or socket.gethostname(),
            "started": "2026-01-01T00:00:00+00:00",
            "process_start": process_start,
            "token": "x",
        }
    )


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 6-cell sweep (read-only for the tests that use it)."""
    out = tmp_path_factory.mktemp("finished")
    summary = sweep.run(SweepSpec.from_dict(spec_dict()), out=out, progress=False)
    assert summary.done == 6
    return out


def test_weights_are_safetensors_with_size_and_checksum(finished):
    frame = sweep.load(finished)
    assert sorted(p.suffix for p in (finished / "weights").iterdir()) == [".safetensors"] * 6
    for row in frame.itertuples():
        data = (finished / "weights" / f"{row.config_hash}.safetensors").read_bytes()
        assert row.weights_bytes == len(data) > 0
        assert row.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert not (finished / LOCK).exists()  # released when the run ended


def test_rows_follow_the_latest_grid_whatever_order_cells_finished_in(tmp_path):
    first = SweepSpec.from_dict(spec_dict(seeds=(0, 1), steps=5))
    latest = SweepSpec.from_dict(spec_dict(seeds=(2, 0), steps=5))
    sweep.run(first, out=tmp_path, progress=False)
    sweep.run(latest, out=tmp_path, progress=False)  # its seed-0 cells finished first
    with sqlite3.connect(tmp_path / DATABASE) as connection:
        finish_order = [
            row[0] for row in connection.execute("SELECT config_hash FROM cells ORDER BY rowid")
        ]
    grid = [cell.config_hash for cell in latest.cells()]
    assert finish_order != grid + [h for h in finish_order if h not in grid]
    # the latest grid, then the earlier spec's other cells in the order they finished
    assert sweep.load(tmp_path).config_hash.tolist() == grid + [
        h for h in finish_order if h not in grid
    ]
    with sqlite3.connect(tmp_path / DATABASE) as connection:  # a spec this version can't read
        connection.execute("UPDATE meta SET value = ? WHERE key = 'spec'", ('{"name": 1}',))
    assert sweep.load(tmp_path).config_hash.tolist() == finish_order


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered", "old .pt"])
def test_damaged_weight_file_is_a_clear_error_then_retrained(tmp_path, finished, damage, capsys):
    out = tmp_path / "store"
    out.mkdir()
    for item in ("sweep.sqlite", "weights"):
        subprocess.run(["cp", "-r", str(finished / item), str(out)], check=True)
    frame = sweep.load(out)
    bad = frame.config_hash[2]
    path = out / "weights" / f"{bad}.safetensors"
    good = sweep.load_weights(out, bad)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:-4])
    elif damage == "altered":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        path.unlink()
        if damage == "old .pt":
            torch.save(good, path.with_suffix(".pt"))
    problem = {
        "missing": "missing",
        "truncated": r"truncated or altered \(\d+ bytes, \d+ recorded\)",
        "altered": "altered \\(its SHA-256 differs",
        "old .pt": "missing \\(there is an old-format .pt file, which is never unpickled\\)",
    }[damage]
    for load in (sweep.load_weights, sweep.load_model):
        with pytest.raises(CorruptWeights, match=f"cell {bad}: weight file .*{problem}") as error:
            load(out, bad)
        assert error.value.config_hash == bad and error.value.path == path
    spec = SweepSpec.from_dict(spec_dict())
    assert "(5 finished, 1 to train, 1 of them for missing or corrupt weight files)" in (
        sweep.plan(spec, out=out)
    )
    assert sweep.load_weights(out, frame.config_hash[0])["W"].shape == (2, 3)  # others load
    summary = sweep.run(spec, out=out, progress=False)
    assert (summary.done, summary.skipped, summary.damaged) == (1, 5, 1)
    assert f"1 cell had missing or corrupt weight files; retraining them (e.g. cell {bad}: " in (
        capsys.readouterr().err
    )
    torch.testing.assert_close(sweep.load_weights(out, bad), good, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_retrains_exactly_the_corrupted_cell(tmp_path, finished):
    """``superpose sweep`` (a subprocess) on a store with one corrupted weight file says so,
    retrains that cell alone, and the result matches the original."""
    out = tmp_path / "store"
    out.mkdir()
    for item in ("sweep.sqlite", "weights"):
        subprocess.run(["cp", "-r", str(finished / item), str(out)], check=True)
    frame = sweep.load(out)
    bad = frame.config_hash[4]
    original = sweep.load_weights(out, bad)
    path = out / "weights" / f"{bad}.safetensors"
    path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.raises(CorruptWeights, match=bad):
        sweep.load_weights(out, bad)
    spec = write_toml(tmp_path / "s.toml", spec_dict())
    done = subprocess.run(
        [sys.executable, "-m", "superpose.cli", "sweep", str(spec), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(
        f"1 cell had missing or corrupt weight files; retraining them (e.g. cell {bad}: altered"
    )
    assert "6 cells: 1 done, 5 skipped, 0 failed" in done.stdout
    assert "(1 retrained for missing or corrupt weight files)" in done.stdout
    before, after = frame.set_index("config_hash"), sweep.load(out).set_index("config_hash")
    others = before.index[before.index != bad]
    pd.testing.assert_frame_equal(after.loc[others], before.loc[others])  # untouched
    assert after.loc[bad, "finished_at"] >= before.loc[bad, "finished_at"]
    torch.testing.assert_close(sweep.load_weights(out, bad), original, rtol=1e-5, atol=1e-6)


def test_old_store_cells_are_retrained(tmp_path, finished, capsys):
    """A store from before safetensors (rows without checksums, .pt files): every finished
    cell counts as damaged and is retrained; the .pt files are never read."""
    out = tmp_path / "old"
    out.mkdir()
    subprocess.run(["cp", str(finished / DATABASE), str(out)], check=True)
    (out / "weights").mkdir()
    with sqlite3.connect(out / DATABASE) as connection:
        connection.execute("ALTER TABLE cells DROP COLUMN weights_bytes")
        connection.execute("ALTER TABLE cells DROP COLUMN weights_sha256")
    frame = sweep.load(out)
    for config_hash in frame.config_hash:
        (out / "weights" / f"{config_hash}.pt").write_bytes(b"not read")
    spec = SweepSpec.from_dict(spec_dict())
    with pytest.raises(CorruptWeights, match=r"missing \(there is an old-format .pt file"):
        sweep.load_weights(out, frame.config_hash[0])
    assert "(0 finished, 6 to train, 6 of them for missing or corrupt" in sweep.plan(spec, out)
    summary = sweep.run(spec, out=out, progress=False)
    assert (summary.done, summary.skipped, summary.damaged) == (6, 0, 6)
    assert "6 cells had missing or corrupt weight files" in capsys.readouterr().err
    assert sweep.load(out).weights_sha256.notna().all()


def test_second_writer_is_refused_and_readers_are_not(tmp_path, finished):
    with ResultStore(tmp_path) as writer:
        owner = json.loads((tmp_path / LOCK).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(StoreLocked, match=f"pid {os.getpid()} on host") as error:
            ResultStore(tmp_path)
        assert error.value.owner["started"] == owner["started"]
        assert writer.lock.took_over is None
        assert len(sweep.load(tmp_path)) == 0  # readers take no lock
    assert not (tmp_path / LOCK).exists()
    ResultStore(tmp_path).close()  # free again


def test_lock_is_released_on_interrupt(tmp_path, monkeypatch):
    def interrupted(chunks, device, address, workers):
        raise KeyboardInterrupt
        yield

    monkeypatch.setitem(sweep.runner.BACKENDS, "local", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep.run(SweepSpec.from_dict(spec_dict()), out=tmp_path, progress=False)
    assert not (tmp_path / LOCK).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process start ticks")
@pytest.mark.parametrize(
    ("holder", "stale"),
    [
        ("dead pid", True),
        ("zombie", True),
        ("reused pid", True),
        ("live pid", False),
        ("other host", False),
        ("unreadable", False),
    ],
)
def test_stale_locks_are_taken_over_and_live_ones_respected(tmp_path, holder, stale):
    other = subprocess.Popen(["sleep", "60"])
    try:
        if holder == "zombie":  # killed but not yet reaped by its parent
            other.send_signal(signal.SIGKILL)
            while _process_state(other.pid)[0] != "Z":
                time.sleep(0.01)
        record = {
            "dead pid": lambda: lock_record(dead_pid()),
            "zombie": lambda: lock_record(other.pid),
            # our own pid, but a process start tick that is not ours: the pid was reused
            "reused pid": lambda: lock_record(
                os.getpid(), process_start=_process_state(os.getpid())[1] - 1
            ),
            "live pid": lambda: lock_record(other.pid, process_start=_process_state(other.pid)[1]),
            "other host": lambda: lock_record(dead_pid(), host="elsewhere.example"),
            "unreadable": lambda: "{half a record",
        }[holder]()
        tmp_path.joinpath(LOCK).write_text(record)
        if stale:
            with ResultStore(tmp_path) as store:
                assert store.lock.took_over["started"] == "2026-01-01T00:00:00+00:00"
                assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
            assert not (tmp_path / LOCK).exists()
        else:
            expected = "delete .*sweep.lock" if holder == "unreadable" else "pid .* on host"
            with pytest.raises(StoreLocked, match=f"is in use by another sweep .*{expected}"):
                ResultStore(tmp_path)
            assert tmp_path.joinpath(LOCK).read_text() == record  # left alone
    finally:
        other.kill()
        other.wait()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_second_sweep_process_stops_at_once_and_a_killed_one_is_resumed(tmp_path, capsys):
    """Two real ``superpose sweep`` processes on one folder: the second exits with one line
    naming the first; after ``kill -9`` of the first, the next run takes the stale lock over
    and resumes."""
    out = tmp_path / "store"
    spec = spec_dict("long", seeds=range(100), steps=200, max_chunk_cells=1)
    command = [sys.executable, "-m", "superpose.cli", "sweep", "--out", str(out), "--quiet"]
    command.append(str(write_toml(tmp_path / "long.toml", spec)))
    first = subprocess.Popen(command, env=ENV, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while rows(out) == 0:
            assert first.poll() is None and time.monotonic() < deadline, "first run stored nothing"
            time.sleep(0.05)
        second = subprocess.run(
            command, env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert first.poll() is None, "the first run should still be writing"
        started = json.loads((out / LOCK).read_text())["started"]
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr == (
            f"superpose sweep: error: {out} is in use by another sweep (pid {first.pid} on host "
            f"{socket.gethostname()}, started {started}); wait for it to finish or stop it\n"
        )
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert (out / LOCK).exists()  # killed: no clean-up
    stored = rows(out)
    # resume a part of the grid (the first 4 seeds) in-process: the lock is taken over
    part = SweepSpec.from_dict({**spec, "axes": {**spec["axes"], "seed": [0, 1, 2, 3]}})
    already = set(sweep.load(out).config_hash) & {cell.config_hash for cell in part.cells()}
    summary = sweep.run(part, out=out, progress=False)
    assert f"took over the lock of {out} left by a sweep that is gone (pid {first.pid}" in (
        capsys.readouterr().err
    )
    assert (summary.skipped, summary.done) == (len(already), 8 - len(already))
    assert rows(out) == stored + 8 - len(already)
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_a_clear_error(tmp_path, finished, capsys, damage):
    out = tmp_path / "store"
    out.mkdir()
    data = (finished / DATABASE).read_bytes()
    (out / DATABASE).write_bytes(
        b"this is not a database " * 100 if damage == "garbage" else data[: len(data) // 2]
    )
    message = rf"{out / DATABASE} is not a superpose sweep store \(not an SQLite database"
    spec = SweepSpec.from_dict(spec_dict())
    for call in (
        lambda: sweep.load(out),
        lambda: sweep.load_weights(out, "abc"),
        lambda: sweep.run(spec, out=out, progress=False),
    ):
        with pytest.raises(CorruptFile, match=message):
            call()
    assert not (out / LOCK).exists()  # the failed writer released its lock
    toml = write_toml(tmp_path / "s.toml", spec_dict())
    assert main(["sweep", str(toml), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"superpose sweep: error: {out / DATABASE} is not a superpose sweep")
    assert err.count("\n") == 1
