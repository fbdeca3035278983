"""A finished run's summary: what it trained, how well, how long, on what, at what memory."""

from __future__ import annotations

import torch

from .hardware import machine_info
from .run import Run
from .version import __version__


def write_summary(run: Run, teacher_results: list[dict], last: dict, seconds: float) -> dict:
    """The run's summary, from the last epoch's evaluation `last`, written to `summary.json`."""
    recipe, state, accelerator = run.recipe, run.state, run.accelerator
    summary = {
        "mtkdrl_version": __version__,
        "student": recipe.student.name,
        "teachers": teacher_results,
        "method": recipe.method.name,
        "epochs": recipe.train.epochs,
        "seed": recipe.seed,
        "train_images": run.data.train_size,
        "last_top1": last["top1"],
        "last_top5": last["top5"],
        "best_top1": state.best_top1,
        "best_top5": state.best_top5,
        "best_epoch": state.best_epoch,
        "global_steps": state.global_step,
        "train_seconds_this_session": seconds,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "precision_reason": run.precision.reason,
        "hardware": machine_info(),
        **run.teacher_source.figures(),
        **_peak_memory(accelerator.device),
    }
    run.outputs.write_summary(summary)
    accelerator.print(
        f"done: last top-1 {last['top1']:.2f}, best top-1 {state.best_top1:.2f} "
        f"(epoch {state.best_epoch}); outputs in {recipe.output_dir}"
    )
    return summary


def _peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory of this process: accelerator memory on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    try:
        import resource  # POSIX only; Linux reports ru_maxrss in KiB
    except ImportError:
        return {}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
