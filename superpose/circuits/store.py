"""Results of the circuits experiments on disk: ``metrics.json`` plus ``tensors.pt``.

Files are written atomically (a temporary file, then a rename), so a reader never sees a
half-written result. Figures read results with :func:`load_results` and never train.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def _replace(path: Path, write) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_results(
    folder: str | Path, metrics: dict[str, object], tensors: dict[str, torch.Tensor]
) -> list[Path]:
    """Write ``metrics`` (JSON-serialisable) and ``tensors`` (detached to CPU) under ``folder``.

    Returns:
        The two written paths, ``metrics.json`` and ``tensors.pt``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cpu = {name: tensor.detach().cpu() for name, tensor in tensors.items()}
    return [
        _replace(
            folder / "metrics.json",
            lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"),
        ),
        _replace(folder / "tensors.pt", lambda tmp: torch.save(cpu, tmp)),
    ]


def load_results(folder: str | Path) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """Read what :func:`save_results` wrote: ``(metrics, tensors)``.

    Raises:
        FileNotFoundError: naming the missing file and the command that makes it.
    """
    folder = Path(folder)
    for name in ("metrics.json", "tensors.pt"):
        if not (folder / name).is_file():
            experiment = folder.name.replace("_", "-")
            raise FileNotFoundError(
                f"{folder / name} is missing; run `superpose reproduce "
                f"{experiment}` (or experiments/{folder.name}.py) first"
            )
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics, torch.load(folder / "tensors.pt", weights_only=True)
