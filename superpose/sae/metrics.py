"""Recovery scores: how well an SAE's dictionary and latents match the true features.

Dictionary scores (:func:`feature_recovery`) compare decoder rows with the true directions
through ``C_jf = |cos(W_dec,j, d_f)|`` ``(instance, d_sae, n_features)``, so they do not
depend on latent order, sign or decoder scale (a zero row has cosine 0):

* ``mmcs``: mean over features of the best ``C`` in the dictionary (mean max cosine
  similarity, Sharkey et al. 2022);
* ``mcc``: mean ``C`` over a one-to-one matching of latents to features maximising the total
  (Hungarian, ``scipy.optimize.linear_sum_assignment``; ``min(d_sae, n_features)`` pairs);
* ``recovered``: fraction of features whose best ``C`` exceeds ``threshold`` (0.9).

None of them starts at 0: a random dictionary has some ``|cos|`` with every direction, and
the best of many is large (a random 256 × 32 dictionary scores MMCS ≈ 0.51 against 32 random
directions in 32 dimensions, ≈ 0.95 with 5 latents for 5 directions in 2 dimensions).
:func:`random_baseline` measures that chance level, and both functions below report it
beside each score (``mmcs_chance``, ``mcc_chance``, ``recovered_chance``).

:func:`evaluate` adds scores on fresh samples of a source.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from superpose._checks import finite_real, make_generator, positive_int
from superpose.sae.base import SparseAutoencoder
from superpose.sae.sources import (
    ActivationSource,
    Source,
    activations_for,
    check_source,
    sample_for,
)

SCORES = ("mmcs", "mcc", "recovered")
"""The dictionary scores of :func:`feature_recovery` (and their chance levels)."""
CHANCE_DRAWS = 4
"""Random dictionaries behind the ``*_chance`` columns of :func:`feature_recovery` and
:func:`evaluate` (their spread at 256 latents is about 0.01, see :func:`random_baseline`)."""


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


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise a ValueError naming ``name`` if ``tensor`` (instance-first when 3-D) holds NaN or
    inf (a diverged SAE): no score of such a dictionary means anything."""
    finite = torch.isfinite(tensor)
    if finite.all():
        return
    where = ""
    if tensor.ndim == 3:
        where = f" in instance(s) {(~finite).flatten(1).any(1).nonzero().flatten().tolist()}"
    raise ValueError(f"{name} has non-finite entries (NaN or inf){where}; it cannot be scored")


def abs_cosines(
    sae_or_W_dec: SparseAutoencoder | torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """``|cos|`` between every decoder row and every true direction, ``(instance, d_sae,
    n_features)``, for ``W_dec: (instance, d_sae, d_in)`` (or ``(d_sae, d_in)``) and
    ``directions: (n_features, d_in)``; a ValueError if either has NaN or inf entries."""
    W_dec = _decoder(sae_or_W_dec).float()
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"directions must be a tensor, got {type(directions).__name__}")
    if directions.ndim != 2 or directions.shape[1] != W_dec.shape[2]:
        raise ValueError(
            f"directions must be shaped (n_features, d_in={W_dec.shape[2]}), got "
            f"{tuple(directions.shape)}"
        )
    _check_finite("sae_or_W_dec", W_dec)
    _check_finite("directions", directions)
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
    if not isinstance(cosines, torch.Tensor) or cosines.ndim != 3:
        raise ValueError("cosines must be a tensor shaped (instance, d_sae, n_features)")
    _check_finite("cosines", cosines)
    pairs = [linear_sum_assignment(c.cpu().double().numpy(), maximize=True) for c in cosines]
    latents = torch.as_tensor(np.stack([rows for rows, _ in pairs]), device=cosines.device)
    features = torch.as_tensor(np.stack([columns for _, columns in pairs]), device=cosines.device)
    return latents, features


def feature_recovery(
    sae_or_W_dec: SparseAutoencoder | torch.Tensor,
    directions: torch.Tensor,
    threshold: float = 0.9,
    *,
    chance_draws: int = CHANCE_DRAWS,
) -> pd.DataFrame:
    """Dictionary scores per instance: a DataFrame with one row per instance and columns
    ``instance``, ``mmcs``, ``mcc``, ``recovered`` (see the module docstring) and their
    chance levels ``mmcs_chance``, ``mcc_chance``, ``recovered_chance``: the mean scores of
    ``chance_draws`` random unit dictionaries of the same size against the same directions
    (:func:`random_baseline` with seed 0; the same in every row). A score is only as good as
    its distance above its chance level.

    Args:
        sae_or_W_dec: an SAE, or decoder weights ``(instance, d_sae, d_in)`` / ``(d_sae,
            d_in)``.
        directions: ``(n_features, d_in)`` the true feature directions.
        threshold: ``|cos|`` above which a feature counts as recovered, in ``(0, 1)``.
        chance_draws: random dictionaries for the chance columns (at least 2); 0 leaves the
            columns out (each draw costs one more matching of the dictionary's size).

    Raises:
        ValueError: bad shapes, a threshold outside ``(0, 1)``, or NaN/inf in the decoder
            or the directions.
    """
    threshold = _check_threshold(threshold)
    chance_draws = _check_chance_draws(chance_draws)
    cosines = abs_cosines(sae_or_W_dec, directions)
    table = _recovery(cosines, threshold)[0]
    return _with_chance(table, directions, cosines.shape[1], threshold, chance_draws)


