"""Out of memory, said plainly: where it happened, the batch size that was tried, and what to
change, instead of an allocator's traceback."""

from __future__ import annotations

import torch

from .errors import MtkdrlError
from .recipe import Recipe

# how the allocators say it: CUDA's OutOfMemoryError, the CPU allocator's RuntimeError
OUT_OF_MEMORY_TEXTS = ("out of memory", "not enough memory", "can't allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err) for t in OUT_OF_MEMORY_TEXTS)


def out_of_memory_error(recipe: Recipe, step: int, device: torch.device) -> MtkdrlError:
    """One line for a step that ran out of memory, with a batch that keeps the effective one."""
    batch, accumulation = recipe.data.batch_size, recipe.train.grad_accum_steps
    where = "the first training step" if step == 0 else f"training step {step + 1}"
    smaller = (
        f"try data.batch_size={batch // 2} with train.grad_accum_steps={accumulation * 2} (the "
        "same effective batch)"
        if batch > 1
        else "use a smaller student or fewer teachers"
    )
    return MtkdrlError(
        f"out of {device.type} memory at {where} with data.batch_size={batch} per process: "
        f"{smaller}, or train.mixed_precision=bf16 where the device computes it"
    )
