"""SAE fidelity cross-check: every SAE kind three ways (superpose's, SAELens's own, a plain
torch version) on the same world and the same training batches, scored the same way.

World: :class:`superpose.sae.Superposed`, 64 features (each active with p = 3/64, magnitude
U(0, 1)) along random unit directions in 32 dimensions; ``d_sae = 64``, Adam lr 1e-3,
batches of 1,024, :data:`STEPS` steps, seeds :data:`SEEDS` (the seed makes the world; each
implementation's initialisation draws from its own generator, never the world's, so no
reference starts at the true directions).

Batches: step ``t``'s batch is the ``t``-th draw of ``activations_for(source, 1, 1024,
generator)`` with ``generator = make_generator(seed)``, the stream ``sae.train(seed=seed)``
itself draws, so all three see the very same samples. SAELens trains with **its own training
loop** (``sae_lens.training.sae_trainer.SAETrainer``, configured as its
``sae_lens.synthetic.train_toy_sae`` does: constant lr, Adam (0.9, 0.999), dead window 1,000
steps, gradient-norm clipping at 1) on a data provider that yields these batches.

Hyper-parameters: ``k = 3`` (the mean number of active features) for TopK, BatchTopK and
Matryoshka (prefixes 8, 16, 32, 64); L1 coefficient :data:`L1` for ReLU (both libraries
weight ``z_j`` by ``‖W_dec,j‖``); JumpReLU with L0 coefficient :data:`L0`, bandwidth 0.05.
Each library keeps its own defaults otherwise, and the differences are the point:

* superpose: unit decoder rows (renormalised after each step for all kinds but ReLU), ``b_dec``
  set to the first batch's mean, AuxK α = 1/32 over ``d_in/2`` dead latents with a dead
  window of 64 steps; JumpReLU learns ``log θ`` from θ = 0.1.
* SAELens: decoder rows of norm 0.1 at initialisation and never renormalised (TopK kinds
  rescale latents by ``‖W_dec,j‖``), ``b_dec = 0``, AuxK α = 1 (scaled down while few are
  dead) with a dead window of 1,000 steps, gradient clipping; JumpReLU learns θ itself from
  0.01 (its default: the same ratio to its 0.1 decoder norm as our 0.1 to our unit rows).
* plain (:class:`Plain`, ~40 lines for all five kinds): unit decoder rows renormalised after
  each step, ``W_enc = W_decᵀ``, zero biases, no auxiliary loss, no clipping; JumpReLU as
  superpose's (``log θ`` from 0.1, rectangle-kernel straight-through estimators).

Every trained SAE becomes a superpose SAE (SAELens's through :func:`superpose.sae.from_saelens`,
the plain one by copying its weights) and is scored by :func:`superpose.sae.evaluate` on
the same 16,384 fresh samples: MCC (Hungarian), F1 of the matched pairs (``f1``) and
SynthSAEBench's per-latent F1 (``latent_f1``), explained variance, L0 and dead latents.

Measured 2026-12-06 on a loaded 2-core AMD EPYC (AVX2), torch 1 thread, 2,000 steps, seeds 0
and 1 (≈ 14 min; a third seed and 3,000 steps cut for time); mean ± half the seed spread
(``figures/sae_crosscheck.py`` draws them, and the swap below)::

    kind        impl       MCC           F1 matched    F1 per latent EV     L0     dead
    relu        superpose  0.589±0.022   0.161±0.008   0.154±0.002   0.982  26.5   0
    relu        saelens    0.635±0.012   0.178±0.002   0.162±0.010   0.983  25.2   0
    relu        plain      0.581±0.011   0.166±0.006   0.155±0.004   0.982  26.4   0
    topk        superpose  0.931±0.003   0.640±0.005   0.641±0.005   0.859   2.83  0.070
    topk        saelens    0.884±0.005   0.581±0.008   0.595±0.014   0.831   3.00  0.008
    topk        plain      0.927±0.013   0.636±0.014   0.637±0.014   0.857   2.83  0.062
    batchtopk   superpose  0.853±0.016   0.552±0.016   0.552±0.015   0.876   3.00  0.086
    batchtopk   saelens    0.826±0.008   0.461±0.010   0.461±0.010   0.847   3.01  0.204
    batchtopk   plain      0.863±0.001   0.568±0.002   0.567±0.002   0.883   3.00  0.086
    jumprelu    superpose  0.518±0.003   0.169±0.024   0.151±0.021   0.982  16.6   0
    jumprelu    saelens    0.526±0.001   0.224±0.027   0.220±0.011   0.980  17.6   0
    jumprelu    plain      0.514±0.007   0.180±0.009   0.158±0.014   0.980  16.4   0
    matryoshka  superpose  0.752±0.013   0.455±0.025   0.462±0.018   0.800   3.00  0.125
    matryoshka  saelens    0.762±0.005   0.427±0.010   0.440±0.001   0.796   3.02  0.234
    matryoshka  plain      0.752±0.016   0.461±0.011   0.468±0.016   0.804   3.00  0.102

superpose matches the plain version within the seed spread for every kind. Against SAELens
it is better for TopK / BatchTopK (SAELens leaves 2-3x more latents dead at the evaluation,
its AuxK window being 1,000 steps) and worse for ReLU MCC (0.59 vs 0.64, twice the spread)
and JumpReLU F1 (0.17 vs 0.22, about the spread). The L1 and L0 coefficients leave ReLU and
JumpReLU far denser (L0 ≈ 17-26) than the true 3, so their low F1 is the penalty's, not an
implementation's.

Both gaps come from SAELens's decoder norm 0.1 at initialisation (JumpReLU's in part, the
rest within noise). ``--init-swap`` retrains ReLU and JumpReLU on seed 0 (2,000 steps) with
each library at its own norm and at the other's (``W_enc = W_decᵀ`` scaled alike, JumpReLU's
θ from 0.1 × the norm as both libraries do); measured 2026-12-06::

    kind      impl       init norm   MCC     F1 matched   F1 per latent   L0
    relu      superpose  1 (own)     0.567   0.153        0.152           26.6
    relu      superpose  0.1         0.645   0.172        0.166           25.5
    relu      saelens    0.1 (own)   0.647   0.180        0.173           25.0
    relu      saelens    1           0.602   0.165        0.150           26.3
    jumprelu  superpose  1 (own)     0.516   0.145        0.130           17.0
    jumprelu  superpose  0.1         0.439   0.090        0.090           64.0
    jumprelu  saelens    0.1 (own)   0.525   0.197        0.209           18.6
    jumprelu  saelens    1           0.508   0.176        0.163           17.0

ReLU: the norm decides the ranking (ours 0.567 → 0.645 at 0.1, SAELens 0.647 → 0.602 at 1),
so the gap is the initialisation, not either trainer. The other candidates fall short (seed
0): SAELens's gradient clipping at 1 never acts (its gradient norm peaks at 0.34, median
0.022), and raising our L1 until L0 matches SAELens's adds only +0.018 MCC. The runs are
short for ReLU: ours at lr 3e-3 reaches 0.668, above both.
JumpReLU: SAELens started at unit rows loses most of its F1 edge (per-latent 0.209 → 0.163
against our 0.130, matched 0.197 → 0.176 against 0.145); the residual ≈ 0.03 is within one run's
noise (the seed spread of JumpReLU's F1 is ≈ 0.05). Ours at 0.1 is no swap: superpose
renormalises JumpReLU's decoder rows after every step, which leaves a 10x smaller encoder
and θ, and every latent fires (L0 64).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from superpose import SparseFeatures, sae
from superpose._checks import make_generator
from superpose.io import save_json, save_rows
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads
from superpose.sae.sources import activations_for

N_FEATURES, D_MODEL, D_SAE = 64, 32, 64
PROBABILITY = 3 / 64
K = 3
PREFIXES = (8, 16, 32, 64)
L1 = 0.03
L0 = 0.003
BANDWIDTH = 0.05
LR = 1e-3
BATCH = 1024
STEPS = 2000
QUICK_STEPS = 200
"""Training steps of ``--quick`` (seed ``SEEDS[0]`` only)."""
SEEDS = (0, 1)
KINDS = ("relu", "topk", "batchtopk", "jumprelu", "matryoshka")
SAELENS_DECODER_NORM = 0.1
"""SAELens's decoder row norm at initialisation (its ``decoder_init_norm``); superpose's is 1."""
THRESHOLD_RATIO = 0.1
"""JumpReLU's initial θ per unit of initial decoder norm (both libraries' defaults)."""
SWAP_KINDS = ("relu", "jumprelu")
"""Kinds ``--init-swap`` retrains with the libraries' decoder norms at initialisation swapped."""
PLAIN_INIT_OFFSET = 7919
"""The plain version's generator is seeded ``seed + PLAIN_INIT_OFFSET`` (never the world's)."""


