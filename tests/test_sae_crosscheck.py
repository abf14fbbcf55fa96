"""The SAE cross-check (superpose vs SAELens vs a plain version): a tiny run end to end, its
init-norm swap, and the figure."""

import json

import pandas as pd
import pytest

from superpose import registry

pytest.importorskip("sae_lens")

STEPS = 30
SLOW = pytest.mark.slow  # the shared run trains 23 SAEs: 25 s at load 7, 65-80 s busier


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A quick run at :data:`STEPS` steps, with the init-norm swap, and its figure."""
    experiment = registry.load("experiments", "sae-crosscheck")
    root = tmp_path_factory.mktemp("crosscheck")
    results = root / "results"
    patch = pytest.MonkeyPatch()
    patch.setattr(experiment, "QUICK_STEPS", STEPS)
    try:
        experiment.main(results, quick=True)
        experiment.main(results, quick=True, init_swap=True)
    finally:
        patch.undo()
    paths = registry.load("figures", "sae-crosscheck").main(results, root / "out")
    return experiment, results / "sae_crosscheck", paths


@SLOW
def test_every_kind_three_ways_on_one_seed(run):
    experiment, folder, _ = run
    metrics = pd.read_csv(folder / "metrics.csv")
    config = json.loads((folder / "config.json").read_text())
    assert config["steps"] == STEPS and config["seeds"] == [experiment.SEEDS[0]]
    assert metrics.groupby(["kind", "implementation"]).size().to_dict() == {
        (kind, implementation): 1
        for kind in experiment.KINDS
        for implementation in experiment.TRAINERS
    }
    assert metrics["mcc"].between(0, 1).all() and metrics["latent_f1"].between(0, 1).all()
    # TopK keeps exactly k latents per sample in all three
    assert metrics.loc[metrics["kind"] == "topk", "l0"].to_numpy() == pytest.approx(config["k"])
    # superpose and the plain version agree from different initialisations (MCC within
    # 0.008 for every kind after 30 steps, measured)
    mcc = metrics.pivot(index="kind", columns="implementation", values="mcc")
    assert (mcc["superpose"] - mcc["plain"]).abs().max() < 0.03


@SLOW
def test_summary_has_means_and_spreads(run):
    experiment, folder, _ = run
    metrics = pd.read_csv(folder / "metrics.csv")
    twice = pd.concat([metrics, metrics.assign(seed=1, mcc=metrics["mcc"] + 0.1)])
    table = experiment.summary(twice)
    assert list(table.columns) == [
        *experiment.COLUMNS,
        *(f"{column}_spread" for column in experiment.COLUMNS),
    ]
    assert table["mcc_spread"].to_numpy() == pytest.approx(0.1)
    assert table["f1_spread"].to_numpy() == pytest.approx(0.0)


@SLOW
def test_init_swap_changes_only_the_decoder_norm(run):
    experiment, folder, _ = run
    swap = pd.read_csv(folder / "init_swap.csv")
    metrics = pd.read_csv(folder / "metrics.csv")
    assert set(swap["kind"]) == set(experiment.SWAP_KINDS)
    assert sorted(swap["decoder_norm"].unique()) == [experiment.SAELENS_DECODER_NORM, 1.0]
    # each library at its own norm reproduces the main run exactly (same batches, same init)
    own = swap[
        (swap["decoder_norm"] == 1.0) & (swap["implementation"] == "superpose")
        | (swap["decoder_norm"] == experiment.SAELENS_DECODER_NORM)
        & (swap["implementation"] == "saelens")
    ]
    keys = ["kind", "implementation"]
    joined = own.merge(metrics, on=keys, suffixes=("", "_main"))
    assert len(joined) == 2 * len(experiment.SWAP_KINDS)
    assert joined["mcc"].to_numpy() == pytest.approx(joined["mcc_main"].to_numpy(), abs=1e-6)
    # the swapped ones differ
    swapped = swap.drop(own.index).merge(metrics, on=keys, suffixes=("", "_main"))
    assert (swapped["mcc"] - swapped["mcc_main"]).abs().min() > 1e-4


@SLOW
def test_figure_renders(run):
    _, _, paths = run
    assert [path.suffix for path in paths] == [".png", ".pdf"]
    assert all(path.stat().st_size > 10_000 for path in paths)


def test_registered_with_a_description():
    assert "sae-crosscheck" in registry.names("experiments")
    assert "sae-crosscheck" in registry.names("figures")
    assert registry.load("figures", "sae-crosscheck").__doc__.strip()
