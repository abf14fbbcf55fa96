"""Hand-written gradients for :class:`~superpose.models.ToyModel`: the trainer's fast path.

Autograd records every operation of the forward pass and replays it backwards. For these
two-layer models the backward pass is short enough to write out, which saves the recording,
the broadcast-heavy elementwise work of the generic loss and several temporaries. One step
is the five batched matrix products the model needs (two forward, three backward; ``bmm`` /
``baddbmm`` in the instance-major layout ``(instance, batch, feature)``) plus a few
elementwise passes over the batch.

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
    """
    batch = x.shape[1]
    scale = model.importance[:, None, :] * (2.0 / batch)  # (instance, 1, n)
    if model.kind == "abs":
        target = x.abs()
        w_read = model.W_out
        hidden = torch.baddbmm(model.b_hidden[:, None, :], x, model.W.transpose(1, 2)).relu_()
    else:
        target = x
        w_read = model.W
        hidden = torch.bmm(x, model.W.transpose(1, 2))
        if model.kind == "hidden_relu":
            hidden.relu_()
    out = torch.baddbmm(model.b[:, None, :], hidden, w_read)  # (instance, batch, n)
    if model.kind != "linear":
        out.relu_()
    error = out - target
    grad_out = error * scale  # the gradient before the output ReLU's mask
    loss = torch.linalg.vecdot(error.flatten(1), grad_out.flatten(1)) * 0.5
    del error
    if model.kind != "linear":  # zero where out == 0, in place
        torch.ops.aten.threshold_backward.grad_input(grad_out, out, 0.0, grad_input=grad_out)
    del out
    grad_hidden = torch.bmm(grad_out, w_read.transpose(1, 2))  # (instance, batch, m)
    if model.kind != "linear" and model.kind != "relu":
        grad_hidden = torch.ops.aten.threshold_backward(grad_hidden, hidden, 0.0)
    model.b.grad = grad_out.sum(1)
    grad_w_read = torch.bmm(hidden.transpose(1, 2), grad_out)
    if model.kind == "abs":
        model.W_out.grad = grad_w_read
        model.b_hidden.grad = grad_hidden.sum(1)
        model.W.grad = torch.bmm(grad_hidden.transpose(1, 2), x)
    else:
        model.W.grad = torch.baddbmm(grad_w_read, grad_hidden.transpose(1, 2), x)
    return loss
