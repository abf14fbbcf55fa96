"""Golden results: what every seeded training path of superpose produces, recorded once.

Each case below is a short, seeded run through the public API only (``superpose.train``,
``superpose.train.train_seed_grid``, ``superpose.sae.train`` / ``evaluate``,
``superpose.circuits.train``, ``superpose.sweep.run`` / ``load`` / ``load_model``, the
experiments' ``main(..., quick=True)`` through ``superpose.registry``) and returns a dict of
name → value: tensors go to ``golden.safetensors`` (as ``<case>/<name>``), anything else (a
method name, config hashes, a flag) to the case's ``scalars`` in ``golden.json``.
``tests/test_golden.py`` reruns every case through these same functions and compares.

Record (with the library code you want to freeze, on one torch thread)::

    python tests/golden/record.py            # every case, then writes both files
    python tests/golden/record.py --check    # rerun and compare with the stored files
    python tests/golden/record.py --rerecord WHY CASE   # one case changed on purpose
    python tests/golden/record.py --retire WHY CASE     # one case whose path was removed

Cases must stay short (the default, non-slow cases run in well under 30 s on one core);
the ``slow`` ones (the experiments' quick runs) run under ``pytest -m slow``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

import superpose
from superpose import SparseFeatures, ToyModel, circuits, registry, sae, sweep
from superpose.data import Hierarchy, LowRankCorrelation, folded_normal, zipf_probability
from superpose.sweep import SweepSpec
from superpose.train import train_seed_grid

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TENSORS = HERE / "golden.safetensors"
METADATA = HERE / "golden.json"

CASE_SEED = 20251126
"""torch's global seed before every case, so a case's result does not depend on the cases
run before it (cases that test ``seed=None`` set their own with ``torch.manual_seed``)."""

Value = torch.Tensor | bool | int | float | str | list
Case = Callable[[], dict[str, Value]]

CASES: dict[str, Case] = {}
"""Every case by name, in recording order."""

SLOW: set[str] = set()
"""Cases that only ``pytest -m slow`` runs."""

EXACT_ONLY: set[str] = set()
"""Cases compared only on the recording machine (bit for bit): their runs take discrete
decisions (TopK selections, dead-latent windows, JumpReLU thresholds, bfloat16 rounding)
that other kernels' rounding flips, after which the numbers part by far more than rounding."""


def case(name: str, *, slow: bool = False, exact_only: bool = False) -> Callable[[Case], Case]:
    def register(function: Case) -> Case:
        if name in CASES:
            raise ValueError(f"two cases named {name!r}")
        CASES[name] = function
        if slow:
            SLOW.add(name)
        if exact_only:
            EXACT_ONLY.add(name)
        return function

    return register


# --------------------------------------------------------------------------------------------
# helpers


def state(module: torch.nn.Module, prefix: str = "") -> dict[str, Value]:
    """Every parameter and buffer of ``module`` (its state dict), detached copies."""
    return {f"{prefix}{name}": t.detach().cpu().clone() for name, t in module.state_dict().items()}


def toy_result(result: superpose.TrainResult, prefix: str = "") -> dict[str, Value]:
    return {
        f"{prefix}loss": result.loss,
        f"{prefix}history_loss": result.history_loss,
        f"{prefix}history_steps": result.history_steps,
        f"{prefix}method": result.method,
        f"{prefix}precision": result.precision,
        f"{prefix}steps": result.steps,
    }


def frame_columns(frame: pd.DataFrame, prefix: str, skip: set[str] = frozenset()) -> dict:
    """A DataFrame's columns in row order: numeric ones as float64 tensors (NaN kept), others
    as lists of strings (None for missing values)."""
    out: dict[str, Value] = {}
    for column in frame.columns:
        if column in skip or any(word in column for word in ("seconds", "wall", "time")):
            continue
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[f"{prefix}{column}"] = torch.tensor(values.to_numpy(dtype=np.float64))
        else:
            out[f"{prefix}{column}"] = [None if pd.isna(v) else str(v) for v in values]
    return out


def sae_outputs(model: sae.SparseAutoencoder, result: sae.SAETrainResult, source) -> dict:
    """State dict, training history and scores on a fixed seeded sample of ``source``."""
    out: dict[str, Value] = state(model, "state/")
    out |= {f"history/{name}": values for name, values in result.history.items()}
    out["history_steps"] = result.history_steps
    out |= {"method": result.method, "precision": result.precision, "steps": result.steps}
    scores = sae.evaluate(model, source, n_samples=4096, seed=1)
    out |= frame_columns(scores, "scores/")
    return out


# --------------------------------------------------------------------------------------------
# toy models: superpose.train


TOY_PROBABILITY = [[1.0], [0.3], [0.1], [0.05]]  # one per instance: (instance, 1)


def toy_run(
    kind: str = "relu",
    *,
    n_features: int = 5,
    n_hidden: int = 2,
    probability: object = TOY_PROBABILITY,
    magnitude: str = "uniform",
    data_options: dict | None = None,
    watch: Callable[[ToyModel], Callable] | None = None,
    **options: object,
) -> dict[str, Value]:
    """A seeded toy model (one instance per row of ``probability``) trained 200 steps by
    default (``options`` override the settings); its weights and results. ``watch(model)``
    makes the run's ``on_log``."""
    data = SparseFeatures(
        n_features, probability, magnitude=magnitude, seed=0, **(data_options or {})
    )
    n_instances = data.feature_probability.shape[0]
    model = ToyModel(
        kind, n_instances, n_features, n_hidden, 0.9 ** torch.arange(n_features), seed=0
    )
    settings = dict(steps=200, batch_size=256, lr=1e-2, log_every=50, eval_samples=4096, seed=0)
    if watch is not None:
        options["on_log"] = watch(model)
    result = superpose.train(model, data, progress=False, **{**settings, **options})
    return state(model) | toy_result(result)


