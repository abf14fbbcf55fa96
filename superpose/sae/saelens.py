"""SAELens files, both ways: one superpose SAE instance ↔ SAELens's on-disk format.

SAELens (``sae-lens``, the ``compare`` extra; never imported here) stores one SAE per
folder ::

    path/
        cfg.json                  {"architecture", "d_in", "d_sae", "dtype", "device",
                                   "apply_b_dec_to_input", "normalize_activations",
                                   "reshape_activations", "metadata", and for "topk": "k",
                                   "rescale_acts_by_decoder_norm"}
        sae_weights.safetensors   W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in),
                                  b_dec (d_in,), and for "jumprelu": threshold (d_sae,)

and computes what one superpose instance does: ``π = (x − b_dec) W_enc + b_enc``, latents
``z = σ(π)``, ``x̂ = z W_dec + b_dec``. :func:`to_saelens` writes the inference format that
SAELens's own ``save_inference_model`` writes (``sae_lens.SAE.load_from_disk`` opens it);
:func:`from_saelens` reads that format, SAELens's training checkpoints, or a loaded
``sae_lens`` SAE object.

=============  =========================  ====================  ===========================
superpose      SAELens ``architecture``   ``metadata.training_  latents (σ)
kind           (the file)                 architecture``
=============  =========================  ====================  ===========================
relu           standard                   standard              ``ReLU(π)``
topk           topk                       topk                  ``ReLU(TopK_k(π))``
batchtopk      jumprelu, ``threshold``    batchtopk             ``ReLU(π)·[π > θ]`` (θ the
               θ for every latent                               inference threshold)
jumprelu       jumprelu, ``threshold``    jumprelu              ``ReLU(π)·[π > θ_j]``
               ``θ_j = exp(log_θ_j)``
matryoshka     jumprelu, ``threshold``    matryoshka_batchtopk  as batchtopk
               θ for every latent         (``matryoshka_widths``
                                          = ``prefixes``)
=============  =========================  ====================  ===========================

SAELens itself saves its BatchTopK and Matryoshka SAEs for inference as JumpReLU SAEs with
one threshold, so :func:`from_saelens` reads a ``"jumprelu"`` file as ``batchtopk`` or
``matryoshka`` when its ``training_architecture`` says so, its thresholds are all equal and
its ``k`` is a positive number (a fraction too: SAELens's BatchTopK ``k`` is a float), and
otherwise as ``jumprelu`` (which computes the same latents). It
also reads SAELens's training checkpoints (``"batchtopk"`` and ``"matryoshka_batchtopk"``
with their one ``topk_threshold``, and the training configs of the other architectures) and
``reshape_activations = "hook_z"`` SAEs (give them the flattened ``n_heads · d_head``
inputs). A round trip superpose → SAELens → superpose gives back the same weights,
hyper-parameters and latents; a JumpReLU ``log θ`` may come back one float away, with the
same ``θ = exp(log θ)`` (see :func:`log_threshold`).

The training hyper-parameters (they do not change the latents) go to
``metadata.training_architecture_details`` under SAELens's names: ``l1_coefficient`` (with
``lp_norm`` 1: SAELens's "standard" penalty ``λ E_batch Σ_j z_j ‖W_dec,j‖`` is superpose's
``relu`` penalty), ``k``, ``aux_loss_coefficient`` (superpose's ``aux_coefficient``),
``topk_threshold_lr`` (``1 − THRESHOLD_DECAY``), ``l0_coefficient`` and
``jumprelu_bandwidth`` (with ``jumprelu_sparsity_loss_mode`` "step": superpose's L0 penalty),
``matryoshka_widths``. ``metadata.superpose`` keeps the kind and its whole config, from
which :func:`from_saelens` takes only what SAELens has no field for (``aux_k``: SAELens fixes
it at ``d_in // 2``).

Reading folds SAELens options into the weights, exactly in real arithmetic (so up to float
rounding): ``rescale_acts_by_decoder_norm`` (scale ``W_enc``'s column ``j`` and ``b_enc,j`` by
``‖W_dec,j‖`` and divide ``W_dec,j`` by it, as SAELens's own inference export does) and
``apply_b_dec_to_input = false`` (``b_enc += b_dec W_enc``). A JumpReLU threshold ``≤ 0``
(a latent that acts as a plain ReLU) becomes the smallest normal float32, ``1.2e-38``
(superpose stores ``log θ``): the latents differ only where ``0 < π ≤ 1.2e-38``.

Not mapped (:func:`from_saelens` raises a ValueError): ``gated`` (a separate gate and
magnitude path, two encoders), ``abstopk`` (keeps the largest ``|π|``, so latents can be
negative; superpose's are ≥ 0), ``transcoder`` and its variants (they predict another layer
rather than reconstruct their input), ``temporal`` and ``matching_pursuit`` (latents not
given by one encoder pass), configs from before SAELens 6 (load them with
``sae_lens.SAE.load_from_disk``, which converts them, and pass the SAE), and
``normalize_activations`` other than ``"none"``: ``layer_norm`` and
``constant_norm_rescale`` rescale each input, which superpose's SAEs do not, and
``expected_average_only_in`` / ``covariance_whitening`` expect inputs scaled by statistics
the file does not hold (fold them in with SAELens's ``fold_activation_norm_scaling_factor`` /
``fold_activation_whitening`` and pass that SAE).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superpose._version import __version__
from superpose.io import CorruptFile, load_tensors, save_json, save_tensors
from superpose.sae.base import SAE, SparseAutoencoder
from superpose.sae.topk import THRESHOLD_DECAY

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = "6.54.12"
"""The SAELens release whose format :func:`to_saelens` writes (its ``sae_lens_version``) and
that the tests load files with."""

ARCHITECTURES = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "matryoshka": "jumprelu",
}
"""superpose kind → the SAELens architecture of its inference file."""

TRAINING_ARCHITECTURES = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "matryoshka": "matryoshka_batchtopk",
}
"""superpose kind → SAELens's training architecture (``metadata.training_architecture``)."""

