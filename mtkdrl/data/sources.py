"""Open a data set's splits through Hugging Face `datasets`: a Hub name, parquet files or a folder.

Each source kind is one loader in `SOURCES`; any other `data.name` is taken as a Hub data set.
Errors name the recipe field at fault (`data.data_files.train`, `data.eval_split`, ...).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.data_files import EmptyDatasetError

from ..errors import MtkdrlError, first_line
from ..recipe import DataConfig

IMAGE_COLUMNS = ("img", "image", "jpg", "png", "pixel_values")
LABEL_COLUMNS = ("label", "fine_label", "labels", "cls", "class")


@dataclass
class SplitInfo:
    """What the rest of the package needs to know about the opened splits."""

    num_classes: int
    label_names: list[str] | None
    image_column: str
    label_column: str


def _parquet(cfg: DataConfig, splits: list[str], streaming: bool) -> dict[str, Any]:
    files = cfg.data_files or {}
    for split in splits:
        if split not in files:
            raise MtkdrlError(
                f"data.data_files has no {split!r} entry (it has {sorted(files)}); "
                f"add data.data_files.{split}: path/to/{split}.parquet"
            )
        matches = list(Path().glob(files[split])) if any(c in files[split] for c in "*?[") else []
        if not matches and not Path(files[split]).is_file():
            raise MtkdrlError(f"data.data_files.{split}: no such file: {files[split]}")
        for path in matches or [Path(files[split])]:
            _check_parquet(path, f"data.data_files.{split}")
    chosen = {split: files[split] for split in splits}
    return datasets.load_dataset("parquet", data_files=chosen, streaming=streaming)


def _check_parquet(path: Path, field: str) -> None:
    """A readable parquet file with at least one row, or one line naming it."""
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as err:
        raise MtkdrlError(
            f"{field}: {path} is not a readable parquet file ({first_line(err)})"
        ) from None
    if rows == 0:
        raise MtkdrlError(f"{field}: {path} has no rows; give a split with images")


def _imagefolder(cfg: DataConfig, splits: list[str], streaming: bool) -> dict[str, Any]:
    if not cfg.data_dir:
        raise MtkdrlError("data.data_dir must name the image folder when data.name is imagefolder")
    if not Path(cfg.data_dir).is_dir():
        raise MtkdrlError(f"data.data_dir: no such directory: {cfg.data_dir}")
    try:
        return datasets.load_dataset("imagefolder", data_dir=cfg.data_dir, streaming=streaming)
    except EmptyDatasetError:
        raise MtkdrlError(
            f"data.data_dir: {cfg.data_dir} holds no image files; an image folder holds "
            "SPLIT/CLASS/IMAGE files (e.g. train/cat/001.jpg)"
        ) from None


def _hub(cfg: DataConfig, splits: list[str], streaming: bool) -> dict[str, Any]:
    try:
        return datasets.load_dataset(cfg.name, data_dir=cfg.data_dir, streaming=streaming)
    except (FileNotFoundError, ConnectionError, ValueError) as err:
        raise MtkdrlError(
            f"data.name: cannot open data set {cfg.name!r} ({first_line(err)}); give a Hub data "
            "set name (online or cached), or data.name: parquet with data.data_files, "
            "or data.name: imagefolder with data.data_dir"
        ) from None


SOURCES = {"parquet": _parquet, "imagefolder": _imagefolder}


def local_source(cfg: DataConfig, split: str) -> Path | None:
    """The local file (parquet) or folder (imagefolder) a split is read from; None for the Hub."""
    if cfg.name == "parquet" and cfg.data_files and split in cfg.data_files:
        return Path(cfg.data_files[split])
    if cfg.name == "imagefolder" and cfg.data_dir:
        return Path(cfg.data_dir)
    return None


def describe_split(cfg: DataConfig, split: str, subset: int | None = None) -> str:
    """Where a split's images come from, free of local paths, for cards and messages.

    A parquet file by its file name, an image folder by its own name, a Hub data set by its id;
    then the split and, when `subset` is set, how many of its first images, e.g.
    `val.parquet, split 'validation', first 500 images`.
    """
    source = local_source(cfg, split)
    if source is None:
        where = cfg.name
    elif cfg.name == "imagefolder":
        where = f"{source.name}/ (imagefolder)"
    else:
        where = source.name
    first = f", first {subset} images" if subset else ""
    return f"{where}, split {split!r}{first}"


def _pick_split(opened: dict[str, Any], split: str, field: str) -> Any:
    if split not in opened:
        raise MtkdrlError(f"{field}: the data set has no split {split!r} (it has {sorted(opened)})")
    return opened[split]


def _detect(features: dict, given: str | None, candidates: tuple[str, ...], field: str) -> str:
    columns = list(features)
    if given is not None:
        if given not in columns:
            close = difflib.get_close_matches(given, columns, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise MtkdrlError(f"{field}: no column {given!r} (columns: {columns}){hint}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise MtkdrlError(
        f"{field}: none of the columns {columns} is a known name {list(candidates)}; set {field}"
    )


def _label_info(dataset: Any, column: str) -> tuple[int, list[str] | None]:
    feature = dataset.features[column] if dataset.features else None
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes, list(feature.names)
    dtype = getattr(feature, "dtype", None)
    if feature is not None and not str(dtype).startswith(("int", "uint")):
        raise MtkdrlError(
            f"data.label_column: column {column!r} holds {dtype or type(feature).__name__} "
            "values; labels must be class indices (integers 0..C-1, or a datasets ClassLabel: "
            "class names can be turned into one with Dataset.class_encode_column)"
        )
    if getattr(dataset, "num_rows", None) is None:
        raise MtkdrlError(
            f"data.num_classes: the label column {column!r} is not a ClassLabel and a streamed "
            "data set cannot be scanned for its classes; set data.num_classes"
        )
    return int(max(dataset[column])) + 1, None


def load_splits(cfg: DataConfig, train: bool = True) -> tuple[Any, Any, SplitInfo]:
    """Open the eval split (and the train split when `train`), detect columns and class count."""
    splits = [cfg.train_split, cfg.eval_split] if train else [cfg.eval_split]
    loader = SOURCES.get(cfg.name, _hub)
    opened = loader(cfg, splits, cfg.streaming and train)
    train_ds = _pick_split(opened, cfg.train_split, "data.train_split") if train else None
    eval_ds = _pick_split(opened, cfg.eval_split, "data.eval_split")
    if cfg.streaming and train and eval_ds is not None:
        eval_ds = loader(cfg, [cfg.eval_split], False)[cfg.eval_split]
    reference = train_ds if train_ds is not None else eval_ds
    features = reference.features or {}
    image_column = _detect(features, cfg.image_column, IMAGE_COLUMNS, "data.image_column")
    label_column = _detect(features, cfg.label_column, LABEL_COLUMNS, "data.label_column")
    num_classes, names = _label_info(eval_ds if train_ds is None else reference, label_column)
    if (
        cfg.num_classes is not None
        and features
        and not isinstance(features[label_column], datasets.ClassLabel)
    ):
        num_classes = cfg.num_classes
    info = SplitInfo(num_classes, names, image_column, label_column)
    return train_ds, eval_ds, info
