"""superpose: fast, batched simulation of superposition in toy neural networks.

The core loop, in a few lines::

    import torch
    import superpose
    data = superpose.SparseFeatures(n_features=5, feature_probability=0.05, seed=0)
    model = superpose.ToyModel("relu", n_instances=8, n_features=5, n_hidden=2,
                               importance=0.9 ** torch.arange(5), seed=0)
    result = superpose.train(model, data, steps=5000)
    superpose.analysis.feature_norms(model.W)   # (instance, n_features)
    model.save("my-model")                       # weights.safetensors + config.json
    model = superpose.load("my-model")
"""

from superpose import analysis
from superpose._version import __version__
from superpose.data import SparseFeatures
from superpose.io import load
from superpose.models import ToyModel
from superpose.train import TrainingDiverged, TrainResult, train

__all__ = [
    "SparseFeatures",
    "ToyModel",
    "TrainResult",
    "TrainingDiverged",
    "__version__",
    "analysis",
    "load",
    "train",
]
