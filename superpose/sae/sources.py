"""Activation sources with known feature directions: the ground truth SAEs are scored on.

A source turns sparse feature vectors ``f: (instance, batch, n_features)`` from a
:class:`~superpose.data.SparseFeatures` into activations ``(instance, batch, d_model)``
whose true feature directions are known:

* :class:`Superposed`: ``x = f D`` with fixed random unit directions ``D: (n_features,
  d_model)`` (the synthetic set-up of Sharkey et al. 2022, "Taking features out of
  superposition with sparse autoencoders").
* :class:`ModelActivations`: the hidden layer of a trained :class:`~superpose.ToyModel`
  instance, whose directions are that instance's normalised feature columns.

Per-instance / per-feature probabilities, magnitudes and correlated sets come from the
``SparseFeatures``; sampling follows its seeding (its own generator unless one is passed).
Every source is a :class:`superpose.data.ActivationBatchSource`, the SAE trainer's side of
the batch contract (:mod:`superpose.data.source`).
"""

from __future__ import annotations

import torch

from superpose._checks import make_generator, positive_int
from superpose.data import SparseFeatures
from superpose.models import ToyModel


class ActivationSource:
    """Base class: features from ``self.features``, mapped by :meth:`activations`.

    Attributes:
        features: the :class:`~superpose.data.SparseFeatures` behind the activations.
        directions: ``(n_features, d_model)`` each feature's unit direction (a zero row for a
            feature the source does not represent).
    """

    features: SparseFeatures
    directions: torch.Tensor

    @property
    def n_features(self) -> int:
        """Number of true features."""
        return self.features.n_features

    @property
    def d_model(self) -> int:
        """Dimension of the activations."""
        return self.directions.shape[1]

    @property
    def n_instances(self) -> int:
        """Instances of the underlying features (of their finite data set if any, else of
        ``feature_probability``): 1 means one stream shared by every SAE instance."""
        if self.features.dataset is not None:
            return self.features.dataset.shape[0]
        return self.features.feature_probability.shape[0]

    @property
    def generator(self) -> torch.Generator:
        """The stream batches come from when a trainer is given no seed: the features' own
        generator (torch's global one when they have no seed)."""
        return self.features.generator

    @property
    def device(self) -> torch.device:
        """Where the source draws its batches."""
        return self.features.device

    def activations(self, features: torch.Tensor) -> torch.Tensor:
        """Map ``features: (instance, batch, n_features)`` to ``(instance, batch, d_model)``."""
        raise NotImplementedError

    def sample_with_features(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Activations ``(instance, batch, d_model)`` and the feature values behind them
        ``(instance, batch, n_features)``; arguments as
        :meth:`superpose.data.SparseFeatures.sample`."""
        features = self.features.sample(batch_size, n_instances, generator)
        return self.activations(features), features

    def sample(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Activations ``(instance, batch, d_model)``; see :meth:`sample_with_features`."""
        return self.sample_with_features(batch_size, n_instances, generator)[0]


DIRECTIONS_STREAM = "superpose.sae.directions"
"""Names the random stream of an int ``seed`` for a source's directions (see
:func:`~superpose._checks.make_generator`)."""


def random_directions(
    n_features: int, d_model: int, generator: torch.Generator, orthogonal: bool
) -> torch.Tensor:
    """``(n_features, d_model)`` random unit rows. ``orthogonal``: every block of ``d_model``
    consecutive rows is an orthonormal set (all rows orthogonal when ``n_features ≤
    d_model``), drawn uniformly by a QR decomposition."""
    gaussian = torch.randn(n_features, d_model, generator=generator)
    if orthogonal:
        blocks = []
        for block in gaussian.split(d_model):
            q, r = torch.linalg.qr(block.T)  # q: (d_model, rows) orthonormal columns
            blocks.append((q * torch.sign(torch.diagonal(r))).T)
        gaussian = torch.cat(blocks)
    return gaussian / gaussian.norm(dim=1, keepdim=True)


class Superposed(ActivationSource):
    """Synthetic activations ``x = Σ_i f_i d_i``: feature values times fixed unit directions.

    Args:
        features: the sparse features ``f``.
        d_model: activation dimension (``n_features > d_model`` puts them in superposition).
        orthogonal: make the directions orthogonal as far as ``d_model`` allows (see
            :func:`random_directions`); otherwise independent uniform unit vectors.
        seed: int, ``torch.Generator`` or None (fresh) for the directions.

    Example:
        >>> source = Superposed(SparseFeatures(32, 0.05, seed=0), d_model=8, seed=0)
        >>> source.sample(4).shape
        torch.Size([1, 4, 8])
    """

    def __init__(
        self,
        features: SparseFeatures,
        d_model: int,
        *,
        orthogonal: bool = False,
        seed: int | torch.Generator | None = None,
    ) -> None:
        if not isinstance(features, SparseFeatures):
            raise TypeError(
                f"features must be a superpose.SparseFeatures, got {type(features).__name__}"
            )
        self.features = features
        d_model = positive_int("d_model", d_model)
        self.directions = random_directions(
            features.n_features, d_model, make_generator(seed, stream=DIRECTIONS_STREAM), orthogonal
        ).to(features.device)

    def activations(self, features: torch.Tensor) -> torch.Tensor:
        """``f D``: ``(instance, batch, n_features) → (instance, batch, d_model)``; ``features``
        may be a sparse COO tensor (then only its entries are read)."""
        if not features.is_sparse:
            return features @ self.directions
        features = features.coalesce()
        instance, row, feature = features.indices()
        n_instances, batch_size = features.shape[:2]
        bag = instance * batch_size + row  # sorted: one bag of features per sample
        offsets = torch.searchsorted(bag, torch.arange(n_instances * batch_size, device=bag.device))
        x = torch.nn.functional.embedding_bag(
            feature, self.directions, offsets, mode="sum", per_sample_weights=features.values()
        )
        return x.view(n_instances, batch_size, self.d_model)

    def _sparse(self, n_instances: int | None) -> bool:
        """Whether batches are drawn sparsely: infinite data whose every instance is in
        :meth:`superpose.data.SparseFeatures.sparse_instances`."""
        instances = self.n_instances if n_instances is None else n_instances
        features = self.features
        return not features.is_finite and bool(features.sparse_instances(instances).all())

    def sample_with_features(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`ActivationSource.sample_with_features`, drawing the features sparsely
        (:meth:`superpose.data.SparseFeatures.sample_sparse`) where that pays, so that the
        batches equal :meth:`sample`'s."""
        if not self._sparse(n_instances):
            return super().sample_with_features(batch_size, n_instances, generator)
        features = self.features.sample_sparse(batch_size, n_instances, generator)
        return self.activations(features), features.to_dense()

    def sample(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Activations ``(instance, batch, d_model)``, built from the active features only
        where the features are drawn sparsely (the same batches as
        :meth:`sample_with_features` up to float rounding)."""
        if not self._sparse(n_instances):
            return super().sample(batch_size, n_instances, generator)
        return self.activations(self.features.sample_sparse(batch_size, n_instances, generator))


class ModelActivations(ActivationSource):
    """The hidden activations of one instance of a trained toy model.

    ``h = W x`` for the ``"linear"`` and ``"relu"`` kinds, ``ReLU(W x)`` for
    ``"hidden_relu"``, ``ReLU(W x + b_hidden)`` for ``"abs"``; the directions are the
    instance's feature columns ``W[:, i] / ‖W[:, i]‖`` (a zero row for a feature of zero norm).
    The model's weights are copied, so later training does not change the source.

    Args:
        model: the trained toy model.
        data: its feature distribution (``n_features`` must match the model's).
        instance: which of the model's instances, in ``[0, n_instances)``.
    """

    def __init__(self, model: ToyModel, data: SparseFeatures, instance: int = 0) -> None:
        if not isinstance(model, ToyModel):
            raise TypeError(f"model must be a superpose.ToyModel, got {type(model).__name__}")
        if not isinstance(data, SparseFeatures):
            raise TypeError(f"data must be a superpose.SparseFeatures, got {type(data).__name__}")
        if data.n_features != model.n_features:
            raise ValueError(
                f"data.n_features={data.n_features} but model.n_features={model.n_features}"
            )
        if isinstance(instance, bool) or not isinstance(instance, int):
            raise TypeError(f"instance must be an int, got {instance!r}")
        if not 0 <= instance < model.n_instances:
            raise ValueError(
                f"instance must lie in [0, {model.n_instances - 1}] (the model's instances), "
                f"got {instance}"
            )
        self.features = data
        self.kind = model.kind
        self.instance = instance
        self.W = model.W[instance].detach().clone().to(data.device)  # (n_hidden, n_features)
        self.b_hidden = (
            model.b_hidden[instance].detach().clone().to(data.device)
            if model.kind == "abs"
            else None
        )
        columns = self.W.T
        self.directions = columns / columns.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def activations(self, features: torch.Tensor) -> torch.Tensor:
        """The hidden layer ``(instance, batch, n_hidden)`` of ``features: (instance, batch,
        n_features)``."""
        hidden = features @ self.W.T
        if self.b_hidden is not None:
            hidden = hidden + self.b_hidden
        return torch.relu(hidden) if self.kind in ("hidden_relu", "abs") else hidden


def sample_for(
    source: ActivationSource, n_instances: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch for ``n_instances`` SAE instances: activations ``(n_instances, batch,
    d_model)`` and features ``(n_instances, batch, n_features)``.

    A one-instance source is drawn once and shared (every SAE instance sees the same batch,
    as expanded views); a batched source (checked by :func:`check_source`) gives each SAE
    instance its own.
    """
    if source.n_instances == 1:
        x, f = source.sample_with_features(batch_size, 1, generator)
        return x.expand(n_instances, -1, -1), f.expand(n_instances, -1, -1)
    return source.sample_with_features(batch_size, n_instances, generator)


def activations_for(
    source: ActivationSource, n_instances: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """The activations of :func:`sample_for` alone, ``(n_instances, batch, d_model)`` (without
    materialising the features where the source need not)."""
    if source.n_instances == 1:
        return source.sample(batch_size, 1, generator).expand(n_instances, -1, -1)
    return source.sample(batch_size, n_instances, generator)


def check_source(source: object, n_instances: int, d_in: int) -> ActivationSource:
    """Raise a TypeError/ValueError unless ``source`` can feed an SAE of these shapes."""
    if not isinstance(source, ActivationSource):
        raise TypeError(
            f"source must be a superpose.sae source (Superposed, ModelActivations), got "
            f"{type(source).__name__}"
        )
    if source.d_model != d_in:
        raise ValueError(f"source.d_model={source.d_model} but the SAE's d_in={d_in}")
    if source.n_instances not in (1, n_instances):
        raise ValueError(
            f"source has {source.n_instances} instances but the SAE has {n_instances}; give "
            "the source one instance (shared) or one per SAE instance"
        )
    return source
