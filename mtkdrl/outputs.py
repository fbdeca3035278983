"""A run's files: the recipe it ran, the metrics log, teacher accuracies, weights and summary.

Every writer here runs on the main process only; readers (`read_records`, `read_epochs`) serve
the plot, the Hub export and the benchmarks. `RUN_FILES`, `CHECKPOINT_DIR` and `TRACKER_LOGS`
list everything mtkdrl writes into a run folder, so that a fresh run removes exactly that.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from .checkpoint import (
    CHECKPOINT_DIR,
    fsync_file,
    make_dirs_durable,
    save_weights_atomic,
    write_atomic,
)
from .errors import MtkdrlError

PLOT_FILE = "teacher_weights.png"  # `mtkdrl plot`'s default output, which exports publish
HISTORY_FILE = "history.jsonl"  # each resume of the run, and the recipe changes it made
RUN_FILES = (
    "recipe.yaml",
    "metrics.jsonl",
    HISTORY_FILE,
    "summary.json",
    "teachers.json",
    "student_last.safetensors",
    "student_best.safetensors",
    PLOT_FILE,
)
# where Accelerate's trackers log inside the run folder (its `project_dir`), by tracker name;
# the others log elsewhere (wandb under the working directory, mlflow, comet, clearml remotely)
TRACKER_LOGS: dict[str, Callable[[Path], Path]] = {
    "tensorboard": lambda run_dir: run_dir / run_dir.name,  # logging_dir / project name
    "aim": lambda run_dir: run_dir / ".aim",
}


def run_file(run_dir: str | Path, name: str) -> Path | None:
    """A file of a run folder to read (None when absent), never through a symlink: a run folder
    may come from someone else, and nothing outside it may be read, copied or published."""
    path = Path(run_dir) / name
    if path.is_symlink():
        raise MtkdrlError(
            f"RUN_DIR: {path} is a symlink; a run folder's files must be its own: remove the link"
        )
    if not path.exists():
        return None
    if not path.is_file():
        raise MtkdrlError(f"RUN_DIR: {path} is not a regular file")
    return path


def read_records(run_dir: str | Path) -> list[dict]:
    """Every record of a run's `metrics.jsonl`, in order; a last line without its newline (a
    write that a kill cut short) is not a record."""
    path = run_file(run_dir, "metrics.jsonl")
    if path is None:
        raise MtkdrlError(f"RUN_DIR: {run_dir} has no metrics.jsonl (is it a run's output_dir?)")
    text = path.read_text(errors="replace")
    complete = text[: text.rfind("\n") + 1]
    records = []
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise MtkdrlError(
                f"RUN_DIR: {path} line {number} is not a JSON record ({err.msg}); remove that "
                "line, or resume the run (--resume cuts the log back to its last checkpoint)"
            ) from None
    return records


def read_epochs(run_dir: str | Path) -> list[dict]:
    """The per-epoch records (those with `epoch_seconds`) of a run's `metrics.jsonl`."""
    epochs = [r for r in read_records(run_dir) if "epoch_seconds" in r]
    if not epochs:
        raise MtkdrlError(f"RUN_DIR: {Path(run_dir) / 'metrics.jsonl'} has no finished epoch yet")
    return epochs


