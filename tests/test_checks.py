"""Shared validation: numpy broadcasting of per-(instance, feature) values; generators."""

import numpy as np
import pytest
import torch

from superpose._checks import make_generator, per_instance_feature


@pytest.mark.parametrize(
    ("value", "shape"),
    [
        (0.5, (1, 4)),
        ([0.1, 0.2, 0.3, 0.4], (1, 4)),
        ([[0.1, 0.2, 0.3, 0.4]], (1, 4)),
        ([[0.1], [0.2], [0.3]], (3, 4)),
        (np.full((3, 4), 0.2), (3, 4)),
    ],
)
def test_per_instance_feature_broadcasts_like_numpy(value, shape):
    out = per_instance_feature("x", value, 4, low=0.0, high=1.0)
    assert out.shape == shape and out.dtype == torch.float32 and out.is_contiguous()
    np.testing.assert_array_equal(out, np.broadcast_to(np.asarray(value, np.float32), shape))


def test_per_instance_feature_keeps_float64_when_asked():
    out = per_instance_feature("x", [[0.1], [1 / 3]], 2, low=0.0, high=1.0, dtype=torch.float64)
    assert out.dtype == torch.float64 and out[1, 1].item() == 1 / 3


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (
            [0.1, 0.2, 0.3],
            r"^x as a vector is per feature and needs n_features=4 entries, got shape \(3,\); "
            r"give one value per instance as shape \(instance, 1\), e\.g\. values\[:, None\]",
        ),
        (
            [[0.1, 0.2]],
            r"^x must broadcast to \(instance, n_features=4\): a scalar, \(n_features,\), "
            r"\(instance, 1\), \(1, n_features\) or \(instance, n_features\); got shape \(1, 2\)$",
        ),
        (np.zeros((2, 1, 4)), r"got shape \(2, 1, 4\)$"),
        (np.zeros((0, 4)), r"^x must not be empty"),
        (1.5, r"^x must lie in \[0.0, 1.0\], got values in \[1.5, 1.5\]$"),
    ],
)
def test_per_instance_feature_errors_name_the_shape(value, match):
    with pytest.raises(ValueError, match=match):
        per_instance_feature("x", value, 4, low=0.0, high=1.0)


def test_no_seed_is_torchs_global_generator():
    assert make_generator(None) is torch.default_generator
    assert make_generator(None, "cpu") is torch.default_generator
    if torch.cuda.is_available():
        assert make_generator(None, "cuda") is torch.cuda.default_generators[0]
    generator = torch.Generator()
    assert make_generator(generator) is generator
    assert make_generator(3).initial_seed() == 3
    with pytest.raises(TypeError, match="seed must be an int"):
        make_generator(1.0)
