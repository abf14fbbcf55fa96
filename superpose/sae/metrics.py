"""Recovery scores: how well an SAE's dictionary and latents match the true features.

Dictionary scores (:func:`feature_recovery`) compare decoder rows with the true directions
through ``C_jf = |cos(W_dec,j, d_f)|`` ``(instance, d_sae, n_features)``, so they do not
depend on latent order, sign or decoder scale (a zero row has cosine 0):

* ``mmcs``: mean over features of the best ``C`` in the dictionary (mean max cosine
  similarity, Sharkey et al. 2022);
* ``mcc``: mean ``C`` over a one-to-one matching of latents to features maximising the total
  (Hungarian, ``scipy.optimize.linear_sum_assignment``; ``min(d_sae, n_features)`` pairs);
* ``recovered``: fraction of features whose best ``C`` exceeds ``threshold`` (0.9).

:func:`evaluate` adds scores on fresh samples of a source.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from superpose._checks import make_generator, positive_int
from superpose.sae.base import SparseAutoencoder
from superpose.sae.sources import ActivationSource, check_source, sample_for


def _decoder(sae_or_W_dec: SparseAutoencoder | torch.Tensor) -> torch.Tensor:
    """``W_dec`` as ``(instance, d_sae, d_in)``."""
    if isinstance(sae_or_W_dec, SparseAutoencoder):
        return sae_or_W_dec.W_dec.detach()
    if not isinstance(sae_or_W_dec, torch.Tensor):
        raise TypeError(
            f"sae_or_W_dec must be an SAE or a tensor, got {type(sae_or_W_dec).__name__}"
        )
    if sae_or_W_dec.ndim == 2:
        return sae_or_W_dec.detach()[None]
    if sae_or_W_dec.ndim != 3:
        raise ValueError(
            "sae_or_W_dec must be shaped (instance, d_sae, d_in) or (d_sae, d_in), got "
            f"{tuple(sae_or_W_dec.shape)}"
        )
    return sae_or_W_dec.detach()


def abs_cosines(
    sae_or_W_dec: SparseAutoencoder | torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """``|cos|`` between every decoder row and every true direction, ``(instance, d_sae,
    n_features)``, for ``W_dec: (instance, d_sae, d_in)`` (or ``(d_sae, d_in)``) and
    ``directions: (n_features, d_in)``."""
    W_dec = _decoder(sae_or_W_dec).float()
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"directions must be a tensor, got {type(directions).__name__}")
    if directions.ndim != 2 or directions.shape[1] != W_dec.shape[2]:
        raise ValueError(
            f"directions must be shaped (n_features, d_in={W_dec.shape[2]}), got "
            f"{tuple(directions.shape)}"
        )
    latents = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    features = directions.detach().float().to(W_dec.device)
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (latents @ features.T).abs()


def matching(cosines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one latent ↔ feature matching maximising the summed ``|cos|``.

    Args:
        cosines: ``(instance, d_sae, n_features)`` from :func:`abs_cosines`.

    Returns:
        ``(latents, features)``, each ``(instance, min(d_sae, n_features))`` int64 on
        ``cosines``' device: pair
        ``p`` of instance ``i`` matches latent ``latents[i, p]`` with ``features[i, p]``.
    """
    pairs = [linear_sum_assignment(c.cpu().double().numpy(), maximize=True) for c in cosines]
    latents = torch.as_tensor(np.stack([rows for rows, _ in pairs]), device=cosines.device)
    features = torch.as_tensor(np.stack([columns for _, columns in pairs]), device=cosines.device)
    return latents, features


def feature_recovery(
    sae_or_W_dec: SparseAutoencoder | torch.Tensor,
    directions: torch.Tensor,
    threshold: float = 0.9,
) -> pd.DataFrame:
    """Dictionary scores per instance: a DataFrame with one row per instance and columns
    ``instance``, ``mmcs``, ``mcc``, ``recovered`` (see the module docstring).

    Args:
        sae_or_W_dec: an SAE, or decoder weights ``(instance, d_sae, d_in)`` / ``(d_sae,
            d_in)``.
        directions: ``(n_features, d_in)`` the true feature directions.
        threshold: ``|cos|`` above which a feature counts as recovered.
    """
    return _recovery(abs_cosines(sae_or_W_dec, directions), threshold)[0]


