"""Hand-written gradients for :class:`~superpose.models.ToyModel`: the trainer's fast path.

Autograd records every operation of the forward pass and replays it backwards. For these
two-layer models the backward pass is short enough to write out, which saves the recording,
the broadcast-heavy elementwise work of the generic loss and several temporaries. One step
is the five batched matrix products the model needs (two forward, three backward; ``bmm`` /
``baddbmm`` in the instance-major layout ``(instance, batch, feature)``, or a few broadcast
multiply-adds when the matrices are tiny, see :func:`matmul`) plus a few elementwise passes
over the batch.

Notation, per instance: ``x: (batch, n)`` the input, ``y`` its target (``x``, or ``|x|`` for
``"abs"``), ``h: (batch, m)`` the hidden activations, ``z = h W_read + b: (batch, n)`` the
output pre-activation, ``out = ReLU(z)`` (``z`` for ``"linear"``), ``W_read`` the output weights
(``W``, or ``W_out`` for ``"abs"``). With ``L = (1/B) Σ I_i (out − y)²`` summed over features and
averaged over the batch,

* ``g = ∂L/∂z = (2/B) I ⊙ (out − y) ⊙ [z > 0]`` (no mask for ``"linear"``),
* ``∂L/∂b = Σ_batch g``, ``∂L/∂W_read = hᵀ g``,
* ``d = ∂L/∂h = g W_readᵀ ⊙ [h > 0]`` (no mask when the hidden layer is linear),
* ``∂L/∂W_in = dᵀ x`` (``W_in = W``; for the tied kinds ``W``'s gradient is the sum of both
  terms), ``∂L/∂b_hidden = Σ_batch d``.

Instances are independent, so the gradient of the summed loss is each instance's own.
"""

from __future__ import annotations

import torch

from superpose.models import ToyModel

CHUNK_ELEMENTS = 2**18
"""Batch elements ``(instance × rows × n_features)`` per chunk in :func:`loss_and_backward`:
about 1 MiB per temporary, so a chunk's work stays in cache. A chunk holds several instances'
whole batches, or, when one instance's batch is larger, a block of its rows (a full-batch
step of 2 instances on 2,000 samples of 1,000 features, one idle core: 29 ms in blocks of
262 rows against 70 ms whole)."""

SMALL_PRODUCT = 4
"""Largest ``contraction × output columns`` for which :func:`matmul` avoids ``bmm``."""


