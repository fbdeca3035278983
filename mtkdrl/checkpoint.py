"""Atomic checkpoints on top of `accelerator.save_state`, and the loop counters they carry.

Each checkpoint is written into a temporary folder and renamed into place; a `latest` file,
replaced atomically afterwards, names the newest complete one. A kill at any moment leaves the
previous checkpoint intact and `latest` pointing at it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn


@dataclass
class TrainingState:
    """Where the loop is: epoch, batches done in it, optimizer steps, and the best accuracy."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_top1: float = -1.0
    best_top5: float = -1.0
    best_epoch: int = -1

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_weights_atomic(
    model: nn.Module, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Save a model's state dict as safetensors, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


class CheckpointManager:
    """Numbered, atomic `save_state` checkpoints under `<run>/checkpoints`, keeping the last few."""

    def __init__(self, accelerator: Accelerator, run_dir: Path, keep: int) -> None:
        self.accelerator = accelerator
        self.root = run_dir / "checkpoints"
        self.keep = max(1, keep)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def save(self, global_step: int) -> Path:
        """Write a checkpoint for this step; every process must call it."""
        name = f"step_{global_step:09d}"
        final = self.root / name
        staging = self.root / f".{name}.partial"
        if self.accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(staging))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            write_atomic(self.root / "latest", name.encode())
            self._prune(keep_name=name)
        self.accelerator.wait_for_everyone()
        return final

    def _prune(self, keep_name: str) -> None:
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for path in done[: -self.keep]:
            if path.name != keep_name:
                shutil.rmtree(path, ignore_errors=True)

    def has_checkpoints(self) -> bool:
        return self.latest() is not None


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON record as a line (metrics log)."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)