for _kind in ("linear", "relu", "hidden_relu"):
    case(f"toy_{_kind}")(lambda kind=_kind: toy_run(kind))


@case("toy_abs")
def toy_abs() -> dict[str, Value]:
    """The computation-in-superposition model on signed inputs."""
    return toy_run("abs", n_hidden=6, magnitude="signed_uniform")


@case("toy_reference_relu")
def toy_reference_relu() -> dict[str, Value]:
    return toy_run("relu", method="reference")


@case("toy_reference_abs")
def toy_reference_abs() -> dict[str, Value]:
    return toy_run("abs", n_hidden=6, magnitude="signed_uniform", method="reference")


@case("toy_bf16", exact_only=True)
def toy_bf16() -> dict[str, Value]:
    return toy_run("relu", n_features=20, n_hidden=5, precision="bf16")


@case("toy_cosine_warmup_weight_decay")
def toy_cosine_warmup_weight_decay() -> dict[str, Value]:
    return toy_run("relu", schedule="cosine", warmup_steps=30, weight_decay=1e-2)


@case("toy_linear_schedule")
def toy_linear_schedule() -> dict[str, Value]:
    return toy_run("hidden_relu", schedule="linear", warmup_steps=10, lr=3e-3)


@case("toy_global_seed")
def toy_global_seed() -> dict[str, Value]:
    """seed=None everywhere: the model's init, the data and the batches from torch's global
    generator, fixed by ``torch.manual_seed``."""
    torch.manual_seed(1234)
    data = SparseFeatures(5, TOY_PROBABILITY)
    model = ToyModel("relu", 4, 5, 2, 0.9 ** torch.arange(5))
    result = superpose.train(
        model,
        data,
        steps=200,
        batch_size=256,
        lr=1e-2,
        log_every=50,
        eval_samples=4096,
        progress=False,
    )
    return state(model) | toy_result(result)


@case("toy_finite_full_batch")
def toy_finite_full_batch() -> dict[str, Value]:
    """A finite data set trained full-batch (``batch_size=None``), plain and normalised (the
    double-descent setting, with weight decay), and one sampled with replacement."""
    out: dict[str, Value] = {}
    for name, options, batch_size in (
        ("plain/", {}, None),
        ("normalized/", {"normalize": True}, None),
        ("minibatch/", {}, 32),
    ):
        data = SparseFeatures(20, 0.1, n_samples=64, n_instances=3, seed=0, **options)
        model = ToyModel("relu", 3, 20, 2, seed=[0, 1, 2])
        result = superpose.train(
            model,
            data,
            steps=150,
            batch_size=batch_size,
            lr=1e-2,
            weight_decay=1e-2,
            schedule="cosine",
            warmup_steps=15,
            log_every=50,
            eval_samples=2048,
            seed=3,
            progress=False,
        )
        out |= state(model, name) | toy_result(result, name)
        out[f"{name}dataset"] = data.dataset
    return out


@case("toy_full_batch_row_blocks")
def toy_full_batch_row_blocks() -> dict[str, Value]:
    """A full batch larger than 2^18 elements per instance: the fast path splits it into row
    blocks whose gradients add up."""
    data = SparseFeatures(300, 0.02, n_samples=2048, n_instances=1, normalize=True, seed=0)
    model = ToyModel("relu", 1, 300, 2, seed=0)
    result = superpose.train(
        model,
        data,
        steps=30,
        batch_size=None,
        lr=1e-2,
        weight_decay=1e-2,
        log_every=10,
        eval_samples=2048,
        seed=0,
        progress=False,
    )
    return state(model) | toy_result(result)


SPARSE_PROBABILITY = [[0.2]] * 8 + [[p] for p in np.geomspace(0.02, 0.002, 56).tolist()]
"""64 instances: 8 dense, then a run of 56 below 3 % (56 × 1024 × 8 = 458,752 elements per
step ≥ ``superpose.data.sparse._SPARSE_MIN_ELEMENTS`` = 2^18, so that run is drawn sparsely)."""


SPARSE_ROW_MAJOR = [[0.1]] * 2 + [[0.01]] * 10
"""12 instances of 32 features: 2 dense, then 10 × 1024 × 32 = 327,680 sparse elements."""


@case("toy_sparse_path")
def toy_sparse_path() -> dict[str, Value]:
    """The trainer's sparse sampling path (compact batches), feature-major (8 features) and
    row-major (32 features), each beside dense instances."""
    feature_major = toy_run(
        "relu",
        n_features=8,
        n_hidden=3,
        probability=SPARSE_PROBABILITY,
        steps=60,
        batch_size=1024,
        log_every=20,
        eval_samples=2048,
    )
    row_major = toy_run(
        "relu",
        n_features=32,
        n_hidden=6,
        probability=SPARSE_ROW_MAJOR,
        steps=60,
        batch_size=1024,
        log_every=20,
        eval_samples=2048,
    )
    return {f"n8/{k}": v for k, v in feature_major.items()} | {
        f"n32/{k}": v for k, v in row_major.items()
    }


