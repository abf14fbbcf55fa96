"""The trainer: fits every instance of a :class:`~superpose.models.ToyModel` at once.

Instances are independent, so the objective is the sum of the per-instance losses: each
instance's gradient is exactly that of its own loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from superpose import fast
from superpose._checks import ArrayLike, make_generator, optional_seed, positive_int, resolve_device
from superpose.data import BatchSource, CompactBatch, SparseFeatures
from superpose.models import ToyModel
from superpose.runtime import (  # noqa: F401  (re-exported: their old home)
    TWO_THREAD_ELEMENTS,
    auto_threads,
    available_cores,
    cpu_threads,
)
from superpose.training import loop
from superpose.training.config import (
    LoopConfig,
    non_negative,
    optional_positive_integer,
    positive_integer,
    setting,
)
from superpose.training.divergence import TrainingDiverged  # noqa: F401  (re-exported)
from superpose.training.optim import STATE_KEYS, direct_adamw  # noqa: F401  (re-exported)
from superpose.training.result import (  # noqa: F401  (re-exported)
    METHODS,
    PRECISIONS,
    TrainResult,
    check_precision,
    resolve_method,
)
from superpose.training.schedule import SCHEDULES, lr_factor  # noqa: F401  (re-exported)


@dataclass
class TrainConfig(LoopConfig):
    """The toy-model trainer's settings (:func:`train`): the loop's and its own."""

    batch_size: int | None = setting(
        1024,
        "rows per instance per step (None: the whole finite data set)",
        optional_positive_integer,
    )
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay", non_negative)
    eval_samples: int = setting(
        65536, "held-out samples for the final per-instance loss", positive_integer
    )


def best_of_seeds(loss: torch.Tensor, n_seeds: int) -> torch.Tensor:
    """The paper's protocol of keeping the best of several seeds.

    Args:
        loss: ``(instance,)`` with instances laid out as consecutive groups of ``n_seeds``
            (one group per setting, e.g. per feature probability).
        n_seeds: seeds per group.

    Returns:
        ``(instance // n_seeds,)`` the instance index of each group's lowest loss.
    """
    n_seeds = positive_int("n_seeds", n_seeds)
    if loss.ndim != 1 or loss.numel() % n_seeds:
        raise ValueError(
            f"loss must be 1-D with a multiple of n_seeds={n_seeds} entries, "
            f"got shape {tuple(loss.shape)}"
        )
    groups = loss.view(-1, n_seeds)
    return groups.argmin(1) + torch.arange(groups.shape[0], device=loss.device) * n_seeds


@dataclass
class SeedGrid:
    """What :func:`train_seed_grid` returns.

    Attributes:
        model: every trained instance, ``(setting × seed)`` in setting-major order.
        result: the training result of all instances.
        best: ``(n_settings,)`` the instance index of each setting's lowest-loss seed.
    """

    model: ToyModel
    result: TrainResult
    best: torch.Tensor


def train_seed_grid(
    kind: str,
    n_features: int,
    n_hidden: int,
    feature_probability: Sequence[float],
    seeds: Sequence[int],
    *,
    importance: ArrayLike = 1.0,
    correlated_sets: Sequence[Sequence[int]] = (),
    anticorrelated_sets: Sequence[Sequence[int]] = (),
    device: str = "cpu",
    **options: object,
) -> SeedGrid:
    """Train one instance per (feature probability, seed) at once, on one CPU thread, and
    find each probability's best seed (the paper's protocol).

    Instance ``k · len(seeds) + j`` has ``feature_probability[k]`` (one value per setting,
    shared by all features) and is initialised with ``seeds[j]``; ``importance`` broadcasts to
    ``(instance, n_features)`` as in :class:`~superpose.ToyModel`. The data stream is seeded
    with 0. ``options`` go to :func:`train`.
    """
    probability = [[p] for p in feature_probability for _ in seeds]  # (instance, 1)
    data = SparseFeatures(
        n_features,
        probability,
        correlated_sets=correlated_sets,
        anticorrelated_sets=anticorrelated_sets,
        seed=0,
        device=device,
    )
    instance_seeds = [s for _ in feature_probability for s in seeds]
    model = ToyModel(kind, len(probability), n_features, n_hidden, importance, seed=instance_seeds)
    with cpu_threads(1):
        result = train(model, data, device=device, **options)
    return SeedGrid(model, result, best_of_seeds(result.loss, len(seeds)))


@torch.no_grad()
def evaluate(
    model: ToyModel,
    data: BatchSource,
    n_samples: int = 65536,
    seed: int | torch.Generator | None = 1,
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` on ``n_samples`` fresh samples of ``data``'s
    distribution (never rows of a finite data set).

    Args:
        model: the instances to score.
        data: the source of the samples.
        n_samples: samples per instance.
        seed: int or ``torch.Generator`` for the draws; None: the source's own stream
            (``data.generator``; a :class:`~superpose.sweep.streams.CellStreams` draws from
            its named stream).
        batch_size: None: the samples come from ``data.draw`` in memory-bounded chunks of
            about 2²³ elements (their size depends on the instance count), each scored by
            ``model.loss``. An int: they come ``batch_size`` rows at a time as the trainer's
            batches do, from ``data.sample_rows`` (compact where rows are empty), each scored
            by :func:`superpose.fast.batch_loss` (``model.loss`` where the fast path does not
            support the model): the loss then does not depend on the instances sharing the
            model (the sweeps' held-out loss), and empty rows cost nothing. Needs fresh data.
    """
    n_samples = positive_int("n_samples", n_samples)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
        if data.n_samples is not None:
            raise ValueError(
                "evaluate(batch_size=...) draws the trainer's batches, which a finite data set "
                "takes from its rows; use batch_size=None for fresh draws"
            )
    device = model.W.device
    generator = data.generator if seed is None else make_generator(seed, device)
    chunk = batch_size or max(1, 2**23 // (model.n_instances * model.n_features))
    total = torch.zeros(model.n_instances, device=device, dtype=torch.float64)
    for start in range(0, n_samples, chunk):
        rows = min(chunk, n_samples - start)
        if batch_size is None:
            loss = model.loss(data.draw(rows, model.n_instances, generator))
        else:
            batch = data.sample_rows(rows, model.n_instances, generator).to(device)
            loss = (
                fast.batch_loss(model, batch) if fast.supports(model) else model.loss(batch.dense())
            )
        total += loss.double() * rows
    return (total / n_samples).float()


def train(
    model: ToyModel,
    data: BatchSource,
    *,
    steps: int = TrainConfig.steps,
    batch_size: int | None = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    schedule: str = TrainConfig.schedule,
    warmup_steps: int = TrainConfig.warmup_steps,
    weight_decay: float = TrainConfig.weight_decay,
    log_every: int = TrainConfig.log_every,
    eval_samples: int = TrainConfig.eval_samples,
    eval_data: BatchSource | None = None,
    seed: int | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool | None = None,
    method: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    precision: str = "fp32",
    on_log: loop.OnLog | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train every instance of ``model`` on ``data`` with AdamW; the model is updated in place.

    The settings' defaults and checks live in :class:`TrainConfig`; the loop (schedule,
    logging, divergence, callbacks, checkpoints) is :func:`superpose.training.loop.run`.

    Args:
        model: the instances to train (moved to ``device``).
        data: a :class:`~superpose.data.BatchSource` (e.g. a
            :class:`~superpose.data.SparseFeatures`): batches come from its ``sample_rows``;
            for a finite data set, ``batch_size=None`` trains full-batch on it.
        steps: optimisation steps.
        batch_size: rows per instance per step (a fresh batch each step).
        lr: peak learning rate, scaled by :func:`superpose.training.lr_factor` each step.
        schedule: one of :data:`superpose.training.SCHEDULES`, after ``warmup_steps`` of
            linear warm-up.
        weight_decay: AdamW's decoupled weight decay (0 gives Adam, the paper's setting).
        log_every: steps per history entry, divergence check and ``on_log`` call.
        eval_samples: held-out samples for the final per-instance loss (:func:`evaluate`).
        eval_data: a source of fresh data for the held-out loss, drawn from its own stream
            ``batch_size`` rows at a time as training batches are (:func:`evaluate` with
            ``seed=None, batch_size=batch_size``), so that the loss does not depend on the
            instances sharing the model (the sweeps pass each cell's evaluation stream;
            ``batch_size=None``: :func:`evaluate`'s default chunks). None: fresh draws of
            ``data``, seeded as ``seed`` says.
        seed: seeds the training batches and the held-out sample (``seed + 1``). None: the
            batches come from ``data``'s own stream (``data.generator``: torch's global
            generator for a ``SparseFeatures`` without a seed, so ``torch.manual_seed``
            governs them) and the held-out sample is :func:`evaluate`'s fixed default one
            (seed 1), the same for every run.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: True shows a progress bar, False hides it, None (default) shows it on a
            terminal only (not when output goes to a log file).
        method: how each step's gradients are computed. ``"reference"``: the model's own
            loss differentiated by autograd, with ``torch.optim.AdamW`` (the readable
            definition). ``"fast"``: the same objective with hand-written gradients
            (:mod:`superpose.fast`) and the fused AdamW: same gradients up to float
            rounding, several times faster (``experiments/benchmark.py`` measures it).
            ``"auto"`` (default) picks ``"fast"`` whenever
            :func:`superpose.fast.supports` the model (every kind of a plain ``ToyModel``)
            and falls back to ``"reference"`` otherwise (a subclass overriding the forward
            pass or the loss). Both draw the same batches from the same seed. On a CUDA
            device, with ``data`` on that device too, ``"fast"`` records one step (batch,
            gradients, update) as a CUDA graph after a few eager steps and replays it
            (:mod:`superpose.cuda_graph`): same batches and arithmetic, a fraction of the
            launch cost that dominates small models on a GPU.
        compile: with ``method="fast"`` on a CUDA device, also fuse the step's elementwise
            work with ``torch.compile`` (:func:`superpose.fast.compiled`): steps 25–35 %
            faster after a compile of a few seconds, so it pays for runs of tens of thousands
            of steps (e.g. ``double-descent --full``).
        threads: torch CPU threads for the run (restored afterwards); None picks them by the
            step's size, ``instance × batch × n_features`` (:func:`superpose.runtime.auto_threads`).
            Ignored on CUDA.
        precision: ``"fp32"``, or ``"bf16"`` (with ``method="fast"``): the five batched
            products from bfloat16 operands with float32 accumulation, while the loss, the
            gradients' sums, the weights and the optimiser state stay float32 (see
            :mod:`superpose.fast`). Pays where the products dominate the step and the CPU
            has bfloat16 instructions (AVX512-BF16 or AMX); ``experiments/benchmark.py``
            measures it against float32.
        on_log: ``on_log(step, metrics)`` after each logging interval: ``step`` counts the
            steps taken, ``metrics`` maps ``"loss"`` to its ``(instance,)`` interval mean
            (numpy). Read the model itself from your own reference to it, e.g. to snapshot
            weights for learning-dynamics plots.
        checkpoint: a file to write a checkpoint to every ``checkpoint_every`` steps (a
            multiple of ``log_every``): weights, optimizer state, generators and history,
            so that ``resume_from`` goes on bit-identically.
        checkpoint_every: see ``checkpoint``.
        resume_from: a checkpoint file from a run of the same model shape and settings.

    Raises:
        TrainingDiverged: an instance's loss became NaN/inf or blew up (the rule is in
            :mod:`superpose.training.divergence`); the error names the step and instances.
    """
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a superpose.ToyModel, got {type(model).__name__}")
    _check_source("data", data, model.n_features)
    if eval_data is not None:
        _check_source("eval_data", eval_data, model.n_features)
        if eval_data.n_samples is not None:
            raise ValueError("eval_data must draw fresh data, not rows of a finite data set")
    config = TrainConfig(
        steps=steps,
        lr=lr,
        schedule=schedule,
        warmup_steps=warmup_steps,
        log_every=log_every,
        batch_size=batch_size,
        weight_decay=weight_decay,
        eval_samples=eval_samples,
    )
    if batch_size is None and data.n_samples is None:
        raise ValueError("batch_size=None (full batch) needs a finite data set (n_samples=...)")
    seed = optional_seed(seed)
    method = resolve_method(
        method,
        fast.supports(model),
        f"does not support {type(model).__name__}, which overrides the ToyModel forward pass "
        "or loss",
    )
    check_precision(precision, method, "a plain ToyModel")
    device = resolve_device(device)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    if compile and (method != "fast" or device.type != "cuda"):
        raise ValueError(
            f"compile=True needs method='fast' on a CUDA device, got method={method!r} on {device}"
        )

    rows = data.n_samples if batch_size is None else batch_size
    with loop.threads_for(device, threads, model.n_instances * rows * model.n_features):
        model.to(device)
        generator = data.generator if seed is None else make_generator(seed, device)
        # CUDA fast path: one step recorded as a CUDA graph (needs the batches drawn on the GPU)
        graphed = method == "fast" and device.type == "cuda" and data.device == device
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=torch.tensor(lr, device=device) if graphed else lr,
            weight_decay=weight_decay,
            fused=method == "fast",
            capturable=graphed,
        )
        # batches drawn on a GPU are dense (a recorded step needs the same shapes every step, and
        # sparse drawing waits on the GPU); both methods draw the same ones
        sparse = data.device.type != "cuda"

        def gradients(step: int) -> dict[str, torch.Tensor]:
            batch = data.sample_rows(batch_size, model.n_instances, generator, sparse).to(device)
            if method == "fast":  # sets every .grad anew
                return {"loss": fast.loss_and_backward(model, batch, compile, precision)}
            optimizer.zero_grad(set_to_none=True)
            return {"loss": _autograd_backward(model, batch)}

        history = loop.run(
            loop.Trainable(
                module=model,
                optimizer=optimizer,
                gradients=gradients,
                n_instances=model.n_instances,
                generators=data.generators(generator),
                cuda_graph=graphed,
                name=f"train {model.kind}",
            ),
            config,
            device=device,
            progress=progress,
            on_log=on_log,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume_from=resume_from,
        )
        if eval_data is None:
            held_out = evaluate(model, data, eval_samples, seed=1 if seed is None else seed + 1)
        else:
            held_out = evaluate(model, eval_data, eval_samples, seed=None, batch_size=batch_size)
        return TrainResult(
            history_steps=history.steps,
            history=history.values,
            wall_time=history.wall_time,
            steps=steps,
            device=str(device),
            method=method,
            precision=precision,
            loss=held_out.cpu(),
            samples_per_step=rows,
        )


def _check_source(name: str, source: object, n_features: int) -> None:
    """Raise unless ``source`` is a :class:`~superpose.data.BatchSource` of ``n_features``."""
    if not isinstance(source, BatchSource):
        raise TypeError(
            f"{name} must be a superpose.data.BatchSource (e.g. a SparseFeatures), "
            f"got {type(source).__name__}"
        )
    if source.n_features != n_features:
        raise ValueError(f"{name}.n_features={source.n_features} but model.n_features={n_features}")


def _autograd_backward(model: ToyModel, batch: CompactBatch) -> torch.Tensor:
    """The reference step: per-instance loss ``(instance,)`` of the batch ``(instance, batch,
    n_features)`` that ``batch`` stands for, with every parameter's ``.grad`` set by autograd
    on the summed loss."""
    loss = model.loss(batch.dense())
    loss.sum().backward()
    return loss.detach()
