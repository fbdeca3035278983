"""Checks made before any compute: the command's flags agree, the output folder can be written,
its disk has room for what the run will write there, and the process may open enough files."""

from __future__ import annotations

import resource
import shutil
import tempfile
from pathlib import Path

from torch import nn

from .errors import MtkdrlError, first_line
from .teacher_cache import format_bytes

MARGIN = 1.25  # slack over the estimate: JSON skeletons, the model card, logs


def check_flags(resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise MtkdrlError(
            "--resume and --overwrite contradict each other: --resume continues the run in "
            "output_dir, --overwrite starts it again; pass one"
        )


def ensure_file_handles(num_workers: int) -> None:
    """Raise this process's open-file limit towards what a run with `num_workers` loader
    processes needs (their queues, the cache's files, checkpoints); one line if the hard limit
    is below it, instead of a failure deep in a loader worker."""
    need = 64 + 16 * num_workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise MtkdrlError(
            f"this process may open only {hard} files and a run with data.num_workers="
            f"{num_workers} needs about {need}: raise the limit (`ulimit -n 4096`) or lower "
            "data.num_workers"
        )
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, need), hard))


def check_output_dir(output_dir: str | Path) -> None:
    """`output_dir` is (or can be made) a folder this process can write a file into."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise MtkdrlError(f"output_dir: {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".mtkdrl_probe_"):
            pass
    except OSError as err:
        raise MtkdrlError(
            f"output_dir: cannot write into {path} ({first_line(err)}); choose a writable folder"
        ) from None


def state_bytes(*modules: nn.Module) -> int:
    """Bytes of the modules' parameters and buffers, as a checkpoint stores them."""
    return sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())


def check_free_space(
    output_dir: str | Path, student: nn.Module, extra: nn.Module, keep_checkpoints: int
) -> None:
    """The output folder's disk holds the run's writes: `keep_checkpoints` checkpoints and one
    being staged (each: the student, its optimizer's momentum and `extra`, e.g. the method's
    networks and adapters) and the last and best student weights."""
    student_size = state_bytes(student)
    checkpoint = 2 * student_size + state_bytes(extra)
    needed = int(MARGIN * ((keep_checkpoints + 1) * checkpoint + 2 * student_size))
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise MtkdrlError(
            f"output_dir: {output_dir} has {format_bytes(free)} free, and the run writes about "
            f"{format_bytes(needed)} there ({keep_checkpoints + 1} checkpoints of "
            f"{format_bytes(checkpoint)} and the student's weights); free some space, lower "
            "train.keep_checkpoints or choose another output_dir"
        )