@case("toy_correlated")
def toy_correlated() -> dict[str, Value]:
    return toy_run(
        "relu",
        n_features=6,
        n_hidden=2,
        probability=[[0.3], [0.1], [0.05]],
        data_options={"correlated_sets": [[0, 1], [2, 3]]},
    )


@case("toy_anticorrelated")
def toy_anticorrelated() -> dict[str, Value]:
    return toy_run(
        "relu",
        n_features=6,
        n_hidden=2,
        probability=[[0.3], [0.1], [0.05]],
        data_options={"anticorrelated_sets": [[0, 1, 2], [3, 4]]},
    )


@case("toy_magnitudes")
def toy_magnitudes() -> dict[str, Value]:
    out: dict[str, Value] = {}
    for magnitude in ("constant", "exponential", "signed_uniform"):
        run = toy_run(
            "linear" if magnitude == "signed_uniform" else "relu", magnitude=magnitude, steps=100
        )
        out |= {f"{magnitude}/{k}": v for k, v in run.items()}
    return out


@case("toy_on_log")
def toy_on_log() -> dict[str, Value]:
    """``on_log`` snapshots during training (the learning-dynamics experiment's hook)."""
    snapshots: list[torch.Tensor] = []
    steps: list[int] = []

    def watch(model: ToyModel) -> Callable:
        def on_log(step: int, metrics: dict) -> None:  # (step, model) before 0.5
            steps.append(step)
            snapshots.append(model.W.detach().clone())

        return on_log

    out = toy_run(
        "relu", n_features=10, n_hidden=4, probability=0.3, steps=120, log_every=25, watch=watch
    )
    return out | {"snapshot_steps": torch.tensor(steps), "snapshots": torch.stack(snapshots)}


@case("seed_grid")
def seed_grid() -> dict[str, Value]:
    grid = train_seed_grid(
        "relu",
        5,
        2,
        [0.3, 0.1, 0.03],
        seeds=[0, 1, 2],
        importance=0.9 ** torch.arange(5),
        steps=200,
        batch_size=256,
        lr=1e-2,
        log_every=50,
        eval_samples=4096,
        progress=False,
    )
    return state(grid.model) | toy_result(grid.result) | {"best": grid.best}


BENCHMARK_CONFIGS = {
    # (kind, n_features, n_hidden, importance, feature_probability, steps): configs A-E of
    # experiments/benchmark.py (commit f5351e4), each for a few steps (5-20).
    "A": lambda: (
        "relu",
        5,
        2,
        0.9 ** torch.arange(5.0)[None, :],
        (20.0 ** -torch.linspace(0, 1, 10))[:, None].expand(10, 5).contiguous(),
        20,
    ),
    "B": lambda: ("relu", 100, 20, *_decay(20, 100), 10),
    "C": lambda: ("relu", 1000, 100, *_decay(4, 1000), 5),
    "D": lambda: (
        "relu",
        2,
        1,
        torch.stack([torch.ones(1600), torch.logspace(-1, 1, 40).repeat(40)], dim=1),
        torch.logspace(-2, 0, 40).repeat_interleave(40)[:, None].expand(-1, 2).contiguous(),
        10,
    ),
    "E": lambda: ("hidden_relu", 100, 20, *_decay(20, 100), 10),
}


