"""Dictionary learning on ground truth: sparse autoencoders scored against known features.

    import superpose
    from superpose import sae

    features = superpose.SparseFeatures(32, 0.05, seed=0)
    source = sae.Superposed(features, d_model=8, seed=0)   # x = f D, D: (32, 8)
    model = sae.SAE("topk", n_instances=4, d_in=8, d_sae=32, k=[1, 2, 3, 4], seed=0)
    sae.train(model, source, steps=2000, progress=False)
    sae.evaluate(model, source)       # one row per instance: mmcs, mcc, l0, ...
    sae.random_baseline(32, 8, 32)    # chance MMCS / MCC of random 32-latent dictionaries

Your own activations (a tensor or a memory-mapped ``.npy`` / ``.safetensors`` file) are a
source too, with true directions only if you know them, and SAELens files go both ways::

    source = sae.Activations("acts.npy", seed=0)      # (n_samples, d_model)
    sae.train(model, source, steps=2000, progress=False)
    sae.evaluate(model, source)       # l0, explained_variance, ...; mcc NaN without directions
    sae.to_saelens(model, "saelens/k2", instance=1)   # cfg.json + sae_weights.safetensors
    same = sae.from_saelens("saelens/k2")             # or a loaded sae_lens SAE

Modules: :mod:`~superpose.sae.sources` (activation sources), :mod:`~superpose.sae.base`
(the shared SAE module and registry), one module per kind (:mod:`~superpose.sae.relu`,
:mod:`~superpose.sae.topk`, :mod:`~superpose.sae.jumprelu`,
:mod:`~superpose.sae.matryoshka`), :mod:`~superpose.sae.train` (its fast path for the TopK
kinds in :mod:`~superpose.sae.fast`), :mod:`~superpose.sae.metrics` (recovery scores),
:mod:`~superpose.sae.pathologies` (absorption, splitting and hedging, measured exactly) and
:mod:`~superpose.sae.saelens` (SAELens files).

Functions: :func:`train` (and :func:`resample_dead`, its dead-latent resampling),
:func:`evaluate`, :func:`feature_recovery`, :func:`abs_cosines` (the ``|cos|`` matrix they
score), :func:`matching` (their one-to-one latent–feature matching),
:func:`random_baseline` (the chance level of the scores: what random dictionaries get) and
the pathologies :func:`absorption`, :func:`splitting`, :func:`hedging` (with their
``*_summary``) and :func:`pathology_scores`.
"""

from superpose.sae.base import KINDS, SAE, SparseAutoencoder
from superpose.sae.jumprelu import JumpReLUSAE
from superpose.sae.matryoshka import MatryoshkaSAE
from superpose.sae.metrics import (
    abs_cosines,
    evaluate,
    feature_recovery,
    matching,
    random_baseline,
)
from superpose.sae.pathologies import (
    absorption,
    absorption_summary,
    hedging,
    hedging_summary,
    pathology_scores,
    splitting,
    splitting_summary,
)
from superpose.sae.relu import ReLUSAE
from superpose.sae.saelens import from_saelens, to_saelens
from superpose.sae.sources import Activations, ActivationSource, ModelActivations, Superposed
from superpose.sae.topk import BatchTopKSAE, TopKSAE
from superpose.sae.train import SAETrainConfig, SAETrainResult, resample_dead, train

__all__ = [
    "KINDS",
    "SAE",
    "ActivationSource",
    "Activations",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "ModelActivations",
    "ReLUSAE",
    "SAETrainConfig",
    "SAETrainResult",
    "SparseAutoencoder",
    "Superposed",
    "TopKSAE",
    "abs_cosines",
    "absorption",
    "absorption_summary",
    "evaluate",
    "feature_recovery",
    "from_saelens",
    "hedging",
    "hedging_summary",
    "matching",
    "pathology_scores",
    "random_baseline",
    "resample_dead",
    "splitting",
    "splitting_summary",
    "to_saelens",
    "train",
]
