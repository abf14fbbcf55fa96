"""TopK and BatchTopK SAEs with the AuxK loss for dead latents.

* ``"topk"`` (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): per sample,
  ``z = ReLU(TopK_k(π))``: the ``k`` largest pre-activations are kept, the rest set to 0.
* ``"batchtopk"`` (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders"): per
  instance, the ``k · batch`` largest pre-activations of the whole batch are kept (rounded
  to the nearest integer, at least 1: :func:`batch_count`), so samples use a varying number
  of latents averaging ``k``; ``k`` may be fractional, e.g. below 1 where most samples have
  no active feature. At inference (``sae.eval()``) the batch dependence is dropped: ``z = π ·
  [π > θ]`` with the threshold ``θ`` an exponential moving average (decay
  :data:`THRESHOLD_DECAY`) of the smallest kept activation in training.

``k`` may differ per instance (an int for ``"topk"``, a positive real for ``"batchtopk"``).
AuxK (Gao et al.): with ``e = x − x̂`` (no gradient) and ``ê = TopK_{k_aux}(π over dead
latents) W_dec`` the dead latents' best reconstruction of the residual, ``aux = α · E_batch
‖e − ê‖²`` (``α = aux_coefficient`` = 1/32, ``k_aux = aux_k``, default ``d_in // 2`` as in
the paper); it is 0 while no latent is dead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from superpose._checks import numeric_array
from superpose.sae.base import Seed, SparseAutoencoder, per_instance, register

THRESHOLD_DECAY = 0.99
"""Decay of BatchTopK's moving average of the inference threshold."""


