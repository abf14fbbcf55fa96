"""Stopping a sweep: Ctrl-C, SIGTERM, kill -9 and a worker killed from outside.

Every case must end the worker processes with their driver, keep the finished cells, release
the lock (but after kill -9) and say in one line what happened. The worker processes of a
run are found through /proc (Linux only).
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch

from superpose import sweep
from superpose.cli import main
from superpose.sweep import Chunk, backends, run_chunk
from superpose.sweep.backends import WorkerDied
from superpose.sweep.lock import LOCK
from superpose.sweep.store import DATABASE

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc"),
    pytest.mark.usefixtures("warm_optimizer"),
]

ROOT = Path(__file__).resolve().parents[1]
CELLS = 8
SPEC = (
    'name = "stop"\n[fixed]\nkind = "relu"\nn_features = 20\nn_hidden = 5\n'
    "[axes]\nfeature_probability = { logspace = [1, 0.01], num = 4 }\nseed = [0, 1]\n"
    "[training]\nsteps = 200\nbatch_size = 256\nlr = 0.01\neval_samples = 2048\n"
    "[execution]\nmax_chunk_cells = 1\n"
)
"""8 cells, one per chunk, about 0.3 s each on one core (after a worker's first chunk,
which imports torch._dynamo: seconds)."""


@pytest.fixture(scope="module")
def warm_optimizer() -> None:
    """Build a torch optimizer once here: its first use imports torch._dynamo (seconds), which
    forked workers then inherit instead of each importing it again."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def _state(pid: int) -> str | None:
    """The state letter of ``pid`` (``"Z"``: zombie), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = path.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(path.parent.name))
    return found


def _left(pids: list[int], within: float = 5.0) -> list[int]:
    """Those of ``pids`` still running ``within`` seconds from now (zombies count as ended)."""
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid in pids if _state(pid) not in (None, "Z")]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _kill(pids: list[int]) -> None:
    """SIGKILL those of ``pids`` still running (clean-up after a failed check)."""
    for pid in _left(pids, within=0):
        os.kill(pid, signal.SIGKILL)


def _stored(out: Path) -> int:
    """Finished rows in the store at ``out`` (0 before it exists)."""
    try:
        with sqlite3.connect(out / DATABASE, timeout=30) as connection:
            query = "SELECT count(*) FROM cells WHERE status = 'done'"
            return connection.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _wait_for_a_cell(out: Path, process: subprocess.Popen | None = None) -> None:
    """Wait until the sweep writing ``out`` (``process``, if given) has stored a cell."""
    deadline = time.monotonic() + 120
    while _stored(out) == 0:
        assert process is None or process.poll() is None, "the sweep ended before a cell"
        assert time.monotonic() < deadline, "the sweep stored nothing in 120 s"
        time.sleep(0.02)


def _start_cli(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Start ``superpose sweep`` (2 workers) on the 8-cell spec in its own process group;
    return the process, the spec and the store folder."""
    spec, out = tmp_path / "stop.toml", tmp_path / "store"
    spec.write_text(SPEC)
    command = ["sweep", str(spec), "--out", str(out), "--workers", "2", "--quiet"]
    process = subprocess.Popen(
        [sys.executable, "-m", "superpose.cli", *command],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return process, spec, out


def _end(process: subprocess.Popen, workers: list[int]) -> None:
    """Kill what is left of the run (after a failed check) and close its pipes."""
    _kill(workers)
    process.kill()
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _resume(spec: Path, out: Path, stored: int, capsys: pytest.CaptureFixture) -> None:
    """Rerunning the command trains the cells left and keeps the ones stored."""
    assert main(["sweep", str(spec), "--out", str(out), "--workers", "2", "--quiet"]) == 0
    assert f"{CELLS - stored} done, {stored} skipped, 0 failed" in capsys.readouterr().out
    frame = sweep.load(out)
    assert len(frame) == CELLS and set(frame.status) == {"done"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group", "code"),
    [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
    ids=["ctrl-c", "kill"],
)
def test_cli_stops_on_a_signal_and_resumes(tmp_path, capsys, signum, to_group, code):
    process, spec, out = _start_cli(tmp_path)
    workers: list[int] = []
    try:
        _wait_for_a_cell(out, process)
        workers = _children(process.pid)
        assert len(workers) == 2
        if to_group:  # Ctrl-C: the terminal signals the whole process group
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        process.wait(timeout=60)
        assert _left(workers) == []
        stdout, stderr = process.communicate(timeout=60)
    finally:
        _end(process, workers)
    assert process.returncode == code
    stored = _stored(out)
    assert 1 <= stored < CELLS, "signal the sweep mid-way"
    assert stdout == ""
    assert stderr == (
        f"interrupted: {stored} of {CELLS} cells stored in {out}; "
        "rerun the same command to resume\n"
    )
    assert not (out / LOCK).exists()
    _resume(spec, out, stored, capsys)


@pytest.mark.slow
def test_cli_killed_takes_its_workers_along(tmp_path, capsys):
    process, spec, out = _start_cli(tmp_path)
    workers: list[int] = []
    try:
        _wait_for_a_cell(out, process)
        workers = _children(process.pid)
        assert len(workers) == 2
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        assert _left(workers) == []
    finally:
        _end(process, workers)
    stored = _stored(out)
    assert 1 <= stored < CELLS, "kill the sweep mid-way"
    assert (out / LOCK).exists()  # nobody released it: the rerun takes it over
    _resume(spec, out, stored, capsys)


@pytest.mark.slow
def test_cli_names_a_worker_killed_from_outside(tmp_path):
    process, _, out = _start_cli(tmp_path)
    workers: list[int] = []
    try:
        _wait_for_a_cell(out, process)
        workers = _children(process.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # as the out-of-memory killer does
        process.wait(timeout=60)
        assert _left(workers) == []
        stdout, stderr = process.communicate(timeout=60)
    finally:
        _end(process, workers)
    assert process.returncode == 1
    stored = _stored(out)
    assert 1 <= stored < CELLS
    assert stdout == ""
    pattern = (
        rf"superpose sweep: error: chunk \d+ \(1 cell\) was lost: its worker \(pid {workers[0]}\)"
        r" was killed by signal SIGKILL, likely by the out-of-memory killer: use fewer workers "
        rf"\(--workers\) or a smaller memory_budget_mb; {stored} of {CELLS} cells stored in "
        rf"{re.escape(str(out))}; rerun the same command to resume\n"
    )
    assert re.fullmatch(pattern, stderr), stderr
    assert not (out / LOCK).exists()


def _spec(steps: int = 20) -> sweep.SweepSpec:
    return sweep.SweepSpec.from_dict(
        {
            "name": "lib",
            "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
            "axes": {"seed": [0, 1, 2, 3]},
            "training": {"steps": steps, "eval_samples": 256},
            "execution": {"max_chunk_cells": 1},
        }
    )


def _fake_chunk(pids: Path, out: Path, fake: str, chunk: Chunk, *args) -> list:
    """A worker's ``run_chunk``: note the worker's pid as a file in ``pids``, then ``fake``:
    ``"slow"``: chunks after the first sleep 60 s; ``"kill"``, ``"exit"``: the worker of the
    second chunk kills itself with SIGKILL or exits with code 3 once the store at ``out``
    holds a cell; ``"raise"``: every chunk raises OSError. (Module level, so that the old
    ProcessPoolExecutor backend could pickle it.)"""
    (pids / str(os.getpid())).touch()
    if fake == "slow" and chunk.index > 0:
        time.sleep(60)
    if fake in ("kill", "exit") and chunk.index == 1:
        _wait_for_a_cell(out)
        if fake == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    if fake == "raise":
        raise OSError(f"disk on fire in chunk {chunk.index}")
    return run_chunk(chunk, *args)


def _fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: str) -> tuple[Path, Path]:
    """Make the workers run :func:`_fake_chunk`; return the folders of pids and the store."""
    pids, out = tmp_path / "pids", tmp_path / "store"
    pids.mkdir()
    monkeypatch.setattr(backends, "run_chunk", partial(_fake_chunk, pids, out, fake))
    return pids, out


def test_interrupt_kills_workers_at_once_releases_the_lock_and_propagates(tmp_path, monkeypatch):
    pids, out = _fake(monkeypatch, tmp_path, "slow")
    workers: list[int] = []
    signalled: list[float] = []

    def interrupt() -> None:  # Ctrl-C, once a cell is stored and two chunks sleep
        _wait_for_a_cell(out)
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline:
            workers[:] = [int(path.name) for path in pids.iterdir()]
            time.sleep(0.01)
        for pid in workers:  # the terminal signals the workers too: they leave it to us
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        if _left(workers, within=0) == workers:  # else run() raises WorkerDied
            signalled.append(time.monotonic())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep.run(_spec(), out=out, progress=False, workers=2)
        stopped = time.monotonic()
    finally:
        thread.join()
        _kill(workers)
    assert signalled, "the workers did not ignore SIGINT and SIGTERM"
    assert stopped - signalled[0] < 10  # not waiting for the workers' 60 s chunks
    assert len(workers) == 2 and all(_state(pid) is None for pid in workers)  # ended, reaped
    assert not (out / LOCK).exists()
    assert _stored(out) == 1


@pytest.mark.parametrize(
    ("fake", "how"),
    [("kill", "was killed by signal SIGKILL, likely by"), ("exit", "exited with code 3$")],
)
def test_a_worker_that_ends_stops_the_sweep_naming_its_chunk(tmp_path, monkeypatch, fake, how):
    pids, out = _fake(monkeypatch, tmp_path, fake)
    with pytest.raises(WorkerDied, match=rf"^chunk 1 \(1 cell\) was lost: .* {how}") as error:
        sweep.run(_spec(steps=5), out=out, progress=False, workers=2)
    workers = [int(path.name) for path in pids.iterdir()]
    assert error.value.chunk.index == 1 and error.value.pid in workers
    assert all(_state(pid) is None for pid in workers)
    assert not (out / LOCK).exists()
    assert _stored(out) >= 1
    monkeypatch.undo()
    again = sweep.run(_spec(steps=5), out=out, progress=False, workers=2)
    assert again.done + again.skipped == 4 and again.skipped >= 1


def test_an_exception_in_a_worker_reaches_the_caller(tmp_path, monkeypatch):
    _, out = _fake(monkeypatch, tmp_path, "raise")
    with pytest.raises(OSError, match="disk on fire in chunk"):
        sweep.run(_spec(), out=out, progress=False, workers=2)
    assert not (out / LOCK).exists()


WATCHED = """
import os, sys, time
import multiprocessing
from pathlib import Path

from superpose.sweep import backends


def worker(parent, ready):
    sys.platform = "darwin"  # as off Linux: no PR_SET_PDEATHSIG, the watchdog thread
    backends._follow_parent(parent)
    Path(ready).touch()
    time.sleep(60)


if __name__ == "__main__":
    process = multiprocessing.get_context("spawn").Process(
        target=worker, args=(os.getpid(), sys.argv[1])
    )
    process.start()
    print(process.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.slow
def test_off_linux_a_watchdog_ends_the_worker_with_its_parent(tmp_path):
    script, ready = tmp_path / "watched.py", tmp_path / "ready"
    script.write_text(WATCHED)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(ready)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    worker = [int(parent.stdout.readline())]
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline, "the worker did not start in 120 s"
            time.sleep(0.02)
        parent.kill()
        parent.wait()
        assert _left(worker) == []
    finally:
        _end(parent, worker)
