"""Data loaders over opened splits: indexed samples, seeded augmentation, epoch-seeded shuffling.

Batches are `(images, labels, indices)`; the index is the sample's row in its split, which
seeds its augmentation and keys any per-sample state (a teacher-output cache, for one).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    Sampler,
    default_collate,
)

from ..errors import MtkdrlError, first_line
from ..recipe import DataConfig
from .fingerprint import split_fingerprint
from .sources import SplitInfo, load_splits, local_source
from .transforms import EvalTransform, build_train_transform, sample_seed

Transform = Callable[[np.ndarray, int], Tensor]


def to_pixels(image: Any) -> np.ndarray:
    """A decoded or encoded image cell (PIL, `{'bytes': ...}`, array) as HxWx3 uint8: grey-scale,
    palette, CMYK and alpha images converted to RGB as PIL converts them."""
    if image is None or (isinstance(image, dict) and not (image.get("bytes") or image.get("path"))):
        raise ValueError("the image cell is empty")
    if isinstance(image, dict):
        image = (
            Image.open(io.BytesIO(image["bytes"]))
            if image.get("bytes")
            else Image.open(image["path"])
        )
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:  # HxWx1 grey-scale
        pixels = pixels[..., 0]
    return np.asarray(Image.fromarray(pixels).convert("RGB"))


def check_labels(labels: np.ndarray, info: SplitInfo, field: str) -> None:
    """Every label a class index in [0, num_classes), or one line naming the first row that is
    not (CE would fail mid-training, or learn from a wrong target)."""
    bad = np.flatnonzero((labels < 0) | (labels >= info.num_classes))
    if len(bad):
        row = int(bad[0])
        raise MtkdrlError(
            f"{field}: row {row} has label {int(labels[row])} in column {info.label_column!r}, "
            f"outside 0..{info.num_classes - 1} ({info.num_classes} classes; "
            f"{len(bad)} such rows); fix the labels or set data.num_classes"
        )


def _subset(dataset: Any, size: int | None, field: str) -> Any:
    if size is None:
        return dataset
    if size < 1:
        raise MtkdrlError(f"{field} must be at least 1, got {size}")
    if getattr(dataset, "num_rows", None) is None:
        return dataset.take(size)
    if size > dataset.num_rows:
        raise MtkdrlError(f"{field} is {size} but the split has only {dataset.num_rows} rows")
    return dataset.select(range(size))


class Batch(tuple):
    """`(images, labels, indices)` made whole by a dataset's batched fetch: collated already."""


def collate(samples: Batch | list) -> tuple:
    """The DataLoader's collate: a `Batch` as it is, a list of samples stacked as usual."""
    return samples if isinstance(samples, Batch) else default_collate(samples)


class IndexedImages(Dataset):
    """A map-style split: row `i` becomes `(transform(pixels, seed(view, i)), label, i)`.

    `view` is the epoch, or the epoch's replayed view when a teacher-output cache is on.
    """

    def __init__(
        self,
        rows: Any,
        info: SplitInfo,
        transform: Transform,
        seed: int,
        cache_decoded: bool,
        field: str = "data.train_split",
        local: bool = False,
    ) -> None:
        self.transform, self.seed, self.view, self.field = transform, seed, 0, field
        self.rows, self.info, self.local = rows, info, local
        self.labels = np.asarray(rows[info.label_column], dtype=np.int64)
        check_labels(self.labels, info, field)
        self.images = rows.cast_column(info.image_column, datasets.Image(decode=False))
        self.image_column = info.image_column
        self.decoded = self._decode_all() if cache_decoded else None
        self._stacked: Tensor | None = None  # the decoded images as one tensor, made at first use

    @cached_property
    def fingerprint(self) -> str | None:
        """The split's identity for resume checks and cache keys (`fingerprint.py`)."""
        return split_fingerprint(
            self.rows, self.info.image_column, self.info.label_column, self.local
        )

    def _decode_all(self) -> list[np.ndarray]:
        """Every image decoded once, so that epochs after the first pay only for augmentation."""
        cells = self.images[self.image_column]
        return [self._decode(cell, index) for index, cell in enumerate(cells)]

    def _decode(self, cell: Any, index: int) -> np.ndarray:
        try:
            return to_pixels(cell)
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            reason = (
                "its bytes are in no image format PIL reads"
                if isinstance(err, UnidentifiedImageError)
                else first_line(err)
            )
            raise MtkdrlError(
                f"{self.field}: row {index} holds an image that cannot be decoded ({reason}); "
                "remove or re-encode it"
            ) from None

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, index: int) -> np.ndarray:
        if self.decoded is not None:
            return self.decoded[index]
        return self._decode(self.images[index][self.image_column], index)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        seed = sample_seed(self.seed, self.view, index)
        return self.transform(self.pixels(index), seed), int(self.labels[index]), index

    def __getitems__(self, indices: list[int]) -> Batch | list[tuple[Tensor, int, int]]:
        """A whole batch at once (the DataLoader's batched fetch): where the images are decoded
        and the transform has a batched form (CIFAR's), one `Batch` made in a few tensor
        operations, the numbers `__getitem__` gives; otherwise the samples one by one."""
        batch = getattr(self.transform, "batch", None)
        if batch is None or self.decoded is None:
            return [self[index] for index in indices]
        if self._stacked is None:
            self._stacked = self.transform.stack(self.decoded)
        rows = torch.as_tensor(indices, dtype=torch.int64)
        seeds = [sample_seed(self.seed, self.view, index) for index in indices]
        labels = torch.from_numpy(self.labels[indices])
        return Batch((batch(self._stacked, rows, seeds), labels, rows))


