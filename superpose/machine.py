"""The machine a benchmark runs on: the header every benchmark script prints first.

Speed-ups measured on one CPU do not carry to another: a bfloat16 product runs about 4× the
float32 rate on a CPU with AMX tiles, barely faster with AVX512-BF16 alone, and is emulated
without either. So a benchmark states the CPU model, its vector and matrix flags, torch's
version and threads, the load and the date, and compares only numbers from the same run.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The CPU flags a header reports (``/proc/cpuinfo`` names), in this order."""

BF16_UNITS = ("avx512_bf16", "amx_bf16")
"""Flags of bfloat16 arithmetic in hardware; without one, bfloat16 products are emulated."""


def cpu_description(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU model and which of :data:`FLAGS` it has.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; read from the system when None (an empty
            text where there is none, e.g. off Linux).

    Returns:
        ``(model, flags)``: the first ``model name`` (else ``platform.processor()``, else the
        machine type) and the present flags in :data:`FLAGS` order.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), [f for f in FLAGS if f in flags]


def has_bf16_units(flags: list[str] | None = None) -> bool:
    """Whether the CPU (``flags`` as from :func:`cpu_description`; this machine's when None)
    does bfloat16 arithmetic in hardware (any of :data:`BF16_UNITS`)."""
    flags = cpu_description()[1] if flags is None else flags
    return any(flag in flags for flag in BF16_UNITS)


def load_average() -> float:
    """The 1-minute load average (NaN where the system does not report one)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def header(title: str, device: str | torch.device = "cpu") -> str:
    """Three lines naming the run and the machine: ``title`` and the UTC date; the CPU model,
    which of :data:`FLAGS` it has and has not, CPU count and load; torch's version, its CPU
    threads and ``device`` (with the GPU's name for a CUDA device)."""
    device = torch.device(device)
    model, flags = cpu_description()
    missing = [flag for flag in FLAGS if flag not in flags]
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    return (
        f"{title} {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"CPU {model} | flags: {' '.join(flags) or '-'} (not: {' '.join(missing) or '-'}) | "
        f"{os.cpu_count()} CPUs | load {load_average():.2f}\n"
        f"torch {torch.__version__} | {torch.get_num_threads()} threads | device {device}{gpu}"
    )
