"""Transformer circuits: tiny attention-only transformers and the framework's analyses.

Components read from and write to the residual stream linearly, so the connection between any
two of them is a *virtual weight*; a head is a QK circuit (where to attend) and an OV circuit
(what to move); heads add up, and the logits expand into a sum over paths through them. A
zero-layer model learns bigrams, a one-layer model skip-trigrams, and a two-layer model
induction heads by K-composing a previous-token head with a later head.

Modules: :mod:`~superpose.circuits.model` (the transformer), :mod:`~superpose.circuits.tasks`
(synthetic token tasks), :mod:`~superpose.circuits.train` (training), :mod:`~superpose.circuits.
factored` (low-rank matrices), :mod:`~superpose.circuits.analysis` (weight-based circuits),
:mod:`~superpose.circuits.paths` (path expansion), :mod:`~superpose.circuits.scores`
(attention scores and losses on data).
"""

from superpose.circuits.analysis import (
    composition_baseline,
    composition_score,
    composition_scores,
    copying_score,
    direct_path_kl,
    full_ov_circuit,
    full_qk_circuit,
    ov_circuit,
    qk_circuit,
    random_composition_scores,
    virtual_weights,
)
from superpose.circuits.factored import FactoredMatrix
from superpose.circuits.model import AttnOnlyTransformer, Cache, next_token_losses
from superpose.circuits.paths import path_expansion
from superpose.circuits.scores import (
    empirical_bigram,
    in_context_learning_score,
    loss_by_position,
    masked_loss,
    next_token_kl,
    prefix_matching_scores,
    previous_token_scores,
)
from superpose.circuits.tasks import (
    Batch,
    MarkovChain,
    RepeatedTokens,
    SkipTrigrams,
    ZipfMarkovChain,
)
from superpose.circuits.train import CircuitsTrainConfig, TrainResult, train

__all__ = [
    "AttnOnlyTransformer",
    "Batch",
    "Cache",
    "CircuitsTrainConfig",
    "FactoredMatrix",
    "MarkovChain",
    "RepeatedTokens",
    "SkipTrigrams",
    "TrainResult",
    "ZipfMarkovChain",
    "composition_baseline",
    "composition_score",
    "composition_scores",
    "copying_score",
    "direct_path_kl",
    "empirical_bigram",
    "full_ov_circuit",
    "full_qk_circuit",
    "in_context_learning_score",
    "loss_by_position",
    "masked_loss",
    "next_token_kl",
    "next_token_losses",
    "ov_circuit",
    "path_expansion",
    "prefix_matching_scores",
    "previous_token_scores",
    "qk_circuit",
    "random_composition_scores",
    "train",
    "virtual_weights",
]
