"""The shared sparse-autoencoder module: parameters, initialisation, the encode/decode
contract, per-instance hyper-parameters and the registry behind :func:`SAE`.

Every SAE holds ``n_instances`` independent dictionaries (a whole sweep of sparsity
penalties in one module, like :class:`~superpose.models.ToyModel`). Per instance, with
``x: (batch, d_in)``:

* pre-activations ``π = (x − b_dec) W_enc + b_enc``  ``(batch, d_sae)``
* latents ``z = σ(π) ≥ 0``, the kind's activation (ReLU, TopK, JumpReLU, ...)
* reconstruction ``x̂ = z W_dec + b_dec``  ``(batch, d_in)``
* loss ``L = mse + sparsity + aux`` with ``mse = E_batch ‖x − x̂‖²`` (squared error summed
  over ``d_in``, averaged over the batch), the kind's sparsity penalty (already weighted by
  its coefficient) and its auxiliary loss for dead latents (0 unless the kind has one).

Initialisation (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", and
Anthropic's April 2024 update): decoder rows are random unit vectors, ``W_enc = W_decᵀ``,
``b_enc = b_dec = 0`` (the trainer sets ``b_dec`` to the mean of its first batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from superpose._checks import as_float_tensor, make_generator, positive_int
from superpose.io import Saveable, saveable

Seed = int | Sequence[int] | torch.Generator | None

INIT_STREAM = "superpose.sae.init"
"""Names the random stream of an int ``seed`` for SAE initialisation (see
:func:`~superpose._checks.make_generator`): independent of a source's directions with the same
seed."""

KINDS: dict[str, type[SparseAutoencoder]] = {}
"""Registered SAE kinds by name; :func:`register` adds one."""


def register(cls: type[SparseAutoencoder]) -> type[SparseAutoencoder]:
    """Class decorator: make ``cls`` available as ``SAE(cls.kind, ...)`` and to
    :func:`superpose.load` (it is :func:`superpose.io.saveable` too)."""
    KINDS[cls.kind] = saveable(cls)
    return cls


def SAE(kind: str, n_instances: int, d_in: int, d_sae: int, **options: Any) -> SparseAutoencoder:
    """Build ``n_instances`` SAEs of ``kind`` (a key of :data:`KINDS`: ``"relu"``, ``"topk"``,
    ``"batchtopk"``, ``"jumprelu"``, ``"matryoshka"``) mapping ``d_in`` to ``d_sae`` latents.

    ``options`` are the kind's keyword arguments (``l1_coefficient``, ``k``, ``seed``, ...; see
    each class). ``SAE(sae.kind, **sae.config())`` rebuilds an SAE of the same shapes.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    return KINDS[kind](n_instances, d_in, d_sae, **options)


