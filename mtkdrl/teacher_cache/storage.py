"""The cache's on-disk format: the files of a layout, the key that names a cache, the mapped store.

One folder per key holds a `meta.json` and one memory-mapped `.bin` file per array; each entry's
augmentation seed (and CIFAR crop) is written last, so only a complete entry ever counts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MtkdrlError
from ..pool import ModelOutputs
from .layout import CacheLayout

FORMAT_VERSION = 2  # 2: compact entries (top-k logits, embeddings only where read)
DISK_HEADROOM = 0.95  # leave 5 % of the free space to everything else


def cache_key(identity: dict[str, Any]) -> str:
    """A stable hash of everything that determines the cached outputs."""
    text = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def format_bytes(size: float) -> str:
    """A size in bytes as people read it (`512 B`, `1.5 MB`), for messages."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


class TeacherCache:
    """Memory-mapped teacher outputs for `layout.views` views of every training sample."""

    def __init__(self, folder: Path, layout: CacheLayout, lock: Any | None) -> None:
        self.folder = folder
        self.layout = layout
        self._lock = lock
        self.arrays = {
            name: np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r+", shape=shape)
            for name, (shape, dtype) in layout.arrays().items()
        }
        self.hits = 0
        self.misses = 0

    # ---------------------------------------------------------------- opening
    @classmethod
    def create_or_check(cls, root: Path, key: str, layout: CacheLayout, identity: dict) -> Path:
        """Make the cache folder for `key` (files reserved on disk) or check the existing one.

        Call on one process only; fails up front when the files would not fit on the disk.
        """
        folder = root / key[:16]
        meta_path = folder / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key or meta.get("layout") != asdict(layout):
                raise MtkdrlError(
                    f"teacher_cache: {folder} holds a different cache (hash collision or a "
                    "hand-edited folder); delete it or set teacher_cache.dir elsewhere"
                )
            for name, (shape, dtype) in layout.arrays().items():
                size, path = int(np.prod(shape)) * dtype.itemsize, folder / f"{name}.bin"
                if not path.is_file() or path.stat().st_size != size:
                    found = path.stat().st_size if path.is_file() else 0
                    raise MtkdrlError(
                        f"teacher_cache: {path} holds {found} of its {size} bytes (truncated or "
                        "removed); delete the folder to refill it"
                    )
            return folder
        needed = layout.nbytes()
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if needed > free * DISK_HEADROOM:
            shutil.rmtree(folder, ignore_errors=True)
            raise MtkdrlError(
                f"teacher_cache: needs {format_bytes(needed)} at {root} but only "
                f"{format_bytes(free)} is free; lower teacher_cache.views, point teacher_cache.dir "
                "at a larger disk, or set teacher_cache.mode=off"
            )
        for name, (shape, dtype) in layout.arrays().items():
            size = int(np.prod(shape)) * dtype.itemsize
            with open(folder / f"{name}.bin", "wb") as handle:
                if size:
                    os.posix_fallocate(handle.fileno(), 0, size)  # reserve now, not mid-run
        meta = {"key": key, "layout": asdict(layout), "identity": identity}
        tmp = folder / ".meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        os.replace(tmp, meta_path)  # the folder counts as a cache only once this exists
        return folder

    @classmethod
    def open(cls, folder: Path, layout: CacheLayout, exclusive: bool) -> TeacherCache:
        """Map an existing cache; `exclusive` takes the lock that keeps other runs out."""
        lock = None
        if exclusive:
            lock = open(folder / "lock", "w")  # noqa: SIM115 - held open for the run
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise MtkdrlError(
                    f"teacher_cache: {folder} is in use by another run; wait for it to finish "
                    "or set teacher_cache.dir to another folder"
                ) from None
        return cls(folder, layout, lock)

    def close(self) -> None:
        self.flush()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ---------------------------------------------------------------- entries
    def view_of(self, epoch: int) -> int:
        """The augmented view every sample shows in `epoch`."""
        return epoch % self.layout.views

    def filled(self, view: int) -> int:
        """How many samples of `view` hold outputs (of any seed; the check is per lookup)."""
        return int(np.count_nonzero(self.arrays["seeds"][view]))

    def lookup(
        self, view: int, indices: np.ndarray, seeds: np.ndarray, device: torch.device
    ) -> list[ModelOutputs] | None:
        """The teachers' outputs for these samples' views, or None unless every one is stored."""
        if not np.array_equal(self.arrays["seeds"][view, indices], seeds):
            self.misses += 1
            return None
        self.hits += 1
        outputs = []
        for k in range(len(self.layout.num_classes)):
            arrays = {
                name: torch.from_numpy(self.arrays[name][view, indices]).to(device)
                for name in self.layout.teacher_arrays(k)
            }
            outputs.append(self.layout.unpack(k, arrays))
        return outputs

    def store(
        self,
        view: int,
        indices: np.ndarray,
        seeds: np.ndarray,
        outputs: list[ModelOutputs],
        crops: np.ndarray | None = None,
    ) -> list[ModelOutputs]:
        """Write these samples' outputs; returns them as a later lookup will give them back
        (rounded and packed the same way), so a run that fills the cache and one that reads it
        see the same numbers."""
        stored = []
        for k, out in enumerate(outputs):
            packed = self.layout.pack(k, out)
            for name, array in packed.items():
                self.arrays[name][view, indices] = array
            device = out.logits.device
            tensors = {name: torch.from_numpy(a).to(device) for name, a in packed.items()}
            stored.append(self.layout.unpack(k, tensors))  # what a lookup will read
        if crops is not None and "crops" in self.arrays:
            self.arrays["crops"][view, indices] = crops
        self.arrays["seeds"][view, indices] = seeds  # last: marks the entries complete
        return stored

    def flush(self) -> None:
        """Push written pages to disk, outputs before seeds, so a seed never outlives its data."""
        for name, array in self.arrays.items():
            if name != "seeds":
                array.flush()
        self.arrays["seeds"].flush()
