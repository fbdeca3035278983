"""Atomic, pickle-free checkpoints: tensors as safetensors, everything else as JSON.

A checkpoint is a folder `checkpoints/checkpoint_<n>` (n counts saves, as accelerate's
`ProjectConfiguration` names them) holding `shared.safetensors/.json` (what every process
shares: student, adapters, optimizer, scheduler, loop counters) and `rank<r>.safetensors/.json`
(what each process keeps: method state, RNG). It is written into a staging folder, each file
fsynced, renamed into place, and then the `latest` pointer is replaced atomically, so a kill at
any moment leaves the previous checkpoint whole and `latest` naming it. Reading refuses, without
opening it, any file that is not safetensors or JSON: a pickle can run code when loaded.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import MtkdrlError, first_line

ALLOWED_SUFFIXES = (".safetensors", ".json")
CHECKPOINT_DIR = "checkpoints"  # inside the run folder
CHECKPOINT_NAME = re.compile(r"checkpoint_\d+")  # a checkpoint folder's name, as `latest` holds it


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


# --------------------------------------------------------------------------- plain encoding
def flatten_state(obj: Any) -> tuple[dict[str, Tensor], Any]:
    """Split nested state into its tensors (by generated name) and a JSON-able skeleton.

    Dicts with non-string keys (an optimizer's `state`), tuples and numpy arrays keep their kind,
    so `unflatten_state` gives back what `load_state_dict`/`setstate` expect.
    """
    tensors: dict[str, Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().cpu().clone().contiguous()
            return {"__tensor__": name}
        if isinstance(value, np.ndarray):
            return {
                "__ndarray__": walk(torch.from_numpy(value.astype(np.int64))),
                "dtype": str(value.dtype),
            }
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"__dict__": {k: walk(v) for k, v in value.items()}}
            return {"__items__": [[walk(k), walk(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot checkpoint a {type(value).__name__} without pickle: {value!r}")

    return tensors, walk(obj)


def unflatten_state(tensors: dict[str, Tensor], skeleton: Any) -> Any:
    """The inverse of `flatten_state`."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__ndarray__" in value:
            return walk(value["__ndarray__"]).numpy().astype(value["dtype"])
        if "__dict__" in value:
            return {k: walk(v) for k, v in value["__dict__"].items()}
        if "__items__" in value:
            return {walk(k): walk(v) for k, v in value["__items__"]}
        return tuple(walk(v) for v in value["__tuple__"])

    return walk(skeleton)


def rng_state() -> dict[str, Any]:
    """This process's random generators (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files
def fsync_dir(path: Path) -> None:
    """Make a folder's entries (files created, renamed or removed in it) durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_file(path: Path) -> None:
    """Make a file's contents durable."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def make_dirs_durable(path: Path) -> None:
    """`mkdir -p`, with each folder it creates made durable in its parent, so that a power cut
    cannot lose a folder whose files were synced."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def save_weights_atomic(
    model: nn.Module, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Save a model's state dict as safetensors, atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata=metadata)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_pair(folder: Path, stem: str, state: Any) -> None:
    tensors, skeleton = flatten_state(state)
    save_file(tensors, str(folder / f"{stem}.safetensors"))
    (folder / f"{stem}.json").write_text(json.dumps(skeleton))
    for suffix in ALLOWED_SUFFIXES:
        fsync_file(folder / f"{stem}{suffix}")


def _read_pair(folder: Path, stem: str) -> Any:
    for suffix in ALLOWED_SUFFIXES:
        if not (folder / f"{stem}{suffix}").is_file():
            raise MtkdrlError(f"--resume: checkpoint {folder} lacks {stem}{suffix}")
    try:
        skeleton = json.loads((folder / f"{stem}.json").read_text())
    except json.JSONDecodeError as err:
        raise MtkdrlError(f"--resume: {folder / stem}.json is not valid JSON ({err})") from None
    try:
        tensors = load_file(str(folder / f"{stem}.safetensors"))
    except (SafetensorError, OSError) as err:
        raise MtkdrlError(
            f"--resume: {folder / stem}.safetensors cannot be read ({first_line(err)}; truncated "
            "or corrupt?); remove that checkpoint folder to resume from an earlier one, or start "
            "again with --overwrite"
        ) from None
    return unflatten_state(tensors, skeleton)


def refuse_unsafe_files(folder: Path) -> None:
    """Fail, without opening it, on any file of a checkpoint that is not safetensors or JSON."""
    for path in sorted(folder.iterdir()):
        _refuse_link(path)
        if path.suffix not in ALLOWED_SUFFIXES:
            raise MtkdrlError(
                f"--resume: checkpoint {folder} holds {path.name}, which is not safetensors or "
                "JSON; mtkdrl never unpickles a checkpoint (loading a pickle can run code): "
                "remove the file, or start again with --overwrite"
            )


def _refuse_link(path: Path) -> None:
    """A run folder may come from someone else: nothing in it is read through a symlink."""
    if path.is_symlink():
        raise MtkdrlError(
            f"--resume: {path} is a symlink; a run folder's files must be its own: remove the "
            "link, or start again with --overwrite"
        )


class Checkpoints:
    """Numbered, atomic checkpoints under `<run>/checkpoints`, keeping the last few: the
    accelerator's `ProjectConfiguration` holds how many (`total_limit`) and the save count."""

    def __init__(self, accelerator: Accelerator, run_dir: Path) -> None:
        self.accelerator = accelerator
        self.root = run_dir / CHECKPOINT_DIR
        self.keep = max(1, accelerator.project_configuration.total_limit or 1)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        _refuse_link(self.root)
        _refuse_link(pointer)
        name = pointer.read_text(errors="replace").strip()
        path = self.root / name
        if not CHECKPOINT_NAME.fullmatch(name) or path.is_symlink() or not path.is_dir():
            raise MtkdrlError(
                f"--resume: {pointer} names {name[:80]!r}, which is not a checkpoint folder "
                f"(checkpoint_<n>) in {self.root}; point it at one that is there, or start again "
                "with --overwrite"
            )
        return path

    def save(self, shared: dict[str, Any], per_rank: dict[str, Any]) -> Path:
        """Write a checkpoint; every process calls it with its own `per_rank` state."""
        accelerator = self.accelerator
        config = accelerator.project_configuration
        name = f"checkpoint_{config.iteration}"
        final, staging = self.root / name, self.root / f".{name}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            make_dirs_durable(staging)
            _write_pair(staging, "shared", shared)
        accelerator.wait_for_everyone()
        _write_pair(staging, f"rank{accelerator.process_index}", per_rank)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            fsync_dir(staging)
            # a folder of this number is one a save wrote but died before `latest` named it
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            fsync_dir(self.root)
            write_atomic(self.root / "latest", name.encode())
            self._prune(keep_name=name)
        config.iteration += 1
        accelerator.wait_for_everyone()
        return final

    def load(self, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """The shared and this process's state of checkpoint `path` (no pickle is opened)."""
        refuse_unsafe_files(path)
        self.accelerator.project_configuration.iteration = int(path.name.split("_")[-1]) + 1
        return _read_pair(path, "shared"), _read_pair(path, f"rank{self.accelerator.process_index}")

    def _prune(self, keep_name: str) -> None:
        done = sorted(
            (p for p in self.root.glob("checkpoint_*") if p.is_dir()),
            key=lambda p: int(p.name.split("_")[-1]),
        )
        for path in done[: -self.keep]:
            if path.name != keep_name:
                shutil.rmtree(path, ignore_errors=True)
