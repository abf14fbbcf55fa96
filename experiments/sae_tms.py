"""SAEs on a TMS model's hidden layer: ReLU SAE latents find the pentagon; resampling revives
dead latents.

The set-up of ARENA 1.3.1's "sparse autoencoders in toy models": a ReLU-output toy model with
5 features of probability 0.025 in 2 dimensions (its columns form a pentagon), then ReLU SAEs
with 5 latents on its hidden layer, many seeds at once. The L1 weight is ARENA's 0.2 doubled
(ARENA averages the squared error over the 2 input dimensions, :mod:`superpose.sae` sums it).
Three arms, each ``N_SAES`` seeds:

* ``tied init``: the library's initialisation (``W_enc = W_decᵀ``, Gao et al. 2024);
* ``untied init``: the encoder drawn independently of the decoder (Kaiming-uniform, as in
  ARENA's exercise), where latents die;
* ``untied init + resampling``: the same, with dead latents resampled every
  ``RESAMPLE_EVERY`` steps toward badly reconstructed inputs (ARENA: every 2,500 of 20,000).

A latent counts as dead in training when it has not fired on the last 65,536 samples (the
trainer's default window) and in the scores when it never fires on 65,536 fresh samples.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from superpose import SparseFeatures, ToyModel, geometry, sae
from superpose.io import save_rows, save_tensors
from superpose.registry import experiment_script
from superpose.runtime import cpu_threads
from superpose.train import train

N_FEATURES = 5
N_HIDDEN = 2
FEATURE_PROBABILITY = 0.025
MODEL_SEED = 0
MODEL_STEPS = 5000
SAE_BATCH_SEED = 0
"""Seeds the SAEs' training batches (the stream every arm's SAEs see)."""
D_SAE = 5
N_SAES = 16
L1_COEFFICIENT = 0.4
SAE_STEPS = 8000
BATCH_SIZE = 1024
RESAMPLE_EVERY = 1000
EVAL_SAMPLES = 65536

ARMS = {
    "tied init": {"untied": False, "resample_every": None},
    "untied init": {"untied": True, "resample_every": None},
    "untied init + resampling": {"untied": True, "resample_every": RESAMPLE_EVERY},
}
"""Arm name → how its SAEs start and whether dead latents are resampled."""


def untie_encoder(model: sae.SparseAutoencoder, seed: int) -> None:
    """Redraw ``model.W_enc`` ``(instance, d_in, d_sae)`` independently of the decoder,
    uniform on ``±sqrt(6 / (d_in · d_sae))`` (what ARENA's ``kaiming_uniform_`` gives for that
    shape), seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    bound = math.sqrt(6 / (model.d_in * model.d_sae))
    uniform = torch.rand(model.W_enc.shape, generator=generator)
    with torch.no_grad():
        model.W_enc.copy_((2 * uniform - 1) * bound)


def fit_saes(
    source: sae.ActivationSource,
    *,
    untied: bool,
    resample_every: int | None,
    n_saes: int = N_SAES,
    steps: int = SAE_STEPS,
    device: str = "cpu",
) -> tuple[sae.SparseAutoencoder, sae.SAETrainResult]:
    """Train ``n_saes`` ReLU SAEs (seeds ``0..n_saes-1``, one batched module) on ``source``."""
    model = sae.SAE(
        "relu",
        n_saes,
        source.d_model,
        D_SAE,
        l1_coefficient=L1_COEFFICIENT,
        seed=list(range(n_saes)),
    )
    if untied:
        untie_encoder(model, seed=n_saes)
    result = sae.train(
        model,
        source,
        steps=steps,
        batch_size=BATCH_SIZE,
        resample_every=resample_every,
        log_every=max(1, steps // 40),
        seed=SAE_BATCH_SEED,
        device=device,
        progress=False,
    )
    return model, result


@torch.no_grad()
def latent_fires(
    model: sae.SparseAutoencoder, source: sae.ActivationSource, n: int
) -> torch.Tensor:
    """``(instance, d_sae)`` bool: whether each latent fires on any of ``n`` fresh samples."""
    generator = torch.Generator(source.features.device).manual_seed(2)
    x = source.sample(n, generator=generator).to(model.W_dec.device)
    return (model.encode(x.expand(model.n_instances, -1, -1)) > 0).any(1).cpu()


def main(results: Path, device: str = "cpu", quick: bool = False) -> None:
    """Train the toy model and the SAE arms; store ``sae_tms.safetensors`` (the model's ``W``,
    per arm every SAE's weights, which latents fire and the dead fraction over training; the
    config as metadata) and ``metrics.csv``
    (one row per arm and SAE: MMCS, MCC, dead latents, L0, explained variance) in
    ``results/sae_tms``."""
    start = time.perf_counter()
    model_steps, sae_steps, n_saes = (100, 100, 2) if quick else (MODEL_STEPS, SAE_STEPS, N_SAES)
    eval_samples = 4096 if quick else EVAL_SAMPLES
    with cpu_threads(1):
        data = SparseFeatures(N_FEATURES, FEATURE_PROBABILITY, seed=MODEL_SEED, device=device)
        model = ToyModel("relu", 1, N_FEATURES, N_HIDDEN, seed=MODEL_SEED)
        fitted = train(model, data, steps=model_steps, lr=1e-3, device=device, progress=False)
        factors = geometry.tegum_decomposition(model.W.detach())[0].factors
        source = sae.ModelActivations(model, data)
        stored = {"W": model.W.detach().cpu()[0]}
        resampling = {}
        rows = []
        for arm, settings in ARMS.items():
            resample_every = settings["resample_every"]
            if quick and resample_every is not None:
                resample_every = 50
            saes, result = fit_saes(
                source,
                untied=bool(settings["untied"]),
                resample_every=resample_every,
                n_saes=n_saes,
                steps=sae_steps,
                device=device,
            )
            scores = sae.evaluate(saes, source, n_samples=eval_samples)
            fires = latent_fires(saes, source, eval_samples)
            stored[f"{arm}/W_dec"] = saes.W_dec.detach().cpu()
            stored[f"{arm}/W_enc"] = saes.W_enc.detach().cpu()
            stored[f"{arm}/b_dec"] = saes.b_dec.detach().cpu()
            stored[f"{arm}/fires"] = fires
            stored[f"{arm}/history_steps"] = result.history_steps
            stored[f"{arm}/dead_fraction"] = result.history["dead_fraction"]
            resampling[arm] = resample_every
            for row in scores.itertuples():
                rows.append(
                    {
                        "arm": arm,
                        "instance": row.instance,
                        "mmcs": row.mmcs,
                        "mcc": row.mcc,
                        "dead_latents": int((~fires[row.instance]).sum()),
                        "l0": row.l0,
                        "explained_variance": row.explained_variance,
                    }
                )
    config = {
        "n_features": N_FEATURES,
        "n_hidden": N_HIDDEN,
        "feature_probability": FEATURE_PROBABILITY,
        "model_loss": float(fitted.loss[0]),
        "polytopes": [factor.polytope for factor in factors],
        "d_sae": D_SAE,
        "n_saes": n_saes,
        "l1_coefficient": L1_COEFFICIENT,
        "sae_steps": sae_steps,
        "batch_size": BATCH_SIZE,
        "quick": quick,
        "seconds": time.perf_counter() - start,
    }
    folder = Path(results) / "sae_tms"
    save_tensors(
        stored,
        folder / "sae_tms.safetensors",
        {"arms": list(ARMS), "resample_every": resampling, "config": config},
    )
    save_rows(rows, folder / "metrics.csv")


if __name__ == "__main__":
    experiment_script(main, __doc__)
