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
    for name in ("weights.safetensors", "metrics.csv", "intro.png", "intro.pdf"):
        assert (tmp_path / name).stat().st_size > 0
        assert name in printed
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 10 and set(metrics["kind"]) == {"linear", "relu"}


def test_figure_list_prints_registered_names(capsys):
    assert main(["figure", "--list"]) == 0
    assert capsys.readouterr().out.split() == registry.names("figures")


def test_registry_finds_main_with_a_signature_over_several_lines(tmp_path):
    script = tmp_path / "script.py"
    for text, registered in (
        ("def main(results, device='cpu'):\n    pass\n", True),
        ("x = 1\n\n\ndef main(\n    results: Path,\n    full: bool = False,\n) -> None:\n", True),
        ("def main() -> None:\n    results = 1\n", False),  # a benchmark's own main()
        ("def main_results(results):\n    pass\n", False),
    ):
        script.write_text(text)
        assert registry._defines_main(script) is registered, text


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


def test_reproduce_runs_experiment_then_figure(tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "out"
    argv = ["reproduce", "intro", "--quick", "--results", str(results), "--out", str(out)]
    assert main(argv) == 0
    assert (results / "intro" / "weights.safetensors").is_file()
    assert capsys.readouterr().out.split() == [str(out / "intro.png"), str(out / "intro.pdf")]
    # the figure alone redraws from the stored results
    (out / "intro.png").unlink()
    assert main(["figure", "intro", "--results", str(results), "--out", str(out)]) == 0
    assert (out / "intro.png").is_file()


def test_figure_without_stored_results_says_what_to_run(tmp_path, capsys):
    assert main(["figure", "intro", "--results", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "run the experiment first" in capsys.readouterr().err


def test_sweep_dry_run_then_run_then_resume(tmp_path, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        'name = "tiny"\n[fixed]\nkind = "relu"\nn_features = 2\nn_hidden = 1\n'
        "[axes]\nfeature_probability = [1.0, 0.1]\nseed = [0, 1]\n"
        "[training]\nsteps = 20\neval_samples = 256\n"
    )
    out = str(tmp_path / "store")
    assert main(["sweep", str(spec), "--out", out, "--dry-run", "--workers", "2"]) == 0
    plan = capsys.readouterr().out
    assert "4 cells" in plan and "2 at a time" in plan and "2 chunk(s)" in plan
    assert main(["sweep", str(spec), "--out", out, "--quiet"]) == 0
    assert "4 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert main(["sweep", str(spec), "--out", out, "--quiet"]) == 0
    assert "0 done, 4 skipped" in capsys.readouterr().out


def test_figure_all_skips_figures_without_results(tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "out"
    assert (
        main(["reproduce", "intro", "--quick", "--results", str(results), "--out", str(out)]) == 0
    )
    capsys.readouterr()
    assert main(["figure", "--all", "--results", str(results), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "intro.png"), str(out / "intro.pdf")]
    assert "skipped phase-diagram" in captured.err
