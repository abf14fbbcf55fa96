"""Atomic result files: write to a temporary file in the same folder, then rename.

A reader (or a rerun after a crash) sees either the old file or the complete new one.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def _replace(tmp: Path, path: Path) -> Path:
    os.replace(tmp, path)
    return path


def save_tensors(obj: object, path: str | Path) -> Path:
    """``torch.save(obj)`` atomically to ``path`` (folders are created); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    return _replace(tmp, path)


def load_tensors(path: str | Path) -> object:
    """Load what :func:`save_tensors` wrote (tensors, numbers, strings, containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stored results at {path}; run the experiment first")
    return torch.load(path, weights_only=True)


def save_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` (JSON-serialisable) as indented JSON atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    return _replace(tmp, path)


def save_rows(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    """Write ``rows`` (dicts with the same keys) as CSV atomically; returns ``path``."""
    if not rows:
        raise ValueError("save_rows needs at least one row")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return _replace(tmp, path)
