"""Data through Hugging Face `datasets`, with timm's transforms and seeded per-sample views."""

from .loading import DataBundle, build_data, build_eval_loader
from .sources import SOURCES, SplitInfo, describe_split, load_splits, local_source
from .transforms import TRAIN_TRANSFORMS, build_train_transform, sample_seed

__all__ = [
    "SOURCES",
    "TRAIN_TRANSFORMS",
    "DataBundle",
    "SplitInfo",
    "build_data",
    "build_eval_loader",
    "build_train_transform",
    "describe_split",
    "load_splits",
    "local_source",
    "sample_seed",
]
