"""The SAE trainer: fits every instance of an SAE at once on a source's activations.

Instances are independent, so the objective is the sum of the per-instance losses. Defaults
for these small synthetic problems (features of magnitude ≤ 1 along unit directions):
Adam with ``lr = 1e-3`` and default betas (0.9, 0.999) (Gao et al. 2024 and Anthropic's April 2024
update also use Adam; their smaller rates suit far larger dictionaries), a constant rate
after an optional warm-up (any :data:`superpose.train.SCHEDULES`), the sparsity penalty
warmed up linearly over ``sparsity_warmup_steps`` (Anthropic's λ warm-up), ``b_dec``
initialised to the mean of the first batch, and decoder rows renormalised to unit norm
after every step for the kinds that require it (all but ``"relu"``, whose penalty carries
the decoder norms).

Dead latents: a latent is *dead* when it has not fired on any of the last ``dead_window``
samples (default 2¹⁶ = 65 536, a few times the inverse firing rate of the sparsest features
in the tests). The TopK kinds feed the dead mask to their AuxK loss. Resampling
(:func:`resample_dead`, after Bricken et al. 2023) re-initialises dead latents toward
badly reconstructed inputs every ``resample_every`` steps; it is off by default
(Anthropic's April 2024 update dropped it) and works for every kind.

Each step's gradients come from autograd on the SAE's own loss (:func:`loss_and_backward`,
the readable reference) or, for the TopK kinds, from :mod:`superpose.sae.fast`
(hand-written, touching only the active latents; tested equal). A source with one instance
is sampled once per step and shared by every SAE instance, and a
:class:`~superpose.sae.Superposed` source builds its batch from the active features only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from superpose._checks import make_generator, optional_seed, positive_int, resolve_device
from superpose.sae import fast
from superpose.sae.base import SparseAutoencoder
from superpose.sae.sources import ActivationSource, activations_for, check_source
from superpose.train import (
    _check_finite,
    check_optimizer_settings,
    check_precision,
    lr_factor,
    resolve_method,
)

PRECISIONS = fast.PRECISIONS
"""Encoder-product precisions of :func:`train` (``"bf16"`` needs ``method="fast"``)."""

HISTORY = ("loss", "mse", "sparsity", "aux", "l0", "dead_fraction")
"""Per-instance quantities logged by :func:`train`."""


@dataclass
class SAETrainResult:
    """What :func:`train` returns.

    Attributes:
        history_steps: ``(n_logs,)`` the step at the end of each logging interval.
        history: :data:`HISTORY` name → ``(n_logs, instance)`` mean over each interval of the
            training loss, its parts (``sparsity`` unscaled by the warm-up), ``l0`` (active
            latents per sample) and ``dead_fraction`` (see the module docstring).
        wall_time: seconds spent in the training loop.
        steps: optimisation steps taken.
        samples_per_second: ``steps · batch_size / wall_time`` (per instance).
        device: where it ran.
        method: how the gradients were computed, ``"fast"`` or ``"reference"``.
        precision: the encoder product's precision, ``"fp32"`` or ``"bf16"``.
    """

    history_steps: torch.Tensor
    history: dict[str, torch.Tensor] = field(repr=False)
    wall_time: float
    steps: int
    samples_per_second: float
    device: str
    method: str
    precision: str = "fp32"


def loss_and_backward(
    sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor, sparsity_scale: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The reference step: ``mse + sparsity_scale · sparsity + aux`` of ``x: (instance, batch,
    d_in)`` differentiated by autograd (every parameter's ``.grad`` set from the summed loss).

    Args:
        dead: ``(instance, d_sae)`` bool, latents that have not fired lately (for AuxK).
        sparsity_scale: the penalty's warm-up factor in ``[0, 1]``.

    Returns:
        The detached parts ``{"mse", "sparsity", "aux"}`` ``(instance,)`` and latents
        ``(instance, batch, d_sae)``.
    """
    parts, z = sae.terms(x, dead)
    total = parts["mse"] + sparsity_scale * parts["sparsity"] + parts["aux"]
    total.sum().backward()
    return {name: value.detach() for name, value in parts.items()}, z.detach()


