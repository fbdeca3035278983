"""The two teacher sources a run steps with: the live teachers, or the teachers behind a cache.

Both have one interface, so the loop never asks which source it has.
"""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import sample_seed
from ..pool import ModelOutputs, TeacherPool
from .storage import TeacherCache


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
        """Nothing to store: 0 samples."""
        return 0

    def flush(self) -> None:
        """Nothing stored, nothing to flush."""

    def close(self) -> None:
        """Nothing held open."""

    def figures(self) -> dict[str, Any]:
        """No cache, for the run's summary."""
        return {"teacher_cache": None}


class CachedTeachers:
    """The teacher pool behind a cache: stored views are read, missing ones run the teachers."""

    def __init__(self, teachers: TeacherPool, cache: TeacherCache, seed: int, transform) -> None:
        self.teachers, self.cache, self.seed = teachers, cache, seed
        self.sample_view = getattr(transform, "sample", None)

    def view_of(self, epoch: int) -> int:
        """The stored view every sample shows in `epoch`."""
        return self.cache.view_of(epoch)

    def flush(self) -> None:
        """Push the cache's written pages to disk."""
        self.cache.flush()

    def close(self) -> None:
        """Flush the cache and release its lock."""
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
        layout = self.cache.layout
        live_outs = [
            layout.round_trip(k, out)
            for k, out in enumerate(self.teachers(images[live], feature_stage))
        ]
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
