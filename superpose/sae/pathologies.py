"""SAE pathologies measured exactly against known features: absorption, splitting, hedging.

On language models these failure modes are estimated with probes; on a
:class:`~superpose.sae.Superposed` source the true directions, firing and hierarchy are known,
so each has an exact definition here. Every score is computed per SAE instance from a
dictionary (an SAE, or a decoder ``W_dec: (instance, d_sae, d_model)`` with an ``encode``
function ``(instance, batch, d_model) → (instance, batch, d_sae)``) and a source whose
``directions: (n_features, d_model)`` are the true features. A feature's *matched latent* is
its partner in the one-to-one Hungarian matching of decoder rows to directions by
``max(cos, 0)`` (:func:`superpose.sae.metrics.matching`); a feature has none when ``d_sae <
n_features`` leaves it out or its partner's cosine is ``≤ 0``. Latents are non-negative, so a
latent writing ``−d_f`` (one that fires when f is *absent*, e.g. to cancel a ``b_dec`` that
holds f) is not f's latent: the cosines here are signed, unlike
:func:`superpose.sae.metrics.abs_cosines`. A latent *fires* when its
activation is ``> 0``; a feature is *active* when its value is ``≠ 0``.

* **Absorption** (Chanin et al. 2024, "A is for Absorption: Studying Feature Splitting and
  Absorption in Sparse Autoencoders"), per (parent p, child c) pair of a
  :class:`~superpose.data.Hierarchy`, over the samples where both are active:
  ``full_absorption`` = the fraction of them where p's matched latent is silent;
  ``absorption_cosine`` = ``cos(W_dec[c's latent], d_p)``, the parent direction taken into the
  child's latent (partial absorption); ``absorption_share`` = the share of the latents'
  reconstruction along ``d_p``, ``Σ_s Σ_j z_sj ⟨W_dec,j, d_p⟩``, not made by p's latent.
  A perfect dictionary scores 0 on all three; a parent latent that never fires with the child
  scores ``full_absorption = absorption_share = 1`` (the share leaves ``[0, 1]`` only when
  other latents write ``−d_p``). ``parent_miss_alone``, the fraction of
  samples with p active and none of its children where p's latent is silent, is the control:
  a dead or weak parent latent raises it too, an absorbed one does not.
* **Splitting** (Bricken et al. 2023, "Towards Monosemanticity", feature splitting), per true
  feature f: ``split_count`` = the number of latents j with ``cos(W_dec,j, d_f) ≥
  cos_threshold`` that fire and share f's firing, ``P(f active | j fires) ≥
  precision_threshold``. A perfect dictionary gives 1 for every feature (``split_excess``,
  the mean of ``max(split_count − 1, 0)``, is 0); a feature with no such latent gives 0.
* **Hedging** (Chanin et al. 2025, "Feature Hedging: Correlated Features Break Narrow Sparse
  Autoencoders"), per latent j matched to feature f, with ``ŵ = W_dec,j / ‖W_dec,j‖``:
  ``hedging`` = the norm of ŵ's component along the *other* true features, ``‖P_S ŵ −
  ⟨ŵ, d_f⟩ d_f‖`` with ``P_S`` the projection onto the span of all directions (which holds
  ``d_f``, so this is the part of ŵ in that span orthogonal to ``d_f``); for orthonormal
  directions it is ``sqrt(Σ_{g≠f} ⟨ŵ, d_g⟩²)``, and when the directions span the space
  (superposition) every off-feature component counts, ``sin ∠(ŵ, d_f)``.
  ``hedging_correlated`` is the same with ``S`` the span of f's correlated group (f and the
  features it is correlated with), NaN for a feature in no group. A perfect dictionary
  scores 0; a latent ``(d_1 + d_2)/√2`` hedging two orthonormal features scores ``1/√2`` (as
  does a child's latent that absorbed its parent: hedging reads only the geometry).

Each metric returns a table (one row per pair, feature or matched latent) and has a
``*_summary`` giving one row per instance (the means over its rows, NaN rows skipped);
:func:`pathology_scores` gives all the per-instance scalars at once (:data:`SCORES`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from superpose._checks import make_generator, positive_int
from superpose.data import Hierarchy
from superpose.sae.base import SparseAutoencoder
from superpose.sae.metrics import matching
from superpose.sae.sources import ActivationSource, check_source, sample_for

Encode = Callable[[torch.Tensor], torch.Tensor]
"""Latent activations ``(instance, batch, d_sae)`` of inputs ``(instance, batch, d_model)``."""

SCORES = (
    "absorption",
    "absorption_cosine",
    "absorption_share",
    "parent_miss_alone",
    "split_count",
    "split_fraction",
    "split_excess",
    "hedging",
    "hedging_correlated",
)
"""The per-instance scalars of :func:`pathology_scores` (a sweep can store them as columns)."""


def _dictionary(
    model: SparseAutoencoder | torch.Tensor, encode: Encode | None
) -> tuple[torch.Tensor, Encode | None]:
    """The decoder ``(instance, d_sae, d_model)`` (detached) and the encode function (the SAE's
    own for an SAE; ``encode`` as given, possibly None, for a tensor)."""
    if isinstance(model, SparseAutoencoder):
        if encode is not None:
            raise ValueError("encode: give it only with a decoder tensor, not with an SAE")
        return model.W_dec.detach(), model.encode
    if not isinstance(model, torch.Tensor):
        raise TypeError(
            f"model must be an SAE or a decoder tensor (instance, d_sae, d_model), got "
            f"{type(model).__name__}"
        )
    if model.ndim == 2:
        model = model[None]
    if model.ndim != 3:
        raise ValueError(
            f"model: a decoder must be shaped (instance, d_sae, d_model) or (d_sae, d_model), "
            f"got {tuple(model.shape)}"
        )
    if encode is not None and not callable(encode):
        raise TypeError(f"encode must be a function, got {type(encode).__name__}")
    return model.detach(), encode


def _unit_directions(directions: object, d_model: int) -> torch.Tensor:
    """``directions: (n_features, d_model)`` as float64 unit rows."""
    if not isinstance(directions, torch.Tensor):
        raise TypeError(f"directions must be a tensor, got {type(directions).__name__}")
    if directions.ndim != 2 or directions.shape[1] != d_model:
        raise ValueError(
            f"directions must be shaped (n_features, d_model={d_model}), got "
            f"{tuple(directions.shape)}"
        )
    rows = directions.detach().double()
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _cosines(W_dec: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Signed ``cos(W_dec,j, d_f)`` ``(instance, d_sae, n_features)`` in float64 for ``W_dec:
    (instance, d_sae, d_model)`` and unit ``directions: (n_features, d_model)`` (0 for a zero
    row)."""
    W = W_dec.double()
    return (W / W.norm(dim=-1, keepdim=True).clamp_min(1e-300)) @ directions.T


