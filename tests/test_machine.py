"""The benchmark header: CPU model and flags from /proc/cpuinfo, torch, threads, load."""

import re

import torch

from superpose import machine

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: other
flags\t\t: fpu
"""


def test_cpu_description_reads_model_and_flags_of_the_first_cpu():
    model, flags = machine.cpu_description(CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    assert machine.has_bf16_units(flags)


def test_cpu_description_without_bf16_flags_or_cpuinfo():
    model, flags = machine.cpu_description("model name : Old CPU\nflags : fpu sse2 avx2\n")
    assert (model, flags) == ("Old CPU", ["avx2"])
    assert not machine.has_bf16_units(flags)
    assert machine.has_bf16_units(["avx512f", "avx512_bf16"])
    model, flags = machine.cpu_description("")
    assert model and flags == []


def test_header_names_the_date_cpu_torch_threads_and_device():
    lines = machine.header("superpose benchmark").splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"superpose benchmark \d{4}-\d\d-\d\d \d\d:\d\d UTC", lines[0])
    model, flags = machine.cpu_description()
    assert lines[1].startswith(f"CPU {model} | flags: ") and " CPUs | load " in lines[1]
    assert all(flag in lines[1] for flag in flags)
    assert lines[2] == (
        f"torch {torch.__version__} | {torch.get_num_threads()} threads | device cpu"
    )