def world(seed: int) -> sae.Superposed:
    """The shared world of seed ``seed``."""
    return sae.Superposed(SparseFeatures(N_FEATURES, PROBABILITY, seed=seed), D_MODEL, seed=seed)


def batches(source: sae.Superposed, seed: int) -> Iterator[torch.Tensor]:
    """``(BATCH, D_MODEL)`` batches in the order ``sae.train(seed=seed)`` draws them."""
    generator = make_generator(seed, source.device)
    while True:
        yield activations_for(source, 1, BATCH, generator)[0]


def options(kind: str) -> dict[str, object]:
    """superpose's keyword arguments for ``kind``."""
    return {
        "relu": {"l1_coefficient": L1},
        "topk": {"k": K},
        "batchtopk": {"k": K},
        "jumprelu": {"l0_coefficient": L0, "bandwidth": BANDWIDTH},
        "matryoshka": {"k": K, "prefixes": list(PREFIXES)},
    }[kind]


def train_ours(
    kind: str, source: sae.Superposed, seed: int, steps: int, decoder_norm: float = 1.0
) -> sae.SparseAutoencoder:
    """superpose's SAE trained by :func:`superpose.sae.train`.

    ``decoder_norm`` scales the initial decoder rows and encoder alike (``W_enc = W_decᵀ``
    still holds) and JumpReLU's initial θ, which is ``0.1 · decoder_norm``: 1 is superpose's
    own initialisation, :data:`SAELENS_DECODER_NORM` SAELens's (the init-norm swap).
    """
    extra = {"threshold_init": THRESHOLD_RATIO * decoder_norm} if kind == "jumprelu" else {}
    model = sae.SAE(kind, 1, D_MODEL, D_SAE, seed=seed, **options(kind), **extra)
    with torch.no_grad():
        model.W_dec.mul_(decoder_norm)
        model.W_enc.mul_(decoder_norm)
    sae.train(model, source, steps=steps, batch_size=BATCH, lr=LR, seed=seed, progress=False)
    return model


