"""The result store: one folder per sweep, an SQLite table of cells and a weights file per cell.

Layout of a store folder::

    results/<name>/
        sweep.sqlite          table ``cells``: one row per cell; table ``meta``: the spec
        weights/<hash>.pt     torch.save of the cell's tensors (W, b, ..., importance)

Columns of ``cells``: ``config_hash`` (primary key), ``status`` (``done``, ``diverged`` or
``error``), ``error``, every config field (:data:`superpose.sweep.spec.FIELDS`),
``final_loss``, the metrics of :func:`superpose.analysis.scalar_metrics`, ``wall_time``
(seconds per cell, amortised over its chunk), ``chunk_cells``, ``device``, ``version`` and
``finished_at`` (UTC, ISO 8601). New config fields or metrics become new columns.

Safety: the database runs in WAL mode, so readers never block the writer and see only
committed chunks. A chunk's weight files are written first (temporary file, then
``os.replace``), then its rows in one transaction: a process killed at any moment leaves
at most stray temporary or unreferenced weight files, never a row without its weights.
Only one process (the sweep's driver) writes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from superpose.models import ToyModel
from superpose.sweep.execute import CellResult
from superpose.sweep.spec import FIELDS, SweepSpec

DATABASE = "sweep.sqlite"
WEIGHTS = "weights"
_FINISHED = ("done", "diverged")
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
_TIMEOUT_S = 60.0

_BASE_COLUMNS = {
    "config_hash": "TEXT PRIMARY KEY",
    "status": "TEXT NOT NULL",
    "error": "TEXT",
    **{name: _SQL_TYPES[f.type] for name, f in FIELDS.items()},
    "final_loss": "REAL",
}
_RUN_COLUMNS = {
    "wall_time": "REAL",
    "chunk_cells": "INTEGER",
    "device": "TEXT",
    "version": "TEXT",
    "finished_at": "TEXT",
}


class ResultStore:
    """A sweep's result folder, opened for writing (the driver) or reading.

    Args:
        path: the folder (created when writing).
        readonly: open an existing store without creating or changing anything.

    Raises:
        FileNotFoundError: ``readonly`` and there is no store at ``path``.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        database = self.path / DATABASE
        if readonly:
            if not database.is_file():
                raise FileNotFoundError(f"no sweep results at {self.path} (missing {DATABASE})")
        else:
            (self.path / WEIGHTS).mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(database, timeout=_TIMEOUT_S)
        if readonly:
            self._connection.execute("PRAGMA query_only = ON")
            tables = self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'cells'"
            ).fetchone()
            if tables is None:
                self.close()
                raise FileNotFoundError(f"no sweep results at {self.path} yet (no cells table)")
            return
        with self._connection:
            self._connection.execute("PRAGMA journal_mode = WAL")
            self._connection.execute("PRAGMA synchronous = NORMAL")
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)"
            )
            columns = ", ".join(f'"{k}" {t}' for k, t in {**_BASE_COLUMNS, **_RUN_COLUMNS}.items())
            self._connection.execute(f"CREATE TABLE IF NOT EXISTS cells ({columns})")
            self._ensure_columns({**_BASE_COLUMNS, **_RUN_COLUMNS})

    def close(self) -> None:
        """Close the database connection."""
        self._connection.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_columns(self, columns: Mapping[str, str]) -> None:
        """Add missing columns (new metrics or config fields) to ``cells``."""
        existing = {row[1] for row in self._connection.execute("PRAGMA table_info(cells)")}
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

    def finished(self) -> set[str]:
        """Hashes of cells that need no rerun (status ``done`` or ``diverged``)."""
        rows = self._connection.execute(
            "SELECT config_hash FROM cells WHERE status IN (?, ?)", _FINISHED
        )
        return {row[0] for row in rows}

    def weights_path(self, config_hash: str) -> Path:
        """Where a cell's weights file lives."""
        return self.path / WEIGHTS / f"{config_hash}.pt"

    def write(self, results: Iterable[CellResult]) -> None:
        """Store a chunk's results: weight files atomically, then all rows in one transaction."""
        results = list(results)
        for result in results:
            if result.weights is not None:
                self._write_weights(result.cell.config_hash, result.weights)
        metrics = dict.fromkeys(name for result in results for name in result.metrics)
        finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [
            {
                "config_hash": r.cell.config_hash,
                "status": r.status,
                "error": r.error,
                **r.cell.config,
                "final_loss": r.final_loss,
                **r.metrics,
                "wall_time": r.wall_time,
                "chunk_cells": r.chunk_cells,
                "device": r.device,
                "version": r.version,
                "finished_at": finished_at,
            }
            for r in results
        ]
        if not rows:
            return
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = ", ".join(f'"{name}"' for name in names)
        placeholders = ", ".join(f":{name}" for name in names)
        with self._connection:
            self._ensure_columns(dict.fromkeys(metrics, "REAL"))
            self._connection.executemany(
                f"INSERT OR REPLACE INTO cells ({columns}) VALUES ({placeholders})",
                [{name: row.get(name) for name in names} for row in rows],
            )

    def _write_weights(self, config_hash: str, weights: dict[str, torch.Tensor]) -> None:
        target = self.weights_path(config_hash)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(weights, file)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def table(self) -> pd.DataFrame:
        """All cells, one row each, in the order they finished."""
        return pd.read_sql_query("SELECT * FROM cells ORDER BY rowid", self._connection)

    def weights(self, config_hash: str) -> dict[str, torch.Tensor]:
        """A cell's tensors without the instance axis: ``W: (n_hidden, n_features)``,
        ``b: (n_features,)``, ``importance: (n_features,)`` (and ``W_out``, ``b_hidden``
        for ``abs``)."""
        path = self.weights_path(config_hash)
        if not path.is_file():
            raise KeyError(f"no weights for cell {config_hash!r} in {self.path}")
        return torch.load(path, weights_only=True)

    def model(self, config_hash: str) -> ToyModel:
        """A one-instance :class:`~superpose.ToyModel` holding a cell's trained weights."""
        row = self._connection.execute(
            "SELECT kind, n_features, n_hidden FROM cells WHERE config_hash = ?", (config_hash,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no cell {config_hash!r} in {self.path}")
        weights = self.weights(config_hash)
        model = ToyModel(row[0], 1, row[1], row[2], importance=weights["importance"][None])
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


def load_model(path: str | Path, config_hash: str) -> ToyModel:
    """One cell's trained model (see :meth:`ResultStore.model`)."""
    with ResultStore(path, readonly=True) as store:
        return store.model(config_hash)