UNSUPPORTED = {
    "gated": "a gated SAE has separate gate and magnitude encoders",
    "abstopk": "AbsTopK keeps the largest |π|, so its latents can be negative",
    "transcoder": "a transcoder predicts another layer instead of reconstructing its input",
    "skip_transcoder": "a transcoder predicts another layer instead of reconstructing its input",
    "jumprelu_transcoder": "a transcoder predicts another layer instead of its input",
    "jumprelu_skip_transcoder": "a transcoder predicts another layer instead of its input",
    "temporal": "a temporal SAE's latents depend on earlier tokens",
    "matching_pursuit": "matching pursuit encodes iteratively, not in one encoder pass",
}
"""SAELens architectures with no superpose kind, and why."""

_PER_INSTANCE = ("l1_coefficient", "k", "l0_coefficient")
"""Hyper-parameters stored per instance (one value each in a one-instance config)."""

_BATCH_TOPK = {"batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka"}
"""SAELens training architectures with one inference threshold → superpose kind."""


def _instance(model: SparseAutoencoder, instance: int | None) -> int:
    """Validate ``instance`` (None: the only one)."""
    if instance is None:
        if model.n_instances != 1:
            raise ValueError(
                f"instance: the SAE has {model.n_instances} instances; say which to write"
            )
        return 0
    if isinstance(instance, bool) or not isinstance(instance, int):
        raise TypeError(f"instance must be an int, got {instance!r}")
    if not 0 <= instance < model.n_instances:
        raise ValueError(f"instance must lie in [0, {model.n_instances - 1}], got {instance}")
    return instance