def _recovery(
    cosines: torch.Tensor, threshold: float = 0.9
) -> tuple[pd.DataFrame, torch.Tensor, torch.Tensor]:
    """:func:`feature_recovery`'s table for ``cosines: (instance, d_sae, n_features)``, with
    the :func:`matching` it used (so that :func:`evaluate` solves it once)."""
    best = cosines.amax(1)  # (instance, n_features)
    latents, features = matching(cosines)
    matched = torch.gather(cosines.flatten(1), 1, latents * cosines.shape[2] + features)
    table = pd.DataFrame(
        {
            "instance": np.arange(cosines.shape[0]),
            "mmcs": best.mean(1).cpu().numpy(),
            "mcc": matched.mean(1).cpu().numpy(),
            "recovered": (best > threshold).float().mean(1).cpu().numpy(),
        }
    )
    return table, latents, features


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    source: ActivationSource,
    n_samples: int = 16384,
    *,
    seed: int | torch.Generator = 1,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Scores of every instance on ``n_samples`` fresh samples of ``source`` (in inference
    mode, e.g. BatchTopK's threshold), one DataFrame row per instance.

    Columns: ``instance``; ``mmcs``, ``mcc``, ``recovered`` (:func:`feature_recovery`);
    ``l0`` mean active latents per sample; ``dead_fraction`` of latents that never fire on
    the samples; ``mse`` ``E‖x − x̂‖²``; ``explained_variance`` ``1 − Σ‖x − x̂‖² / Σ‖x −
    x̄‖²``; ``shrinkage`` ``1 − Σ⟨x̂, x⟩ / Σ‖x‖²`` (0 for exact reconstructions, 1 − c for
    ``x̂ = c x``); and, over the matched latent–feature pairs of :func:`matching`, the mean
    ``precision`` ``P(feature active | latent fires)``, ``recall`` ``P(latent fires | feature
    active)`` and ``f1`` of a latent's firing (``z > 0``) against its feature's activity
    (``f ≠ 0``); a pair with no firing (or no activity) scores 0 there.

    Args:
        sae: the SAEs to score (their mode is restored afterwards).
        source: its ``d_model`` must equal ``sae.d_in`` (shared or one instance per SAE
            instance, as in training).
        n_samples: samples per instance.
        seed: int or ``torch.Generator`` for the samples.
        batch_size: samples per chunk (bounds memory).
    """
    check_source(source, sae.n_instances, sae.d_in)
    n_samples = positive_int("n_samples", n_samples)
    batch_size = positive_int("batch_size", batch_size)
    device = sae.W_dec.device
    generator = make_generator(seed, source.device)
    recovery, latents, features = _recovery(abs_cosines(sae, source.directions))
    latents, features = latents.to(device), features.to(device)

    sums = {
        name: torch.zeros(sae.n_instances, dtype=torch.float64, device=device)
        for name in ("error", "x_squared", "projection", "active_latents")
    }
    sum_x = torch.zeros(sae.n_instances, sae.d_in, dtype=torch.float64, device=device)
    ever_fired = torch.zeros(sae.n_instances, sae.d_sae, dtype=torch.bool, device=device)
    both, fires, active = (torch.zeros(latents.shape, device=device) for _ in range(3))
    was_training = sae.training
    sae.eval()
    try:
        for start in range(0, n_samples, batch_size):
            rows = min(batch_size, n_samples - start)
            x, f = sample_for(source, sae.n_instances, rows, generator)
            x, f = x.to(device), f.to(device)
            z = sae.encode(x)
            reconstruction = sae.decode(z)
            fired = z > 0
            sums["error"] += (reconstruction - x).square().sum((1, 2)).double()
            sums["x_squared"] += x.square().sum((1, 2)).double()
            sums["projection"] += (reconstruction * x).sum((1, 2)).double()
            sums["active_latents"] += fired.sum((1, 2)).double()
            sum_x += x.sum(1).double()
            ever_fired |= fired.any(1)
            latent_fires = torch.gather(fired, 2, latents[:, None, :].expand(-1, rows, -1))
            feature_active = torch.gather(f != 0, 2, features[:, None, :].expand(-1, rows, -1))
            both += (latent_fires & feature_active).sum(1)
            fires += latent_fires.sum(1)
            active += feature_active.sum(1)
    finally:
        sae.train(was_training)

    variance = sums["x_squared"] - sum_x.square().sum(-1) / n_samples
    precision = torch.where(fires > 0, both / fires.clamp_min(1), 0.0)
    recall = torch.where(active > 0, both / active.clamp_min(1), 0.0)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0
    )
    scores = {
        "l0": sums["active_latents"] / n_samples,
        "dead_fraction": (~ever_fired).double().mean(-1),
        "mse": sums["error"] / n_samples,
        "explained_variance": 1 - sums["error"] / variance,
        "shrinkage": 1 - sums["projection"] / sums["x_squared"],
        "precision": precision.mean(-1),
        "recall": recall.mean(-1),
        "f1": f1.mean(-1),
    }
    for name, values in scores.items():
        recovery[name] = values.float().cpu().numpy()
    return recovery
