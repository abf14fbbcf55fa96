"""The SAE benchmark's pieces that need no optional peer: its CPU header and run order."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "sae_benchmark.py"
spec = importlib.util.spec_from_file_location("sae_benchmark", SCRIPT)
benchmark = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = benchmark  # dataclasses look their module up
spec.loader.exec_module(benchmark)

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: other
flags\t\t: fpu
"""


def test_cpu_description_reads_model_and_bf16_flags_of_the_first_cpu():
    model, flags = benchmark.cpu_description(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f"]


def test_cpu_description_without_bf16_flags_or_cpuinfo():
    assert benchmark.cpu_description("model name : Old CPU\nflags : fpu sse2 avx2\n") == (
        "Old CPU",
        [],
    )
    model, flags = benchmark.cpu_description("")
    assert model and flags == []


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