def _decay(n_instances: int, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    importance = 100.0 ** -torch.linspace(0, 1, n_features)[None, :]
    probability = 20.0 ** -torch.linspace(0, 1, n_instances)[:, None]
    return importance, probability.expand(n_instances, n_features).contiguous()


def benchmark_case(letter: str) -> dict[str, Value]:
    """The benchmark's recipe for ``superpose.train`` (batch 1024, lr 1e-3, no weight decay,
    seed 0, from ``ToyModel(..., seed=0)``), a few steps."""
    kind, n_features, n_hidden, importance, probability, steps = BENCHMARK_CONFIGS[letter]()
    model = ToyModel(kind, probability.shape[0], n_features, n_hidden, importance, seed=0)
    data = SparseFeatures(n_features, probability, seed=0)
    result = superpose.train(
        model,
        data,
        steps=steps,
        batch_size=1024,
        lr=1e-3,
        weight_decay=0.0,
        log_every=5,
        eval_samples=1024,
        seed=0,
        progress=False,
        threads=1,
    )
    return toy_result(result)


for _letter in BENCHMARK_CONFIGS:
    case(f"benchmark_{_letter}")(lambda letter=_letter: benchmark_case(letter))


# --------------------------------------------------------------------------------------------
# sparse autoencoders: superpose.sae


SAE_KINDS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
SAE_OPTIONS = {
    "relu": {"l1_coefficient": [0.003, 0.01, 0.03]},
    "topk": {"k": [1, 2, 4]},
    "batchtopk": {"k": [1, 2, 4]},
    "jumprelu": {"l0_coefficient": [0.001, 0.003, 0.01]},
    "matryoshka": {"k": [1, 2, 4]},
}


def superposed(probability: float = 0.05, seed: int | None = 0) -> sae.Superposed:
    """32 features in 12 dimensions."""
    return sae.Superposed(SparseFeatures(32, probability, seed=seed), d_model=12, seed=seed)


def sae_run(
    kind: str, source: sae.ActivationSource | None = None, *, d_sae: int = 48, **options
) -> dict[str, Value]:
    """Three SAEs of ``kind`` (one sparsity setting each) trained 100 steps on ``source``,
    with a dead window short enough that latents die (AuxK and resampling have work)."""
    source = superposed() if source is None else source
    model = sae.SAE(kind, 3, source.d_model, d_sae, seed=0, **SAE_OPTIONS[kind])
    settings = dict(steps=100, batch_size=256, lr=3e-3, log_every=25, dead_window=512, seed=0)
    result = sae.train(model, source, progress=False, **{**settings, **options})
    return sae_outputs(model, result, source)


TOPK_KINDS = ("topk", "batchtopk", "matryoshka")
"""The kinds that select latents by rank: their cases are :data:`EXACT_ONLY`."""

for _kind in SAE_KINDS:
    case(f"sae_{_kind}", exact_only=_kind in TOPK_KINDS)(lambda kind=_kind: sae_run(kind))

for _kind in ("topk", "batchtopk"):  # the kinds with a fast path: their reference too
    case(f"sae_{_kind}_reference", exact_only=True)(
        lambda kind=_kind: sae_run(kind, method="reference")
    )


@case("sae_sparse_source", exact_only=True)
def sae_sparse_source() -> dict[str, Value]:
    """A source below 3 % mean firing probability, built from its active features only."""
    source = superposed(probability=0.01)
    return sae_run("topk", source)


@case("sae_structured_source", exact_only=True)
def sae_structured_source() -> dict[str, Value]:
    """A SynthSAEBench-like world: Zipf firing, a hierarchy with exclusive children, a
    low-rank correlation and folded-normal magnitudes."""
    parent = [-1] * 8 + [i // 3 for i in range(24)]  # 8 roots, children of roots 0-7
    features = SparseFeatures(
        32,
        zipf_probability(32, exponent=0.5, max_probability=0.4, min_probability=0.02)[None, :],
        magnitude=folded_normal(1.0, 0.3),
        hierarchy=Hierarchy(parent, exclusive=True),
        correlation=LowRankCorrelation.random(32, rank=4, scale=0.2, seed=0),
        seed=0,
    )
    source = sae.Superposed(features, d_model=12, orthogonal=True, seed=0)
    return sae_run("matryoshka", source) | {"directions": source.directions}


@case("sae_resample", exact_only=True)
def sae_resample() -> dict[str, Value]:
    """Dead latents resampled every 40 steps: TopK SAEs (the fast path's Adam state reset)
    and ReLU SAEs with 8 latents switched off by a large negative encoder bias."""
    out = {f"topk/{k}": v for k, v in sae_run("topk", resample_every=40, steps=120).items()}
    source = superposed()
    model = sae.SAE("relu", 3, 12, 48, seed=0, **SAE_OPTIONS["relu"])
    with torch.no_grad():
        model.b_enc[:, :8] = -5.0
    result = sae.train(
        model,
        source,
        steps=120,
        batch_size=256,
        lr=3e-3,
        log_every=40,
        dead_window=512,
        resample_every=40,
        seed=0,
        progress=False,
    )
    return out | {f"relu/{k}": v for k, v in sae_outputs(model, result, source).items()}


@case("sae_sparsity_warmup")
def sae_sparsity_warmup() -> dict[str, Value]:
    """The penalty warmed up over 100 steps, a cosine lr with warm-up, Adam β₂ = 0.99."""
    return sae_run(
        "jumprelu",
        sparsity_warmup_steps=100,
        schedule="cosine",
        warmup_steps=20,
        betas=(0.9, 0.99),
    )


@case("sae_global_seed", exact_only=True)
def sae_global_seed() -> dict[str, Value]:
    """seed=None everywhere (SAE, directions, features, batches) under torch.manual_seed."""
    torch.manual_seed(4321)
    source = superposed(seed=None)
    out: dict[str, Value] = {}
    for kind in ("topk", "relu"):
        model = sae.SAE(kind, 3, 12, 48, **SAE_OPTIONS[kind])
        result = sae.train(
            model,
            source,
            steps=100,
            batch_size=256,
            lr=3e-3,
            log_every=50,
            dead_window=512,
            progress=False,
        )
        out |= {f"{kind}/{k}": v for k, v in sae_outputs(model, result, source).items()}
    return out | {"directions": source.directions}


@case("sae_per_instance_source", exact_only=True)
def sae_per_instance_source() -> dict[str, Value]:
    """A source with one instance per SAE instance (each SAE its own batches)."""
    source = sae.Superposed(SparseFeatures(32, [[0.1], [0.05], [0.02]], seed=0), 12, seed=0)
    return sae_run("topk", source)


@case("sae_model_activations", exact_only=True)
def sae_model_activations() -> dict[str, Value]:
    """SAEs on the hidden layer of a small trained toy model (the sae-tms setting)."""
    data = SparseFeatures(8, 0.05, seed=0)
    toy = ToyModel("relu", 2, 8, 4, seed=0)
    toy_result_ = superpose.train(
        toy,
        data,
        steps=200,
        batch_size=256,
        lr=1e-2,
        log_every=50,
        eval_samples=4096,
        seed=0,
        progress=False,
    )
    out: dict[str, Value] = state(toy, "toy/") | toy_result(toy_result_, "toy/")
    source = sae.ModelActivations(toy, data, instance=1)
    for kind in ("relu", "topk"):
        model = sae.SAE(
            kind, 3, 4, 8, seed=0, **(SAE_OPTIONS[kind] if kind == "relu" else {"k": [1, 2, 3]})
        )
        result = sae.train(
            model,
            source,
            steps=100,
            batch_size=256,
            lr=3e-3,
            log_every=50,
            dead_window=512,
            seed=0,
            progress=False,
        )
        out |= {f"{kind}/{k}": v for k, v in sae_outputs(model, result, source).items()}
    return out


# --------------------------------------------------------------------------------------------
# transformer circuits: superpose.circuits


def circuits_run(model: circuits.AttnOnlyTransformer, task, **options) -> dict[str, Value]:
    settings = dict(steps=30, batch_size=32, lr=3e-3, log_every=10, seed=0)
    result = circuits.train(model, task, progress=False, **{**settings, **options})
    out = state(model) | {
        "history_loss": result.history_loss,
        "history_steps": result.history_steps,
        "steps": result.steps,
    }
    return out | {f"metric/{k}": v for k, v in result.history_metrics.items()}


@case("circuits_0layer_bigram")
def circuits_0layer_bigram() -> dict[str, Value]:
    chain = circuits.MarkovChain(16, 12, seed=0)
    model = circuits.AttnOnlyTransformer(0, 16, 1, 16, 12, seed=0)
    return circuits_run(model, chain) | {"log_transition": chain.log_transition}


@case("circuits_1layer_skip_trigrams")
def circuits_1layer_skip_trigrams() -> dict[str, Value]:
    task = circuits.SkipTrigrams(16, 12, n_triggers=3, seed=0)
    model = circuits.AttnOnlyTransformer(1, 16, 2, 16, 12, seed=0)
    held_out = task.sample(64, 123)
    return circuits_run(
        model,
        task,
        schedule="constant",
        weight_decay=1e-2,
        evaluate=lambda m: {"planted_loss": circuits.masked_loss(m, held_out)},
    )


@case("circuits_1layer_zipf_chain")
def circuits_1layer_zipf_chain() -> dict[str, Value]:
    chain = circuits.ZipfMarkovChain(24, 10, zipf_exponent=1.0, seed=0)
    model = circuits.AttnOnlyTransformer(1, 8, 2, 24, 10, d_head=4, seed=1)
    return circuits_run(model, chain, warmup_steps=5) | {"log_transition": chain.log_transition}


@case("circuits_2layer_induction")
def circuits_2layer_induction() -> dict[str, Value]:
    """Repeated segments over a lag-2 Markov background, layer norm on, with evaluations."""
    background = circuits.MarkovChain(20, 16, lag=2, seed=0)
    task = circuits.RepeatedTokens(20, 16, min_len=3, max_len=6, background=background)
    model = circuits.AttnOnlyTransformer(2, 16, 2, 20, 16, layer_norm=True, seed=0)
    held_out = task.sample(64, 7)

    def evaluate(m: circuits.AttnOnlyTransformer) -> dict[str, float]:
        return {
            "copy_loss": circuits.masked_loss(m, held_out),
            "prefix_matching": float(circuits.prefix_matching_scores(m, held_out.tokens).max()),
        }

    return circuits_run(model, task, steps=40, warmup_steps=5, evaluate=evaluate)


@case("circuits_global_seed")
def circuits_global_seed() -> dict[str, Value]:
    """seed=None for the model, the task and the batches, under torch.manual_seed."""
    torch.manual_seed(99)
    task = circuits.SkipTrigrams(12, 10, n_triggers=2)
    model = circuits.AttnOnlyTransformer(1, 8, 2, 12, 10)
    return circuits_run(model, task, steps=20, seed=None)


# --------------------------------------------------------------------------------------------
# sweeps: superpose.sweep


RUN_COLUMNS = {
    "config_hash",
    "status",
    "error",
    "task",
    "device",
    "version",
    "finished_at",
    "chunk_cells",
    "weights_bytes",
    "weights_sha256",
}


def stored_sweep(frame: pd.DataFrame, fields: set[str], prefix: str = "") -> dict[str, Value]:
    """A sweep table's metric columns (float64, row order), its hashes and statuses."""
    out = frame_columns(frame, prefix, skip=RUN_COLUMNS | fields)
    out[f"{prefix}config_hash"] = frame["config_hash"].tolist()
    out[f"{prefix}status"] = frame["status"].tolist()
    return out


def sweep_case(spec: dict, cell: int) -> dict[str, Value]:
    with tempfile.TemporaryDirectory(prefix="golden-sweep-") as folder:
        summary = sweep.run(SweepSpec.from_dict(spec), out=folder, workers=1, progress=False)
        frame = sweep.load(folder)
        model = sweep.load_model(folder, frame.config_hash[cell])
        weights = sweep.load_weights(folder, frame.config_hash[cell])
    fields = set(sweep.FIELDS) | set(sweep.SAE_FIELDS)
    return (
        stored_sweep(frame, fields)
        | state(model, "model/")
        | {f"weights/{k}": v for k, v in weights.items()}
        | {"done": summary.done, "failed": summary.failed}
    )


@case("sweep_toy")
def sweep_toy() -> dict[str, Value]:
    spec = {
        "name": "golden_toy",
        "fixed": {"kind": "relu", "n_features": 3, "n_hidden": 2},
        "axes": {
            "feature_probability": [1.0, 0.1, 0.01],
            "relative_importance": [0.5, 2.0],
            "seed": [0, 1],
        },
        "training": {
            "steps": 100,
            "batch_size": 256,
            "lr": 0.01,
            "eval_samples": 2048,
            "schedule": "cosine",
            "warmup_steps": 10,
        },
    }
    return sweep_case(spec, cell=5)


@case("sweep_sae", exact_only=True)
def sweep_sae() -> dict[str, Value]:
    spec = {
        "name": "golden_sae",
        "task": "sae",
        "fixed": {"n_features": 12, "d_model": 6, "feature_probability": 0.1, "d_sae": 12},
        "axes": {
            "sae_kind": ["relu", "topk", "jumprelu"],
            "l1_coefficient": [0.003, 0.03],
            "k": [1, 3],
            "seed": [0, 1],
        },
        "training": {"steps": 40, "batch_size": 64, "lr": 0.003, "eval_samples": 1024},
    }
    return sweep_case(spec, cell=3)


# --------------------------------------------------------------------------------------------
# the experiments' quick runs (slow)


def stored_results(folder: Path) -> dict[str, Value]:
    """Every stored result under ``folder``: safetensors tensors, CSV and sweep-table columns
    and JSON numbers (timings, devices and thread counts left out)."""
    out: dict[str, Value] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".safetensors":
            out |= {f"{name}/{k}": v for k, v in load_file(path).items()}
        elif path.suffix == ".csv":
            out |= frame_columns(pd.read_csv(path), f"{name}/")
        elif path.name == "sweep.sqlite":
            fields = set(sweep.FIELDS) | set(sweep.SAE_FIELDS)
            out |= stored_sweep(sweep.load(path.parent), fields, f"{name}/")
        elif path.suffix == ".json":
            for key, value in json.loads(path.read_text()).items():
                if any(word in key for word in ("seconds", "time", "device", "threads")):
                    continue
                if isinstance(value, bool | int | float | str):
                    out[f"{name}/{key}"] = value
    return out


def experiment_case(name: str) -> dict[str, Value]:
    with tempfile.TemporaryDirectory(prefix="golden-experiment-") as folder:
        with contextlib_redirect():
            registry.load("experiments", name).main(Path(folder), device="cpu", quick=True)
        return stored_results(Path(folder))


@contextmanager
def contextlib_redirect() -> Iterator[None]:
    """The experiments print summaries and progress bars: keep them off the test output."""
    from contextlib import redirect_stderr, redirect_stdout

    with open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
        yield


EXPERIMENTS = (
    "circuits-bigram",
    "circuits-induction",
    "circuits-skip-trigram",
    "computation",
    "correlated-features",
    "double-descent",
    "double-descent-sweep",
    "geometry",
    "intro",
    "learning-dynamics",
    "phase-diagram",
    "privileged-basis",
    "residual-superposition",
    "sae-architectures",
    "sae-readout",
    "sae-sharkey",
    "sae-tms",
    "sparsity-sweep",
    "uniform-superposition",
)

EXACT_ONLY_EXPERIMENTS = ("phase-diagram", "sae-architectures", "sae-readout")
"""TopK-family SAEs, and the n=3 phase diagram, whose cells near phase boundaries moved by
more than the tolerance with other kernels."""

for _name in EXPERIMENTS:
    case(f"experiment_{_name}", slow=True, exact_only=_name in EXACT_ONLY_EXPERIMENTS)(
        lambda name=_name: experiment_case(name)
    )


# --------------------------------------------------------------------------------------------
# running, storing, comparing


@contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_case(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Value]]:
    """Run case ``name`` on one torch thread from a fixed global seed; returns its tensors
    and its other values, plus ``touches_global_rng``: whether it advanced torch's global
    generator (a seeded path should not, unless the case itself sets the global seed)."""
    outside = torch.get_rng_state()
    try:
        with one_thread():
            torch.manual_seed(CASE_SEED)
            before = torch.get_rng_state()
            values = CASES[name]()
            touched = not torch.equal(before, torch.get_rng_state())
    finally:
        torch.set_rng_state(outside)  # the caller's global stream, as it was
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Value] = {"touches_global_rng": touched}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous().clone()
        else:
            scalars[key] = value
    return tensors, scalars


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


