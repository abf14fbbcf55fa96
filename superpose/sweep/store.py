"""The result store: one folder per sweep, an SQLite table of cells and a weights file per cell.

Layout of a store folder::

    results/<name>/
        sweep.sqlite                   table ``cells``: one row per cell; ``meta``: the spec
        weights/<hash>.safetensors     the cell's tensors (W, b, ..., importance; or W_enc, ...)
        sweep.lock                     while a sweep writes: its pid, host and start time

Columns of ``cells`` (in the order :func:`load` gives them; its rows follow the spec's grid):
``config_hash`` (primary key), ``status`` (``done``, ``diverged`` or ``error``), ``error``,
``task`` (``toy`` or ``sae``), every config field of the tasks stored
(:data:`superpose.sweep.spec.FIELDS`, :data:`~superpose.sweep.spec.SAE_FIELDS`; NULL where a
cell does not use a field), ``final_loss``, the metrics (toy cells:
:func:`superpose.analysis.scalar_metrics`; SAE cells: the scores of
:func:`superpose.sae.evaluate` and ``final_mse``, ``final_sparsity``, ``final_aux``; see
:class:`~superpose.sweep.cells.CellResult`), ``wall_time`` (seconds per cell, amortised over
its chunk), ``chunk_cells``, ``device``, ``version`` and ``finished_at`` (UTC, ISO 8601),
``weights_bytes`` and ``weights_sha256`` (size and SHA-256 of the cell's weight file). New
config fields or metrics become new columns; rows from before tasks existed are toy cells.

Safety: the database runs in WAL mode, so readers never block the writer and see only
committed chunks. A chunk's weight files are written first (temporary file, then
``os.replace``), then its rows, with each file's size and checksum, in one transaction: a
process killed at any moment leaves at most stray temporary or unreferenced weight files,
never a row without its weights. Reading a cell's weights checks the file against its row
(:class:`CorruptWeights` names the cell and the file otherwise); nothing is unpickled. Only
one process (the sweep's driver) writes: :class:`ResultStore` opened for writing holds the
store's lock (:mod:`superpose.sweep.lock`). Stores written before weights were safetensors
hold ``weights/<hash>.pt`` files, which are never read: their cells count as damaged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from superpose.io import CorruptFile, tensor_bytes, tensors_from_bytes, write_bytes
from superpose.models import ToyModel
from superpose.sae import SparseAutoencoder
from superpose.sweep.cells import CellResult, build_sae
from superpose.sweep.lock import WriterLock
from superpose.sweep.spec import TASKS, SweepSpec

DATABASE = "sweep.sqlite"
WEIGHTS = "weights"
_FINISHED = ("done", "diverged")
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
_TIMEOUT_S = 60.0

_BASE_COLUMNS = {
    "config_hash": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    "task": "TEXT",
    "final_loss": "REAL",
}
_FIELD_COLUMNS = {
    name: _SQL_TYPES[f.type] for fields in TASKS.values() for name, f in fields.items()
}
"""Every task's config fields (a name shared by tasks has one type)."""
_RUN_COLUMNS = {
    "wall_time": "REAL",
    "chunk_cells": "INTEGER",
    "device": "TEXT",
    "version": "TEXT",
    "finished_at": "TEXT",
    "weights_bytes": "INTEGER",
    "weights_sha256": "TEXT",
}


class CorruptWeights(CorruptFile):
    """A finished cell's weight file is missing, truncated or altered.

    Attributes:
        path: the weight file.
        config_hash: the cell.
        problem: what is wrong with the file (``"missing"``, ``"truncated or altered ..."``).
    """

    def __init__(self, path: Path, config_hash: str, problem: str) -> None:
        super().__init__(
            path,
            f"cell {config_hash}: weight file {path} is {problem}; rerunning the sweep on "
            f"{path.parent.parent} retrains it",
        )
        self.config_hash = config_hash
        self.problem = problem


