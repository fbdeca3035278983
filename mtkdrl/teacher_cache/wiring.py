"""A run's teacher source from its recipe: the cache's layout and identity, opened on every process.

The identity is everything the cached outputs depend on, so any change gives a new cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
import torchvision

from ..data import DataBundle
from ..errors import MtkdrlError
from ..pool import ModelOutputs, TeacherPool, data_config_of
from ..recipe import Recipe, TeacherCacheConfig
from .layout import CacheLayout
from .logit_codecs import choose_codec
from .sources import CachedTeachers, LiveTeachers
from .storage import TeacherCache, cache_key, format_bytes

if TYPE_CHECKING:
    from accelerate import Accelerator


def open_for_run(
    recipe: Recipe,
    data: DataBundle,
    teachers: TeacherPool,
    probe: list[ModelOutputs],
    feature_stage: int | None,
    accelerator: Accelerator,
    student_cfg: dict,
    embedding_width: Callable[[int], int],
) -> CachedTeachers | LiveTeachers:
    """The run's teacher source: the cache as `recipe.teacher_cache` asks, or the live teachers.

    `auto` turns it on wherever replay is exact; `on` makes an inexact setting an error.
    `embedding_width(d)` is the width of a d-wide teacher embedding the method reads (0: none).
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
    has_crops = hasattr(transform, "sample")
    layout = layout_for(cfg, data.train_size, probe, feature_stage, embedding_width, has_crops)
    identity = _identity(recipe, data, teachers, feature_stage, student_cfg, accelerator)
    identity["layout"] = asdict(layout)
    key = cache_key(identity)
    root = Path(cfg.dir) if cfg.dir else Path(recipe.output_dir) / "teacher_cache"
    folder = root / key[:16]
    if accelerator.is_main_process:
        state = "reusing" if (folder / "meta.json").is_file() else "new"
        accelerator.print(
            f"teacher cache ({state}): {format_bytes(layout.nbytes())} for {len(teachers)} "
            f"teachers x {layout.views} views x {layout.num_samples} samples at {folder}; "
            f"{format_bytes(layout.entry_bytes())} per sample and view"
        )
        for k, size in enumerate(layout.teacher_entry_bytes()):
            accelerator.print(f"  teachers.{k}: {format_bytes(size)} ({layout.describe(k)})")
        TeacherCache.create_or_check(root, key, layout, identity)
    accelerator.wait_for_everyone()
    cache = TeacherCache.open(folder, layout, exclusive=accelerator.is_main_process)
    filled = sum(cache.filled(view) for view in range(layout.views))
    accelerator.print(
        f"teacher cache: {filled} of {layout.views * layout.num_samples} views stored; epoch e "
        f"replays view e mod {layout.views}"
    )
    return CachedTeachers(teachers, cache, recipe.seed, transform)


def layout_for(
    cfg: TeacherCacheConfig,
    num_samples: int,
    probe: list[ModelOutputs],
    feature_stage: int | None,
    embedding_width: Callable[[int], int],
    has_crops: bool = False,
) -> CacheLayout:
    """What each entry holds for teachers whose outputs look like `probe`: the logits as
    `cfg.logits` says (`auto`: float32 up to 100 classes, uint8 above), the embeddings the
    method reads (all of them with `cfg.store=all`), the maps when the objective has a feature
    term."""
    classes = [int(out.logits.shape[1]) for out in probe]
    dims = [int(out.embedding.shape[1]) for out in probe]
    return CacheLayout(
        num_samples=num_samples,
        views=cfg.views,
        num_classes=classes,
        logit_codec=choose_codec(cfg.logits, max(classes), cfg.logit_topk),
        logit_topk=cfg.logit_topk,
        embedding_dims=dims if cfg.store == "all" else [embedding_width(d) for d in dims],
        embedding_dtype=cfg.embedding_dtype,
        feature_shapes=[list(out.features.shape[1:]) for out in probe]
        if feature_stage is not None
        else None,
        feature_dtype=cfg.feature_dtype,
        has_crops=has_crops,
    )


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
        "feature_stage": feature_stage,
        "precision": accelerator.mixed_precision,
        "device": accelerator.device.type,
        "channels_last": recipe.train.channels_last,
        "compile": recipe.train.compile,
        "torch": torch.__version__,
    }