KERNEL_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni")
KERNEL_FLAGS += ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8", "asimd", "sve")
"""CPU flags on which torch, oneDNN and the BLAS pick their kernels: a virtual machine's model
name (``AMD EPYC``) can stand for CPUs with and without AVX-512."""


def cpu_flags() -> list[str]:
    """The :data:`KERNEL_FLAGS` this CPU has, from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return sorted(set(line.split(":", 1)[1].split()) & set(KERNEL_FLAGS))
    except OSError:
        pass
    return []


def cpu_capability() -> str:
    """The vector instruction set torch's own CPU kernels dispatch to (e.g. ``AVX2``)."""
    return torch.backends.cpu.get_cpu_capability()


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def load_golden() -> tuple[dict[str, torch.Tensor], dict]:
    """The stored tensors (``<case>/<name>``) and metadata."""
    return load_file(TENSORS), json.loads(METADATA.read_text())


def this_machine() -> dict[str, object]:
    """What decides whether results can be bit-identical: the CPU model name, kernel-relevant
    CPU flags, torch CPU capability and torch version."""
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": cpu_capability(),
        "torch": torch.__version__,
    }


def recorded_on(metadata: dict, name: str | None = None) -> dict[str, object]:
    """The machine case ``name`` was recorded on: its own where it was re-recorded elsewhere,
    else the whole recording's."""
    own = metadata["cases"].get(name, {}).get("machine") if name is not None else None
    return own if own is not None else {key: metadata[key] for key in this_machine()}


