"""Results of the circuits experiments on disk: ``metrics.json`` plus ``tensors.safetensors``.

Files are written atomically (:mod:`superpose.io`), so a reader never sees a half-written
result. Figures read results with :func:`load_results` and never train.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from superpose.io import load_tensors, save_json, save_tensors


def save_results(
    folder: str | Path, metrics: dict[str, object], tensors: dict[str, torch.Tensor]
) -> list[Path]:
    """Write ``metrics`` (JSON-serialisable) and ``tensors`` (detached to CPU) under ``folder``.

    Returns:
        The two written paths, ``metrics.json`` and ``tensors.safetensors``.
    """
    folder = Path(folder)
    return [
        save_json(metrics, folder / "metrics.json"),
        save_tensors(tensors, folder / "tensors.safetensors"),
    ]


def load_results(folder: str | Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """Read what :func:`save_results` wrote: ``(metrics, tensors)``.

    Raises:
        FileNotFoundError: naming the missing file and the command that makes it.
    """
    folder = Path(folder)
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"{metrics_path} is missing; run `superpose reproduce "
            f"{folder.name.replace('_', '-')}` (or experiments/{folder.name}.py) first"
        )
    return json.loads(metrics_path.read_text()), load_tensors(folder / "tensors.safetensors")
