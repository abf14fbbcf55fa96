"""Batched toy models of superposition: many independent instances in one module.

Every weight has the instance axis first. ``W: (instance, n_hidden, n_features)`` holds one
column ``W[:, :, i]`` per feature (the feature's direction in the hidden space), and a batch
``x: (instance, batch, n_features)`` maps to a reconstruction of the same shape.

Kinds (the TMS paper's models):

* ``"linear"``: ``x' = WᵀW x + b``
* ``"relu"`` (ReLU output): ``x' = ReLU(WᵀW x + b)``
* ``"hidden_relu"`` (privileged basis): ``h = ReLU(W x)``, ``x' = ReLU(Wᵀ h + b)``
* ``"abs"`` (computation in superposition): inputs in ``[-1, 1]``, target ``|x|``,
  ``h = ReLU(W x + b_hidden)``, ``x' = ReLU(W_outᵀ h + b)`` with separate in/out weights.

The loss is the paper's importance-weighted squared error summed over features and averaged
over the batch: ``L = E_x[Σ_i I_i (y_i − x'_i)²]`` with ``y = x`` (or ``|x|`` for ``"abs"``).

Each kind is one :class:`ModelKind` row of :data:`MODEL_KINDS`; the forward pass here, the
hand-written gradients (:mod:`superpose.fast`), the SAE source
(:class:`~superpose.sae.ModelActivations`) and the sweeps' memory estimate read it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from superpose._checks import (
    ArrayLike,
    broadcast_instances,
    make_generator,
    per_instance_feature,
    positive_int,
)
from superpose.io import Saveable, saveable


@dataclass(frozen=True)
class ModelKind:
    """What one kind of toy model is; every module that depends on the kind reads this.

    With ``x: (batch, n)`` per instance, a kind computes the hidden layer
    ``h = act_h(x Wᵀ [+ b_hidden]): (batch, m)`` and the output ``x' = act_o(h W_read + b):
    (batch, n)``, and its loss compares ``x'`` with the target ``y`` (``x`` or ``|x|``).

    Attributes:
        name: the kind's name, an entry of :data:`KINDS`.
        tied: the output weights are the input weights (``W_read = W``); otherwise the kind
            has its own output weights ``W_out``.
        hidden_bias: the hidden layer has a bias ``b_hidden``.
        privileged: ``act_h`` is a ReLU (the hidden basis is privileged), else the identity.
        output_relu: ``act_o`` is a ReLU, else the identity.
        abs_target: the target is ``|x|`` instead of ``x``.
    """

    name: str
    tied: bool
    hidden_bias: bool
    privileged: bool
    output_relu: bool
    abs_target: bool

    @property
    def readout(self) -> str:
        """Name of the output weights ``W_read: (instance, n_hidden, n_features)``."""
        return "W" if self.tied else "W_out"

    @property
    def reads_gram(self) -> bool:
        """The output pre-activation is ``WᵀW x + b``: tied, no hidden bias or ReLU."""
        return self.tied and not self.hidden_bias and not self.privileged

    def n_parameters(self, n_features: int, n_hidden: int) -> int:
        """Parameters of one instance with ``n_features`` features and ``n_hidden`` hidden
        dimensions."""
        weights = 1 if self.tied else 2
        return weights * n_hidden * n_features + n_features + n_hidden * self.hidden_bias

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the model should output for ``x`` (any shape): ``|x|`` or ``x`` itself."""
        return x.abs() if self.abs_target else x


# fmt: off
MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    #         name           tied   hidden_bias privileged output_relu abs_target
    ModelKind("linear",      True,  False,      False,     False,      False),
    ModelKind("relu",        True,  False,      False,     True,       False),
    ModelKind("hidden_relu", True,  False,      True,      True,       False),
    ModelKind("abs",         False, True,       True,      True,       True),
)}
"""The toy-model kinds by name (the TMS paper's models, see the module docstring)."""
# fmt: on

KINDS = tuple(MODEL_KINDS)
"""Names of the toy-model kinds: ``("linear", "relu", "hidden_relu", "abs")``."""