def _details(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """SAELens's ``training_architecture_details`` for a one-instance ``config``."""
    if kind == "relu":
        return {"l1_coefficient": config["l1_coefficient"], "lp_norm": 1.0}
    if kind == "jumprelu":
        return {
            "l0_coefficient": config["l0_coefficient"],
            "jumprelu_bandwidth": config["bandwidth"],
            "jumprelu_sparsity_loss_mode": "step",
        }
    details: dict[str, Any] = {"aux_loss_coefficient": config["aux_coefficient"]}
    if kind in ("batchtopk", "matryoshka"):
        details |= {
            "k": config["k"],
            "rescale_acts_by_decoder_norm": False,
            "topk_threshold_lr": round(1 - THRESHOLD_DECAY, 12),
        }
    if kind == "matryoshka":
        details["matryoshka_widths"] = config["prefixes"]
    return details


@torch.no_grad()
def to_saelens(model: SparseAutoencoder, path: str | Path, *, instance: int | None = None) -> Path:
    """Write instance ``instance`` of ``model`` to the folder ``path`` in SAELens's format:
    ``cfg.json`` and ``sae_weights.safetensors`` (float32), each written atomically (see the
    module docstring for the architectures); returns ``path``.

    Args:
        model: a superpose SAE of any kind (a BatchTopK or Matryoshka SAE must have seen a
            training batch: its inference threshold is SAELens's JumpReLU threshold).
        path: the folder (created; files of an SAE saved there before are replaced).
        instance: which instance, in ``[0, n_instances)``; may be left out for a
            one-instance SAE.
    """
    if not isinstance(model, SparseAutoencoder):
        raise TypeError(f"model must be a superpose.sae SAE, got {type(model).__name__}")
    if model.kind not in ARCHITECTURES:
        raise ValueError(f"model: SAELens has no architecture for kind {model.kind!r}")
    i = _instance(model, instance)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path must be a folder, but {path} is a file")
    config = {
        name: value[i] if name in _PER_INSTANCE else value
        for name, value in model.hyperparameters().items()
    }
    tensors = {
        "W_enc": model.W_enc[i],
        "b_enc": model.b_enc[i],
        "W_dec": model.W_dec[i],
        "b_dec": model.b_dec[i],
    }
    if model.kind == "jumprelu":
        tensors["threshold"] = model.log_threshold[i].exp()  # what superpose compares with
    elif model.kind in ("batchtopk", "matryoshka"):
        if model.threshold[i] < 0:
            raise ValueError(
                f"model: instance {i} has no inference threshold yet (train it first); "
                "SAELens runs a BatchTopK SAE as a JumpReLU SAE with that threshold"
            )
        tensors["threshold"] = model.threshold[i].expand(model.d_sae)
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURES[model.kind],
        "d_in": model.d_in,
        "d_sae": model.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": FORMAT_VERSION,
            "sae_lens_training_version": None,
            "training_architecture": TRAINING_ARCHITECTURES[model.kind],
            "training_architecture_details": _details(model.kind, config),
            "superpose": {"version": __version__, "kind": model.kind, "config": config},
        },
    }
    if model.kind == "topk":
        cfg |= {"k": config["k"], "rescale_acts_by_decoder_norm": False}
    save_tensors({name: t.float() for name, t in tensors.items()}, path / WEIGHTS_FILE)
    save_json(cfg, path / CFG_FILE)
    return path


def _read(path_or_sae: object) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """``(cfg, float32 CPU weights, a name for errors)`` of a folder or a ``sae_lens`` SAE."""
    if isinstance(path_or_sae, nn.Module):
        cfg = getattr(path_or_sae, "cfg", None)
        if not callable(getattr(cfg, "to_dict", None)):
            raise TypeError(
                "path_or_sae must be a SAELens folder or a sae_lens SAE (with .cfg.to_dict()), "
                f"got {type(path_or_sae).__name__}"
            )
        state = {name: t.detach().cpu().float() for name, t in path_or_sae.state_dict().items()}
        return cfg.to_dict(), state, f"the {type(path_or_sae).__name__}"
    if not isinstance(path_or_sae, str | Path):
        raise TypeError(
            "path_or_sae must be a SAELens folder or a sae_lens SAE, got "
            f"{type(path_or_sae).__name__}"
        )
    path = Path(path_or_sae)
    cfg_path = path / CFG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"path_or_sae: no SAELens {CFG_FILE} in {path}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFile(cfg_path, f"{cfg_path} is not valid JSON ({error})") from None
    if not isinstance(cfg, dict):
        raise CorruptFile(cfg_path, f"{cfg_path} is not a SAELens config")
    state = {name: t.float() for name, t in load_tensors(path / WEIGHTS_FILE).items()}
    return cfg, state, str(path)


