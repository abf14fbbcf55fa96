"""What the trainer and the store share about a cell: its model built from its config, and
the record of its training.

:func:`build_sae` turns SAE cell configs (a packing group's, or one stored row) into a batched
SAE; :class:`CellResult` is what training a cell produced
(:func:`superpose.sweep.execute.run_chunk` makes them, :class:`~superpose.sweep.store.ResultStore`
writes them). Neither trains anything, so the store reads cells without importing the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from superpose._version import __version__
from superpose.sae import SAE, SparseAutoencoder
from superpose.sweep.spec import SAE_SPARSITY, Cell

STATUSES = ("done", "diverged", "error")
"""``done``: trained; ``diverged``: loss became NaN/inf (deterministic, not retried);
``error``: the chunk failed otherwise (retried when the sweep is run again)."""


@dataclass
class CellResult:
    """What training one cell produced.

    Attributes:
        cell: the cell.
        status: one of :data:`STATUSES`.
        error: the error message for a failed cell.
        final_loss: toy cells: held-out loss on ``eval_samples`` fresh samples; SAE cells: the
            training loss averaged over the last
            :data:`~superpose.sweep.execute.SAE_LOG_EVERY` steps (None unless done).
        metrics: toy cells: :func:`superpose.analysis.scalar_metrics` of the trained ``W``;
            SAE cells: the scores of :func:`superpose.sae.evaluate` on ``eval_samples``
            held-out samples and ``final_mse``, ``final_sparsity``, ``final_aux`` (the loss's
            parts over the last :data:`~superpose.sweep.execute.SAE_LOG_EVERY` training
            steps).
        weights: the cell's parameters and buffers without the instance axis, e.g.
            ``W: (n_hidden, n_features)``, ``b: (n_features,)``, ``importance`` for a toy
            cell, ``W_enc: (d_model, d_sae)``, ``W_dec: (d_sae, d_model)``, ``b_enc``,
            ``b_dec`` and the hyper-parameter buffers (``k: ()``, ``threshold: ()``, ...) for
            an SAE cell (None unless done).
        wall_time: seconds of its chunk's training (all attempts) divided by the chunk's cells.
        chunk_cells: cells in its chunk.
        device: where it trained.
        version: superpose version that trained it.
    """

    cell: Cell
    status: str
    error: str | None = None
    final_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None
    wall_time: float = 0.0
    chunk_cells: int = 0
    device: str = "cpu"
    version: str = __version__


def build_sae(configs: Sequence[Mapping[str, Any]]) -> SparseAutoencoder:
    """One batched SAE for SAE cell configs of one packing group: instance ``k`` is
    initialised from ``configs[k]["seed"]`` (exactly as alone) and holds that config's
    sparsity hyper-parameter (:data:`~superpose.sweep.spec.SAE_SPARSITY`)."""
    first = configs[0]
    kind = str(first["sae_kind"])
    option = SAE_SPARSITY[kind]
    return SAE(
        kind,
        len(configs),
        int(first["d_model"]),
        int(first["d_sae"]),
        seed=[int(config["seed"]) for config in configs],
        **{option: [config[option] for config in configs]},
    )
