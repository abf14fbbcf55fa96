"""Every SAE kind recovers the true directions of a small seeded problem.

16 features (p = 0.05, U[0, 1] magnitudes) along random unit directions in 8 dimensions, a
16-latent dictionary, 400 Adam steps of 256 samples at lr 3e-3, one thread (~2 s each).
Tolerances: a few hundredths under the values measured with these seeds (in the comments).
Longer training at this constant rate scores lower for most kinds (measured at 1500 steps:
ReLU MCC 0.89, BatchTopK 0.94) as latents drift between overlapping features.
"""

import pytest

from superpose import SparseFeatures
from superpose.sae import SAE, Superposed, evaluate, train

CASES = {
    # kind: (options, measured MCC, measured recovered fraction at |cos| > 0.9)
    "relu": ({"l1_coefficient": 0.003}, 0.960, 1.0),
    "topk": ({"k": 1}, 0.995, 1.0),
    "batchtopk": ({"k": 1}, 0.980, 1.0),
    "jumprelu": ({"l0_coefficient": 0.001}, 0.968, 1.0),
    # the first prefixes (2 and 4 latents) must reconstruct alone, so they learn blends of
    # several features: a lower one-to-one score here is the objective, not a failure
    "matryoshka": ({"k": 1}, 0.858, 0.312),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_recovers_the_true_directions(kind):
    options, mcc, recovered = CASES[kind]
    source = Superposed(SparseFeatures(16, 0.05, seed=0), d_model=8, seed=0)
    sae = SAE(kind, 1, 8, 16, seed=0, **options)
    train(sae, source, steps=400, batch_size=256, lr=3e-3, progress=False)
    scores = evaluate(sae, source, n_samples=8192)
    assert scores["mcc"].item() > mcc - 0.03
    assert scores["mmcs"].item() >= scores["mcc"].item() - 1e-6
    assert scores["recovered"].item() >= recovered - 0.15
    assert scores["explained_variance"].item() > 0.8  # measured 0.87–0.99
