"""The batch contract: what a trainer may ask of the source of its batches.

A trainer never asks what kind of source it was given, only the members below. Two
protocols, one per kind of batch:

* :class:`BatchSource`: feature vectors for the toy-model trainer (:func:`superpose.train`:
  its batches come from ``sample_rows``) and its held-out loss
  (:func:`superpose.train.evaluate`: ``draw`` in memory-bounded chunks, or ``sample_rows``
  in blocks of a fixed size, which a sweep cell's loss needs). Implemented by
  :class:`~superpose.data.SparseFeatures` and by the sweeps' per-cell streams
  (:class:`superpose.sweep.streams.CellStreams`).
* :class:`ActivationBatchSource`: activations for the SAE trainer (:func:`superpose.sae.train`).
  Implemented by the :mod:`superpose.sae.sources` (:class:`~superpose.sae.Superposed`,
  :class:`~superpose.sae.ModelActivations`).

Randomness, the same for both. Every draw takes a ``generator``: a ``torch.Generator`` to draw
from (a trainer given a ``seed`` passes one seeded with it), or None for the source's own
stream, :attr:`~BatchSource.generator`. A source whose numbers come from several generators
names its stream explicitly instead: :class:`~superpose.sweep.streams.CellStreams` draws each
cell from a generator of (cell seed, its ``stream`` attribute), has no single
:attr:`~BatchSource.generator` (None) and refuses a passed one, since a shared generator
would make a cell's batches depend on the cells packed with it. A stream is never read back
from a generator's seed. :meth:`BatchSource.generators` names every generator a draw
advances: the training loop saves their states in checkpoints and registers them with a CUDA
graph, which advances them on every replay.

Shapes: a batch is ``(instance, batch_size, n_features)`` (``d_model`` for activations); a
source with one instance may be asked for more (its distribution is shared) or keep its own
count (``n_instances=None``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from superpose.data.sampling import CompactBatch


@runtime_checkable
class BatchSource(Protocol):
    """Feature batches for the toy-model trainer (see the module docstring)."""

    @property
    def n_features(self) -> int:
        """Features per sample."""
        ...

    @property
    def n_samples(self) -> int | None:
        """Rows of the finite data set the batches come from, or None for fresh data (then
        ``batch_size=None``, full-batch training, is refused)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where batches are created."""
        ...

    @property
    def generator(self) -> torch.Generator | None:
        """The stream a draw uses when given none; None where the source's own numbers do not
        come from one generator (see :meth:`generators`)."""
        ...

    def generators(self, generator: torch.Generator | None = None) -> list[torch.Generator]:
        """Every generator that a draw with ``generator`` advances (None: the source's own
        stream)."""
        ...

    def sample_rows(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
        sparse: bool = True,
    ) -> CompactBatch:
        """A training batch ``(n_instances, batch_size, n_features)`` as a
        :class:`~superpose.data.CompactBatch` (where it pays, most all-zero rows left out);
        also a block of a held-out sample of fresh data.

        Args:
            batch_size: rows per instance; None: the whole finite data set.
            n_instances: instances (None: the source's own count).
            generator: see the module docstring.
            sparse: False asks for the same shapes on every call (one dense part, no rows
                left out), as a CUDA graph needs.
        """
        ...

    def draw(
        self, batch_size: int, n_instances: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Fresh samples ``(n_instances, batch_size, n_features)`` for a held-out loss (or an
        analysis), dense and contiguous, never rows of a finite data set."""
        ...


@runtime_checkable
class ActivationBatchSource(Protocol):
    """Activation batches for the SAE trainer (see the module docstring)."""

    @property
    def n_instances(self) -> int:
        """Instances of the source: 1 for one stream shared by every SAE instance, else one
        per SAE instance."""
        ...

    @property
    def d_model(self) -> int:
        """Dimension of the activations."""
        ...

    @property
    def device(self) -> torch.device:
        """Where batches are created."""
        ...

    @property
    def generator(self) -> torch.Generator:
        """The stream a draw uses when given none (the trainer's without a ``seed``)."""
        ...

    def sample(
        self,
        batch_size: int | None,
        n_instances: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Activations ``(n_instances, batch_size, d_model)``; ``n_instances=None``: the
        source's own count."""
        ...