def _check_threshold(threshold: float) -> float:
    """``threshold`` as a float in ``(0, 1)``: a feature counts as recovered when its best
    ``|cos|`` (at most 1) is strictly above it, so 1 or more would never count one."""
    threshold = finite_real("threshold", threshold)
    if not 0 < threshold < 1:
        raise ValueError(
            f"threshold is the |cos| above which a feature counts as recovered and must lie "
            f"in (0, 1), got {threshold:g}"
        )
    return threshold


def _check_chance_draws(chance_draws: int) -> int:
    """``chance_draws`` as an int that is 0 or at least 2."""
    if isinstance(chance_draws, bool) or not isinstance(chance_draws, int) or chance_draws < 0:
        raise TypeError(f"chance_draws must be an int >= 0, got {chance_draws!r}")
    if chance_draws == 1:
        raise ValueError("chance_draws must be 0 (no chance columns) or at least 2, got 1")
    return chance_draws


def _with_chance(
    table: pd.DataFrame,
    directions: torch.Tensor,
    d_sae: int,
    threshold: float,
    chance_draws: int,
) -> pd.DataFrame:
    """``table`` with the columns ``<score>_chance`` after ``recovered``: the mean of
    :func:`random_baseline` for ``d_sae`` latents against ``directions: (n_features, d_in)``
    (nothing added for ``chance_draws=0``)."""
    if chance_draws == 0:
        return table
    n_features, d_in = directions.shape
    chance = random_baseline(
        n_features, d_in, d_sae, directions=directions, n_draws=chance_draws, threshold=threshold
    )
    at = table.columns.get_loc("recovered") + 1
    for offset, score in enumerate(SCORES):
        table.insert(at + offset, f"{score}_chance", np.float32(chance.loc[score, "mean"]))
    return table


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


def _no_recovery(n_instances: int, chance_draws: int) -> pd.DataFrame:
    """:func:`feature_recovery`'s columns (with the chance levels where ``chance_draws``), NaN,
    for a source without true directions."""
    nan = np.full(n_instances, np.nan, dtype=np.float32)
    names = [*SCORES, *(f"{name}_chance" for name in SCORES if chance_draws)]
    return pd.DataFrame({"instance": np.arange(n_instances), **dict.fromkeys(names, nan)})


CHANCE_STREAM = "superpose.sae.random_baseline"
"""Names the random stream of :func:`random_baseline`'s ``seed`` (so that its dictionaries are
never an SAE's initial decoder drawn with the same int)."""