@contextmanager
def _database_errors(database: Path) -> Iterator[None]:
    """Turn SQLite's "not a database" / "malformed" errors into a :class:`CorruptFile`."""
    try:
        yield
    except sqlite3.OperationalError:  # locked, read-only, I/O: not about the file's content
        raise
    except sqlite3.DatabaseError as error:
        raise CorruptFile(
            database,
            f"{database} is not a superpose sweep store (not an SQLite database, or a damaged "
            f"one: {error})",
        ) from None


class ResultStore:
    """A sweep's result folder, opened for writing (the driver) or reading.

    Args:
        path: the folder (created when writing).
        readonly: open an existing store without creating or changing anything, and without
            the writer's lock.

    Attributes:
        lock: the writer's :class:`~superpose.sweep.lock.WriterLock` (None when readonly).

    Raises:
        FileNotFoundError: ``readonly`` and there is no store at ``path``.
        StoreLocked: opening for writing while another live process writes to the store.
        CorruptFile: ``sweep.sqlite`` is not an SQLite database, or a damaged one.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.lock: WriterLock | None = None
        self.database = self.path / DATABASE
        if readonly:
            if not self.database.is_file():
                raise FileNotFoundError(f"no sweep results at {self.path} (missing {DATABASE})")
        else:
            self.lock = WriterLock(self.path)
            self.lock.acquire()
        self._connection: sqlite3.Connection | None = None
        self._checksums = "weights_bytes, weights_sha256"  # columns, or NULLs in old stores
        try:
            self._connection = sqlite3.connect(self.database, timeout=_TIMEOUT_S)
            with _database_errors(self.database):
                self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        if self.readonly:
            self._connection.execute("PRAGMA query_only = ON")
            tables = self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'cells'"
            ).fetchone()
            if tables is None:
                raise FileNotFoundError(f"no sweep results at {self.path} yet (no cells table)")
            if "weights_sha256" not in self._column_names():  # a store from before checksums
                self._checksums = "NULL, NULL"
            return
        (self.path / WEIGHTS).mkdir(exist_ok=True)
        problems = self._connection.execute("PRAGMA quick_check").fetchall()
        if problems != [("ok",)]:
            raise sqlite3.DatabaseError(problems[0][0])
        with self._connection:
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)"
            )
            columns = ", ".join(f'"{k}" {t}' for k, t in {**_BASE_COLUMNS, **_RUN_COLUMNS}.items())
            # config fields are added as cells of a task are written
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS cells ({columns})")
            self._ensure_columns({**_BASE_COLUMNS, **_RUN_COLUMNS})

    def close(self) -> None:
        """Close the database connection and release the writer's lock."""
        if self._connection is not None:
            self._connection.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _column_names(self) -> set[str]:
        return {row[1] for row in self._connection.execute("PRAGMA table_info(cells)")}

    def _ensure_columns(self, columns: Mapping[str, str]) -> None:
        """Add missing columns (new metrics, config fields or tasks) to ``cells``."""
        existing = self._column_names()
        for name, sql_type in columns.items():
            if name not in existing:
                self._connection.execute(f'ALTER TABLE cells ADD COLUMN "{name}" {sql_type}')

    def save_spec(self, spec: SweepSpec) -> None:
        """Record the spec of the latest run (as JSON in ``meta``)."""
        with self._connection:
            self._connection.execute(
                "INSERT OR REPLACE INTO meta VALUES ('spec', ?)", (json.dumps(spec.to_dict()),)
            )

    def spec(self) -> dict:
        """The spec of the latest run, as :meth:`SweepSpec.to_dict` gave it."""
        row = self._connection.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
        return {} if row is None else json.loads(row[0])

    def _grid_positions(self) -> dict[str, int]:
        """Each cell of the latest run's spec → its position in the grid; empty when no spec is
        recorded or this version cannot read it (then :meth:`table` keeps the finish order)."""
        data = self.spec()
        try:
            cells = SweepSpec.from_dict(data).cells() if data else []
        except (ValueError, TypeError):  # a spec written by another version
            return {}
        return {cell.config_hash: i for i, cell in enumerate(cells)}

    def finished(self) -> set[str]:
        """Hashes of cells that need no rerun (status ``done`` or ``diverged``)."""
        rows = self._connection.execute(
            "SELECT config_hash FROM cells WHERE status IN (?, ?)", _FINISHED
        )
        return {row[0] for row in rows}

    def weights_path(self, config_hash: str) -> Path:
        """Where a cell's weights file lives."""
        return self.path / WEIGHTS / f"{config_hash}.safetensors"

    def damaged(self, config_hashes: Iterable[str]) -> list[CorruptWeights]:
        """Check the weight files of the ``done`` cells among ``config_hashes`` (size, then
        SHA-256); one error per cell whose file is missing, truncated or altered."""
        wanted = set(config_hashes)
        rows = self._connection.execute(
            f"SELECT config_hash, {self._checksums} FROM cells WHERE status = 'done'"
        )
        errors = []
        for config_hash, size, sha256 in rows:
            if config_hash in wanted:
                try:
                    self._checked_bytes(config_hash, size, sha256)
                except CorruptWeights as error:
                    errors.append(error)
        return errors

    def _checked_bytes(self, config_hash: str, size: int | None, sha256: str | None) -> bytes:
        """The bytes of a cell's weight file, checked against its row's size and SHA-256."""
        path = self.weights_path(config_hash)
        if not path.is_file():
            old = path.with_suffix(".pt").is_file()
            note = " (there is an old-format .pt file, which is never unpickled)" if old else ""
            raise CorruptWeights(path, config_hash, f"missing{note}")
        if sha256 is None:
            raise CorruptWeights(path, config_hash, "unverifiable (its row records no checksum)")
        actual = path.stat().st_size
        if actual != size:
            raise CorruptWeights(
                path, config_hash, f"truncated or altered ({actual} bytes, {size} recorded)"
            )
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CorruptWeights(
                path, config_hash, "altered (its SHA-256 differs from the one recorded)"
            )
        return data

    def write(self, results: Iterable[CellResult]) -> None:
        """Store a chunk's results: weight files atomically, then all rows (with each file's
        size and SHA-256) in one transaction."""
        results = list(results)
        files = {
            r.cell.config_hash: self._write_weights(r.cell.config_hash, r.weights)
            for r in results
            if r.weights is not None
        }
        fields = {name: _FIELD_COLUMNS[name] for r in results for name in r.cell.config}
        metrics = dict.fromkeys(name for result in results for name in result.metrics)
        finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [
            {
                "config_hash": r.cell.config_hash,
                "status": r.status,
                "error": r.error,
                "task": r.cell.task,
                **r.cell.config,
                "final_loss": r.final_loss,
                **r.metrics,
                "wall_time": r.wall_time,
                "chunk_cells": r.chunk_cells,
                "device": r.device,
                "version": r.version,
                "finished_at": finished_at,
                "weights_bytes": files.get(r.cell.config_hash, (None, None))[0],
                "weights_sha256": files.get(r.cell.config_hash, (None, None))[1],
            }
            for r in results
        ]
        if not rows:
            return
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = ", ".join(f'"{name}"' for name in names)
        placeholders = ", ".join(f":{name}" for name in names)
        with self._connection:
            self._ensure_columns({**fields, **dict.fromkeys(metrics, "REAL")})
            self._connection.executemany(
                f"INSERT OR REPLACE INTO cells ({columns}) VALUES ({placeholders})",
                [{name: row.get(name) for name in names} for row in rows],
            )

    def _write_weights(self, config_hash: str, weights: dict[str, torch.Tensor]) -> tuple[int, str]:
        """Write a cell's weight file atomically; returns its ``(size, SHA-256)``."""
        data = tensor_bytes(weights)
        write_bytes(data, self.weights_path(config_hash))
        return len(data), hashlib.sha256(data).hexdigest()

    def table(self) -> pd.DataFrame:
        """All cells, one row each: the cells of the latest run's spec in its grid order (the
        same whatever order workers finished them in), then any others (from earlier specs) in
        the order they finished; columns in the order of the module docstring."""
        with _database_errors(self.database):
            frame = pd.read_sql_query("SELECT * FROM cells ORDER BY rowid", self._connection)
        position = frame["config_hash"].map(self._grid_positions())  # NaN: not in the spec
        frame = frame.loc[position.sort_values(kind="stable").index].reset_index(drop=True)
        # rows from before tasks existed are toy cells
        frame["task"] = frame["task"].fillna("toy") if "task" in frame else "toy"
        tasks = list(frame["task"].unique()) or list(TASKS)  # their fields, in their order
        fields = dict.fromkeys(name for task in tasks for name in TASKS[task])
        for name in fields:  # an int field with NULLs (unused by some cells) stays integer
            if _FIELD_COLUMNS[name] == "INTEGER" and name in frame and frame[name].isna().any():
                frame[name] = frame[name].astype("Int64")
        first = [*list(_BASE_COLUMNS)[:-1], *fields, "final_loss"]
        last = list(_RUN_COLUMNS)
        order = [name for name in first if name in frame]
        order += [name for name in frame if name not in first and name not in last]
        return frame[order + [name for name in last if name in frame]]

    def weights(self, config_hash: str) -> dict[str, torch.Tensor]:
        """A cell's tensors without the instance axis: toy cells ``W: (n_hidden,
        n_features)``, ``b: (n_features,)``, ``importance: (n_features,)`` (and ``W_out``,
        ``b_hidden`` for ``abs``); SAE cells ``W_enc: (d_model, d_sae)``, ``b_enc:
        (d_sae,)``, ``W_dec: (d_sae, d_model)``, ``b_dec: (d_model,)`` and the kind's
        buffers and parameters (``l1_coefficient: ()``, ``k: ()``, ``threshold: ()``,
        ``l0_coefficient: ()``, ``log_threshold: (d_sae,)``).

        Raises:
            KeyError: no such cell, or it has no weights (it diverged or failed).
            CorruptWeights: its weight file is missing, truncated or altered.
        """
        row = self._connection.execute(
            f"SELECT status, {self._checksums} FROM cells WHERE config_hash = ?",
            (config_hash,),
        ).fetchone()
        if row is None:
            raise KeyError(f"no cell {config_hash!r} in {self.path}")
        if row[0] != "done":
            raise KeyError(f"no weights for cell {config_hash!r} in {self.path} ({row[0]})")
        data = self._checked_bytes(config_hash, *row[1:])
        return tensors_from_bytes(data, self.weights_path(config_hash))

    def model(self, config_hash: str) -> ToyModel | SparseAutoencoder:
        """A one-instance model holding a cell's trained weights: a
        :class:`~superpose.ToyModel` for a toy cell, an SAE of the cell's kind (in inference
        mode, as training leaves it) for an SAE cell."""
        cursor = self._connection.execute(
            "SELECT * FROM cells WHERE config_hash = ?", (config_hash,)
        )
        row = cursor.fetchone()
        if row is None:
            raise KeyError(f"no cell {config_hash!r} in {self.path}")
        config = dict(zip([column[0] for column in cursor.description], row, strict=True))
        weights = self.weights(config_hash)
        if config.get("task") == "sae":
            model = build_sae([config]).eval()
        else:
            model = ToyModel(
                config["kind"],
                1,
                config["n_features"],
                config["n_hidden"],
                importance=weights["importance"][None],
            )
        model.load_state_dict({name: tensor[None] for name, tensor in weights.items()})
        return model


def load(path: str | Path) -> pd.DataFrame:
    """The cells of the sweep stored at ``path`` as a DataFrame, one row per cell (columns
    as in :mod:`superpose.sweep.store`). Safe while a sweep is writing to it."""
    with ResultStore(path, readonly=True) as store:
        return store.table()


def load_weights(path: str | Path, config_hash: str) -> dict[str, torch.Tensor]:
    """The trained tensors of one cell (see :meth:`ResultStore.weights`)."""
    with ResultStore(path, readonly=True) as store:
        return store.weights(config_hash)


def load_model(path: str | Path, config_hash: str) -> ToyModel | SparseAutoencoder:
    """One cell's trained model (see :meth:`ResultStore.model`)."""
    with ResultStore(path, readonly=True) as store:
        return store.model(config_hash)
