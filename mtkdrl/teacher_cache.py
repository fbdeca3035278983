"""Teacher-output cache: every teacher's outputs per (augmented view, sample), memory-mapped.

Teachers dominate a multi-teacher step. Because a sample's augmentation is a pure function of
(seed, view, index), a fixed number of views per sample can be replayed exactly: epoch `e` shows
view `e mod views`, the first epoch to show a view runs the teachers and stores their outputs,
and later epochs read them. Each entry carries the per-sample augmentation seed (and, for the
CIFAR transform, the crop corner and flip it stands for); an entry counts only when its stored
seed equals the one the loader used, so a stale or half-written entry is recomputed, never
misread. The cache lives in a folder named by a hash of everything that determines the outputs
(each teacher's weights, build arguments and preprocessing, the data, transform, seed, views,
feature stage, precision and device), so any change starts a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import timm
import torch
import torchvision
from torch import Tensor

from .data import DataBundle, sample_seed
from .errors import MtkdrlError
from .pool import ModelOutputs, TeacherPool, data_config_of
from .recipe import Recipe

if TYPE_CHECKING:
    from accelerate import Accelerator

FORMAT_VERSION = 1
DISK_HEADROOM = 0.95  # leave 5 % of the free space to everything else

FEATURE_DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "float16": (np.dtype(np.float16), torch.float16),
    "bfloat16": (np.dtype(np.int16), torch.bfloat16),  # numpy has no bf16: stored as its bits
    "float32": (np.dtype(np.float32), torch.float32),
}


@dataclass(frozen=True)
class CacheLayout:
    """What the cache holds: `views` x `num_samples` entries of each teacher's outputs."""

    num_samples: int
    views: int
    num_classes: list[int]
    embedding_dims: list[int]
    feature_shapes: list[list[int]] | None
    feature_dtype: str
    has_crops: bool

    def arrays(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every file of the cache: name -> (shape, dtype)."""
        entries = (self.views, self.num_samples)
        arrays = {"seeds": (entries, np.dtype(np.int64))}
        if self.has_crops:
            arrays["crops"] = ((*entries, 3), np.dtype(np.int16))
        for k, (classes, dim) in enumerate(zip(self.num_classes, self.embedding_dims, strict=True)):
            arrays[f"t{k}.logits"] = ((*entries, classes), np.dtype(np.float32))
            arrays[f"t{k}.embedding"] = ((*entries, dim), np.dtype(np.float32))
            if self.feature_shapes is not None:
                shape = (*entries, *self.feature_shapes[k])
                arrays[f"t{k}.features"] = (shape, FEATURE_DTYPES[self.feature_dtype][0])
        return arrays

    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.arrays().values())


def cache_key(identity: dict[str, Any]) -> str:
    """A stable hash of everything that determines the cached outputs."""
    text = json.dumps({"format": FORMAT_VERSION, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def format_bytes(size: float) -> str:
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
            logits = self._read(f"t{k}.logits", view, indices, device)
            embedding = self._read(f"t{k}.embedding", view, indices, device)
            features = None
            if self.layout.feature_shapes is not None:
                features = self._read(f"t{k}.features", view, indices, device)
                features = features.view(FEATURE_DTYPES[self.layout.feature_dtype][1]).float()
            outputs.append(ModelOutputs(logits, embedding, features))
        return outputs

    def _read(self, name: str, view: int, indices: np.ndarray, device: torch.device) -> Tensor:
        return torch.from_numpy(self.arrays[name][view, indices]).to(device, non_blocking=True)

    def store(
        self,
        view: int,
        indices: np.ndarray,
        seeds: np.ndarray,
        outputs: list[ModelOutputs],
        crops: np.ndarray | None = None,
    ) -> list[ModelOutputs]:
        """Write these samples' outputs; returns them as a later lookup will give them back.

        Feature maps are rounded to the storage dtype on the way back too, so a run that fills
        the cache and one that reads it see the same numbers.
        """
        stored = []
        storage = FEATURE_DTYPES[self.layout.feature_dtype][1]
        for k, out in enumerate(outputs):
            self.arrays[f"t{k}.logits"][view, indices] = out.logits.float().cpu().numpy()
            self.arrays[f"t{k}.embedding"][view, indices] = out.embedding.float().cpu().numpy()
            features = None
            if self.layout.feature_shapes is not None:
                rounded = out.features.to(storage)
                bits = rounded if storage is not torch.bfloat16 else rounded.view(torch.int16)
                self.arrays[f"t{k}.features"][view, indices] = bits.cpu().numpy()
                features = rounded.float()
            stored.append(ModelOutputs(out.logits.float(), out.embedding.float(), features))
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


class LiveTeachers:
    """The teacher pool run on every batch: the teacher source of a run without a cache.

    `CachedTeachers` has the same interface, so the loop never asks which source it has.
    """

    def __init__(self, teachers: TeacherPool) -> None:
        self.teachers = teachers

    def __call__(
        self,
        images: Tensor,
        indices: Tensor | None,
        epoch: int,
        feature_stage: int | None,
        live_rows: Tensor | None = None,
    ) -> list[ModelOutputs]:
        """The teachers on the batch (every row is live here, so `live_rows` changes nothing)."""
        return self.teachers(images, feature_stage) if len(self.teachers) else []

    def view_of(self, epoch: int) -> int | None:
        """None: every epoch shows fresh augmented views."""
        return None

    def fill_dropped(
        self, dataset, epoch: int, batch_size: int, feature_stage: int | None, device
    ) -> int:
        return 0

    def flush(self) -> None:
        """Nothing stored, nothing to flush."""

    def close(self) -> None:
        """Nothing held open."""

    def figures(self) -> dict[str, Any]:
        return {"teacher_cache": None}


class CachedTeachers:
    """The teacher pool behind a cache: stored views are read, missing ones run the teachers."""

    def __init__(self, teachers: TeacherPool, cache: TeacherCache, seed: int, transform) -> None:
        self.teachers, self.cache, self.seed = teachers, cache, seed
        self.sample_view = getattr(transform, "sample", None)

    def view_of(self, epoch: int) -> int:
        return self.cache.view_of(epoch)

    def flush(self) -> None:
        self.cache.flush()

    def close(self) -> None:
        self.cache.close()

    def figures(self) -> dict[str, Any]:
        """Where the cache is and how often it answered, for the run's summary."""
        return {
            "teacher_cache": str(self.cache.folder),
            "teacher_cache_hits": self.cache.hits,
            "teacher_cache_misses": self.cache.misses,
        }

    def __call__(
        self,
        images: Tensor,
        indices: Tensor,
        epoch: int,
        feature_stage: int | None,
        live_rows: Tensor | None = None,
    ) -> list[ModelOutputs]:
        """Stored outputs of the batch's samples (run and stored first where missing); the rows
        in `live_rows`, whose images are not the stored samples', run the teachers live."""
        if live_rows is not None and live_rows.any():
            return self._with_live_rows(images, indices, epoch, feature_stage, live_rows)
        view = self.cache.view_of(epoch)
        rows = indices.cpu().numpy()
        seeds = np.array([sample_seed(self.seed, view, int(i)) for i in rows], dtype=np.int64)
        cached = self.cache.lookup(view, rows, seeds, images.device)
        if cached is not None:
            return cached
        outputs = self.teachers(images, feature_stage)
        crops = None
        if self.sample_view is not None:
            crops = np.array(
                [astuple(self.sample_view(int(s))) for s in seeds], dtype=np.int16
            ).reshape(len(rows), 3)
        return self.cache.store(view, rows, seeds, outputs, crops)

    def _with_live_rows(
        self, images: Tensor, indices: Tensor, epoch: int, feature_stage: int | None, live: Tensor
    ) -> list[ModelOutputs]:
        live_outs = self.teachers(images[live], feature_stage)
        if live.all():
            return live_outs
        stored = self(images[~live], indices[~live.to(indices.device)], epoch, feature_stage)
        return [merge_rows(live, a, b) for a, b in zip(live_outs, stored, strict=True)]

    def fill_dropped(
        self, dataset, epoch: int, batch_size: int, feature_stage: int | None, device: torch.device
    ) -> int:
        """Store the samples this epoch's view still lacks when they are the few that the loader's
        `drop_last` left out, so that replays of the view never wait on the teachers; returns how
        many were stored. (More missing samples mean a partial epoch: those wait for their turn.)"""
        view = self.cache.view_of(epoch)
        missing = np.flatnonzero(self.cache.arrays["seeds"][view] == 0)
        if len(missing) >= batch_size:
            return 0
        if len(missing):
            images = torch.stack([dataset[int(i)][0] for i in missing]).to(device)
            self(images, torch.from_numpy(missing), epoch, feature_stage)
        return len(missing)


def merge_rows(live: Tensor, live_outs: ModelOutputs, other: ModelOutputs) -> ModelOutputs:
    """One batch's outputs from two parts: rows where `live` holds from `live_outs`, the others
    from `other` (both in batch order)."""

    def merged(a: Tensor | None, b: Tensor | None) -> Tensor | None:
        if a is None:
            return None
        out = a.new_empty((len(live), *a.shape[1:]), dtype=torch.promote_types(a.dtype, b.dtype))
        out[live], out[~live] = a.to(out.dtype), b.to(out.dtype)
        return out

    return ModelOutputs(
        merged(live_outs.logits, other.logits),
        merged(live_outs.embedding, other.embedding),
        merged(live_outs.features, other.features),
    )


def open_for_run(
    recipe: Recipe,
    data: DataBundle,
    teachers: TeacherPool,
    probe: list[ModelOutputs],
    feature_stage: int | None,
    accelerator: Accelerator,
    student_cfg: dict,
) -> CachedTeachers | LiveTeachers:
    """The run's teacher source: the cache as `recipe.teacher_cache` asks, or the live teachers.

    `auto` turns it on wherever replay is exact; `on` makes an inexact setting an error.
    """
    cfg = recipe.teacher_cache
    if cfg.mode == "off" or len(teachers) == 0:
        return LiveTeachers(teachers)
    if data.replay_refusal is not None:
        if cfg.mode == "on":
            raise MtkdrlError(
                f"teacher_cache.mode=on cannot replay views here: {data.replay_refusal}; "
                "set teacher_cache.mode=off (or auto)"
            )
        accelerator.print(f"teacher cache off: {data.replay_refusal}")
        return LiveTeachers(teachers)
    transform = data.train_set.transform
    layout = CacheLayout(
        num_samples=data.train_size,
        views=cfg.views,
        num_classes=[int(out.logits.shape[1]) for out in probe],
        embedding_dims=[int(out.embedding.shape[1]) for out in probe],
        feature_shapes=[list(out.features.shape[1:]) for out in probe]
        if feature_stage is not None
        else None,
        feature_dtype=cfg.feature_dtype,
        has_crops=hasattr(transform, "sample"),
    )
    identity = _identity(recipe, data, teachers, feature_stage, student_cfg, accelerator)
    identity["layout"] = asdict(layout)
    key = cache_key(identity)
    root = Path(cfg.dir) if cfg.dir else Path(recipe.output_dir) / "teacher_cache"
    folder = root / key[:16]
    if accelerator.is_main_process:
        state = "reusing" if (folder / "meta.json").is_file() else "new"
        accelerator.print(
            f"teacher cache ({state}): {format_bytes(layout.nbytes())} for {len(teachers)} "
            f"teachers x {layout.views} views x {layout.num_samples} samples at {folder}"
        )
        TeacherCache.create_or_check(root, key, layout, identity)
    accelerator.wait_for_everyone()
    cache = TeacherCache.open(folder, layout, exclusive=accelerator.is_main_process)
    filled = sum(cache.filled(view) for view in range(layout.views))
    accelerator.print(
        f"teacher cache: {filled} of {layout.views * layout.num_samples} views stored; epoch e "
        f"replays view e mod {layout.views}"
    )
    return CachedTeachers(teachers, cache, recipe.seed, transform)


def _identity(
    recipe: Recipe,
    data: DataBundle,
    teachers: TeacherPool,
    feature_stage: int | None,
    student_cfg: dict,
    accelerator: Accelerator,
) -> dict[str, Any]:
    """Everything the cached outputs depend on; any change gives a new cache. A teacher counts by
    its weights, its build arguments and the inputs it is fed (its own preprocessing, which its
    mean/std set, and any resize); `feature_stage` None is a logit-only cache, which lives beside
    the full one."""
    cfg = recipe.data
    transform_keys = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")
    parts = zip(
        recipe.teachers, teachers.teachers, teachers.adapters, teachers.fingerprints(), strict=True
    )
    return {
        "teachers": [
            {
                "name": spec.name,
                "weights": digest,
                "kwargs": spec.kwargs,
                "preprocessing": data_config_of(model),
                "resize": adapter.size,
            }
            for spec, model, adapter, digest in parts
        ],
        "data": {
            "name": cfg.name,
            "data_files": cfg.data_files,
            "data_dir": cfg.data_dir,
            "split": cfg.train_split,
            "columns": [cfg.image_column, cfg.label_column],
            "subset": cfg.train_subset,
            "fingerprint": data.train_set.fingerprint,
            "num_samples": data.train_size,
        },
        "transform": {
            "kind": cfg.train_transform,
            **{key: student_cfg.get(key) for key in transform_keys},
            "timm": timm.__version__,
            "torchvision": torchvision.__version__,
        },
        "seed": recipe.seed,
        "views": recipe.teacher_cache.views,
        "feature_dtype": recipe.teacher_cache.feature_dtype,
        "feature_stage": feature_stage,
        "precision": accelerator.mixed_precision,
        "device": accelerator.device.type,
        "channels_last": recipe.train.channels_last,
        "compile": recipe.train.compile,
        "torch": torch.__version__,
    }