def _matched_latent(cosines: torch.Tensor) -> torch.Tensor:
    """``(instance, n_features)`` each feature's matched latent for signed ``cosines:
    (instance, d_sae, n_features)``, matched by ``max(cos, 0)``; -1 for none (unmatched, or a
    partner with cosine ``≤ 0``)."""
    latents, features = matching(cosines.clamp_min(0))
    positive = torch.gather(cosines.flatten(1), 1, latents * cosines.shape[2] + features) > 0
    matched = torch.full(cosines.shape[::2], -1, dtype=torch.long, device=cosines.device)
    return matched.scatter(1, features, torch.where(positive, latents, -1))


def _check_probability(name: str, value: object) -> float:
    """``value`` as a float, or a ValueError unless it is a number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@contextmanager
def _inference(model: SparseAutoencoder | torch.Tensor) -> Iterator[None]:
    """An SAE in inference mode (restored afterwards) with no gradients."""
    was_training = isinstance(model, SparseAutoencoder) and model.training
    if isinstance(model, SparseAutoencoder):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _chunks(
    W_dec: torch.Tensor,
    encode: Encode | None,
    source: ActivationSource,
    n_samples: int,
    seed: int | torch.Generator,
    batch_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Latents ``(instance, rows, d_sae)`` and features ``(instance, rows, n_features)`` of
    ``n_samples`` fresh samples per instance, in chunks of at most ``batch_size`` rows, for a
    ``source`` already checked against ``W_dec: (instance, d_sae, d_model)``."""
    if encode is None:
        raise TypeError("encode is required with a decoder tensor: a function x → latents")
    n_instances, d_sae, _ = W_dec.shape
    n_samples = positive_int("n_samples", n_samples)
    batch_size = positive_int("batch_size", batch_size)
    generator = make_generator(seed, source.features.device)
    for start in range(0, n_samples, batch_size):
        rows = min(batch_size, n_samples - start)
        x, f = sample_for(source, n_instances, rows, generator)
        z = encode(x.to(W_dec.device))
        if not isinstance(z, torch.Tensor) or z.shape != (n_instances, rows, d_sae):
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(
                f"encode must return latents shaped (instance={n_instances}, batch={rows}, "
                f"d_sae={d_sae}) for x shaped {tuple(x.shape)}, got {shape}"
            )
        yield z, f.to(W_dec.device)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, NaN where the denominator is not positive."""
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.nan)


def absorption(
    model: SparseAutoencoder | torch.Tensor,
    source: ActivationSource,
    *,
    encode: Encode | None = None,
    hierarchy: Hierarchy | None = None,
    n_samples: int = 16384,
    seed: int | torch.Generator = 1,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Feature absorption per (parent, child) pair and instance (Chanin et al. 2024; definitions
    in the module docstring).

    Args:
        model: an SAE (scored in inference mode), or decoder weights ``(instance, d_sae,
            d_model)`` / ``(d_sae, d_model)`` with ``encode``.
        source: activations with known ``directions: (n_features, d_model)`` (one instance,
            shared, or one per SAE instance).
        encode: with a decoder tensor: ``x: (instance, batch, d_model) → z: (instance, batch,
            d_sae)``.
        hierarchy: whose parent-child pairs to score (default: the source features'
            hierarchy); every direct pair ``(parent[c], c)``.
        n_samples: fresh samples per instance; ``seed`` seeds them; ``batch_size`` rows per
            chunk.

    Returns:
        One row per instance and pair: ``instance``, ``parent``, ``child``, their matched
        latents ``parent_latent`` and ``child_latent`` (-1: none), ``co_occurrences`` (samples
        with both active), ``full_absorption``, ``parent_miss_alone``, ``absorption_cosine``,
        ``absorption_share`` (NaN where undefined: no matched latent, no co-occurrence, or
        nothing reconstructed along the parent).
    """
    W_dec, encode = _dictionary(model, encode)
    check_source(source, W_dec.shape[0], W_dec.shape[2])
    hierarchy = source.features.hierarchy if hierarchy is None else hierarchy
    if hierarchy is None:
        raise ValueError("hierarchy: the source's features have none; pass hierarchy=Hierarchy")
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"hierarchy must be a superpose.data.Hierarchy, got {hierarchy!r}")
    hierarchy.depth(source.n_features)  # validates its length and indices
    pairs = [(int(p), c) for c, p in enumerate(hierarchy.parent) if int(p) >= 0]
    if not pairs:
        raise ValueError("hierarchy has no parent-child pair (every parent is -1)")
    device = W_dec.device
    parents = torch.tensor([p for p, _ in pairs], device=device)
    children = torch.tensor([c for _, c in pairs], device=device)
    directions = _unit_directions(source.directions, W_dec.shape[2]).to(device)
    matched = _matched_latent(_cosines(W_dec, directions))  # (instance, n_features)
    parent_latent, child_latent = matched[:, parents], matched[:, children]  # (instance, pair)

    W = W_dec.double()
    unit = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    child_rows = unit.gather(1, child_latent.clamp_min(0)[..., None].expand(-1, -1, W.shape[2]))
    cosine = (child_rows * directions[parents]).sum(-1)  # (instance, pair)
    along = W @ directions[parents].T  # (instance, d_sae, pair): ⟨W_dec,j, d_p⟩
    parent_along = along.gather(1, parent_latent.clamp_min(0)[:, None, :])  # (instance, 1, pair)

    shape = parent_latent.shape
    both, missed, alone, missed_alone, total, by_parent = (
        torch.zeros(shape, dtype=torch.float64, device=device) for _ in range(6)
    )
    with _inference(model):
        for z, f in _chunks(W_dec, encode, source, n_samples, seed, batch_size):
            parent_on, child_on = f[:, :, parents] != 0, f[:, :, children] != 0
            active_children = torch.zeros_like(f).index_add_(2, parents, child_on.to(f.dtype))
            childless = active_children[:, :, parents] == 0  # no child of the pair's parent
            index = parent_latent.clamp_min(0)[:, None, :].expand(-1, z.shape[1], -1)
            z_parent = z.gather(2, index).double()  # (instance, rows, pair)
            silent = z_parent <= 0
            together = parent_on & child_on
            without = parent_on & childless
            both += together.sum(1)
            missed += (together & silent).sum(1)
            alone += without.sum(1)
            missed_alone += (without & silent).sum(1)
            total += (torch.bmm(z.float(), along.float()).double() * together).sum(1)
            by_parent += (z_parent * parent_along * together).sum(1)

    has_parent_latent = parent_latent >= 0
    nan = torch.tensor(torch.nan, dtype=torch.float64, device=device)
    columns = {
        "full_absorption": torch.where(has_parent_latent, _ratio(missed, both), nan),
        "parent_miss_alone": torch.where(has_parent_latent, _ratio(missed_alone, alone), nan),
        "absorption_cosine": torch.where(child_latent >= 0, cosine, nan),
        "absorption_share": torch.where(
            has_parent_latent & (both > 0), 1 - _ratio(by_parent, total), nan
        ),
    }
    n_instances, n_pairs = shape
    table = pd.DataFrame(
        {
            "instance": np.repeat(np.arange(n_instances), n_pairs),
            "parent": np.tile(parents.cpu().numpy(), n_instances),
            "child": np.tile(children.cpu().numpy(), n_instances),
            "parent_latent": parent_latent.flatten().cpu().numpy(),
            "child_latent": child_latent.flatten().cpu().numpy(),
            "co_occurrences": both.flatten().long().cpu().numpy(),
        }
    )
    for name, values in columns.items():
        table[name] = values.flatten().cpu().numpy()
    return table