def same_machine(metadata: dict, name: str | None = None) -> bool:
    """Whether this machine and torch are those of case ``name``'s recording (or of the whole
    recording; then results must be bit-identical)."""
    return recorded_on(metadata, name) == this_machine()


def describe_difference(name: str, got: torch.Tensor, want: torch.Tensor) -> str | None:
    """None when ``got`` equals ``want`` bit for bit, else a line saying how it moved."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return (
            f"{name}: dtype/shape {got.dtype} {tuple(got.shape)}, "
            f"recorded {want.dtype} {tuple(want.shape)}"
        )
    if torch.equal(got, want) or (
        got.is_floating_point()
        and torch.equal(got.isnan(), want.isnan())
        and torch.equal(got.nan_to_num(), want.nan_to_num())
    ):
        return None
    g, w = got.double(), want.double()
    differ = (g != w) & ~(g.isnan() & w.isnan())
    diff = (g - w).abs()[differ]
    relative = diff / w.abs()[differ].clamp_min(1e-30)
    first = tuple(int(i) for i in differ.nonzero()[0])
    return (
        f"{name}: {int(differ.sum())} of {want.numel()} entries moved, max |diff| "
        f"{diff.max().item():.3g}, max rel {relative.max().item():.3g}; first at {first}: "
        f"{g[first].item()!r} (recorded {w[first].item()!r})"
    )


ADDED_SINCE_RECORDING = (
    *("mmcs_chance", "mcc_chance", "recovered_chance"),
    *("latent_precision", "latent_recall", "latent_f1"),
)
"""Result columns added after the recording, by design, that a case may hold beyond the
recorded ones: 0.5's chance levels of the SAE scores (``sae.random_baseline``) and
SynthSAEBench's per-latent precision / recall / F1 (``sae.evaluate``)."""