def matmul(a: torch.Tensor, b: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
    """Batched ``add + a @ b`` for ``a: (instance, p, q)``, ``b: (instance, q, r)`` and ``add``
    broadcastable to ``(instance, p, r)``; returns ``(instance, p, r)``.

    ``bmm`` pays a fixed cost per matrix that dominates for tiny ones (``n_features=2,
    n_hidden=1`` grids of thousands of instances), so when ``q·r ≤`` :data:`SMALL_PRODUCT`
    the product is ``q`` broadcast multiply-adds over the ``(instance, p, r)`` output instead.
    """
    q, r = b.shape[1], b.shape[2]
    if q * r > SMALL_PRODUCT:
        return torch.bmm(a, b) if add is None else torch.baddbmm(add, a, b)
    out = a[:, :, :1] * b[:, :1, :]
    if add is not None:
        out += add
    for k in range(1, q):
        out.addcmul_(a[:, :, k : k + 1], b[:, k : k + 1, :])
    return out


def supports(model: ToyModel) -> bool:
    """Whether the hand-written gradients apply: any :data:`~superpose.models.KINDS` of a
    plain :class:`ToyModel` (a subclass that overrides the forward pass or the loss does not)."""
    cls = type(model)
    return all(
        getattr(cls, name) is getattr(ToyModel, name) for name in ("forward", "target", "loss")
    )


@torch.no_grad()
def loss_and_backward(model: ToyModel, x: torch.Tensor) -> torch.Tensor:
    """Per-instance loss ``(instance,)`` on ``x: (instance, batch, n_features)``.

    Sets every parameter's ``.grad`` to the gradient of the summed loss, as
    ``model.loss(x).sum().backward()`` would (up to float rounding), without autograd.
    The work is split into chunks of about :data:`CHUNK_ELEMENTS` batch elements (instances,
    or blocks of rows of one instance, whose losses and gradients add up) so that each chunk's
    temporaries stay in cache.
    """
    parameters = dict(model.named_parameters())
    grads = {name: torch.empty_like(parameter) for name, parameter in parameters.items()}
    loss = x.new_empty(model.n_instances)
    batch_size, n_features = x.shape[1], x.shape[2]
    rows = min(batch_size, max(1, CHUNK_ELEMENTS // n_features))
    size = max(1, CHUNK_ELEMENTS // (rows * n_features))
    for start in range(0, model.n_instances, size):
        part = slice(start, start + size)
        for first in range(0, batch_size, rows):
            chunk_loss = _chunk(
                model.kind,
                {name: parameter[part] for name, parameter in parameters.items()},
                model.importance[part],
                x[part, first : first + rows],
                {name: grad[part] for name, grad in grads.items()},
                batch_size,
                accumulate=first > 0,
            )
            if first > 0:
                loss[part] += chunk_loss
            else:
                loss[part] = chunk_loss
    for name, parameter in parameters.items():
        parameter.grad = grads[name]
    return loss


def _chunk(
    kind: str,
    parameters: dict[str, torch.Tensor],
    importance: torch.Tensor,
    x: torch.Tensor,
    grads: dict[str, torch.Tensor],
    batch_size: int,
    accumulate: bool,
) -> torch.Tensor:
    """:func:`loss_and_backward` for some instances' rows: ``parameters`` and ``grads`` are
    the model's parameters and their gradients sliced to those instances, ``importance:
    (instance, n_features)``, ``x: (instance, rows, n_features)`` some of the ``batch_size``
    rows the loss averages over. Returns those rows' share of the loss ``(instance,)``; their
    gradients are written into ``grads``, or added to it when ``accumulate``."""
    scale = importance[:, None, :] * (2.0 / batch_size)  # (instance, 1, n)
    W = parameters["W"]
    if kind == "abs":
        target = x.abs()
        w_read = parameters["W_out"]
        hidden = matmul(x, W.transpose(1, 2), parameters["b_hidden"][:, None, :]).relu_()
    else:
        target = x
        w_read = W
        hidden = matmul(x, W.transpose(1, 2))
        if kind == "hidden_relu":
            hidden.relu_()
    out = matmul(hidden, w_read, parameters["b"][:, None, :])  # (instance, batch, n)
    if kind != "linear":
        out.relu_()
    error = out - target
    grad_out = error * scale  # the gradient before the output ReLU's mask
    loss = torch.linalg.vecdot(error.flatten(1), grad_out.flatten(1)) * 0.5
    del error
    if kind != "linear":  # zero where out == 0, in place
        torch.ops.aten.threshold_backward.grad_input(grad_out, out, 0.0, grad_input=grad_out)
    del out
    grad_hidden = matmul(grad_out, w_read.transpose(1, 2))  # (instance, batch, m)
    if kind in ("hidden_relu", "abs"):
        grad_hidden = torch.ops.aten.threshold_backward(grad_hidden, hidden, 0.0)
    beta = 1.0 if accumulate else 0.0  # baddbmm ignores the old values when beta is 0
    _sum_rows(grad_out, grads["b"], accumulate)
    if kind == "abs":
        grads["W_out"].baddbmm_(hidden.transpose(1, 2), grad_out, beta=beta)
        _sum_rows(grad_hidden, grads["b_hidden"], accumulate)
        grads["W"].baddbmm_(grad_hidden.transpose(1, 2), x, beta=beta)
    else:
        grads["W"].baddbmm_(hidden.transpose(1, 2), grad_out, beta=beta)
        grads["W"].baddbmm_(grad_hidden.transpose(1, 2), x)
    return loss


def _sum_rows(values: torch.Tensor, out: torch.Tensor, accumulate: bool) -> None:
    """Write (or add, when ``accumulate``) ``values: (instance, rows, k)`` summed over rows
    into ``out: (instance, k)``."""
    if accumulate:
        out += values.sum(1)
    else:
        torch.sum(values, 1, out=out)