def train_saelens(
    kind: str,
    source: sae.Superposed,
    seed: int,
    steps: int,
    decoder_norm: float = SAELENS_DECODER_NORM,
) -> sae.SparseAutoencoder:
    """SAELens's training SAE trained by SAELens's ``SAETrainer`` on our batches.

    ``decoder_norm``: SAELens's ``decoder_init_norm`` (its default unless swapped); JumpReLU's
    initial θ is ``0.1 · decoder_norm`` (SAELens's default 0.01 at its default norm).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sae_lens.config import LoggingConfig, SAETrainerConfig
        from sae_lens.saes import (
            BatchTopKTrainingSAE,
            BatchTopKTrainingSAEConfig,
            JumpReLUTrainingSAE,
            JumpReLUTrainingSAEConfig,
            MatryoshkaBatchTopKTrainingSAE,
            MatryoshkaBatchTopKTrainingSAEConfig,
            StandardTrainingSAE,
            StandardTrainingSAEConfig,
            TopKTrainingSAE,
            TopKTrainingSAEConfig,
        )
        from sae_lens.training.sae_trainer import SAETrainer
    shape = {"d_in": D_MODEL, "d_sae": D_SAE, "decoder_init_norm": decoder_norm}
    threshold = THRESHOLD_RATIO * decoder_norm
    built = {
        "relu": lambda: StandardTrainingSAE(StandardTrainingSAEConfig(**shape, l1_coefficient=L1)),
        "topk": lambda: TopKTrainingSAE(TopKTrainingSAEConfig(**shape, k=K)),
        "batchtopk": lambda: BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**shape, k=K)),
        "jumprelu": lambda: JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(
                **shape,
                l0_coefficient=L0,
                jumprelu_bandwidth=BANDWIDTH,
                jumprelu_init_threshold=threshold,
            )
        ),
        "matryoshka": lambda: MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(**shape, k=K, matryoshka_widths=list(PREFIXES))
        ),
    }
    torch.manual_seed(seed + PLAIN_INIT_OFFSET + 1)  # SAELens initialises from torch's global RNG
    model = built[kind]()
    config = SAETrainerConfig(
        total_training_samples=steps * BATCH,
        train_batch_size_samples=BATCH,
        lr=LR,
        lr_end=LR,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False),
    )
    with warnings.catch_warnings(), open(os.devnull, "w") as null:
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(null):  # its progress bar
            SAETrainer(cfg=config, sae=model, data_provider=batches(source, seed)).fit()
        return sae.from_saelens(model)


class Plain(torch.nn.Module):
    """A plain SAE of ``kind``: ``z = σ((x − b_dec) W_enc + b_enc)``, ``x̂ = z W_dec + b_dec``."""

    def __init__(self, kind: str, generator: torch.Generator) -> None:
        super().__init__()
        rows = torch.randn(D_SAE, D_MODEL, generator=generator)
        self.kind = kind
        self.W_dec = torch.nn.Parameter(rows / rows.norm(dim=1, keepdim=True))
        self.W_enc = torch.nn.Parameter(self.W_dec.detach().T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(D_SAE))
        self.b_dec = torch.nn.Parameter(torch.zeros(D_MODEL))
        self.log_threshold = torch.nn.Parameter(torch.full((D_SAE,), math.log(0.1)))
        self.register_buffer("threshold", torch.tensor(-1.0))  # BatchTopK's inference θ

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (per prefix for Matryoshka) plus the kind's penalty."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        if self.kind == "relu":
            z = torch.relu(pre)
            penalty = L1 * (z * self.W_dec.norm(dim=1)).sum(1).mean()
        elif self.kind == "topk":
            values, indices = pre.topk(K, dim=1)
            z = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
            penalty = pre.new_zeros(())
        elif self.kind in ("batchtopk", "matryoshka"):
            values, indices = pre.flatten().topk(K * len(x))
            z = torch.zeros_like(pre).flatten().scatter(0, indices, torch.relu(values))
            z = z.view_as(pre)
            kept = z[z > 0]
            if len(kept):
                smallest = kept.min().detach()
                average = 0.99 * self.threshold + 0.01 * smallest
                self.threshold.copy_(smallest if self.threshold < 0 else average)
            penalty = pre.new_zeros(())
        else:  # jumprelu: straight-through θ gradients through a rectangle kernel
            theta = self.log_threshold.exp()
            window = ((pre - theta).abs() < BANDWIDTH / 2).float() / BANDWIDTH
            gate = (pre > theta).float()
            moved = theta - theta.detach()  # 0, with gradient 1 into θ
            z = pre * gate - moved * (theta * window).detach()  # ∂z/∂θ = −θ K/ε
            gate_st = gate - moved * window.detach()  # ∂H/∂θ = −K/ε
            penalty = L0 * gate_st.sum(1).mean()
        widths = PREFIXES if self.kind == "matryoshka" else (D_SAE,)
        mse = sum(((z[:, :m] @ self.W_dec[:m] + self.b_dec - x) ** 2).sum(1).mean() for m in widths)
        return mse + penalty


def train_plain(kind: str, source: sae.Superposed, seed: int, steps: int) -> sae.SparseAutoencoder:
    """:class:`Plain` trained by plain Adam, copied into a superpose SAE for scoring."""
    plain = Plain(kind, torch.Generator().manual_seed(seed + PLAIN_INIT_OFFSET))
    optimizer = torch.optim.Adam(plain.parameters(), lr=LR)
    stream = batches(source, seed)
    for _ in range(steps):
        loss = plain.loss(next(stream))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if kind != "relu":
            with torch.no_grad():
                plain.W_dec /= plain.W_dec.norm(dim=1, keepdim=True)
    model = sae.SAE(kind, 1, D_MODEL, D_SAE, **options(kind))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(model, name).copy_(getattr(plain, name)[None])
        if kind == "jumprelu":
            model.log_threshold.copy_(plain.log_threshold[None])
        if kind in ("batchtopk", "matryoshka"):
            model.threshold.fill_(plain.threshold.item())
    return model.eval()


TRAINERS = {"superpose": train_ours, "saelens": train_saelens, "plain": train_plain}
COLUMNS = ["mcc", "f1", "latent_f1", "explained_variance", "l0", "dead_fraction"]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread (max − min over seeds) per kind and implementation."""
    grouped = frame.groupby(["kind", "implementation"], sort=False)[COLUMNS]
    return grouped.mean().join((grouped.max() - grouped.min()).add_suffix("_spread"))