def compare_case(
    name: str, tensors: dict, scalars: dict, golden: dict, metadata: dict, exact: bool
) -> list[str]:
    """Every way case ``name``'s new results differ from the recorded ones (empty: none).
    ``exact``: bit for bit; else within :func:`close` (floats alike). A new tensor is a
    difference unless its name ends with one of :data:`ADDED_SINCE_RECORDING`."""
    problems: list[str] = []
    prefix = f"{name}/"
    recorded = {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}
    tensors = {
        k: v for k, v in tensors.items() if k in recorded or not k.endswith(ADDED_SINCE_RECORDING)
    }
    if set(recorded) != set(tensors):
        problems.append(
            f"{name}: tensors missing {sorted(set(recorded) - set(tensors))}, "
            f"new {sorted(set(tensors) - set(recorded))}"
        )
    for key in sorted(set(recorded) & set(tensors)):
        if exact:
            line = describe_difference(f"{name}/{key}", tensors[key], recorded[key])
            if line:
                problems.append(line)
        else:
            try:
                close(tensors[key], recorded[key])
            except AssertionError as error:
                problems.append(f"{name}/{key}: {error}")
    want = metadata["cases"][name]["scalars"]
    got = json.loads(json.dumps(scalars))  # as stored: tuples become lists
    for key in sorted(set(want) | set(got)):
        if key not in got or key not in want:
            problems.append(f"{name}/{key}: {'missing' if key not in got else 'new'} scalar")
        elif not same_scalar(got[key], want[key], exact):
            problems.append(f"{name}/{key}: {got[key]!r}, recorded {want[key]!r}")
    return problems


RTOL = 1e-3
"""Relative tolerance of :func:`close`, off the recording machine."""


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    """``torch.testing.assert_close`` within :data:`RTOL` of each entry plus :data:`RTOL` of
    the recorded tensor's largest magnitude (and 1e-6): rounding that training amplifies
    moves small entries by a fraction of the tensor's scale, not of their own size.

    Measured with other kernels on the recording machine (``ATEN_CPU_CAPABILITY=default``,
    ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, ``ONEDNN_MAX_CPU_ISA=SSE41``): every continuous case
    moved, by at most about 2e-4 of its tensors' scale; rtol 1e-4 with atol 1e-6 failed
    weights near zero."""
    scale = want.abs().max().item() if want.is_floating_point() and want.numel() else 0.0
    if math.isnan(scale):
        scale = want.nan_to_num().abs().max().item()
    torch.testing.assert_close(
        got, want, rtol=RTOL, atol=RTOL * scale + 1e-6, equal_nan=True, check_dtype=True
    )


def same_scalar(got: object, want: object, exact: bool) -> bool:
    if isinstance(got, float) and isinstance(want, float) and not exact:
        return math.isclose(got, want, rel_tol=RTOL, abs_tol=1e-6) or (
            math.isnan(got) and math.isnan(want)
        )
    if isinstance(got, float) and isinstance(want, float):
        return got == want or (math.isnan(got) and math.isnan(want))
    return got == want


def self_checks() -> None:
    """That the cases exercise what they claim (checked when recording)."""
    assert set(SAE_KINDS) == set(sae.KINDS), "a new SAE kind: add it to SAE_KINDS"
    from superpose.data.sparse import _SPARSE_DENSITY as SPARSE_DENSITY
    from superpose.data.sparse import _SPARSE_MIN_ELEMENTS as SPARSE_MIN_ELEMENTS

    for probability, n_features in ((SPARSE_PROBABILITY, 8), (SPARSE_ROW_MAJOR, 32)):
        data = SparseFeatures(n_features, probability, seed=0)
        sparse = data.sparse_instances()
        assert sparse.any() and int(sparse.sum()) * 1024 * n_features >= SPARSE_MIN_ELEMENTS
        batch = data.sample_rows(1024, generator=torch.Generator().manual_seed(0))
        assert any(r > 0 for r in batch.repeats), "no compact (sparse) part in the batch"
    assert superposed(0.01).features.sparse_instances(1).all()
    assert float(torch.tensor(0.01)) < SPARSE_DENSITY


