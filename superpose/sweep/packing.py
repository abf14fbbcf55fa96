"""Packing: grid cells that share shapes become the instances of one batched model.

Cells whose non-per-instance fields agree (toy cells: kind, n_features, n_hidden, magnitude
and all training settings; SAE cells: the source, ``sae_kind``, ``d_sae`` and all training
settings; see :attr:`superpose.sweep.spec.Field.per_instance`) form a group. A group is split
into as few chunks as the memory budget and ``max_chunk_cells`` allow, of near-equal size;
each chunk is one call of :func:`superpose.train` on one :class:`~superpose.ToyModel`, or of
:func:`superpose.sae.train` on one batched SAE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from superpose.models import MODEL_KINDS
from superpose.sweep.spec import Cell

_ACTIVATIONS_PER_FEATURE = 16
"""Float32 tensors of shape ``(batch, n_features)`` alive per instance during a training step
(uniforms, mask, sample, pre-activation, output, error and their gradients), rounded up."""

_ACTIVATIONS_PER_HIDDEN = 4
"""Float32 tensors of shape ``(batch, n_hidden)`` alive per instance during a step."""

_OPTIMIZER_COPIES = 4
"""Parameter, gradient and AdamW's two moments."""

_SAE_ACTIVATIONS_PER_LATENT = 8
"""Float32 tensors of shape ``(batch, d_sae)`` alive per SAE instance during a training step
(pre-activations, latents, the kind's masks or top-k scatter, AuxK's dead pre-activations and
the gradients of these), rounded up."""

_SAE_ACTIVATIONS_PER_INPUT = 8
"""Float32 tensors of shape ``(batch, d_model)`` alive per SAE instance during a step (centred
input, reconstruction, error, AuxK's residual, Matryoshka's partial reconstructions and their
gradients)."""


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


def bytes_per_cell(config: Mapping[str, Any], task: str = "toy") -> int:
    """Estimated peak memory one instance adds to a training step, in bytes, for a cell of
    ``task`` with ``config``."""
    if task == "sae":
        d_sae, d_model = int(config["d_sae"]), int(config["d_model"])
        batch = int(config["batch_size"])  # also the evaluation's block size
        parameters = 2 * d_sae * d_model + 2 * d_sae + d_model  # W_enc, W_dec, biases, θ
        floats = (
            batch * d_sae * _SAE_ACTIVATIONS_PER_LATENT
            + batch * d_model * _SAE_ACTIVATIONS_PER_INPUT
            + parameters * _OPTIMIZER_COPIES
        )
        return 4 * floats
    n, m = int(config["n_features"]), int(config["n_hidden"])
    batch = int(config["batch_size"])
    parameters = MODEL_KINDS[config["kind"]].n_parameters(n, m)
    floats = (
        batch * n * _ACTIVATIONS_PER_FEATURE
        + batch * m * _ACTIVATIONS_PER_HIDDEN
        + parameters * _OPTIMIZER_COPIES
    )
    return 4 * floats


def pack(
    cells: Sequence[Cell], memory_budget_mb: float, max_chunk_cells: int, workers: int = 1
) -> list[Chunk]:
    """Group ``cells`` by shape and split each group into near-equal chunks.

    A chunk holds at most ``max_chunk_cells`` cells and at most as many as fit in
    ``memory_budget_mb`` by :func:`bytes_per_cell` (at least one). When the chunks would not
    divide evenly among ``workers`` trained in parallel, the groups with the largest chunks
    are split further until they do (or every chunk is one cell): three chunks of 1,600 cells
    become four of 1,200 for two workers. Groups keep the order of their first cell; cells
    keep their order within a group.
    """
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group(), []).append(cell)
    totals = [len(group_cells) for group_cells in groups.values()]
    sizes = []  # cells per chunk of each group
    for group_cells, total in zip(groups.values(), totals, strict=True):
        first = group_cells[0]
        fit = int(memory_budget_mb * 2**20 // bytes_per_cell(first.config, first.task))
        capacity = max(1, min(max_chunk_cells, fit))
        sizes.append(math.ceil(total / math.ceil(total / capacity)))
    while sum(-(-t // s) for t, s in zip(totals, sizes, strict=True)) % workers and max(sizes) > 1:
        g = max(range(len(sizes)), key=sizes.__getitem__)
        sizes[g] = min(sizes[g] - 1, math.ceil(totals[g] / (math.ceil(totals[g] / sizes[g]) + 1)))
    chunks: list[Chunk] = []
    for group_cells, size in zip(groups.values(), sizes, strict=True):
        for start in range(0, len(group_cells), size):
            chunks.append(Chunk(tuple(group_cells[start : start + size]), len(chunks)))
    return chunks


def _values(values: list) -> str:
    """A short description of one per-instance field's distinct values in a group."""
    distinct = sorted(set(values))
    if len(distinct) <= 6:
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in distinct) + "]"
    return f"{len(distinct)} values in [{distinct[0]:g}, {distinct[-1]:g}]"


def describe(chunks: Sequence[Chunk]) -> str:
    """The packing plan, one entry per group: its shared fields, the values of its
    per-instance fields, its cells and chunk sizes (with the estimated memory of a chunk) and
    its training settings. Fields its cells do not use are left out."""
    groups: dict[tuple, list[Chunk]] = {}
    for chunk in chunks:
        groups.setdefault(chunk.cells[0].group(), []).append(chunk)
    lines = [f"{len(chunks)} chunk(s) in {len(groups)} group(s):"]
    for key, group_chunks in groups.items():
        first = group_chunks[0].cells[0]
        fields = first.fields
        shown = {
            table: " ".join(
                f"{k}={v}" for k, v in key if fields[k].table == table and v is not None
            )
            for table in ("fixed", "training")
        }
        cells = [cell for chunk in group_chunks for cell in chunk.cells]
        varying = " ".join(
            f"{name}={_values(values)}"
            for name, f in fields.items()
            if f.per_instance and None not in (values := [cell.config[name] for cell in cells])
        )
        sizes = sorted({len(c) for c in group_chunks}, reverse=True)
        mb = max(sizes) * bytes_per_cell(first.config, first.task) / 2**20
        lines.append(
            f"  {shown['fixed']}: {len(cells)} cells -> {len(group_chunks)} chunk(s) of "
            f"{'/'.join(map(str, sizes))} cells (~{mb:.0f} MB each)\n"
            f"    per instance: {varying}\n    training: {shown['training']}"
        )
    return "\n".join(lines)