def scores(model: sae.SparseAutoencoder, source: sae.Superposed, seed: int) -> dict[str, float]:
    """:data:`COLUMNS` of ``model`` on the 16,384 evaluation samples of seed ``seed``."""
    frame = sae.evaluate(model, source, seed=seed + 100, chance_draws=0)
    return {column: float(frame[column].iloc[0]) for column in COLUMNS}


def show(row: dict[str, object]) -> None:
    """Print ``row`` with its numbers rounded."""
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})


def swap(steps: int, seed: int) -> list[dict[str, object]]:
    """superpose and SAELens on :data:`SWAP_KINDS`, each at its own decoder norm at
    initialisation and at the other's (one seed)."""
    rows: list[dict[str, object]] = []
    source = world(seed)
    for kind in SWAP_KINDS:
        for implementation, norm in (
            ("superpose", 1.0),
            ("superpose", SAELENS_DECODER_NORM),
            ("saelens", SAELENS_DECODER_NORM),
            ("saelens", 1.0),
        ):
            began = time.perf_counter()
            trainer = train_ours if implementation == "superpose" else train_saelens
            model = trainer(kind, source, seed, steps, decoder_norm=norm)
            row = {"seed": seed, "steps": steps, "kind": kind, "implementation": implementation}
            row |= {"decoder_norm": norm} | scores(model, source, seed)
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
            show(row)
    return rows


