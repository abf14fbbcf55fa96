"""The learning-dynamics experiment: dimensionalities snap onto 1/2 late in training."""

from superpose import registry
from superpose.io import load_tensors


def test_features_snap_to_digons_late_in_training(tmp_path):
    registry.load("experiments", "learning_dynamics").main(tmp_path)
    stored = load_tensors(tmp_path / "learning_dynamics" / "dynamics.safetensors")
    D = stored["dimensionality"]  # (log, instance, feature)
    steps = stored["steps"]
    on_half = ((D - 0.5).abs() < 0.02).sum(-1)  # (log, instance)
    dropped = (D < 0.02).sum(-1)
    # measured for all 4 seeds: 8 features in 4 antipodal pairs, 2 dropped, at the end ...
    assert on_half[-1].tolist() == [8, 8, 8, 8]
    assert dropped[-1].tolist() == [2, 2, 2, 2]
    # ... reached by a jump: at step 1000 none of the best seed's features sat at 1/2
    best = int(stored["final_loss"].argmin())
    assert on_half[steps == 1000, best].item() == 0