def record(names: list[str]) -> None:
    self_checks()
    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, dict] = {}
    for name in names:
        start = time.perf_counter()
        case_tensors, scalars = run_case(name)
        seconds = time.perf_counter() - start
        print(f"{name}: {len(case_tensors)} tensors, {seconds:.2f} s", flush=True)
        tensors |= {f"{name}/{k}": v for k, v in case_tensors.items()}
        cases[name] = {
            "slow": name in SLOW,
            "exact_only": name in EXACT_ONLY,
            "seconds": round(seconds, 2),
            "scalars": json.loads(json.dumps(scalars)),
        }
    dirty = git("status", "--porcelain", "--", "superpose")
    metadata = {
        "about": "golden results of tests/golden/record.py; compared by tests/test_golden.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "superpose": superpose.__version__,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": cpu_capability(),
        "torch_threads": 1,
        "commit": git("rev-parse", "HEAD"),
        "library_commit": git("log", "-1", "--format=%H", "--", "superpose"),
        "library_dirty": bool(dirty),
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cases": cases,
    }
    save_file(tensors, TENSORS, metadata={"commit": metadata["commit"]})
    METADATA.write_text(json.dumps(metadata, indent=1) + "\n")
    print(f"wrote {TENSORS} ({TENSORS.stat().st_size} bytes) and {METADATA}")


def rerecord(name: str, why: str) -> None:
    """Replace case ``name``'s recorded results with today's, keeping every other case's, and
    note ``why`` (a change made on purpose) and the commit in the metadata's
    ``rerecorded`` list: the one way a case's golden numbers may move."""
    golden, metadata = load_golden()
    case_tensors, scalars = run_case(name)
    prefix = f"{name}/"
    tensors = {k: v for k, v in golden.items() if not k.startswith(prefix)}
    tensors |= {f"{prefix}{k}": v for k, v in case_tensors.items()}
    metadata["cases"][name]["scalars"] = json.loads(json.dumps(scalars))
    if this_machine() != recorded_on(metadata):  # compared bit for bit only where recorded
        metadata["cases"][name]["machine"] = this_machine()
    else:
        metadata["cases"][name].pop("machine", None)
    _save_noted(tensors, metadata, "rerecorded", name, why)


def retire(name: str, why: str) -> None:
    """Remove case ``name``'s recorded results (the path it records was removed on purpose),
    keeping every other case's, and note ``why`` and the commit in the metadata's ``retired``
    list."""
    golden, metadata = load_golden()
    if name not in metadata["cases"]:
        raise ValueError(f"case {name!r} is not recorded")
    if name in CASES:
        raise ValueError(f"case {name!r} is still defined: delete its function first")
    prefix = f"{name}/"
    tensors = {k: v for k, v in golden.items() if not k.startswith(prefix)}
    del metadata["cases"][name]
    _save_noted(tensors, metadata, "retired", name, why)


def _save_noted(
    tensors: dict[str, torch.Tensor], metadata: dict, change: str, name: str, why: str
) -> None:
    """Write both files after a one-case ``change`` (``"rerecorded"`` or ``"retired"``),
    noting ``why`` and the library commit in the metadata's list of that name."""
    metadata.setdefault(change, []).append(
        {
            "case": name,
            "why": why,
            "library_commit": git("log", "-1", "--format=%H", "--", "superpose"),
        }
    )
    save_file(tensors, TENSORS, metadata={"commit": metadata["commit"]})
    METADATA.write_text(json.dumps(metadata, indent=1) + "\n")
    print(f"{change} {name}: {why}")


def check(names: list[str], tolerance: bool = False) -> int:
    golden, metadata = load_golden()
    failures = 0
    for name in names:
        exact = same_machine(metadata, name) and not tolerance
        if not exact and name in EXACT_ONLY:
            print(f"{name}: skipped (compared only on the recording machine)")
            continue
        problems = compare_case(name, *run_case(name), golden, metadata, exact)
        print(f"{name}: {'ok' if not problems else 'MOVED'}")
        for line in problems:
            print(f"    {line}")
        failures += bool(problems)
    print(f"{failures} of {len(names)} cases moved")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of recording")
    parser.add_argument(
        "--tolerance", action="store_true", help="with --check: compare within the tolerance"
    )
    parser.add_argument(
        "--rerecord", metavar="WHY", help="re-record the one case named, for this reason"
    )
    parser.add_argument(
        "--retire", metavar="WHY", help="remove the one recorded case named, for this reason"
    )
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.retire is not None:
        if len(args.cases) != 1:
            parser.error("--retire takes exactly one case")
        retire(args.cases[0], args.retire)
        return 0
    names = args.cases or list(CASES)
    if unknown := set(names) - set(CASES):
        parser.error(f"unknown cases {sorted(unknown)}")
    if args.check:
        return check(names, args.tolerance)
    if args.rerecord is not None:
        if len(args.cases) != 1:
            parser.error("--rerecord takes exactly one case")
        rerecord(args.cases[0], args.rerecord)
        return 0
    if args.cases:
        parser.error("record every case at once (the files hold all of them)")
    record(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
