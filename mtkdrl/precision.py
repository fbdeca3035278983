"""The run's precision: `train.mixed_precision: auto` picks bf16 where the device computes it
natively and fp32 elsewhere, and says why, so logs, summaries and cards can tell the reader.

bf16 autocast is a clear win only where the hardware has bf16 arithmetic (CUDA devices that
support it; CPUs with AMX or AVX512-BF16). Elsewhere it is emulated and slower than fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hardware import cpu_bf16_flags


@dataclass(frozen=True)
class Precision:
    """Accelerate's `mixed_precision` value for the run, and the one-line reason it was chosen."""

    mode: str  # "no", "bf16" or "fp16"
    reason: str

    @property
    def label(self) -> str:
        """`bf16`, `fp16` or `fp32`: what the student computes in, for people."""
        return "fp32" if self.mode == "no" else self.mode


def choose_precision(setting: str, device: torch.device) -> Precision:
    """The precision for `train.mixed_precision` = `setting` on `device`; `auto` by hardware."""
    if setting != "auto":
        return Precision(setting, f"set by train.mixed_precision={setting}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", f"auto: {name} computes bf16 natively")
        return Precision("no", f"auto: fp32, {name} has no native bf16")
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            return Precision("bf16", f"auto: the CPU computes bf16 natively ({', '.join(flags)})")
        return Precision(
            "no", "auto: fp32, the CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated)"
        )
    return Precision("no", f"auto: fp32 on {device.type} (native bf16 unknown there)")
