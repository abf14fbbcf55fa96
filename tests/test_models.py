"""ToyModel: forward passes of every kind against direct formulas, init, validation."""

import numpy as np
import pytest
import torch

from superpose import ToyModel
from superpose.models import KINDS, MODEL_KINDS


def test_forward_matches_formulas():
    torch.manual_seed(0)
    x = torch.rand(3, 7, 5)
    for kind in ("linear", "relu", "hidden_relu"):
        model = ToyModel(kind, 3, 5, 2, seed=1)
        with torch.no_grad():
            model.b.normal_()
        W, b = model.W.detach(), model.b.detach()
        h = torch.einsum("khf,kbf->kbh", W, x)
        if kind == "hidden_relu":
            h = torch.relu(h)
        out = torch.einsum("khf,kbh->kbf", W, h) + b[:, None]
        expected = out if kind == "linear" else torch.relu(out)
        torch.testing.assert_close(model(x), expected)


def test_abs_model():
    model = ToyModel("abs", 2, 4, 6, seed=0)
    assert model.W.shape == model.W_out.shape == (2, 6, 4)
    assert model.b_hidden.shape == (2, 6)
    x = torch.rand(2, 5, 4) * 2 - 1
    with torch.no_grad():
        model.b_hidden.normal_()
        model.b.normal_()
    hidden = torch.relu(torch.einsum("khf,kbf->kbh", model.W, x) + model.b_hidden[:, None])
    expected = torch.relu(torch.einsum("khf,kbh->kbf", model.W_out, hidden) + model.b[:, None])
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.target(x), x.abs())


@pytest.mark.parametrize("kind", KINDS)
def test_kind_table_describes_the_model(kind):
    spec = MODEL_KINDS[kind]
    model = ToyModel(kind, 2, 7, 3, seed=0)
    assert model.kind_spec is spec and spec.name == kind
    names = [name for name, _ in model.named_parameters()]
    assert names == ["W", "b"] + ["W_out"] * (not spec.tied) + ["b_hidden"] * spec.hidden_bias
    assert spec.readout in names
    assert spec.n_parameters(7, 3) == sum(p[0].numel() for p in model.parameters())


def test_importance_weighted_loss():
    model = ToyModel("linear", 2, 3, 2, importance=[[1.0, 0.5, 0.0]], seed=0)
    with torch.no_grad():
        model.W.zero_()
    x = torch.ones(2, 4, 3)
    # zero model: error x² = 1 per feature, weighted sum 1.5, mean over batch 1.5
    torch.testing.assert_close(model.loss(x), torch.tensor([1.5, 1.5]))
    assert model.importance.shape == (2, 3)


def test_per_feature_importance_is_shared_by_every_instance():
    # the TMS notebook's profile; with as many instances as features it used to be read as
    # one flat importance per instance
    model = ToyModel("relu", n_instances=5, n_features=5, importance=0.9 ** torch.arange(5))
    torch.testing.assert_close(model.importance, (0.9 ** torch.arange(5.0)).expand(5, 5))


def test_per_instance_importance_is_a_column():
    model = ToyModel("relu", n_instances=3, n_features=4, importance=[[1.0], [2.0], [3.0]])
    torch.testing.assert_close(model.importance, torch.tensor([[1.0], [2.0], [3.0]]).expand(3, 4))


def test_no_seed_initialises_from_torchs_global_generator():
    def init(global_seed, **kwargs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            return ToyModel("abs", 2, 5, 3, **kwargs).W_out.detach()

    assert torch.equal(init(0), init(0))
    assert not torch.equal(init(0), init(1))
    assert torch.equal(init(0, seed=4), init(1, seed=4))
    # no seed draws exactly what torch's own initialisers would
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        expected = torch.randn(2, 2, 3, 5)[1] * np.sqrt(2 / 8)
    torch.testing.assert_close(init(0), expected, rtol=0, atol=0)


def test_per_instance_seeds_reproduce_single_instance_init():
    packed = ToyModel("relu", 3, 5, 2, seed=[11, 12, 13])
    for k, seed in enumerate([11, 12, 13]):
        alone = ToyModel("relu", 1, 5, 2, seed=[seed])
        assert torch.equal(packed.W[k], alone.W[0])


def test_init_scale_is_xavier():
    W = ToyModel("relu", 200, 50, 30, seed=0).W
    assert W.std().item() == pytest.approx(np.sqrt(2 / 80), rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "tanh"}, ValueError, "kind must be one of"),
        ({"n_instances": 0}, ValueError, "n_instances"),
        ({"n_hidden": -2}, ValueError, "n_hidden"),
        ({"n_features": "5"}, TypeError, "n_features"),
        ({"importance": [[1.0, 2.0]]}, ValueError, r"must broadcast to \(instance, n_features=5\)"),
        ({"importance": -1.0}, ValueError, "importance must lie in"),
        ({"importance": [[1.0], [2.0], [3.0]]}, ValueError, "importance has 3 instances but 2"),
        ({"importance": [1.0, 2.0]}, ValueError, r"n_features=5 entries, got shape \(2,\)"),
        ({"importance": np.ones((2, 5, 1))}, ValueError, r"got shape \(2, 5, 1\)"),
        ({"seed": [1, 2, 3]}, ValueError, "n_instances=2"),
    ],
)
def test_bad_input(kwargs, error, match):
    kwargs = {"n_instances": 2, "n_features": 5, "n_hidden": 2, **kwargs}
    with pytest.raises(error, match=match):
        ToyModel(**kwargs)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (
            torch.rand(7, 5),
            r"^x must be shaped \(instance, batch, n_features\) = \(2, batch, 5\), got \(7, 5\); "
            r"for one batch shared by every instance use x.expand\(2, -1, -1\)$",
        ),
        (torch.rand(3, 7, 5), r"= \(2, batch, 5\), got \(3, 7, 5\)$"),  # wrong n_instances
        (torch.rand(2, 7, 4), r"= \(2, batch, 5\), got \(2, 7, 4\)$"),  # wrong n_features
        (torch.rand(2, 1, 7, 5), r"got \(2, 1, 7, 5\)$"),
    ],
)
@pytest.mark.parametrize("kind", ["relu", "abs"])
def test_forward_names_the_expected_shape(kind, x, match):
    """torch used to say "batch1 must be a 3D tensor" (or a size mismatch) instead."""
    model = ToyModel(kind, n_instances=2, n_features=5, n_hidden=2, seed=0)
    with pytest.raises(ValueError, match=match):
        model(x)
    with pytest.raises(ValueError, match=match):
        model.loss(x)
    assert model(torch.rand(7, 5).expand(2, -1, -1)).shape == (2, 7, 5)