class RunOutputs:
    """Writes the files of one run directory (main process only; a no-op on other ranks)."""

    def __init__(self, run_dir: Path, is_main: bool) -> None:
        self.run_dir = run_dir
        self.is_main = is_main

    def start(self, recipe_yaml: str) -> None:
        """A fresh run: the folder, its recipe, and nothing a former run wrote there (a teacher
        cache, keyed by what its outputs depend on, and files mtkdrl did not write stay)."""
        if not self.is_main:
            return
        make_dirs_durable(self.run_dir)
        for path in former_outputs(self.run_dir):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        write_atomic(self.run_dir / "recipe.yaml", recipe_yaml.encode())

    def append(self, record: dict) -> None:
        """One JSON line of `metrics.jsonl`."""
        if self.is_main:
            self._append_line("metrics.jsonl", json.dumps(record, default=_jsonable))

    def record_resume(self, recipe_yaml: str, step: int, changes: list[str]) -> None:
        """A resume in `history.jsonl` with the recipe changes it made (`key: old -> new`);
        `recipe.yaml` becomes the recipe now run, so the summary and card describe it."""
        if not self.is_main:
            return
        if changes:
            write_atomic(self.run_dir / "recipe.yaml", recipe_yaml.encode())
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        entry = {"event": "resume", "step": step, "time": now, "changes": changes}
        self._append_line(HISTORY_FILE, json.dumps(entry), durable=True)

    def _append_line(self, name: str, line: str, durable: bool = False) -> None:
        descriptor = _open_own(self.run_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(descriptor, "a") as handle:
            handle.write(line + "\n")
            if durable:
                handle.flush()
                os.fsync(handle.fileno())

    def log_length(self) -> int:
        """The metrics log's size in bytes, made durable (0 on other ranks): a checkpoint records
        it, so that resuming from it can cut the log back to what it had seen."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return 0
        fsync_file(path)
        return path.stat().st_size

    def cut_log(self, length: int) -> None:
        """Drop what the log gained after the checkpoint a run resumes from: the records the
        resumed run writes again, and any line a kill left half-written."""
        path = self.run_dir / "metrics.jsonl"
        if self.is_main and path.is_file() and path.stat().st_size > length:
            descriptor = _open_own(path, os.O_WRONLY)
            try:
                os.ftruncate(descriptor, length)
            finally:
                os.close(descriptor)

    def teachers(self) -> list[dict] | None:
        """The teachers' accuracies measured earlier in this run, if any."""
        path = self.run_dir / "teachers.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_teachers(self, results: list[dict]) -> None:
        if self.is_main:
            write_atomic(self.run_dir / "teachers.json", json.dumps(results, indent=2).encode())

    def write_student(self, student: nn.Module, architecture: str, epoch: int, best: bool) -> None:
        """`student_last.safetensors` and, when the epoch improved, `student_best.safetensors`."""
        if not self.is_main:
            return
        meta = {"architecture": architecture, "epoch": str(epoch)}
        save_weights_atomic(student, self.run_dir / "student_last.safetensors", meta)
        if best:
            save_weights_atomic(student, self.run_dir / "student_best.safetensors", meta)

    def write_summary(self, summary: dict) -> None:
        if self.is_main:
            write_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2).encode())


def _open_own(path: Path, flags: int) -> int:
    """Open a file of the run folder for writing, never through a symlink (a run folder may come
    from someone else: its files must not reach outside it)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise MtkdrlError(
            f"{path} is a symlink; a run folder's files must be its own: remove the link"
        ) from None


def former_outputs(run_dir: Path) -> list[Path]:
    """What mtkdrl wrote in `run_dir` for the run there: its files (and their unfinished atomic
    writes), its checkpoints and the logs of the trackers its recipe named."""
    paths = [run_dir / name for name in RUN_FILES]
    paths += [run_dir / f".{name}.tmp" for name in RUN_FILES]
    paths.append(run_dir / CHECKPOINT_DIR)
    trackers = _former_trackers(run_dir / "recipe.yaml")
    if "all" in trackers:
        trackers = list(TRACKER_LOGS)
    paths += [TRACKER_LOGS[name](run_dir) for name in trackers if name in TRACKER_LOGS]
    return [path for path in paths if path.exists() or path.is_symlink()]


def _former_trackers(recipe_path: Path) -> list[str]:
    """The `train.trackers` of the recipe a former run saved (none if it cannot be read)."""
    try:
        raw = yaml.safe_load(recipe_path.read_text())
        trackers = raw["train"]["trackers"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    return [str(name) for name in trackers] if isinstance(trackers, list) else []


def _jsonable(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