class StreamedImages(IterableDataset):
    """A streamed split (ImageNet scale): shuffled in a buffer per epoch, indexed by position.

    A position names a different image each epoch, so views cannot be replayed from a cache.
    """

    fingerprint = None  # a stream has no content hash to record

    def __init__(
        self, rows: Any, info: SplitInfo, transform: Transform, seed: int, size: int
    ) -> None:
        self.rows, self.info, self.transform = rows, info, transform
        self.seed, self.epoch, self.view, self.size = seed, 0, 0, size

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        stream = self.rows.shuffle(seed=self.seed, buffer_size=10_000)
        stream.set_epoch(self.epoch)
        for index, row in enumerate(stream):
            seed = sample_seed(self.seed, self.view, index)
            pixels = to_pixels(row[self.info.image_column])
            yield self.transform(pixels, seed), int(row[self.info.label_column]), index


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch) alone: the same order on every rank and on resume."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


@dataclass
class DataBundle:
    """The run's loaders and what is known about the data set.

    `train_set` and `sampler` (None when streamed) follow `set_epoch`; `replay_refusal` says why
    the training views cannot be replayed by a teacher-output cache (None when they can).
    """

    train_loader: DataLoader
    eval_loader: DataLoader
    num_classes: int
    label_names: list[str] | None
    train_size: int
    train_set: IndexedImages | StreamedImages
    sampler: EpochShuffle | None
    replay_refusal: str | None

    def set_epoch(self, epoch: int, view: int | None = None) -> None:
        """Choose the epoch's shuffle and its augmented view (by default a fresh one, `epoch`);
        call before iterating the train loader."""
        if self.sampler is not None:
            self.sampler.epoch = epoch
        if isinstance(self.train_set, StreamedImages):
            self.train_set.epoch = epoch
        self.train_set.view = epoch if view is None else view


def _train_loader(dataset: Dataset, cfg: DataConfig, seed: int, **batching) -> DataLoader:
    """Its own generator keeps worker seeding from drawing on (and shifting) the global RNG."""
    return DataLoader(
        dataset,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate,
        **batching,
    )


def _eval_loader(cfg: DataConfig, rows: Any, info: SplitInfo, data_config: dict) -> DataLoader:
    rows = _subset(rows, cfg.eval_subset, "data.eval_subset")
    local = local_source(cfg, cfg.eval_split) is not None
    transform = EvalTransform(data_config)
    dataset = IndexedImages(
        rows, info, transform, 0, cfg.cache_decoded, "data.eval_split", local=local
    )
    return DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(0),
    )


def build_eval_loader(
    cfg: DataConfig, data_config: dict
) -> tuple[DataLoader, int, list[str] | None]:
    """A loader over `cfg.eval_split` with timm's eval transform for `data_config`."""
    _, rows, info = load_splits(cfg, train=False)
    return _eval_loader(cfg, rows, info, data_config), info.num_classes, info.label_names


def _stream_size(cfg: DataConfig, rows: Any) -> int:
    if cfg.train_subset is not None:
        return cfg.train_subset
    split_info = (rows.info.splits or {}).get(cfg.train_split) if rows.info else None
    if split_info is None or not split_info.num_examples:
        raise MtkdrlError(
            "data.train_subset: a streamed split of unknown length needs data.train_subset "
            "(the number of training samples per epoch)"
        )
    return split_info.num_examples


def build_data(
    cfg: DataConfig, data_config: dict, seed: int, splits: tuple[Any, Any, SplitInfo] | None = None
) -> DataBundle:
    """Train and eval loaders for the student's `data_config`, shuffled and augmented by `seed`.

    `splits` are what `load_splits(cfg)` returned, when the caller opened them already.
    """
    train_rows, eval_rows, info = splits if splits is not None else load_splits(cfg)
    transform = build_train_transform(cfg.train_transform, data_config)
    train_rows = _subset(train_rows, cfg.train_subset, "data.train_subset")
    if cfg.streaming:
        train_set = StreamedImages(train_rows, info, transform, seed, _stream_size(cfg, train_rows))
        train_loader = _train_loader(train_set, cfg, seed, batch_size=cfg.batch_size)
        sampler = None
        refusal = "a streamed split (data.streaming) puts other images at a position each epoch"
    else:
        local = local_source(cfg, cfg.train_split) is not None
        train_set = IndexedImages(train_rows, info, transform, seed, cfg.cache_decoded, local=local)
        sampler = EpochShuffle(len(train_set), seed)
        batches = BatchSampler(sampler, cfg.batch_size, drop_last=len(train_set) > cfg.batch_size)
        train_loader = _train_loader(train_set, cfg, seed, batch_sampler=batches)
        refusal = None
    eval_loader = _eval_loader(cfg, eval_rows, info, data_config)
    if len(train_set) == 0:
        raise MtkdrlError(f"data.train_split: split {cfg.train_split!r} is empty")
    return DataBundle(
        train_loader,
        eval_loader,
        info.num_classes,
        info.label_names,
        len(train_set),
        train_set,
        sampler,
        refusal,
    )
