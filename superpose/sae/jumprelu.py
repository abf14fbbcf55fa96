"""The JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction
Fidelity with JumpReLU Sparse Autoencoders").

Per instance and latent, a learned threshold ``θ_j = exp(log_threshold_j) > 0``:

    ``z = π · H(π − θ)``,  ``sparsity = λ · E_batch Σ_j H(π_j − θ_j)`` (an L0 penalty)

with ``H`` the Heaviside step. ``H`` has no useful derivative, so ``θ`` learns through
straight-through estimators with a rectangle kernel ``K(u) = [|u| < 1/2]`` of bandwidth
``ε``: ``∂z/∂θ := −(θ/ε) K((π − θ)/ε)`` and ``∂H/∂θ := −(1/ε) K((π − θ)/ε)``; the gradient
into ``π`` is ``H(π − θ)`` through ``z`` and none through the penalty.
Decoder rows are kept at unit norm (the trainer renormalises them), so a latent's value and
threshold are on the scale of its direction's coefficient in ``x``.
Defaults: ``θ`` starts at ``threshold_init`` = 0.1 with ``ε`` = 0.05, larger than the
paper's 0.001 for both: ``log θ`` moves by about ``lr`` per Adam step, so from 0.001 a
threshold cannot reach the scale of unit-magnitude features in a few thousand steps, and a
narrow window sees too few pre-activations to give ``θ`` a gradient (measured on 32 features
in 12 dimensions, 2000 steps: ``θ`` barely moved and L0 stayed near 16 of 32).
``λ`` (``l0_coefficient``, default 0.003, the best of 0.003–0.1 in that measurement) may
differ per instance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from superpose.sae.base import Seed, SparseAutoencoder, per_instance, register


def _rectangle(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """``K((π − θ)/ε) / ε`` elementwise."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLU(torch.autograd.Function):
    """``π · H(π − θ)`` with the straight-through gradient into ``θ: (instance, 1, d_sae)``."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_pre = grad * (pre > threshold)
        grad_threshold = -threshold * _rectangle(pre, threshold, ctx.bandwidth) * grad
        return grad_pre, grad_threshold.sum(1, keepdim=True), None


class _Step(torch.autograd.Function):
    """``H(π − θ)`` with the straight-through gradient into ``θ`` (none into ``π``)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        grad_threshold = -_rectangle(pre, threshold, ctx.bandwidth) * grad
        return None, grad_threshold.sum(1, keepdim=True), None


@register
class JumpReLUSAE(SparseAutoencoder):
    """``n_instances`` JumpReLU SAEs with the straight-through L0 penalty.

    Args:
        n_instances, d_in, d_sae, seed: see :class:`~superpose.sae.base.SparseAutoencoder`.
        l0_coefficient: ``λ ≥ 0``, a scalar or one per instance ``(instance,)``.
        bandwidth: ``ε > 0`` of the straight-through estimators.
        threshold_init: ``θ > 0`` at initialisation, for every latent.

    Attributes:
        log_threshold: parameter ``(instance, d_sae)``, ``log θ``.

    Buffers:
        l0_coefficient: ``(instance,)``.
    """

    kind = "jumprelu"
    sparsity_parameter = "l0_coefficient"

    def __init__(
        self,
        n_instances: int,
        d_in: int,
        d_sae: int,
        *,
        l0_coefficient: float | Sequence[float] = 0.003,
        bandwidth: float = 0.05,
        threshold_init: float = 0.1,
        seed: Seed = None,
    ) -> None:
        super().__init__(n_instances, d_in, d_sae, seed=seed)
        self.register_buffer(
            "l0_coefficient",
            per_instance("l0_coefficient", l0_coefficient, self.n_instances, low=0.0),
        )
        for name, value in (("bandwidth", bandwidth), ("threshold_init", threshold_init)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.bandwidth = float(bandwidth)
        self.log_threshold = nn.Parameter(
            torch.full((self.n_instances, self.d_sae), math.log(threshold_init))
        )

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """``z = π · H(π − θ)``, shape ``(instance, batch, d_sae)``."""
        return _JumpReLU.apply(pre, self.log_threshold.exp()[:, None, :], self.bandwidth)

    def sparsity(self, pre: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``λ E_batch Σ_j H(π_j − θ_j)`` per instance ``(instance,)``."""
        active = _Step.apply(pre, self.log_threshold.exp()[:, None, :], self.bandwidth)
        return self.l0_coefficient * active.sum(-1).mean(-1)

    def hyperparameters(self) -> dict[str, Any]:
        return {"l0_coefficient": self.l0_coefficient.tolist(), "bandwidth": self.bandwidth}