def main(results: Path, device: str = "cpu", quick: bool = False, init_swap: bool = False) -> None:
    """Train every kind three ways per seed; store ``results/sae_crosscheck/metrics.csv``
    and print the per-kind means and seed spreads. ``init_swap``: instead, train
    :data:`SWAP_KINDS` with the decoder norms at initialisation swapped, seed ``SEEDS[0]``,
    into ``init_swap.csv``."""
    steps, seeds = (QUICK_STEPS, SEEDS[:1]) if quick else (STEPS, SEEDS)
    out = results / "sae_crosscheck"
    start = time.perf_counter()
    if init_swap:
        with cpu_threads(1):
            rows = swap(steps, seeds[0])
        save_rows(rows, out / "init_swap.csv")
        with pd.option_context("display.width", 250, "display.precision", 3):
            print(pd.DataFrame(rows).drop(columns="seconds").to_string())
        return
    rows = []
    with cpu_threads(1):
        for seed in seeds:
            source = world(seed)
            for kind in KINDS:
                for implementation, trainer in TRAINERS.items():
                    began = time.perf_counter()
                    model = trainer(kind, source, seed, steps)
                    row = {"seed": seed, "kind": kind, "implementation": implementation}
                    row |= scores(model, source, seed)
                    row["seconds"] = time.perf_counter() - began
                    rows.append(row)
                    show(row)
    save_rows(rows, out / "metrics.csv")
    config = {"steps": steps, "seeds": list(seeds), "n_features": N_FEATURES}
    config |= {"probability": PROBABILITY, "d_model": D_MODEL, "d_sae": D_SAE, "k": K}
    config |= {"l1_coefficient": L1, "l0_coefficient": L0, "lr": LR, "batch_size": BATCH}
    save_json(config | {"seconds": time.perf_counter() - start}, out / "config.json")
    with pd.option_context(
        "display.width", 250, "display.max_columns", None, "display.precision", 3
    ):
        print(summary(pd.DataFrame(rows)))


if __name__ == "__main__":
    experiment_script(
        main,
        __doc__,
        {"init_swap": "ReLU and JumpReLU with the libraries' decoder norms at init swapped"},
    )