@torch.no_grad()
def random_baseline(
    n_features: int,
    d_model: int,
    d_sae: int,
    *,
    directions: torch.Tensor | None = None,
    n_draws: int = 8,
    threshold: float = 0.9,
    seed: int | torch.Generator = 0,
) -> pd.DataFrame:
    """Chance level of the dictionary scores: MMCS, MCC and ``recovered`` of random unit
    dictionaries (uniform on the sphere, what no training gives) of ``d_sae`` latents in
    ``d_model`` dimensions against ``n_features`` true directions, by Monte Carlo.

    A score means something only above this: a random 256 × 32 dictionary scores MMCS ≈ 0.50
    against 32 random directions in 32 dimensions, because the best of 256 random ``|cos|``
    is far from 0. It grows with ``d_sae`` and falls with ``d_model``.

    Args:
        n_features, d_model, d_sae: the shapes scored (``directions: (n_features, d_model)``,
            ``W_dec: (d_sae, d_model)``).
        directions: ``(n_features, d_model)`` the actual true directions, or None: fresh
            random unit directions for every draw.
        n_draws: random dictionaries (at least 2, for the spread).
        threshold: as in :func:`feature_recovery`.
        seed: int (its own stream, :data:`CHANCE_STREAM`) or ``torch.Generator``.

    Returns:
        A DataFrame indexed by score (``mmcs``, ``mcc``, ``recovered``) with columns
        ``mean``, ``std`` (sample standard deviation over the draws), ``min`` and ``max``.
    """
    n_features = positive_int("n_features", n_features)
    d_model = positive_int("d_model", d_model)
    d_sae = positive_int("d_sae", d_sae)
    n_draws = positive_int("n_draws", n_draws)
    if n_draws < 2:
        raise ValueError(f"n_draws must be at least 2 (for the spread), got {n_draws}")
    threshold = _check_threshold(threshold)
    if directions is not None:
        if not isinstance(directions, torch.Tensor):
            raise TypeError(f"directions must be a tensor or None, got {type(directions).__name__}")
        if tuple(directions.shape) != (n_features, d_model):
            raise ValueError(
                f"directions must be shaped (n_features={n_features}, d_model={d_model}), got "
                f"{tuple(directions.shape)}"
            )
        directions = directions.detach().cpu()
    generator = make_generator(seed, stream=CHANCE_STREAM)
    tables = []
    for _ in range(n_draws):  # one draw at a time bounds memory to one (d_sae, n_features)
        dictionary = torch.randn(1, d_sae, d_model, generator=generator)  # (1, d_sae, d_model)
        truth = directions
        if truth is None:
            truth = torch.randn(n_features, d_model, generator=generator)
        tables.append(_recovery(abs_cosines(dictionary, truth), threshold)[0])
    draws = pd.concat(tables, ignore_index=True)[list(SCORES)]  # (n_draws, 3)
    return pd.DataFrame(
        {"mean": draws.mean(), "std": draws.std(), "min": draws.min(), "max": draws.max()}
    )


