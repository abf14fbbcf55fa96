"""Activation sources: what SAEs are trained on and scored against.

A feature source (:class:`ActivationSource`) turns sparse feature vectors ``f: (instance,
batch, n_features)`` from a :class:`~superpose.data.SparseFeatures` into activations
``(instance, batch, d_model)`` whose true feature directions are known:

* :class:`Superposed`: ``x = f D`` with fixed random unit directions ``D: (n_features,
  d_model)`` (the synthetic set-up of Sharkey et al. 2022, "Taking features out of
  superposition with sparse autoencoders").
* :class:`ModelActivations`: the hidden layer of a trained :class:`~superpose.ToyModel`
  instance, whose directions are that instance's normalised feature columns.

Per-instance / per-feature probabilities, magnitudes and correlated sets come from the
``SparseFeatures``; sampling follows its seeding (its own generator unless one is passed).

:class:`Activations` serves activations you already have (a tensor, an array, a ``.npy`` or
``.safetensors`` file, memory-mapped), with true directions only if you know them.

Every source offers what the trainer reads: ``n_instances``, ``d_model``, ``device``,
``generator`` (its default random stream), ``directions`` (None where unknown) and
``sample(batch_size, n_instances, generator) → (instance, batch, d_model)`` float32.
Every source is a :class:`superpose.data.ActivationBatchSource`, the SAE trainer's side of
the batch contract (:mod:`superpose.data.source`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from superpose._checks import as_float_tensor, make_generator, positive_int, resolve_device
from superpose.data import SparseFeatures
from superpose.io import CorruptFile
from superpose.models import MODEL_KINDS, ToyModel


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
    def device(self) -> torch.device:
        """Where the features, directions and batches live."""
        return self.features.device

    @property
    def generator(self) -> torch.Generator:
        """The default random stream of :meth:`sample`: the features' own generator (torch's
        global generator of :attr:`device` when the features have no seed)."""
        return self.features.generator

    @property
    def n_instances(self) -> int:
        """Instances of the underlying features (of their finite data set if any, else of
        ``feature_probability``): 1 means one stream shared by every SAE instance."""
        if self.features.dataset is not None:
            return self.features.dataset.shape[0]
        return self.features.feature_probability.shape[0]

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
    ``"hidden_relu"``, ``ReLU(W x + b_hidden)`` for ``"abs"`` (as the kind's
    :class:`~superpose.models.ModelKind` says); the directions are the instance's feature
    columns ``W[:, i] / ‖W[:, i]‖`` (a zero row for a feature of zero norm).
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
        self.b_hidden = (  # (n_hidden,)
            model.b_hidden[instance].detach().clone().to(data.device)
            if model.kind_spec.hidden_bias
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
        return torch.relu(hidden) if MODEL_KINDS[self.kind].privileged else hidden


ACTIVATIONS_STREAM = "superpose.sae.activations"
"""Names the random stream of an int ``seed`` of :class:`Activations` (see
:func:`~superpose._checks.make_generator`)."""

_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}
"""Safetensors float dtypes → the numpy dtype their bytes are mapped as (bfloat16, which numpy
lacks, as its raw 16 bits)."""


def _memmap_safetensors(path: Path, key: str | None) -> tuple[np.ndarray, bool]:
    """Memory-map tensor ``key`` (the file's only tensor when None) of the safetensors file
    ``path``, read-only; returns the array and whether it holds bfloat16 bits.

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte range after the header, then the raw bytes.
    """
    try:
        with safe_open(path, "pt"):  # validates the header and the byte ranges
            pass
    except SafetensorError as error:
        raise CorruptFile(path, f"{path} is corrupt or not a safetensors file ({error})") from None
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    if key is None:
        if len(header) != 1:
            raise ValueError(f"key must name one of the tensors in {path}: {sorted(header)}")
        key = next(iter(header))
    if key not in header:
        raise ValueError(
            f"key must name one of the tensors in {path}: {sorted(header)}, got {key!r}"
        )
    entry = header[key]
    if entry.get("dtype") not in _SAFETENSORS_DTYPES:
        raise TypeError(
            f"{path}[{key!r}] must hold floats ({', '.join(_SAFETENSORS_DTYPES)}), "
            f"got {entry.get('dtype')}"
        )
    dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
    shape = tuple(entry["shape"])
    begin = entry["data_offsets"][0]
    if math.prod(shape) == 0:
        return np.empty(shape, dtype), entry["dtype"] == "BF16"
    array = np.memmap(path, dtype=dtype, mode="r", offset=8 + length + begin, shape=shape)
    return array, entry["dtype"] == "BF16"


class Activations:
    """Activations you already have, served as an SAE training source: a random sample of
    rows per batch, shared by every SAE instance (``n_instances`` is 1), so that one call of
    :func:`~superpose.sae.train` fits a whole grid of SAEs on the same data.

    Batches are drawn uniformly with replacement from the ``n_samples`` rows with a torch
    generator: the source's own (``seed``; torch's global generator of ``device`` when
    ``seed`` is None, so that ``torch.manual_seed`` governs it) unless :meth:`sample` is
    given one. Only the drawn rows are read, so a memory-mapped file need not fit in RAM.

    Args:
        data: ``(n_samples, d_model)`` float activations: a tensor, a numpy array (including a
            ``np.memmap``), or the path of a ``.npy`` file (memory-mapped with
            ``np.load(path, mmap_mode="r")``) or of a ``.safetensors`` file (memory-mapped;
            float64, float32, float16 or bfloat16).
        directions: ``(n_features, d_model)`` the true feature directions, if known (any
            norm: the scores normalise them); None when they are not.
        key: the tensor to read from a ``.safetensors`` file holding several.
        seed: int, ``torch.Generator`` or None for the batches.
        device: where batches (and ``directions``) go: ``"cpu"``, ``"cuda"``, ... (default:
            the tensor's device, else the CPU).

    Attributes:
        data: the rows as given (a tensor or a numpy array, possibly memory-mapped).
        directions: ``(n_features, d_model)`` float32 on ``device``, or None.

    Example:
        >>> source = Activations(torch.randn(1000, 16), seed=0)
        >>> source.sample(4, 3).shape   # the same 4 rows for each of 3 SAE instances
        torch.Size([3, 4, 16])
    """

    def __init__(
        self,
        data: torch.Tensor | np.ndarray | str | Path,
        directions: torch.Tensor | np.ndarray | None = None,
        *,
        key: str | None = None,
        seed: int | torch.Generator | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self._bfloat16 = False
        if isinstance(data, str | Path):
            data = self._open(Path(data), key)
        elif key is not None:
            raise ValueError("key names a tensor of a .safetensors file; data is not a path")
        if not isinstance(data, torch.Tensor | np.ndarray):
            raise TypeError(
                "data must be a tensor, a numpy array or the path of a .npy or .safetensors "
                f"file, got {type(data).__name__}"
            )
        floating = (
            data.is_floating_point()
            if isinstance(data, torch.Tensor)
            else (self._bfloat16 or np.issubdtype(data.dtype, np.floating))
        )
        if data.ndim != 2 or not floating or data.shape[0] < 1 or data.shape[1] < 1:
            raise ValueError(
                "data must be float activations shaped (n_samples, d_model), got "
                f"{data.dtype} {tuple(data.shape)}"
            )
        self.data = data.detach() if isinstance(data, torch.Tensor) else data
        if device is None:
            device = data.device if isinstance(data, torch.Tensor) else "cpu"
        self._device = resolve_device(device)
        self.directions: torch.Tensor | None = None
        if directions is not None:
            directions = as_float_tensor("directions", directions)
            if (
                directions.ndim != 2
                or directions.shape[0] < 1
                or directions.shape[1] != self.d_model
            ):
                raise ValueError(
                    f"directions must be shaped (n_features, d_model={self.d_model}), got "
                    f"{tuple(directions.shape)}"
                )
            self.directions = directions.to(self._device)
        self._generator = make_generator(seed, self._device, stream=ACTIVATIONS_STREAM)

    def _open(self, path: Path, key: str | None) -> np.ndarray:
        """The array stored at ``path``, memory-mapped."""
        if not path.is_file():
            raise FileNotFoundError(f"data: no file at {path}")
        if path.suffix == ".npy":
            if key is not None:
                raise ValueError("key names a tensor of a .safetensors file, not of a .npy file")
            return np.load(path, mmap_mode="r")
        if path.suffix == ".safetensors":
            array, self._bfloat16 = _memmap_safetensors(path, key)
            return array
        raise ValueError(f"data must be a .npy or .safetensors file, got {path}")

    @property
    def n_samples(self) -> int:
        """Rows of :attr:`data`."""
        return self.data.shape[0]

    @property
    def d_model(self) -> int:
        """Dimension of the activations."""
        return self.data.shape[1]

    @property
    def n_features(self) -> int | None:
        """Number of true directions, or None when they are not known."""
        return None if self.directions is None else self.directions.shape[0]

    @property
    def n_instances(self) -> int:
        """1: every SAE instance sees the same batch."""
        return 1

    @property
    def device(self) -> torch.device:
        """Where batches and directions live."""
        return self._device

    @property
    def generator(self) -> torch.Generator:
        """The default random stream of :meth:`sample` (see the class docstring)."""
        return self._generator

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """Rows ``indices: (batch,)`` of :attr:`data` as float32 ``(batch, d_model)`` on
        :attr:`device` (reading only those rows of a memory-mapped file)."""
        if isinstance(self.data, torch.Tensor):
            rows = self.data[indices.to(self.data.device)]
        else:
            rows = torch.from_numpy(np.ascontiguousarray(self.data[indices.cpu().numpy()]))
            if self._bfloat16:
                rows = rows.view(torch.bfloat16)
        return rows.to(self._device, torch.float32)

    def sample(
        self,
        batch_size: int,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``batch_size`` random rows, ``(n_instances, batch, d_model)`` float32 on
        :attr:`device`: one draw, the same rows for every instance (an expanded view).

        Args:
            batch_size: rows per batch (with replacement: it may exceed ``n_samples``).
            n_instances: SAE instances to serve (default 1).
            generator: random stream to use instead of :attr:`generator`.
        """
        batch_size = positive_int("batch_size", batch_size)
        n_instances = 1 if n_instances is None else positive_int("n_instances", n_instances)
        generator = self._generator if generator is None else generator
        indices = torch.randint(
            self.n_samples, (batch_size,), generator=generator, device=generator.device
        )
        return self.rows(indices)[None].expand(n_instances, -1, -1)


Source = ActivationSource | Activations
"""What the trainer and :func:`~superpose.sae.evaluate` accept."""


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
    source: Source, n_instances: int, batch_size: int, generator: torch.Generator
) -> torch.Tensor:
    """A batch of activations for ``n_instances`` SAE instances, ``(n_instances, batch,
    d_model)``: those of :func:`sample_for` for a feature source (without materialising the
    features where the source need not), a shared batch of rows for :class:`Activations`."""
    if source.n_instances == 1:
        return source.sample(batch_size, 1, generator).expand(n_instances, -1, -1)
    return source.sample(batch_size, n_instances, generator)


def check_source(source: object, n_instances: int, d_in: int) -> Source:
    """Raise a TypeError/ValueError unless ``source`` can feed an SAE of these shapes."""
    if not isinstance(source, ActivationSource | Activations):
        raise TypeError(
            f"source must be a superpose.sae source (Superposed, ModelActivations, "
            f"Activations), got {type(source).__name__}"
        )
    if source.d_model != d_in:
        raise ValueError(f"source.d_model={source.d_model} but the SAE's d_in={d_in}")
    if source.n_instances not in (1, n_instances):
        raise ValueError(
            f"source has {source.n_instances} instances but the SAE has {n_instances}; give "
            "the source one instance (shared) or one per SAE instance"
        )
    return source