def firing(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which latents fired ``(instance, d_sae)`` (bool) and the mean active latents per sample
    ``(instance,)`` for latents ``z: (instance, batch, d_sae)``, dense or sparse COO."""
    n_instances, batch_size, d_sae = z.shape
    if not z.is_sparse:
        positive = z > 0
        return positive.any(1), positive.sum(-1).float().mean(-1)
    z = z.coalesce()
    instance, _, latent = z.indices()[:, z.values() > 0]
    fired = torch.zeros(n_instances * d_sae, dtype=torch.bool, device=z.device)
    fired[instance * d_sae + latent] = True
    l0 = torch.bincount(instance, minlength=n_instances).float() / batch_size
    return fired.view(n_instances, d_sae), l0


@torch.no_grad()
def normalize_decoder(sae: SparseAutoencoder) -> None:
    """Scale every decoder row to unit norm in place."""
    sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def resample_dead(
    sae: SparseAutoencoder,
    x: torch.Tensor,
    dead: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> int:
    """Re-initialise dead latents toward badly reconstructed inputs (after Bricken et al.
    2023, "Towards Monosemanticity", simplified to draw from the current batch).

    Per instance, each dead latent ``j`` gets an input ``x_s`` of ``x: (instance, batch,
    d_in)`` drawn with probability ∝ ``‖x_s − x̂_s‖²``: ``W_dec,j = u`` with ``u`` the unit
    vector along ``x_s − b_dec``, ``W_enc[:, j] = 0.2 · (mean alive encoder norm) · u``,
    ``b_enc,j = 0``, and Adam's moments of those entries reset.

    Args:
        dead: ``(instance, d_sae)`` bool.

    Returns:
        The number of latents resampled.
    """
    error = (sae(x) - x).square().sum(-1)  # (instance, batch)
    norms = sae.W_enc.norm(dim=1)  # (instance, d_sae)
    alive_norm = torch.where(dead, 0.0, norms).sum(-1) / (~dead).sum(-1).clamp_min(1)
    alive_norm = torch.where((~dead).any(-1), alive_norm, 1.0)
    for instance in dead.any(-1).nonzero().flatten().tolist():
        latents = dead[instance].nonzero().flatten()
        weights = error[instance].clamp_min(1e-12).to(generator.device)  # drawn where it lives
        rows = torch.multinomial(weights, len(latents), replacement=True, generator=generator)
        direction = x[instance, rows.to(x.device)] - sae.b_dec[instance]
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sae.W_dec[instance, latents] = direction
        sae.W_enc[instance, :, latents] = 0.2 * alive_norm[instance] * direction.T
        sae.b_enc[instance, latents] = 0.0
        for parameter, index in (
            (sae.W_dec, (instance, latents)),
            (sae.W_enc, (instance, slice(None), latents)),
            (sae.b_enc, (instance, latents)),
        ):
            for moment in optimizer.state.get(parameter, {}).values():
                if moment.shape == parameter.shape:
                    moment[index] = 0.0
    return int(dead.sum())


def train(
    sae: SparseAutoencoder,
    source: ActivationSource,
    *,
    steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    schedule: str = "constant",
    warmup_steps: int = 0,
    sparsity_warmup_steps: int = 0,
    dead_window: int = 65536,
    resample_every: int | None = None,
    log_every: int = 100,
    seed: int | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    method: str = "auto",
    precision: str = "fp32",
) -> SAETrainResult:
    """Train every instance of ``sae`` on ``source`` with Adam; the SAE is updated in place
    and left in inference mode (``sae.eval()``: BatchTopK then uses its threshold).

    Every SAE instance sees the same batch when ``source`` has one instance (drawn once and
    shared) and its own when ``source`` has one instance per SAE instance.

    Args:
        sae: the SAEs to train (moved to ``device``).
        source: activations with ``d_model == sae.d_in``.
        steps: optimisation steps.
        batch_size: samples per step.
        lr: peak learning rate, scaled by :func:`superpose.train.lr_factor` each step.
        betas: Adam's ``(β₁, β₂)``, each in ``[0, 1)``. A smaller ``β₂`` (e.g. 0.99) damps
            the large steps Adam takes on a latent whose gradient is rarely non-zero.
        schedule: one of :data:`superpose.train.SCHEDULES`, after ``warmup_steps`` of linear
            warm-up.
        sparsity_warmup_steps: the sparsity penalty's coefficient ramps linearly from ~0 to
            its value over these steps.
        dead_window: samples without firing after which a latent counts as dead.
        resample_every: resample dead latents (:func:`resample_dead`) every this many steps
            (never in the last ``resample_every`` steps); None: never.
        log_every: steps per history entry (and per NaN/inf check).
        seed: batches (and resampled latents' picks) come from a stream seeded ``seed``: the
            same seed gives the same run. None: from the source's features' own generator
            (torch's global generator when they have no seed, so ``torch.manual_seed``
            governs the run).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: show a progress bar.
        method: ``"reference"``: the SAE's own loss differentiated by autograd, with
            ``torch.optim.Adam`` (the readable definition). ``"fast"``: the same objective
            with hand-written gradients that touch only the active latents
            (:mod:`superpose.sae.fast`, TopK and BatchTopK SAEs) and the fused Adam: the same
            gradients up to float rounding, several times faster
            (``experiments/sae_benchmark.py`` measures it). ``"auto"`` picks ``"fast"``
            whenever :func:`superpose.sae.fast.supports` the SAE.
        precision: ``"fp32"``, or ``"bf16"`` (with ``method="fast"``): the encoder product
            from bfloat16 operands, used to select the active latents, whose values,
            gradients, weights and optimiser state stay float32. Only pays on CPUs with bf16
            matrix instructions (AMX or AVX512-BF16); it can change which latents are kept
            where pre-activations nearly tie.

    Raises:
        TrainingDiverged: a loss became NaN/inf; the error names the step and instances.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be a superpose.sae SAE, got {type(sae).__name__}")
    check_source(source, sae.n_instances, sae.d_in)
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    log_every = positive_int("log_every", log_every)
    dead_window = positive_int("dead_window", dead_window)
    check_optimizer_settings(steps, lr, schedule, warmup_steps, 0.0)
    if not (isinstance(sparsity_warmup_steps, int) and 0 <= sparsity_warmup_steps <= steps):
        raise ValueError(
            f"sparsity_warmup_steps must be an int in [0, steps={steps}], "
            f"got {sparsity_warmup_steps!r}"
        )
    if not (
        isinstance(betas, tuple)
        and len(betas) == 2
        and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)
    ):
        raise ValueError(f"betas must be a pair (β₁, β₂) of floats in [0, 1), got {betas!r}")
    if resample_every is not None:
        resample_every = positive_int("resample_every", resample_every)
    seed = optional_seed(seed)
    method = resolve_method(
        method, fast.supports(sae), f"supports the topk and batchtopk kinds, not {sae.kind!r}"
    )
    check_precision(precision, method, "topk and batchtopk kinds")
    device = resolve_device(device)

    sae.to(device).train()
    generator = (
        source.features.generator if seed is None else make_generator(seed, source.features.device)
    )
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=method == "fast")
    since_fired = torch.zeros(sae.n_instances, sae.d_sae, dtype=torch.long, device=device)
    n_logs = steps // log_every + (steps % log_every > 0)
    history = {name: torch.zeros(n_logs, sae.n_instances) for name in HISTORY}
    interval = {name: torch.zeros(log_every, sae.n_instances, device=device) for name in HISTORY}
    workspace: dict[str, torch.Tensor] = {}  # the fast path's reused buffers
    bar = tqdm(total=steps, disable=not progress, desc=f"train SAE {sae.kind}", unit="step")
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, steps, schedule, warmup_steps)
        sparsity_scale = (
            min(1.0, (step + 1) / sparsity_warmup_steps) if sparsity_warmup_steps else 1.0
        )
        x = activations_for(source, sae.n_instances, batch_size, generator).to(device)
        if step == 0:
            with torch.no_grad():
                sae.b_dec.copy_(x.mean(1))
        dead = since_fired >= dead_window
        optimizer.zero_grad(set_to_none=True)
        if method == "fast":
            parts, z = fast.loss_and_backward(sae, x, dead, sparsity_scale, precision, workspace)
        else:
            parts, z = loss_and_backward(sae, x, dead, sparsity_scale)
        optimizer.step()
        if sae.unit_decoder:
            normalize_decoder(sae)
        sae.observe(z)
        fired, l0 = firing(z)
        since_fired = torch.where(fired, 0, since_fired + batch_size)
        if resample_every is not None and (step + 1) % resample_every == 0:
            if step + resample_every < steps:
                resampled = since_fired >= dead_window
                resample_dead(sae, x, resampled, optimizer, generator)
                since_fired = since_fired.masked_fill(resampled, 0)  # a fresh start
        row = step % log_every
        interval["loss"][row] = parts["mse"] + sparsity_scale * parts["sparsity"] + parts["aux"]
        for name in ("mse", "sparsity", "aux"):
            interval[name][row] = parts[name]
        interval["l0"][row] = l0
        interval["dead_fraction"][row] = dead.float().mean(-1)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            _check_finite(interval["loss"][: row + 1], first_step=step - row)
            for name in HISTORY:
                history[name][step // log_every] = interval[name][: row + 1].mean(0).cpu()
            bar.update(row + 1)
            bar.set_postfix(loss=f"{history['loss'][step // log_every].mean().item():.4g}")
    wall_time = time.perf_counter() - start
    bar.close()
    sae.eval()
    return SAETrainResult(
        history_steps=torch.clamp(torch.arange(1, n_logs + 1) * log_every, max=steps),
        history=history,
        wall_time=wall_time,
        steps=steps,
        samples_per_second=steps * batch_size / wall_time,
        device=str(device),
        method=method,
        precision=precision,
    )
