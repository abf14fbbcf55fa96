"""The SAE trainer: fits every instance of an SAE at once on a source's activations.

Instances are independent, so the objective is the sum of the per-instance losses. Defaults
for these small synthetic problems (features of magnitude ≤ 1 along unit directions):
Adam with ``lr = 1e-3`` and default betas (0.9, 0.999) (Gao et al. 2024 and Anthropic's April 2024
update also use Adam; their smaller rates suit far larger dictionaries), a constant rate
after an optional warm-up (any :data:`superpose.training.SCHEDULES`), the sparsity penalty
warmed up linearly over ``sparsity_warmup_steps`` (Anthropic's λ warm-up), ``b_dec``
initialised to the mean of the first batch, and decoder rows renormalised to unit norm
after every step for SAEs whose ``unit_decoder`` is set (every kind but ``"relu"``, whose
penalty carries the decoder norms unless it is built with ``unit_decoder=True``).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from superpose._checks import make_generator, optional_seed, resolve_device
from superpose.sae import fast
from superpose.sae.base import SparseAutoencoder
from superpose.sae.sources import Source, activations_for, check_source
from superpose.training import loop
from superpose.training.config import (
    LoopConfig,
    non_negative_integer,
    optional_positive_integer,
    positive_integer,
    setting,
    steps_within_run,
)
from superpose.training.result import TrainResult, check_precision, resolve_method

HISTORY = ("loss", "mse", "sparsity", "aux", "l0", "dead_fraction")
"""Per-instance quantities logged by :func:`train`."""

SAETrainResult = TrainResult
"""The SAE trainer's result is every trainer's :class:`~superpose.training.TrainResult`
(this name is kept for code written before 0.5)."""


def _betas(name: str, value: Any) -> None:
    if not (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(b, int | float) and 0 <= b < 1 for b in value)
    ):
        raise ValueError(f"{name} must be a pair (β₁, β₂) of floats in [0, 1), got {value!r}")


@dataclass
class SAETrainConfig(LoopConfig):
    """The SAE trainer's settings (:func:`train`): the loop's and its own."""

    steps: int = setting(5000, "optimisation steps", positive_integer)
    batch_size: int = setting(1024, "samples per step", positive_integer)
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam's (β₁, β₂), each in [0, 1)", _betas)
    sparsity_warmup_steps: int = setting(
        0,
        "steps over which the sparsity penalty ramps up linearly, in [0, steps]",
        non_negative_integer,
    )
    dead_window: int = setting(
        65536, "samples without firing after which a latent counts as dead", positive_integer
    )
    resample_every: int | None = setting(
        None,
        "resample dead latents every this many steps (None: never)",
        optional_positive_integer,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        steps_within_run("sparsity_warmup_steps", self.sparsity_warmup_steps, self.steps)


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
    source: Source,
    *,
    steps: int = SAETrainConfig.steps,
    batch_size: int = SAETrainConfig.batch_size,
    lr: float = SAETrainConfig.lr,
    betas: tuple[float, float] = SAETrainConfig.betas,
    schedule: str = SAETrainConfig.schedule,
    warmup_steps: int = SAETrainConfig.warmup_steps,
    sparsity_warmup_steps: int = SAETrainConfig.sparsity_warmup_steps,
    dead_window: int = SAETrainConfig.dead_window,
    resample_every: int | None = SAETrainConfig.resample_every,
    log_every: int = SAETrainConfig.log_every,
    seed: int | None = None,
    device: str | torch.device | None = "cpu",
    progress: bool | None = None,
    method: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    on_log: loop.OnLog | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume_from: str | Path | None = None,
) -> TrainResult:
    """Train every instance of ``sae`` on ``source`` with Adam; the SAE is updated in place
    and left in inference mode (``sae.eval()``: BatchTopK then uses its threshold).

    Every SAE instance sees the same batch when ``source`` has one instance (drawn once and
    shared) and its own when ``source`` has one instance per SAE instance. The settings'
    defaults and checks live in :class:`SAETrainConfig`; the loop (schedule, logging,
    divergence, callbacks, checkpoints) is :func:`superpose.training.loop.run`.

    Args:
        sae: the SAEs to train (moved to ``device``).
        source: activations with ``d_model == sae.d_in``.
        steps: optimisation steps.
        batch_size: samples per step.
        lr: peak learning rate, scaled by :func:`superpose.training.lr_factor` each step.
        betas: Adam's ``(β₁, β₂)``, each in ``[0, 1)``. A smaller ``β₂`` (e.g. 0.99) damps
            the large steps Adam takes on a latent whose gradient is rarely non-zero.
        schedule: one of :data:`superpose.training.SCHEDULES`, after ``warmup_steps`` of
            linear warm-up.
        sparsity_warmup_steps: the sparsity penalty's coefficient ramps linearly from ~0 to
            its value over these steps.
        dead_window: samples without firing after which a latent counts as dead.
        resample_every: resample dead latents (:func:`resample_dead`) every this many steps
            (never in the last ``resample_every`` steps); None: never.
        log_every: steps per history entry, divergence check and ``on_log`` call.
        seed: batches (and resampled latents' picks) come from a stream seeded ``seed``: the
            same seed gives the same run. None: from the source's own generator (torch's
            global generator when it has no seed, so ``torch.manual_seed`` governs the run).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        progress: True shows a progress bar, False hides it, None (default) shows it on a
            terminal only.
        method: ``"reference"``: the SAE's own loss differentiated by autograd, with
            ``torch.optim.Adam`` (the readable definition). ``"fast"``: the same objective
            with hand-written gradients that touch only the active latents
            (:mod:`superpose.sae.fast`, TopK and BatchTopK SAEs) and the fused Adam: the same
            gradients up to float rounding, several times faster
            (``experiments/sae_benchmark.py`` measures it). ``"auto"`` picks ``"fast"``
            whenever :func:`superpose.sae.fast.supports` the SAE.
        precision: ``"fp32"``, the only one offered for SAEs. (0.4's ``"bf16"`` selection
            product measured slower than float32 on every CPU tried; it now raises a
            ValueError saying so.)
        threads: torch CPU threads for the run (restored afterwards); None picks them by the
            step's size, ``instance × batch × d_sae`` (:func:`superpose.runtime.auto_threads`).
        on_log: ``on_log(step, metrics)`` after each logging interval, ``metrics`` mapping
            each of :data:`HISTORY` to its ``(instance,)`` interval mean (numpy).
        checkpoint: a file to write a checkpoint to every ``checkpoint_every`` steps (a
            multiple of ``log_every``), so that ``resume_from`` goes on bit-identically.
        checkpoint_every: see ``checkpoint``.
        resume_from: a checkpoint file from a run of the same SAE shape and settings.

    Returns:
        The run's :class:`~superpose.training.TrainResult`; ``history`` holds each of
        :data:`HISTORY` (``sparsity`` unscaled by the warm-up, ``l0`` the active latents
        per sample, ``dead_fraction`` the latents silent for ``dead_window`` samples).

    Raises:
        TrainingDiverged: an instance's loss became NaN/inf or blew up (the rule is in
            :mod:`superpose.training.divergence`); the error names the step and instances.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae must be a superpose.sae SAE, got {type(sae).__name__}")
    check_source(source, sae.n_instances, sae.d_in)
    config = SAETrainConfig(
        steps=steps,
        lr=lr,
        schedule=schedule,
        warmup_steps=warmup_steps,
        log_every=log_every,
        batch_size=batch_size,
        betas=betas,
        sparsity_warmup_steps=sparsity_warmup_steps,
        dead_window=dead_window,
        resample_every=resample_every,
    )
    seed = optional_seed(seed)
    method = resolve_method(
        method, fast.supports(sae), f"supports the topk and batchtopk kinds, not {sae.kind!r}"
    )
    if precision == "bf16":
        raise ValueError(
            "precision='bf16' is no longer offered for SAEs: its bfloat16 selection product "
            "measured slower than float32 on every CPU tried (AMX Xeon 30.5k vs 38.5k "
            "samples/s; AVX512-BF16 EPYC 42k vs 52k), so 0.5 dropped it; leave precision "
            "at 'fp32'"
        )
    check_precision(precision, method, "topk and batchtopk kinds")
    device = resolve_device(device)

    with loop.threads_for(device, threads, sae.n_instances * batch_size * sae.d_sae):
        sae.to(device).train()
        generator = source.generator if seed is None else make_generator(seed, source.device)
        optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=method == "fast")
        since_fired = torch.zeros(sae.n_instances, sae.d_sae, dtype=torch.long, device=device)
        workspace: dict[str, torch.Tensor] = {}  # the fast path's reused buffers
        last: dict[str, torch.Tensor] = {}  # this step's batch and latents, for after_update

        def gradients(step: int) -> dict[str, torch.Tensor]:
            scale = min(1.0, (step + 1) / sparsity_warmup_steps) if sparsity_warmup_steps else 1.0
            x = activations_for(source, sae.n_instances, batch_size, generator).to(device)
            if step == 0:
                with torch.no_grad():
                    sae.b_dec.copy_(x.mean(1))
            dead = since_fired >= dead_window
            optimizer.zero_grad(set_to_none=True)
            if method == "fast":
                parts, z = fast.loss_and_backward(sae, x, dead, workspace)
            else:
                parts, z = loss_and_backward(sae, x, dead, scale)
            fired, l0 = firing(z)
            last.update(x=x, z=z, fired=fired)
            return {
                "loss": parts["mse"] + scale * parts["sparsity"] + parts["aux"],
                **parts,
                "l0": l0,
                "dead_fraction": dead.float().mean(-1),
            }

        def after_update(step: int) -> None:
            nonlocal since_fired
            if sae.unit_decoder:
                normalize_decoder(sae)
            sae.observe(last["z"])
            since_fired = torch.where(last["fired"], 0, since_fired + batch_size)
            if resample_every is not None and (step + 1) % resample_every == 0:
                if step + resample_every < steps:
                    resampled = since_fired >= dead_window
                    resample_dead(sae, last["x"], resampled, optimizer, generator)
                    since_fired = since_fired.masked_fill(resampled, 0)  # a fresh start

        def load_state(state: dict[str, torch.Tensor]) -> None:
            nonlocal since_fired
            since_fired = state["since_fired"].to(device)

        history = loop.run(
            loop.Trainable(
                module=sae,
                optimizer=optimizer,
                gradients=gradients,
                n_instances=sae.n_instances,
                after_update=after_update,
                generators=[generator],
                state=lambda: {"since_fired": since_fired},
                load_state=load_state,
                name=f"train SAE {sae.kind}",
            ),
            config,
            device=device,
            progress=progress,
            on_log=on_log,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            resume_from=resume_from,
        )
    sae.eval()
    return TrainResult(
        history_steps=history.steps,
        history=history.values,
        wall_time=history.wall_time,
        steps=steps,
        device=str(device),
        method=method,
        precision=precision,
        samples_per_step=batch_size,
    )
