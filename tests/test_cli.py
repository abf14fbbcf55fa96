"""The superpose command: demo end to end, figure registry, error messages."""

import subprocess
import sys

import pandas as pd
import pytest

from superpose import registry
from superpose.cli import main


def test_demo_writes_results_and_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "300", "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in ("weights.pt", "metrics.csv", "intro.png", "intro.pdf"):
        assert (tmp_path / name).stat().st_size > 0
        assert name in printed
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 10 and set(metrics["kind"]) == {"linear", "relu"}


def test_figure_list_prints_registered_names(capsys):
    assert main(["figure", "--list"]) == 0
    assert capsys.readouterr().out.split() == registry.names("figures")


def test_unknown_figure_is_a_clear_error(capsys):
    assert main(["figure", "no-such-figure"]) == 2
    assert "unknown figure 'no-such-figure'" in capsys.readouterr().err


def test_console_script_help():
    done = subprocess.run(
        [sys.executable, "-m", "superpose.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("demo", "sweep", "figure", "reproduce"):
        assert command in done.stdout


@pytest.mark.parametrize("argv", [["demo", "--steps", "0"], ["demo", "--device", "tpu"]])
def test_bad_demo_arguments(argv, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err