def keep_top(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Zero all but each row's ``k[i]`` largest entries (then ReLU) for ``scores: (instance,
    rows, n)`` and ``k: (instance,)`` integers ``≤ n``; returns the same shape."""
    values, indices = scores.topk(int(k.max()), dim=-1, sorted=True)
    keep = torch.arange(values.shape[-1], device=k.device) < k[:, None, None]
    return torch.zeros_like(scores).scatter(-1, indices, torch.relu(values) * keep)


def batch_count(k: torch.Tensor, batch_size: int) -> torch.Tensor:
    """BatchTopK's kept activations per batch: ``k · batch_size`` rounded to the nearest
    integer (halves to even), at least 1, for ``k: (instance,)``; returns ``(instance,)``
    int64."""
    return (k * batch_size).round().clamp(min=1).long()


@register
class TopKSAE(SparseAutoencoder):
    """``n_instances`` TopK SAEs with AuxK.

    Args:
        n_instances, d_in, d_sae, seed: see :class:`~superpose.sae.base.SparseAutoencoder`.
        k: active latents per sample, an int in ``[1, d_sae]`` or one per instance.
        aux_k: dead latents used by AuxK (default ``d_in // 2``, at least 1), ``≤ d_sae``.
        aux_coefficient: ``α ≥ 0``, AuxK's weight (default 1/32).

    Buffers:
        k: ``(instance,)`` int64.
    """

    kind = "topk"
    sparsity_parameter = "k"

    def __init__(
        self,
        n_instances: int,
        d_in: int,
        d_sae: int,
        *,
        k: int | Sequence[int],
        aux_k: int | None = None,
        aux_coefficient: float = 1 / 32,
        seed: Seed = None,
    ) -> None:
        super().__init__(n_instances, d_in, d_sae, seed=seed)
        self.register_buffer("k", self.check_k(k))
        aux_k = max(1, self.d_in // 2) if aux_k is None else aux_k
        if isinstance(aux_k, bool) or not isinstance(aux_k, int) or not 1 <= aux_k <= self.d_sae:
            raise ValueError(f"aux_k must be an int in [1, d_sae={self.d_sae}], got {aux_k!r}")
        self.aux_k = aux_k
        if not aux_coefficient >= 0:
            raise ValueError(f"aux_coefficient must be >= 0, got {aux_coefficient!r}")
        self.aux_coefficient = float(aux_coefficient)

    def check_k(self, k: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``k`` (an int in ``[1, d_sae]`` or one per instance) as ``(instance,)`` int64."""
        not_k = TypeError(f"k must be an int or one int per instance, got {k!r}")
        if not isinstance(k, torch.Tensor):
            try:
                numeric_array("k", k)  # a string or bool is not a k
            except TypeError:
                raise not_k from None
        k_tensor = torch.as_tensor(k)
        if k_tensor.is_floating_point() or k_tensor.dtype == torch.bool:
            raise not_k
        return per_instance("k", k_tensor, self.n_instances, low=1, high=self.d_sae).long()

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``z = ReLU(TopK_k(π))`` per sample, ``(instance, batch, d_sae)``."""
        return keep_top(pre, self.k)

    def aux(
        self,
        x: torch.Tensor,
        reconstruction: torch.Tensor,
        pre: torch.Tensor,
        dead: torch.Tensor | None,
    ) -> torch.Tensor:
        """``α E_batch ‖e − ê‖²`` per instance ``(instance,)``; 0 where no latent is dead."""
        if dead is None or not dead.any():
            return x.new_zeros(self.n_instances)
        residual = (x - reconstruction).detach()
        dead_pre = torch.relu(pre).masked_fill(~dead[:, None, :], 0.0)
        aux_k = torch.full_like(self.k, self.aux_k, dtype=torch.long)
        estimate = torch.bmm(keep_top(dead_pre, aux_k), self.W_dec)
        error = (residual - estimate).square().sum(-1).mean(-1)
        return self.aux_coefficient * error * dead.any(-1)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "k": self.k.tolist(),
            "aux_k": self.aux_k,
            "aux_coefficient": self.aux_coefficient,
        }


@register
class BatchTopKSAE(TopKSAE):
    """``n_instances`` BatchTopK SAEs with AuxK (arguments as :class:`TopKSAE`, but ``k``, the
    mean number of active latents per sample, is a real number in ``(0, d_sae]`` or one per
    instance: a batch of ``b`` samples keeps :func:`batch_count` ``≈ k · b`` activations).

    Buffers:
        k: ``(instance,)`` int64 when every ``k`` is an integer (as for TopK), else float64.
        threshold: ``(instance,)`` the inference threshold ``θ`` (−1 until the first training
            batch is observed; until then inference also uses the batch top-k).
    """

    kind = "batchtopk"

    def __init__(self, n_instances: int, d_in: int, d_sae: int, **options: Any) -> None:
        super().__init__(n_instances, d_in, d_sae, **options)
        self.register_buffer("threshold", torch.full((self.n_instances,), -1.0))

    def check_k(self, k: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """``k`` (a real number in ``(0, d_sae]`` or one per instance) as ``(instance,)``
        int64 if every value is an integer, else float64."""
        k_tensor = per_instance("k", k, self.n_instances, low=-math.inf, dtype=torch.float64)
        if not ((k_tensor > 0) & (k_tensor <= self.d_sae)).all():
            raise ValueError(f"k must lie in (0, {self.d_sae}], got {k_tensor.tolist()}")
        return k_tensor.long() if (k_tensor == k_tensor.round()).all() else k_tensor

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Training (or before any threshold is known): keep each instance's
        :func:`batch_count` ``≈ k · batch`` largest pre-activations of the batch (ReLU'd).
        Inference: ``π · [π > θ]``."""
        if self.training or (self.threshold < 0).any():
            count = batch_count(self.k, pre.shape[1])
            flat = keep_top(pre.reshape(self.n_instances, 1, -1), count)
            return flat.view_as(pre)
        return pre * (pre > self.threshold[:, None, None])

    def hyperparameters(self) -> dict[str, Any]:
        """As :class:`TopKSAE`'s, with each integral ``k`` written as an int."""
        k = [int(v) if float(v).is_integer() else v for v in self.k.tolist()]
        return {**super().hyperparameters(), "k": k}

    @torch.no_grad()
    def observe(self, z: torch.Tensor) -> None:
        """Move ``θ`` toward the smallest positive latent of the batch (per instance); ``z``
        may be a sparse COO tensor."""
        if z.is_sparse:
            z = z.coalesce()
            values = z.values().masked_fill(z.values() <= 0, torch.inf)
            smallest = values.new_full((self.n_instances,), torch.inf)
            smallest.scatter_reduce_(0, z.indices()[0], values, "amin")
        else:
            smallest = z.masked_fill(z <= 0, torch.inf).flatten(1).amin(-1)
        seen = torch.isfinite(smallest)
        average = THRESHOLD_DECAY * self.threshold + (1 - THRESHOLD_DECAY) * smallest
        updated = torch.where(self.threshold < 0, smallest, average)
        self.threshold.copy_(torch.where(seen, updated, self.threshold))
