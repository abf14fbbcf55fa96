"""Packing: grid cells that share shapes become the instances of one batched model.

Cells whose non-per-instance fields agree (kind, n_features, n_hidden, magnitude and all
training settings; see :attr:`superpose.sweep.spec.Field.per_instance`) form a group. A group
is split into as few chunks as the memory budget and ``max_chunk_cells`` allow, of near-equal
size; each chunk is one call of :func:`superpose.train` on one :class:`~superpose.ToyModel`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from superpose.sweep.spec import FIELDS, Cell

_ACTIVATIONS_PER_FEATURE = 16
"""Float32 tensors of shape ``(batch, n_features)`` alive per instance during a training step
(uniforms, mask, sample, pre-activation, output, error and their gradients), rounded up."""

_ACTIVATIONS_PER_HIDDEN = 4
"""Float32 tensors of shape ``(batch, n_hidden)`` alive per instance during a step."""

_OPTIMIZER_COPIES = 4
"""Parameter, gradient and AdamW's two moments."""


@dataclass(frozen=True)
class Chunk:
    """Cells trained together as one batched model.

    Attributes:
        cells: the cells, instance ``k`` of the model being ``cells[k]``.
        index: position in the packing plan.
    """

    cells: tuple[Cell, ...]
    index: int

    def __len__(self) -> int:
        return len(self.cells)


def bytes_per_cell(config: dict) -> int:
    """Estimated peak memory one instance adds to a training step, in bytes."""
    n, m = int(config["n_features"]), int(config["n_hidden"])
    batch = int(config["batch_size"])
    weights = 2 if config["kind"] == "abs" else 1
    parameters = weights * m * n + n + (m if config["kind"] == "abs" else 0)
    floats = (
        batch * n * _ACTIVATIONS_PER_FEATURE
        + batch * m * _ACTIVATIONS_PER_HIDDEN
        + parameters * _OPTIMIZER_COPIES
    )
    return 4 * floats


def pack(cells: Sequence[Cell], memory_budget_mb: float, max_chunk_cells: int) -> list[Chunk]:
    """Group ``cells`` by shape and split each group into near-equal chunks.

    A chunk holds at most ``max_chunk_cells`` cells and at most as many as fit in
    ``memory_budget_mb`` by :func:`bytes_per_cell` (at least one). Groups keep the order of
    their first cell; cells keep their order within a group.
    """
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group(), []).append(cell)
    chunks: list[Chunk] = []
    for group_cells in groups.values():
        fit = int(memory_budget_mb * 2**20 // bytes_per_cell(group_cells[0].config))
        capacity = max(1, min(max_chunk_cells, fit))
        n_chunks = math.ceil(len(group_cells) / capacity)
        size = math.ceil(len(group_cells) / n_chunks)
        for start in range(0, len(group_cells), size):
            chunks.append(Chunk(tuple(group_cells[start : start + size]), len(chunks)))
    return chunks


def describe(chunks: Sequence[Chunk]) -> str:
    """The packing plan, one line per group: its shared fields, cells and chunk sizes."""
    groups: dict[tuple, list[Chunk]] = {}
    for chunk in chunks:
        groups.setdefault(chunk.cells[0].group(), []).append(chunk)
    lines = [f"{len(chunks)} chunk(s) in {len(groups)} group(s):"]
    for key, group_chunks in groups.items():
        shared = " ".join(f"{k}={v}" for k, v in key if FIELDS[k].table == "fixed")
        training = " ".join(f"{k}={v}" for k, v in key if FIELDS[k].table == "training")
        sizes = sorted({len(c) for c in group_chunks}, reverse=True)
        n_cells = sum(len(c) for c in group_chunks)
        mb = max(sizes) * bytes_per_cell(dict(key)) / 2**20
        lines.append(
            f"  {shared}: {n_cells} cells -> {len(group_chunks)} chunk(s) of "
            f"{'/'.join(map(str, sizes))} cells (~{mb:.0f} MB each)\n    training: {training}"
        )
    return "\n".join(lines)