def absorption_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per instance of :func:`absorption`'s table: the means over its pairs (each pair
    weighted equally, NaN skipped) ``absorption`` (of ``full_absorption``),
    ``absorption_cosine``, ``absorption_share`` and ``parent_miss_alone``."""
    names = ("absorption_cosine", "absorption_share", "parent_miss_alone")
    return _means(pairs, {"absorption": "full_absorption", **{name: name for name in names}})


def splitting(
    model: SparseAutoencoder | torch.Tensor,
    source: ActivationSource,
    *,
    encode: Encode | None = None,
    cos_threshold: float = 0.8,
    precision_threshold: float = 0.5,
    n_samples: int = 16384,
    seed: int | torch.Generator = 1,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Feature splitting per true feature and instance (Bricken et al. 2023; definition in the
    module docstring).

    Args:
        model, source, encode, n_samples, seed, batch_size: as :func:`absorption`.
        cos_threshold: the cosine in ``[0, 1]`` a latent's decoder needs with the feature. The
            default 0.8 leaves out a latent ``(d_p + d_c)/√2`` that absorbed a parent (0.707):
            absorption is scored by :func:`absorption`.
        precision_threshold: in ``[0, 1]``, the least fraction of a latent's firing on samples
            where the feature is active.

    Returns:
        One row per instance and feature: ``instance``, ``feature``, ``aligned`` (latents past
        the cosine threshold) and ``split_count`` (of those, the ones that fire and share the
        feature's firing).
    """
    W_dec, encode = _dictionary(model, encode)
    check_source(source, W_dec.shape[0], W_dec.shape[2])
    cos_threshold = _check_probability("cos_threshold", cos_threshold)
    precision_threshold = _check_probability("precision_threshold", precision_threshold)
    cosines = _cosines(W_dec, _unit_directions(source.directions, W_dec.shape[2]).to(W_dec.device))
    instance, latent, feature = (cosines >= cos_threshold).nonzero(as_tuple=True)  # (pair,) each
    fires = torch.zeros(instance.shape, dtype=torch.float64, device=W_dec.device)
    shared = torch.zeros_like(fires)
    with _inference(model):
        for z, f in _chunks(W_dec, encode, source, n_samples, seed, batch_size):
            fired = z[instance, :, latent] > 0  # (pair, rows)
            fires += fired.sum(1)
            shared += (fired & (f[instance, :, feature] != 0)).sum(1)
    splits = (fires > 0) & (shared >= precision_threshold * fires)
    n_instances, _, n_features = cosines.shape
    aligned = torch.zeros(n_instances, n_features, dtype=torch.long, device=W_dec.device)
    aligned.index_put_((instance, feature), torch.ones_like(instance), accumulate=True)
    count = torch.zeros_like(aligned)
    count.index_put_((instance, feature), splits.long(), accumulate=True)
    return pd.DataFrame(
        {
            "instance": np.repeat(np.arange(n_instances), n_features),
            "feature": np.tile(np.arange(n_features), n_instances),
            "aligned": aligned.flatten().cpu().numpy(),
            "split_count": count.flatten().cpu().numpy(),
        }
    )