@saveable
class ToyModel(Saveable):
    """``n_instances`` independent toy models of one kind, trained together.

    Args:
        kind: one of :data:`KINDS`.
        n_instances: independent copies (each may see different data, importance and seed).
        n_features: input features ``n``.
        n_hidden: hidden dimensions ``m`` (neurons for ``"hidden_relu"`` and ``"abs"``).
        importance: per-feature loss weight ``I_i ≥ 0``, broadcast to ``(instance,
            n_features)`` like numpy: a scalar, ``(n_features,)`` per feature (e.g.
            ``0.9 ** torch.arange(n_features)``, shared by all instances), ``(instance, 1)`` per
            instance or ``(instance, n_features)``.
        seed: int, ``torch.Generator``, or one int per instance (then instance ``k`` is
            initialised exactly as a one-instance model with ``seed[k]``; sweeps rely on this).
            None: torch's global generator, as for ``nn.Module`` initialisers, so
            ``torch.manual_seed`` fixes the initial weights.

    ``model.save(path)`` writes it to a folder and ``superpose.load(path)`` brings it back
    (see :mod:`superpose.io`).

    Attributes:
        W: ``(instance, n_hidden, n_features)`` feature directions (the input weights for
            ``"abs"``).
        b: ``(instance, n_features)`` output bias.
        W_out: ``(instance, n_hidden, n_features)`` output weights, ``"abs"`` only.
        b_hidden: ``(instance, n_hidden)`` hidden bias, ``"abs"`` only.
        importance: buffer ``(instance, n_features)``.
    """

    def __init__(
        self,
        kind: str = "relu",
        n_instances: int = 1,
        n_features: int = 5,
        n_hidden: int = 2,
        importance: ArrayLike = 1.0,
        *,
        seed: int | Sequence[int] | torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        spec = MODEL_KINDS[kind]
        self.n_instances = positive_int("n_instances", n_instances)
        self.n_features = positive_int("n_features", n_features)
        self.n_hidden = positive_int("n_hidden", n_hidden)
        importance = per_instance_feature(
            "importance", importance, self.n_features, low=0.0, high=None
        )
        self.register_buffer(
            "importance", broadcast_instances("importance", importance, self.n_instances).clone()
        )
        weights = self._initial_weights(1 if spec.tied else 2, seed)
        self.W = nn.Parameter(weights[0])
        self.b = nn.Parameter(torch.zeros(self.n_instances, self.n_features))
        if not spec.tied:
            self.W_out = nn.Parameter(weights[1])
        if spec.hidden_bias:
            self.b_hidden = nn.Parameter(torch.zeros(self.n_instances, self.n_hidden))

    @property
    def kind_spec(self) -> ModelKind:
        """The :class:`ModelKind` of :attr:`kind`."""
        return MODEL_KINDS[self.kind]

    def config(self) -> dict[str, object]:
        """Constructor arguments for :func:`superpose.load` (importance is a buffer)."""
        return {
            "kind": self.kind,
            "n_instances": self.n_instances,
            "n_features": self.n_features,
            "n_hidden": self.n_hidden,
        }

    def _initial_weights(
        self, n_weights: int, seed: int | Sequence[int] | torch.Generator | None
    ) -> torch.Tensor:
        """Xavier-normal weights ``(n_weights, instance, n_hidden, n_features)``."""
        std = math.sqrt(2.0 / (self.n_hidden + self.n_features))
        shape = (self.n_hidden, self.n_features)
        if isinstance(seed, Sequence) and not isinstance(seed, str):
            if len(seed) != self.n_instances:
                raise ValueError(
                    f"seed: a per-instance seed list needs n_instances="
                    f"{self.n_instances} entries, got {len(seed)}"
                )
            per_instance = [
                torch.randn(n_weights, *shape, generator=make_generator(s)) for s in seed
            ]
            return torch.stack(per_instance, dim=1) * std
        generator = make_generator(seed)
        return torch.randn(n_weights, self.n_instances, *shape, generator=generator) * std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x: (instance, batch, n_features)``; returns the same shape."""
        self.check_input(x)
        spec = self.kind_spec
        W_in = self.W.transpose(1, 2)  # (instance, n_features, n_hidden)
        if spec.hidden_bias:
            hidden = torch.baddbmm(self.b_hidden[:, None, :], x, W_in)
        else:
            hidden = torch.bmm(x, W_in)
        if spec.privileged:
            hidden = torch.relu(hidden)  # (instance, batch, n_hidden)
        out = torch.baddbmm(self.b[:, None, :], hidden, getattr(self, spec.readout))
        return torch.relu(out) if spec.output_relu else out

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a TypeError/ValueError unless ``x`` is a tensor shaped ``(instance=n_instances,
        batch, n_features)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 3 or x.shape[0] != self.n_instances or x.shape[2] != self.n_features:
            shared = "x[None]" if self.n_instances == 1 else f"x.expand({self.n_instances}, -1, -1)"
            hint = f"; for one batch shared by every instance use {shared}" if x.ndim == 2 else ""
            raise ValueError(
                f"x must be shaped (instance, batch, n_features) = ({self.n_instances}, batch, "
                f"{self.n_features}), got {tuple(x.shape)}{hint}"
            )

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the model should output for ``x``: ``|x|`` for ``"abs"``, else ``x``."""
        return self.kind_spec.target(x)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Per-instance loss ``(instance,)``: batch mean of ``Σ_i I_i (y_i − x'_i)²``."""
        error = (self.target(x) - self(x)) ** 2
        return (error * self.importance[:, None, :]).sum(-1).mean(-1)

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, n_instances={self.n_instances}, "
            f"n_features={self.n_features}, n_hidden={self.n_hidden}"
        )
