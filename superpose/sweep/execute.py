"""Training one packed chunk: build the batched model, train it, measure every cell.

Runs wherever a backend puts it (in-process or in a Ray worker) and returns plain results;
it never touches the result store.

Toy cells train as one :class:`~superpose.ToyModel` on per-cell seed-keyed streams
(:mod:`superpose.sweep.streams`). SAE cells (``task = "sae"``) of a chunk share their source
(every field but the sparsity hyper-parameter and ``seed`` is equal within a chunk), so they
train as one batched SAE on one stream drawn once for all instances: its batches depend only
on the source config and ``data_seed`` (:func:`sae_source`), each instance's initialisation
only on its own ``seed`` (:func:`build_sae`), and the instances never interact, so a cell's
result does not depend on the cells packed with it (up to float rounding in batched matrix
products). Dead-latent resampling is not offered: it would draw from the shared stream.

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
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch

from superpose.analysis import scalar_metrics
from superpose.data import SparseFeatures, geometric_probability, zipf_probability
from superpose.models import ToyModel
from superpose.runtime import auto_threads, cpu_threads
from superpose.sae import Superposed, evaluate
from superpose.sae import train as train_sae
from superpose.sweep.cells import STATUSES as STATUSES  # re-exported: it was defined here
from superpose.sweep.cells import CellResult, build_sae
from superpose.sweep.packing import Chunk
from superpose.sweep.spec import Cell, trainer_options
from superpose.sweep.streams import EVAL_STREAM, TRAIN_STREAM, CellStreams, stream_seed
from superpose.train import train
from superpose.training import TrainingDiverged

SAE_LOG_EVERY = 100
"""Training steps per logged interval of an SAE cell (its ``final_*`` values average the last)."""


def _train_toy_cells(cells: list[Cell], device: str, threads: int | None) -> list[CellResult]:
    """Train toy ``cells`` as one batched model; one result per cell, in order; raises
    TrainingDiverged like the trainer (naming positions in ``cells``).

    The model's instances are the cells ordered by feature probability, so that the compact
    batches (:meth:`CellStreams.sample_rows`) group cells of similar sparsity; the torch
    threads are ``threads``, or :func:`superpose.runtime.auto_threads` of the chunk's step."""
    order = sorted(range(len(cells)), key=lambda k: float(cells[k].config["feature_probability"]))
    config = cells[0].config
    elements = len(cells) * int(config["batch_size"]) * int(config["n_features"])
    try:
        with cpu_threads(threads or auto_threads(elements)):  # training and the held-out loss
            results = _train_toy_model([cells[k] for k in order], device)
    except TrainingDiverged as error:
        raise TrainingDiverged(
            error.step, [order[k] for k in error.instances], error.reason
        ) from None
    by_cell = dict(zip(order, results, strict=True))
    return [by_cell[k] for k in range(len(cells))]


def _train_toy_model(cells: list[Cell], device: str) -> list[CellResult]:
    """Train toy ``cells`` as one batched model, instance ``k`` being ``cells[k]``."""
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
        stream=TRAIN_STREAM,
        device=device,
    )
    result = train(
        model,
        data,
        **trainer_options("toy", config),
        eval_data=data.with_stream(EVAL_STREAM),  # drawn batch_size rows at a time
        device=device,
        progress=False,
    )
    metrics = {name: values.cpu() for name, values in scalar_metrics(model.W).items()}
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return [
        CellResult(
            cell=cell,
            status="done",
            final_loss=float(result.loss[k]),
            metrics={name: float(values[k]) for name, values in metrics.items()},
            weights={name: tensor[k].clone() for name, tensor in state.items()},
            device=str(device),
        )
        for k, cell in enumerate(cells)
    ]


def sae_source(config: Mapping[str, Any], device: str | torch.device = "cpu") -> Superposed:
    """The activation source of an SAE cell (a config of
    :data:`~superpose.sweep.spec.SAE_FIELDS`, e.g. a row of :func:`superpose.sweep.load`):
    ``n_features`` features firing with the ``profile``'s probabilities, with ``magnitude``,
    along unit directions in ``d_model`` dimensions drawn from ``data_seed`` (the directions'
    own stream of it, independent of an SAE seeded with the same int).

    One instance (shared by every SAE instance); pass it to :func:`superpose.sae.evaluate`
    to rescore a stored SAE.
    """
    n = int(config["n_features"])
    if config["profile"] == "geometric":
        probability = geometric_probability(n, config["ratio"], config["expected_active"])[None]
    elif config["profile"] == "zipf":
        probability = zipf_probability(
            n, config["zipf_exponent"], config["max_probability"], config["min_probability"]
        )[None]
    else:
        probability = float(config["feature_probability"])
    data_seed = int(config["data_seed"])
    features = SparseFeatures(
        n,
        probability,
        magnitude=str(config["magnitude"]),
        seed=stream_seed(data_seed, TRAIN_STREAM),
        device=device,
    )
    return Superposed(
        features,
        int(config["d_model"]),
        orthogonal=config["directions"] == "orthogonal",
        seed=data_seed,
    )


def _train_sae_cells(cells: list[Cell], device: str, threads: int | None) -> list[CellResult]:
    """Train SAE ``cells`` as one batched SAE on ``threads`` torch threads (None: the
    trainer's choice by the step's size; the scores then on the process's threads); one
    result per cell, in order; raises TrainingDiverged like the trainer."""
    config = cells[0].config
    data_seed = int(config["data_seed"])
    source = sae_source(config, device)
    model = build_sae([cell.config for cell in cells])
    result = train_sae(
        model,
        source,
        **trainer_options("sae", config),
        log_every=SAE_LOG_EVERY,
        seed=stream_seed(data_seed, TRAIN_STREAM),
        device=device,
        progress=False,
        threads=threads,
    )
    with cpu_threads(threads) if threads else nullcontext():
        scores = evaluate(
            model,
            source,
            int(config["eval_samples"]),
            seed=stream_seed(data_seed, EVAL_STREAM),
            batch_size=int(config["batch_size"]),  # a packing-independent block size
        ).drop(columns="instance")
    final = {name: result.history[name][-1] for name in ("loss", "mse", "sparsity", "aux")}
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return [
        CellResult(
            cell=cell,
            status="done",
            final_loss=float(final["loss"][k]),
            metrics={
                **{name: float(values[k]) for name, values in scores.items()},
                **{f"final_{name}": float(final[name][k]) for name in ("mse", "sparsity", "aux")},
            },
            weights={name: tensor[k].clone() for name, tensor in state.items()},
            device=str(device),
        )
        for k, cell in enumerate(cells)
    ]


_TRAINERS = {"toy": _train_toy_cells, "sae": _train_sae_cells}
"""How the cells of each task train (one batched model per call)."""


def run_chunk(chunk: Chunk, device: str = "cpu", threads: int | None = None) -> list[CellResult]:
    """Train every cell of ``chunk`` on ``device``; one :class:`CellResult` per cell.

    ``threads``: torch CPU threads for the chunk (None: by the step's size,
    :func:`superpose.runtime.auto_threads`).

    Never raises for a training failure: diverged cells and failed chunks come back as
    results with a status and an error message.
    """
    start = time.perf_counter()
    pending = list(chunk.cells)
    results: list[CellResult] = []
    while pending:
        try:
            results += _TRAINERS[chunk.cells[0].task](pending, device, threads)
            pending = []
        except TrainingDiverged as error:
            bad = set(error.instances)
            message = f"diverged: {error.what} at step {error.step}"
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