def _classification(
    both: torch.Tensor, fires: torch.Tensor, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision ``both / fires``, recall ``both / active`` and their F1 from counts of samples
    where a latent fires and its feature is active (``both``), where it fires and where the
    feature is active (all the same shape); each is 0 where its denominator is."""
    precision = torch.where(fires > 0, both / fires.clamp_min(1), 0.0)
    recall = torch.where(active > 0, both / active.clamp_min(1), 0.0)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0
    )
    return precision, recall, f1


@torch.no_grad()
def evaluate(
    sae: SparseAutoencoder,
    source: Source,
    n_samples: int = 16384,
    *,
    seed: int | torch.Generator = 1,
    batch_size: int = 4096,
    chance_draws: int = CHANCE_DRAWS,
) -> pd.DataFrame:
    """Scores of every instance on ``n_samples`` fresh samples of ``source`` (in inference
    mode, e.g. BatchTopK's threshold), one DataFrame row per instance.

    Columns: ``instance``; ``mmcs``, ``mcc``, ``recovered`` and their chance levels
    ``mmcs_chance``, ``mcc_chance``, ``recovered_chance`` (:func:`feature_recovery`);
    ``l0`` mean active latents per sample; ``dead_fraction`` of latents that never fire on
    the samples; ``mse`` ``E‖x − x̂‖²``; ``explained_variance`` ``1 − Σ‖x − x̂‖² / Σ‖x −
    x̄‖²``; ``shrinkage`` ``1 − Σ⟨x̂, x⟩ / Σ‖x‖²`` (0 for exact reconstructions, 1 − c for
    ``x̂ = c x``); and, over the matched latent–feature pairs of :func:`matching`, the mean
    ``precision`` ``P(feature active | latent fires)``, ``recall`` ``P(latent fires | feature
    active)`` and ``f1`` of a latent's firing (``z > 0``) against its feature's activity
    (``f ≠ 0``); a pair with no firing (or no activity) scores 0 there.

    Two F1 definitions sit side by side. ``precision`` / ``recall`` / ``f1`` score the
    ``min(d_sae, n_features)`` one-to-one Hungarian pairs (a latent left out of the matching
    or a feature matched to no latent counts nowhere). ``latent_precision`` /
    ``latent_recall`` / ``latent_f1`` are SynthSAEBench's (SAELens's
    ``sae_lens.synthetic.evals``): every latent is paired with its best feature by ``|cos|``
    of its decoder row (first one on ties; many latents may share a feature, and a feature
    may have none), precision, recall and F1 of "latent fires" against "that feature is
    active" are computed per latent (0 where undefined) and averaged over all ``d_sae``
    latents, dead ones included (they score 0). A duplicated latent therefore counts twice
    here and at most once in the matched version; SAELens tests ``feature > 0``, identical
    to ``f ≠ 0`` for the non-negative features of superpose's sources.

    Args:
        sae: the SAEs to score (their mode is restored afterwards).
        source: its ``d_model`` must equal ``sae.d_in`` (shared or one instance per SAE
            instance, as in training): a feature source or
            :class:`~superpose.sae.Activations`.
        n_samples: samples per instance.
        seed: int or ``torch.Generator`` for the samples.
        batch_size: samples per chunk (bounds memory).
        chance_draws: random dictionaries for the chance columns (at least 2); 0 leaves them
            out.
    """
    check_source(source, sae.n_instances, sae.d_in)
    n_samples = positive_int("n_samples", n_samples)
    batch_size = positive_int("batch_size", batch_size)
    chance_draws = _check_chance_draws(chance_draws)
    device = sae.W_dec.device
    generator = make_generator(seed, source.device)
    has_features = isinstance(source, ActivationSource)  # feature values behind each sample
    _check_finite("sae.W_dec", sae.W_dec.detach())
    if source.directions is None:
        recovery = _no_recovery(sae.n_instances, chance_draws)
        latents = features = torch.zeros(sae.n_instances, 0, dtype=torch.long, device=device)
        best_feature = torch.zeros(sae.n_instances, 0, dtype=torch.long, device=device)
    else:
        cosines = abs_cosines(sae, source.directions)
        recovery, latents, features = _recovery(cosines)
        recovery = _with_chance(recovery, source.directions, sae.d_sae, 0.9, chance_draws)
        latents, features = latents.to(device), features.to(device)
        best_feature = cosines.argmax(2).to(device)  # (instance, d_sae): SynthSAEBench's

    sums = {
        name: torch.zeros(sae.n_instances, dtype=torch.float64, device=device)
        for name in ("error", "x_squared", "projection", "active_latents")
    }
    sum_x = torch.zeros(sae.n_instances, sae.d_in, dtype=torch.float64, device=device)
    ever_fired = torch.zeros(sae.n_instances, sae.d_sae, dtype=torch.bool, device=device)
    both, fires, active = (torch.zeros(latents.shape, device=device) for _ in range(3))
    latent_counts = {  # per latent against its best feature (all d_sae latents)
        name: torch.zeros(sae.n_instances, sae.d_sae, device=device)
        for name in ("both", "fires", "active")
    }
    was_training = sae.training
    sae.eval()
    try:
        for start in range(0, n_samples, batch_size):
            rows = min(batch_size, n_samples - start)
            if has_features:
                x, f = sample_for(source, sae.n_instances, rows, generator)
                x, f = x.to(device), f.to(device)
            else:
                x = activations_for(source, sae.n_instances, rows, generator).to(device)
            z = sae.encode(x)
            reconstruction = sae.decode(z)
            fired = z > 0
            sums["error"] += (reconstruction - x).square().sum((1, 2)).double()
            sums["x_squared"] += x.square().sum((1, 2)).double()
            sums["projection"] += (reconstruction * x).sum((1, 2)).double()
            sums["active_latents"] += fired.sum((1, 2)).double()
            sum_x += x.sum(1).double()
            ever_fired |= fired.any(1)
            if not has_features:
                continue
            latent_fires = torch.gather(fired, 2, latents[:, None, :].expand(-1, rows, -1))
            feature_active = torch.gather(f != 0, 2, features[:, None, :].expand(-1, rows, -1))
            both += (latent_fires & feature_active).sum(1)
            fires += latent_fires.sum(1)
            active += feature_active.sum(1)
            best_active = torch.gather(f != 0, 2, best_feature[:, None, :].expand(-1, rows, -1))
            latent_counts["both"] += (fired & best_active).sum(1)
            latent_counts["fires"] += fired.sum(1)
            latent_counts["active"] += best_active.sum(1)
    finally:
        sae.train(was_training)

    variance = sums["x_squared"] - sum_x.square().sum(-1) / n_samples
    precision, recall, f1 = _classification(both, fires, active)
    latent_precision, latent_recall, latent_f1 = _classification(*latent_counts.values())
    if not has_features:  # no feature values: the pair scores are unknown
        precision = recall = f1 = torch.full((sae.n_instances, 1), torch.nan, device=device)
        latent_precision = latent_recall = latent_f1 = precision
    scores = {
        "l0": sums["active_latents"] / n_samples,
        "dead_fraction": (~ever_fired).double().mean(-1),
        "mse": sums["error"] / n_samples,
        "explained_variance": 1 - sums["error"] / variance,
        "shrinkage": 1 - sums["projection"] / sums["x_squared"],
        "precision": precision.mean(-1),
        "recall": recall.mean(-1),
        "f1": f1.mean(-1),
        "latent_precision": latent_precision.mean(-1),
        "latent_recall": latent_recall.mean(-1),
        "latent_f1": latent_f1.mean(-1),
    }
    for name, values in scores.items():
        recovery[name] = values.float().cpu().numpy()
    return recovery
