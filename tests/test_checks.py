"""Shared validation: numpy broadcasting of per-(instance, feature) values; generators."""

import numpy as np
import pytest
import torch

import superpose
import superpose.theory
from superpose import sae
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


NOT_NUMBERS = [
    "0.1",
    ["0.1", "0.2"],
    True,
    np.bool_(False),
    [True, 0.5],  # numpy alone would make this [1.0, 0.5]
    [[0.1], [False]],
    np.array([True, False]),
    torch.tensor([True, False]),
    None,
    1 + 2j,
    [[0.1], [0.1, 0.2]],  # ragged
]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_strings_and_bools_are_not_numbers(value):
    """Every array-like numeric argument goes through as_float_tensor, which used to turn
    "0.1" into 0.1 and True into 1.0 (numpy's conversion) instead of refusing them."""
    with pytest.raises(
        TypeError, match=r"^x must be a (real number or an array of real|tensor of real)"
    ):
        per_instance_feature("x", value, 2, low=0.0, high=1.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: superpose.SparseFeatures(5, feature_probability="0.1"),
        lambda: superpose.SparseFeatures(5, feature_probability=[[True], [0.1]]),
        lambda: superpose.ToyModel("relu", 1, 5, 2, importance="0.9"),
        lambda: superpose.ToyModel("relu", 1, 5, 2, importance=True),
        lambda: sae.SAE("relu", 2, 4, 8, l1_coefficient="0.1"),
        lambda: superpose.theory.expected_loss(np.zeros((1, 1, 2)), np.zeros(2), "0.5"),
    ],
)
def test_public_constructors_refuse_strings_and_bools(build):
    with pytest.raises(TypeError, match=r"must be a real number or an array of real numbers "):
        build()


def test_topk_k_refuses_strings_and_bools():
    for k in ("3", True, [1, "2"]):
        with pytest.raises(TypeError, match=r"^k must be an int or one int per instance"):
            sae.SAE("topk", 2, 4, 8, k=k)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, [[1.0, 1.0]]), ([1, 2], [[1.0, 2.0]]), (np.float32(0.5), [[0.5, 0.5]])],
)
def test_numbers_still_convert(value, expected):
    np.testing.assert_array_equal(per_instance_feature("x", value, 2, low=0, high=None), expected)
