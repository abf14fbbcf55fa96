"""Training one packed chunk: build the batched model, train it, measure every cell.

Runs wherever a backend puts it (in-process or in a Ray worker) and returns plain results;
it never touches the result store.

Divergence: when :func:`superpose.train` raises :class:`~superpose.TrainingDiverged`, the
instances it names are recorded as ``"diverged"`` and the remaining cells are retrained from
scratch without them. Because each cell's initialisation and data depend only on its own
seed (see :mod:`superpose.sweep.streams`), the retrained cells get exactly the results they
would have had alone. Any other exception fails the whole chunk with status ``"error"``
(retried on the next run) and the sweep goes on.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field

import torch

from superpose import __version__
from superpose.analysis import scalar_metrics
from superpose.models import ToyModel
from superpose.sweep.packing import Chunk
from superpose.sweep.spec import Cell
from superpose.sweep.streams import EVAL_STREAM, TRAIN_STREAM, CellStreams
from superpose.train import TrainingDiverged, train

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
        final_loss: held-out loss on ``eval_samples`` fresh samples (None unless done).
        metrics: :func:`superpose.analysis.scalar_metrics` of the trained ``W``.
        weights: the cell's parameters and importance without the instance axis, e.g.
            ``W: (n_hidden, n_features)``, ``b: (n_features,)`` (None unless done).
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


@torch.no_grad()
def held_out_loss(model: ToyModel, data: CellStreams, n_samples: int, block: int) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` on ``n_samples`` draws of the evaluation stream,
    in blocks of ``block`` rows (a packing-independent block size keeps it exact)."""
    total = torch.zeros(model.n_instances, dtype=torch.float64, device=model.W.device)
    for start in range(0, n_samples, block):
        rows = min(block, n_samples - start)
        total += model.loss(data.stream_draw(rows, EVAL_STREAM)).double() * rows
    return (total / n_samples).float()


def _train_cells(cells: list[Cell], device: str) -> list[CellResult]:
    """Train ``cells`` as one batched model; raises TrainingDiverged like the trainer."""
    config = cells[0].config
    n_features = int(config["n_features"])
    model = ToyModel(
        str(config["kind"]),
        n_instances=len(cells),
        n_features=n_features,
        n_hidden=int(config["n_hidden"]),
        importance=torch.tensor([c.importance() for c in cells]),
        seed=[int(c.config["seed"]) for c in cells],
    )
    probability = torch.tensor([[float(c.config["feature_probability"])] for c in cells])
    data = CellStreams(
        probability.expand(-1, n_features),
        [int(c.config["seed"]) for c in cells],
        magnitude=str(config["magnitude"]),
        device=device,
    )
    train(
        model,
        data,
        steps=int(config["steps"]),
        batch_size=int(config["batch_size"]),
        lr=float(config["lr"]),
        schedule=str(config["schedule"]),
        warmup_steps=int(config["warmup_steps"]),
        weight_decay=float(config["weight_decay"]),
        # the trainer's own held-out loss chunks its samples by instance count, so it is not
        # packing-independent; the final loss is measured below instead.
        eval_samples=1,
        seed=TRAIN_STREAM,
        device=device,
        progress=False,
    )
    loss = held_out_loss(model, data, int(config["eval_samples"]), int(config["batch_size"]))
    metrics = {name: values.cpu() for name, values in scalar_metrics(model.W).items()}
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return [
        CellResult(
            cell=cell,
            status="done",
            final_loss=float(loss[k]),
            metrics={name: float(values[k]) for name, values in metrics.items()},
            weights={name: tensor[k].clone() for name, tensor in state.items()},
            device=str(device),
        )
        for k, cell in enumerate(cells)
    ]


def run_chunk(chunk: Chunk, device: str = "cpu") -> list[CellResult]:
    """Train every cell of ``chunk`` on ``device``; one :class:`CellResult` per cell.

    Never raises for a training failure: diverged cells and failed chunks come back as
    results with a status and an error message.
    """
    start = time.perf_counter()
    pending = list(chunk.cells)
    results: list[CellResult] = []
    while pending:
        try:
            results += _train_cells(pending, device)
            pending = []
        except TrainingDiverged as error:
            bad = set(error.instances)
            message = f"diverged: loss became NaN/inf at step {error.step}"
            results += [
                CellResult(cell, "diverged", message, device=str(device))
                for k, cell in enumerate(pending)
                if k in bad
            ]
            pending = [cell for k, cell in enumerate(pending) if k not in bad]
        except Exception as error:  # recorded per cell; the sweep goes on
            message = "".join(traceback.format_exception_only(error)).strip()
            results += [CellResult(cell, "error", message, device=str(device)) for cell in pending]
            pending = []
    per_cell = (time.perf_counter() - start) / len(chunk)
    for result in results:
        result.wall_time = per_cell
        result.chunk_cells = len(chunk)
    return results
