"""The machine a process runs on, as short strings: runs record it, model cards show it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import timm
import torch


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what `platform` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo on Linux; empty where it is not readable)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_flags() -> list[str]:
    """This CPU's flags for bf16 in hardware (AMX tiles, AVX512-BF16); empty where it has none."""
    return sorted(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def machine_info() -> dict[str, str]:
    """CPU, accelerators, OS and library versions of this process, as short strings."""
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        accelerators = ", ".join(names)
    else:
        accelerators = "none (no CUDA device)"
    return {
        "CPU": f"{cpu_name()}, {os.cpu_count()} logical CPUs",
        "accelerators": accelerators,
        "OS": platform.platform(terse=True),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"timm {timm.__version__}",
    }