def _integer(value: object) -> int | None:
    """``value`` as an int if it is an integral number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return None
    return int(value)


def _mean_k(value: object) -> int | float | None:
    """BatchTopK's ``k`` from a config: a positive number (an int if integral), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        return None
    return _integer(value) if value == int(value) else float(value)


def log_threshold(threshold: torch.Tensor) -> torch.Tensor:
    """``log θ`` for JumpReLU thresholds ``θ: (d_sae,)`` float32, chosen so that its float32
    ``exp`` gives ``θ`` back exactly where such a value exists (always for a threshold
    superpose wrote), else a neighbour of ``θ``; ``θ ≤ 0`` is read as the smallest normal
    float32 (see the module docstring)."""
    threshold = threshold.clamp_min(torch.finfo(torch.float32).tiny)
    log = threshold.log()
    for _ in range(4):  # exp is monotone: step toward θ one float at a time
        value = log.exp()
        up, down = torch.nextafter(log, log + 1), torch.nextafter(log, log - 1)
        log = torch.where(value < threshold, up, torch.where(value > threshold, down, log))
    return log


def _architecture(cfg: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> str:
    """Check that superpose can represent the SAE: returns its SAELens architecture."""
    architecture = cfg.get("architecture")
    if architecture is None:
        raise ValueError(
            f"{where} has no 'architecture' (a config from before SAELens 6): load it with "
            "sae_lens.SAE.load_from_disk, which converts it, and pass that SAE"
        )
    if architecture in UNSUPPORTED:
        raise ValueError(
            f"{where}: no superpose kind for {architecture!r}: {UNSUPPORTED[architecture]}"
        )
    if architecture not in ("standard", "topk", "jumprelu", *_BATCH_TOPK):
        raise ValueError(f"{where}: unknown SAELens architecture {architecture!r}")
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", None):
        raise ValueError(
            f"{where}: normalize_activations={normalize!r} is not part of a superpose SAE; "
            "fold it into the weights with SAELens first (see superpose.sae.saelens)"
        )
    d_in, d_sae = _integer(cfg.get("d_in")), _integer(cfg.get("d_sae"))
    if d_in is None or d_sae is None or d_in < 1 or d_sae < 1:
        raise ValueError(f"{where}: d_in and d_sae must be positive integers in the config")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    elif architecture in _BATCH_TOPK:
        shapes["topk_threshold"] = ()
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != shapes:
        raise ValueError(f"{where}: the weights must be {shapes} for {architecture!r}, got {found}")
    return architecture


def _folded(
    cfg: dict[str, Any], state: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,)`` with
    SAELens's ``apply_b_dec_to_input`` and ``rescale_acts_by_decoder_norm`` folded in."""
    W_enc, b_enc, W_dec, b_dec = (state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec"))
    if cfg.get("apply_b_dec_to_input", True) is False:  # SAELens: π = x W_enc + b_enc
        b_enc = b_enc + b_dec @ W_enc
    if cfg.get("rescale_acts_by_decoder_norm", False):  # SAELens: π ← π · ‖W_dec,j‖
        norms = W_dec.norm(dim=-1).clamp_min(1e-8)  # SAELens's clamp
        W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
    return W_enc, b_enc, W_dec, b_dec


def _kind(
    architecture: str, cfg: dict[str, Any], thresholds: torch.Tensor | None, where: str
) -> tuple[str, dict[str, Any]]:
    """The superpose kind and its options for a checked SAELens config (see the module
    docstring); ``thresholds: (d_sae,)`` the JumpReLU thresholds, None for other
    architectures."""
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    details = metadata.get("training_architecture_details")
    fields = {**(details if isinstance(details, dict) else {}), **cfg}
    training = (
        architecture if architecture in _BATCH_TOPK else metadata.get("training_architecture")
    )
    k = _integer(fields.get("k"))
    options: dict[str, Any] = {}
    if architecture == "standard":
        kind = "relu"
        if fields.get("l1_coefficient") is not None and fields.get("lp_norm", 1.0) == 1.0:
            options["l1_coefficient"] = fields["l1_coefficient"]
    elif architecture == "topk":
        kind = "topk"
        if k is None:
            raise ValueError(f"{where}: a topk config needs an integer k, got {fields.get('k')!r}")
        options["k"] = k
    elif (
        training in _BATCH_TOPK
        and (mean_k := _mean_k(fields.get("k"))) is not None
        and bool((thresholds == thresholds[0]).all())
    ):
        kind = _BATCH_TOPK[training]
        options["k"] = mean_k
        if kind == "matryoshka":
            widths = list(fields.get("matryoshka_widths") or [])
            options["prefixes"] = (
                widths if widths[-1:] == [cfg["d_sae"]] else [*widths, cfg["d_sae"]]
            )
    else:
        kind = "jumprelu"
        if fields.get("jumprelu_sparsity_loss_mode", "step") == "step":
            for ours, theirs in (
                ("l0_coefficient", "l0_coefficient"),
                ("bandwidth", "jumprelu_bandwidth"),
            ):
                if fields.get(theirs) is not None:
                    options[ours] = fields[theirs]
    if (
        kind in ("topk", "batchtopk", "matryoshka")
        and fields.get("aux_loss_coefficient") is not None
    ):
        options["aux_coefficient"] = fields["aux_loss_coefficient"]
    own = metadata.get("superpose")
    if isinstance(own, dict) and own.get("kind") == kind and isinstance(own.get("config"), dict):
        for name, value in own["config"].items():  # what SAELens has no field for
            options.setdefault(name, value)
    return kind, options


def from_saelens(path_or_sae: str | Path | nn.Module) -> SparseAutoencoder:
    """A one-instance superpose SAE (on the CPU, in inference mode) computing what a SAELens
    SAE computes, from its folder (``cfg.json`` and ``sae_weights.safetensors``) or a loaded
    ``sae_lens`` SAE object (an inference or a training SAE); see the module docstring for
    the architectures that map and how.

    ``sae.evaluate`` and ``sae.feature_recovery`` then score it on a superpose source.

    Raises:
        FileNotFoundError: no ``cfg.json`` or weights file in the folder.
        CorruptFile: a file is not JSON / safetensors.
        ValueError: an architecture or option superpose cannot represent (the message says
            why), or weights that do not fit the config.
    """
    cfg, state, where = _read(path_or_sae)
    architecture = _architecture(cfg, state, where)
    W_enc, b_enc, W_dec, b_dec = _folded(cfg, state)
    if architecture in _BATCH_TOPK:  # a training checkpoint: one threshold
        thresholds = state["topk_threshold"].expand(cfg["d_sae"])
    else:
        thresholds = state.get("threshold")
    kind, options = _kind(architecture, cfg, thresholds, where)
    with torch.no_grad():
        model = SAE(kind, 1, cfg["d_in"], cfg["d_sae"], seed=0, **options)
        model.W_enc.copy_(W_enc)
        model.b_enc.copy_(b_enc)
        model.W_dec.copy_(W_dec)
        model.b_dec.copy_(b_dec)
        if kind == "jumprelu":
            model.log_threshold.copy_(log_threshold(thresholds))
        elif kind in ("batchtopk", "matryoshka"):
            model.threshold.fill_(max(float(thresholds[0]), 0.0))
    return model.eval()
