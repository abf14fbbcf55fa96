"""Dictionary learning on ground truth: sparse autoencoders scored against known features.

    import superpose
    from superpose import sae

    features = superpose.SparseFeatures(32, 0.05, seed=0)
    source = sae.Superposed(features, d_model=8, seed=0)   # x = f D, D: (32, 8)
    model = sae.SAE("topk", n_instances=4, d_in=8, d_sae=32, k=[1, 2, 3, 4], seed=0)
    sae.train(model, source, steps=2000, progress=False)
    sae.evaluate(model, source)       # one row per instance: mmcs, mcc, l0, ...

Modules: :mod:`~superpose.sae.sources` (activation sources), :mod:`~superpose.sae.base`
(the shared SAE module and registry), one module per kind (:mod:`~superpose.sae.relu`,
:mod:`~superpose.sae.topk`, :mod:`~superpose.sae.jumprelu`,
:mod:`~superpose.sae.matryoshka`), :mod:`~superpose.sae.train` (its fast path for the TopK
kinds in :mod:`~superpose.sae.fast`), :mod:`~superpose.sae.metrics` (recovery scores) and
:mod:`~superpose.sae.pathologies` (absorption, splitting and hedging, measured exactly).
"""

from superpose.sae.base import KINDS, SAE, SparseAutoencoder
from superpose.sae.jumprelu import JumpReLUSAE
from superpose.sae.matryoshka import MatryoshkaSAE
from superpose.sae.metrics import evaluate, feature_recovery
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
from superpose.sae.sources import ActivationSource, ModelActivations, Superposed
from superpose.sae.topk import BatchTopKSAE, TopKSAE
from superpose.sae.train import SAETrainResult, train

__all__ = [
    "KINDS",
    "SAE",
    "ActivationSource",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "ModelActivations",
    "ReLUSAE",
    "SAETrainResult",
    "SparseAutoencoder",
    "Superposed",
    "TopKSAE",
    "absorption",
    "absorption_summary",
    "evaluate",
    "feature_recovery",
    "hedging",
    "hedging_summary",
    "pathology_scores",
    "splitting",
    "splitting_summary",
    "train",
]