def per_instance(
    name: str,
    value: float | Sequence[float] | torch.Tensor,
    n_instances: int,
    *,
    low: float,
    high: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate a per-instance hyper-parameter: a scalar or ``(instance,)`` values in ``[low,
    high]`` (``high=None``: no bound); returns it as a ``dtype`` ``(instance,)`` tensor."""
    tensor = as_float_tensor(name, value, dtype)
    if tensor.ndim == 0:
        tensor = tensor.expand(n_instances)
    if tensor.shape != (n_instances,):
        raise ValueError(
            f"{name} must be a scalar or one value per instance (n_instances={n_instances},), "
            f"got shape {tuple(tensor.shape)}"
        )
    if high is None and (tensor < low).any():
        raise ValueError(f"{name} must be >= {low}, got {tensor.tolist()}")
    if high is not None and ((tensor < low) | (tensor > high)).any():
        raise ValueError(f"{name} must lie in [{low}, {high}], got {tensor.tolist()}")
    return tensor.clone()


def unit_rows(shape: tuple[int, ...], n_instances: int, seed: Seed) -> torch.Tensor:
    """Random unit vectors along the last axis, ``(n_instances, *shape)``.

    ``seed``: int, ``torch.Generator``, None (a fresh seed), or one int per instance (then
    instance ``i`` is drawn exactly as a one-instance draw with ``seed[i]``).
    """
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        if len(seed) != n_instances:
            raise ValueError(
                f"seed: a per-instance seed list needs n_instances={n_instances} entries, "
                f"got {len(seed)}"
            )
        rows = torch.stack(
            [torch.randn(shape, generator=make_generator(s, stream=INIT_STREAM)) for s in seed]
        )
    else:
        rows = torch.randn(
            (n_instances, *shape), generator=make_generator(seed, stream=INIT_STREAM)
        )
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class SparseAutoencoder(Saveable):
    """Base class of the SAE kinds: ``n_instances`` independent SAEs ``d_in → d_sae → d_in``.

    Subclasses set :attr:`kind` and :attr:`sparsity_parameter`, implement :meth:`activate`,
    may override :meth:`sparsity`, :meth:`aux`, :meth:`reconstruction_error`, :meth:`observe`
    and :meth:`hyperparameters`, and are registered with :func:`register`.

    ``sae.save(path)`` writes it to a folder and ``superpose.load(path)`` brings it back with
    its weights, per-instance hyper-parameters, thresholds and mode (see :mod:`superpose.io`).

    Args:
        n_instances: independent SAEs trained together.
        d_in: input (activation) dimension.
        d_sae: dictionary size (latents).
        seed: int, ``torch.Generator``, None, or one int per instance (see :func:`unit_rows`).

    Attributes:
        W_enc: ``(instance, d_in, d_sae)`` encoder.
        b_enc: ``(instance, d_sae)`` encoder bias.
        W_dec: ``(instance, d_sae, d_in)`` decoder; row ``j`` is latent ``j``'s direction.
        b_dec: ``(instance, d_in)`` decoder bias, subtracted from the input before encoding.
    """

    kind: ClassVar[str]
    sparsity_parameter: ClassVar[str]
    """The keyword argument holding the kind's per-instance sparsity hyper-parameter (what a
    sweep varies: ``"l1_coefficient"``, ``"k"``, ...)."""
    unit_decoder: bool = True
    """Whether the trainer renormalises decoder rows to unit norm after every step. A per-SAE
    setting whose default each kind sets here (the ReLU SAE takes it as an argument)."""

    def __init__(self, n_instances: int, d_in: int, d_sae: int, *, seed: Seed = None) -> None:
        super().__init__()
        self.n_instances = positive_int("n_instances", n_instances)
        self.d_in = positive_int("d_in", d_in)
        self.d_sae = positive_int("d_sae", d_sae)
        W_dec = unit_rows((self.d_sae, self.d_in), self.n_instances, seed)
        self.W_dec = nn.Parameter(W_dec)
        # contiguous, as a loaded copy is: the same strides give bit-identical outputs
        self.W_enc = nn.Parameter(W_dec.transpose(1, 2).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(self.n_instances, self.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(self.n_instances, self.d_in))

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``π = (x − b_dec) W_enc + b_enc``: ``(instance, batch, d_in) → (instance, batch,
        d_sae)``."""
        return torch.baddbmm(self.b_enc[:, None, :], x - self.b_dec[:, None, :], self.W_enc)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The kind's activation: pre-activations ``(instance, batch, d_sae)`` → latents ``≥ 0``
        of the same shape."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations ``(instance, batch, d_sae)`` (non-negative) of ``x: (instance,
        batch, d_in)``."""
        return self.activate(self.pre_activations(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``x̂ = z W_dec + b_dec``: ``(instance, batch, d_sae) → (instance, batch, d_in)``."""
        return torch.baddbmm(self.b_dec[:, None, :], z, self.W_dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(instance, batch, d_in)`` of ``x: (instance, batch, d_in)``."""
        return self.decode(self.encode(x))

    def reconstruction_error(
        self, x: torch.Tensor, z: torch.Tensor, reconstruction: torch.Tensor
    ) -> torch.Tensor:
        """``mse = E_batch ‖x − x̂‖²`` per instance ``(instance,)``."""
        return (reconstruction - x).square().sum(-1).mean(-1)

    def sparsity(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The weighted sparsity penalty ``(instance,)`` (0 for kinds sparse by construction)."""
        return z.new_zeros(self.n_instances)

    def aux(
        self,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        pre: torch.Tensor,
        dead: torch.Tensor | None,
    ) -> torch.Tensor:
        """The weighted auxiliary loss ``(instance,)`` given ``dead: (instance, d_sae)`` (bool,
        latents that have not fired lately); 0 by default and when ``dead`` is None."""
        return x.new_zeros(self.n_instances)

    def terms(
        self, x: torch.Tensor, dead: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The loss parts of ``x: (instance, batch, d_in)`` and the latents.

        Returns:
            ``({"mse", "sparsity", "aux"}: (instance,) each, z: (instance, batch, d_sae))``.
        """
        if x.ndim != 3 or x.shape[0] != self.n_instances or x.shape[2] != self.d_in:
            raise ValueError(
                f"x must be shaped (n_instances={self.n_instances}, batch, d_in={self.d_in}), "
                f"got {tuple(x.shape)}"
            )
        pre = self.pre_activations(x)
        z = self.activate(pre)
        reconstruction = self.decode(z)
        parts = {
            "mse": self.reconstruction_error(x, z, reconstruction),
            "sparsity": self.sparsity(pre, z),
            "aux": self.aux(x, reconstruction, pre, dead),
        }
        return parts, z

    def loss_parts(
        self, x: torch.Tensor, dead: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``{"mse", "sparsity", "aux"}``, each ``(instance,)``, for ``x: (instance, batch,
        d_in)``."""
        return self.terms(x, dead)[0]

    def loss(self, x: torch.Tensor, dead: torch.Tensor | None = None) -> torch.Tensor:
        """Total per-instance loss ``(instance,)``: ``mse + sparsity + aux``."""
        parts = self.loss_parts(x, dead)
        return parts["mse"] + parts["sparsity"] + parts["aux"]

    @torch.no_grad()
    def observe(self, z: torch.Tensor) -> None:
        """Called by the trainer with each training batch's latents ``(instance, batch,
        d_sae)``, dense or (from the fast path) sparse COO, after the optimiser step
        (BatchTopK estimates its threshold here)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The kind's JSON-serialisable keyword arguments (per-instance values as lists)."""
        return {}

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``type(sae)(**sae.config())``, or ``SAE(sae.kind,
        **sae.config())``, rebuilds this SAE's shapes and hyper-parameters (weights live in the
        parameters and buffers)."""
        return {
            "n_instances": self.n_instances,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            **self.hyperparameters(),
        }

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, n_instances={self.n_instances}, d_in={self.d_in}, "
            f"d_sae={self.d_sae}"
        )
