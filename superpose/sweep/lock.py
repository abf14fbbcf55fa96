"""One writer per result store: a lock file that names its holder.

The writer creates ``<store>/sweep.lock`` atomically (a complete temporary file hard-linked
to the lock's name, which fails when the lock exists) holding its pid, host, start time and
the process's start tick, and removes it when it closes, also after an exception or Ctrl-C.
A second writer finds the lock and stops with :class:`StoreLocked`, naming the holder. A
lock left by a writer that died without cleaning up (``kill -9``, power loss) is stale when
its holder ran on this host and that pid is gone, a zombie, or a newer process that reused
the pid (its start tick differs); the next writer takes it over. Locks held on other hosts
are never taken over: their liveness cannot be checked from here.

Readers never take the lock.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import datetime, timezone
from pathlib import Path

LOCK = "sweep.lock"


class StoreLocked(RuntimeError):
    """Another live process is writing to the store.

    Attributes:
        path: the store folder.
        owner: the holder's lock record (``pid``, ``host``, ``started``), empty when the lock
            file cannot be read.
    """

    def __init__(self, path: Path, owner: dict) -> None:
        if owner:
            who = (
                f"pid {owner.get('pid')} on host {owner.get('host')}, "
                f"started {owner.get('started')}"
            )
            advice = "wait for it to finish or stop it"
        else:
            who = "a writer whose lock file cannot be read"
            advice = f"if no sweep is writing there, delete {path / LOCK}"
        super().__init__(f"{path} is in use by another sweep ({who}); {advice}")
        self.path = path
        self.owner = owner


def _process_state(pid: int) -> tuple[str, int] | None:
    """``(state letter, start tick since boot)`` of ``pid`` from ``/proc``, None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (command) "
    return fields[0], int(fields[19])


def _alive(owner: dict) -> bool:
    """Whether the lock's holder may still be running (True when it cannot be told)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    state = _process_state(owner["pid"])
    if state is None:
        return True
    return state[0] != "Z" and owner.get("process_start") in (None, state[1])


class WriterLock:
    """The lock of the store folder ``path``, held from :meth:`acquire` to :meth:`release`.

    Attributes:
        path: the store folder.
        took_over: the stale lock record this writer replaced, or None.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.took_over: dict | None = None
        state = _process_state(os.getpid())
        self._record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "process_start": None if state is None else state[1],
            "token": uuid.uuid4().hex,
        }
        self._held = False

    @property
    def file(self) -> Path:
        """The lock file, ``<path>/sweep.lock``."""
        return self.path / LOCK

    def _read(self, path: Path) -> dict | None:
        """The record in ``path``; None when it is gone; ``{}`` when it is unreadable."""
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def acquire(self) -> None:
        """Take the lock, or take over a stale one.

        Raises:
            StoreLocked: a live process (or one on another host) holds it.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        draft = self.path / f".{LOCK}.{self._record['token']}"
        draft.write_text(json.dumps(self._record))
        try:
            while not self._held:
                try:
                    os.link(draft, self.file)
                    self._held = True
                except FileExistsError:
                    self._take_over_if_stale()
        finally:
            draft.unlink()

    def _take_over_if_stale(self) -> None:
        """Remove the current lock file if its holder is dead; raise if it is alive."""
        owner = self._read(self.file)
        if owner is None:  # released meanwhile: try again
            return
        if not owner or _alive(owner):
            raise StoreLocked(self.path, owner)
        # Move the stale lock aside, then check that it is the one judged stale (another
        # new writer may have replaced it meanwhile); if not, put that one back.
        aside = self.path / f".{LOCK}.stale.{self._record['token']}"
        try:
            os.rename(self.file, aside)
        except FileNotFoundError:
            return
        if self._read(aside) == owner:
            aside.unlink()
            self.took_over = owner
            return
        try:
            os.link(aside, self.file)
        except FileExistsError:
            pass
        aside.unlink()

    def release(self) -> None:
        """Remove the lock file if this writer still holds it (safe to call twice)."""
        if self._held and self._read(self.file) == self._record:
            self.file.unlink()
        self._held = False
