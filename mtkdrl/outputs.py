"""A run's files: the recipe it ran, the metrics log, teacher accuracies, weights and summary.

Every writer here runs on the main process only; readers (`read_records`, `read_epochs`) serve
the plot, the Hub export and the benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .checkpoint import save_weights_atomic
from .errors import MtkdrlError

RUN_FILES = ("metrics.jsonl", "summary.json", "teachers.json", "recipe.yaml")


def read_records(run_dir: str | Path) -> list[dict]:
    """Every record of a run's `metrics.jsonl`, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise MtkdrlError(f"RUN_DIR: {run_dir} has no metrics.jsonl (is it a run's output_dir?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        """A fresh run: the folder, its recipe, and none of a former run's logs."""
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", "summary.json"):
            (self.run_dir / stale).unlink(missing_ok=True)
        (self.run_dir / "recipe.yaml").write_text(recipe_yaml)

    def append(self, record: dict) -> None:
        """One JSON line of `metrics.jsonl`."""
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record, default=_jsonable) + "\n")

    def teachers(self) -> list[dict] | None:
        """The teachers' accuracies measured earlier in this run, if any."""
        path = self.run_dir / "teachers.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_teachers(self, results: list[dict]) -> None:
        if self.is_main:
            (self.run_dir / "teachers.json").write_text(json.dumps(results, indent=2))

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
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def _jsonable(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