def splitting_summary(features: pd.DataFrame) -> pd.DataFrame:
    """One row per instance of :func:`splitting`'s table: ``split_count`` (mean latents per
    feature), ``split_fraction`` (of features with 2 or more) and ``split_excess`` (mean
    ``max(split_count − 1, 0)``, the extra latents per feature: 0 for a perfect dictionary)."""
    table = features.assign(
        split_fraction=(features["split_count"] >= 2).astype(float),
        split_excess=(features["split_count"] - 1).clip(lower=0).astype(float),
    )
    return _means(table, {name: name for name in ("split_count", "split_fraction", "split_excess")})


def _groups(groups: object, n_features: int) -> list[list[int]]:
    """Validated disjoint correlated groups of feature indices."""
    if isinstance(groups, str | torch.Tensor) or not isinstance(groups, Sequence):
        raise TypeError(f"correlated must be a list of lists of feature indices, got {groups!r}")
    seen: set[int] = set()
    checked = []
    for group in groups:
        if isinstance(group, str) or not isinstance(group, Sequence):
            raise TypeError(f"correlated: each group must be a list of indices, got {group!r}")
        members = [int(i) for i in group]
        if any(not 0 <= i < n_features for i in members) or len(members) < 2:
            raise ValueError(
                f"correlated: each group needs 2 or more indices in [0, {n_features - 1}], "
                f"got {list(group)}"
            )
        if seen & set(members) or len(set(members)) != len(members):
            raise ValueError(f"correlated: the groups must be disjoint, got {groups!r}")
        seen |= set(members)
        checked.append(members)
    return checked


