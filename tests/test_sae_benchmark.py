"""The SAE benchmark's pieces that need no optional peer: its run order and table."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "sae_benchmark.py"
spec = importlib.util.spec_from_file_location("sae_benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = benchmark  # dataclasses look their module up
spec.loader.exec_module(benchmark)


def test_schedule_interleaves_and_reverses_every_other_repeat():
    assert benchmark.schedule(["a", "b", "c"], 3) == list("abccbaabc")
    assert benchmark.schedule(["a"], 0) == []


def test_rows_and_markdown_table():
    values = ["ours", "1,024", "1.0", "1,024", "2.00x", "0.900", "0.800", "3", "8.0", "0.5"]
    assert len(values) == len(benchmark.COLUMNS)
    assert benchmark.row(values, "note").startswith("ours ") and benchmark.row(
        values, "note"
    ).endswith("0.5  note")
    table = benchmark.markdown([values]).splitlines()
    assert table[0] == "| " + " | ".join(benchmark.COLUMNS) + " |"
    assert table[1].count("---") == len(benchmark.COLUMNS)
    assert table[2] == "| " + " | ".join(values) + " |"