def _span(directions: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis ``(d_model, rank)`` of the span of ``directions: (k, d_model)``."""
    u, s, _ = torch.linalg.svd(directions.T, full_matrices=False)
    return u[:, s > s[0] * 1e-9]


def hedging(
    model: SparseAutoencoder | torch.Tensor,
    source: ActivationSource | torch.Tensor,
    *,
    correlated: Sequence[Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Feature hedging per matched latent and instance (Chanin et al. 2025; definition in the
    module docstring). Needs no samples.

    Args:
        model: an SAE, or decoder weights ``(instance, d_sae, d_model)`` / ``(d_sae,
            d_model)``.
        source: a source (its ``directions``) or the directions ``(n_features, d_model)``.
        correlated: disjoint groups of mutually correlated features (default: a source's
            ``features.correlated_sets``; none for a directions tensor).

    Returns:
        One row per instance and matched latent: ``instance``, ``latent``, ``feature``,
        ``cosine`` (with its feature), ``hedging``, ``hedging_correlated`` (NaN for a
        feature in no group or a zero decoder row).
    """
    W_dec, _ = _dictionary(model, None)
    if isinstance(source, ActivationSource):
        groups = source.features.correlated_sets if correlated is None else correlated
        source = source.directions
    elif isinstance(source, torch.Tensor):
        groups = [] if correlated is None else correlated
    else:
        raise TypeError(
            f"source must be a superpose.sae source or a directions tensor, got "
            f"{type(source).__name__}"
        )
    directions = _unit_directions(source, W_dec.shape[2]).to(W_dec.device)
    groups = _groups(groups, directions.shape[0])
    W = W_dec.double()
    norms = W.norm(dim=-1, keepdim=True)
    unit = W / norms.clamp_min(1e-300)
    latents, features = matching((unit @ directions.T).clamp_min(0))  # (instance, matched)
    rows = unit.gather(1, latents[..., None].expand(-1, -1, W.shape[2]))  # (instance, m, d)
    cosine = (rows * directions[features]).sum(-1)  # (instance, m)
    residual = rows - cosine[..., None] * directions[features]  # ŵ − ⟨ŵ, d_f⟩ d_f
    zero = norms.squeeze(-1).gather(1, latents) == 0
    hedged = torch.where(zero, torch.nan, (residual @ _span(directions)).norm(dim=-1))
    hedged_correlated = torch.full_like(hedged, torch.nan)
    for group in groups:
        members = torch.isin(features, torch.tensor(group, device=features.device))
        spread = (residual @ _span(directions[group])).norm(dim=-1)
        hedged_correlated = torch.where(members & ~zero, spread, hedged_correlated)
    n_instances, n_matched = latents.shape
    return pd.DataFrame(
        {
            "instance": np.repeat(np.arange(n_instances), n_matched),
            "latent": latents.flatten().cpu().numpy(),
            "feature": features.flatten().cpu().numpy(),
            "cosine": cosine.flatten().cpu().numpy(),
            "hedging": hedged.flatten().cpu().numpy(),
            "hedging_correlated": hedged_correlated.flatten().cpu().numpy(),
        }
    )


def hedging_summary(latents: pd.DataFrame) -> pd.DataFrame:
    """One row per instance of :func:`hedging`'s table: mean ``hedging`` and mean
    ``hedging_correlated`` over its matched latents (NaN skipped)."""
    return _means(latents, {"hedging": "hedging", "hedging_correlated": "hedging_correlated"})


def _means(table: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Per-instance means (NaN skipped) of ``table``'s columns, renamed ``summary name →
    column``; one row per instance in order."""
    means = table.groupby("instance", sort=True)[list(columns.values())].mean()
    out = pd.DataFrame({"instance": means.index.to_numpy()})
    for name, column in columns.items():
        out[name] = means[column].to_numpy(dtype=float)
    return out


def pathology_scores(
    model: SparseAutoencoder | torch.Tensor,
    source: ActivationSource,
    *,
    encode: Encode | None = None,
    hierarchy: Hierarchy | None = None,
    correlated: Sequence[Sequence[int]] | None = None,
    cos_threshold: float = 0.8,
    precision_threshold: float = 0.5,
    n_samples: int = 16384,
    seed: int | torch.Generator = 1,
    batch_size: int = 4096,
) -> pd.DataFrame:
    """All per-instance scalars: one row per instance with ``instance`` and :data:`SCORES`
    (the absorption columns NaN when neither ``hierarchy`` nor the source's features give a
    hierarchy). Arguments as :func:`absorption`, :func:`splitting` and :func:`hedging`."""
    options = {"n_samples": n_samples, "seed": seed, "batch_size": batch_size}
    split = splitting(
        model,
        source,
        encode=encode,
        cos_threshold=cos_threshold,
        precision_threshold=precision_threshold,
        **options,
    )
    scores = splitting_summary(split).merge(
        hedging_summary(hedging(model, source, correlated=correlated))
    )
    if hierarchy is None and source.features.hierarchy is None:
        for name in SCORES[:4]:
            scores[name] = np.nan
    else:
        pairs = absorption(model, source, encode=encode, hierarchy=hierarchy, **options)
        scores = scores.merge(absorption_summary(pairs))
    return scores[["instance", *SCORES]]
