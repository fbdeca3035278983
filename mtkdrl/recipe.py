"""The recipe: a typed description of one distillation run, loaded from YAML with strict checks.

A recipe is data: every run can be reproduced from the YAML it saved beside its outputs.
Unknown or mistyped keys are errors that name the key's path and the nearest valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import MtkdrlError, shown
from .recipe_file import locate_recipe, read_recipe


@dataclass
class ModelSpec:
    """A teacher or student: a timm name plus where its weights come from.

    `name` is any timm model name (with an optional `.tag`), one of ours (`*_cifar`), or an
    `hf-hub:org/name` id. `pretrained` loads timm's (or the Hub's) weights for that name;
    `checkpoint` loads a local safetensors file (or a pickle read with `weights_only=True`).
    """

    name: str = ""
    pretrained: bool = False
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None

    def without_weights(self) -> ModelSpec:
        """The same architecture and preprocessing, with no pretrained or checkpoint weights."""
        return ModelSpec(name=self.name, kwargs=self.kwargs, mean=self.mean, std=self.std)


@dataclass
class DataConfig:
    """Where images come from (a Hub name, local parquet files or an imagefolder) and how."""

    name: str = "parquet"
    data_files: dict[str, str] | None = None
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    image_column: str | None = None
    label_column: str | None = None
    streaming: bool = False
    train_transform: Literal["cifar", "timm"] = "timm"
    train_subset: int | None = None
    eval_subset: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 2
    cache_decoded: bool = False
    num_classes: int | None = None

    def __post_init__(self) -> None:
        lowest = {"batch_size": 1, "eval_batch_size": 1, "num_workers": 0, "train_subset": 1,
                  "eval_subset": 1, "num_classes": 1}  # fmt: skip
        for name, low in lowest.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise MtkdrlError(f"data.{name} must be at least {low}, got {value}")


@dataclass
class MethodConfig:
    """The weighting method and the objective it weights: L = CE + alpha Σ w·ℓ + beta Σ v·d.

    `name` and `options` are the weighting method's. The rest is the shared objective:
    `logit_loss` is ℓ (a name from `mtkdrl.logit_losses`, `kl` by default, or a mapping with
    `name` and its settings, `{name: dkd, beta: 2}`), `temperature` its T (a number or a policy),
    and `feature` the term d (`none`, `map` or `hint`, or a mapping with `kind` and settings,
    `{kind: hint, stage: 2}`; unset, the method's own default). All are checked when the run is
    built.
    """

    name: str = "avg"
    temperature: float | dict[str, Any] = 4.0
    alpha: float = 1.0
    beta: float = 5.0
    options: dict[str, Any] = field(default_factory=dict)
    logit_loss: str | dict[str, Any] = "kl"
    feature: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            if getattr(self, name) < 0:
                raise MtkdrlError(
                    f"method.{name} weighs a loss term and must be >= 0, got {getattr(self, name)}"
                )


@dataclass
class OptimConfig:
    """Student optimizer and LR schedule: SGD with a cosine decay by default, which fits any
    budget (the papers' multistep needs milestones matched to its epochs)."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: Literal["multistep", "cosine", "constant"] = "cosine"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr"):
            if getattr(self, name) < 0:
                raise MtkdrlError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.momentum < 1:
            raise MtkdrlError(f"optim.momentum must lie in [0, 1), got {self.momentum}")
        if self.gamma <= 0:
            raise MtkdrlError(f"optim.gamma must be > 0, got {self.gamma}")
        if any(m < 0 for m in self.milestones) or self.milestones != sorted(set(self.milestones)):
            raise MtkdrlError(
                f"optim.milestones must be increasing epochs >= 0, got {shown(self.milestones)}"
            )


@dataclass
class TrainConfig:
    """The loop: epochs, precision, accumulation, logging and checkpoint cadence.

    `epochs` defaults to a short budget (30), stated when the run starts; the papers' 240 CIFAR
    epochs are the `cifar100_paper` recipe's.
    """

    epochs: int = 30
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where native
    grad_accum_steps: int = 1
    max_steps_per_epoch: int | None = None
    log_every: int = 50
    log_weights_by_class: bool = False  # each epoch, the tracked weights' mean per class
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    trackers: list[str] = field(default_factory=list)
    eval_every: int = 1
    eval_teachers: bool = True
    stop_after_steps: int | None = None
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "grad_accum_steps", "log_every", "eval_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise MtkdrlError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps_per_epoch", "checkpoint_every", "stop_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MtkdrlError(f"train.{name} must be at least 1 or null, got {value}")


@dataclass
class TeacherCacheConfig:
    """Teacher outputs stored per (augmented view, sample) and replayed instead of recomputed.

    Epoch `e` shows every sample its view `e mod views`, so the teachers run only during the first
    `views` epochs (or never, once another run with the same teachers, data and transform has
    filled the cache). `auto` caches where replay is exact (indexed, not streamed, data).
    An entry stores what the run reads (`store: needed`), or every output so that runs of any
    method share one cache (`store: all`); logits in float32, 8 bits or top-k (`logits`).
    """

    mode: Literal["auto", "on", "off"] = "auto"
    views: int = 4
    dir: str | None = None
    store: Literal["needed", "all"] = "needed"  # all: every method can share the cache
    logits: Literal["auto", "float32", "uint8", "topk"] = "auto"  # auto: float32 to 100 classes
    logit_topk: int = 100  # the k of `logits: topk`
    embedding_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    feature_dtype: Literal["float16", "bfloat16", "float32"] = "float16"

    def __post_init__(self) -> None:
        if self.views < 1:
            raise MtkdrlError(f"teacher_cache.views must be at least 1, got {self.views}")
        if self.logit_topk < 1:
            raise MtkdrlError(f"teacher_cache.logit_topk must be at least 1, got {self.logit_topk}")


@dataclass
class Recipe:
    """One distillation run."""

    student: ModelSpec = field(default_factory=ModelSpec)
    teachers: list[ModelSpec] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    output_dir: str = "runs/default"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**32:
            raise MtkdrlError(f"seed must lie in [0, 2**32), got {shown(self.seed)}")
        if not self.output_dir.strip() or "\x00" in self.output_dir:
            raise MtkdrlError(
                f"output_dir must name a folder, got {shown(self.output_dir)}; e.g. runs/my_run"
            )

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
        """Read a recipe file (or a packaged recipe by name), apply `a.b=value` overrides, and
        validate the result."""
        path = locate_recipe(path)
        raw = read_recipe(path)
        for item in overrides:
            apply_override(raw, item)
        recipe = cls.from_dict(raw)
        recipe.resolve_paths(path.parent)
        return recipe

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Recipe:
        """Build a recipe from plain data, checking every key and type."""
        return build_dataclass(cls, raw, "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def budget(self, train_images: int) -> str:
        """The training budget in words, as runs print it and registry entries state it."""
        optim = self.optim
        epochs = f"{self.train.epochs} epoch" + ("" if self.train.epochs == 1 else "s")
        return (
            f"{epochs} over {train_images:,} training images, "
            f"batch {self.data.batch_size}, {optim.optimizer} lr {optim.lr:g} with a "
            f"{optim.schedule} schedule"
        )

    def resolve_paths(self, base: Path) -> None:
        """Make local paths in the recipe relative to the recipe file, as users write them."""

        def resolve(value: str | None) -> str | None:
            if value is None or "://" in value or value.startswith("hf-hub:"):
                return value
            candidate = base / value
            return str(candidate.resolve()) if candidate.exists() else value

        for spec in [self.student, *self.teachers]:
            spec.checkpoint = resolve(spec.checkpoint)
        if self.data.data_files:
            self.data.data_files = {k: resolve(v) for k, v in self.data.data_files.items()}
        self.data.data_dir = resolve(self.data.data_dir)
        self.teacher_cache.dir = resolve(self.teacher_cache.dir)


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (so `3`, `1e-3`, `true`, `[1, 2]` and `null` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override to raw recipe data (list items by index: `teachers.0`)."""
    if "=" not in item:
        raise MtkdrlError(f"override {item!r} must look like key.path=value")
    dotted, text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            node = node[_list_index(key, node, where)]
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            raise MtkdrlError(f"override {dotted}: {where} is a value, not a section")
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(last, node, dotted)] = parse_value(text)
    else:
        node[last] = parse_value(text)


def _list_index(key: str, items: list[Any], where: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise MtkdrlError(
            f"override path {where}: expected an index below {len(items)}, got {key!r}"
        )
    return int(key)


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    """Recursively turn a mapping into dataclass `cls`, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise MtkdrlError(f"{path or 'recipe'} must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            near = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise MtkdrlError(
                f"unknown recipe key {where!r}{hint} (valid keys here: {', '.join(fields)})"
            )
    values = {key: _coerce(raw[key], hints[key], f"{path}.{key}" if path else key) for key in raw}
    return cls(**values)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check `value` against type `hint`, converting where YAML is loose (ints for floats)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except MtkdrlError as err:
                errors.append(str(err))
        raise MtkdrlError(errors[0])
    if origin is Literal:
        if isinstance(value, bool):
            # YAML 1.1 reads bare `no`/`off` as false and `on`/`yes` as true
            words = [w for w in YAML_BOOL_WORDS[value] if w in args]
            value = words[0] if words else value
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise MtkdrlError(f"recipe key {path!r} must be one of {choices}, got {shown(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise MtkdrlError(f"recipe key {path!r} must be a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{path}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise MtkdrlError(f"recipe key {path!r} must be a mapping, got {shown(value)}")
        return {k: _coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _finite(float(value), path)
    if hint is float and isinstance(value, str) and _is_float(value):
        return _finite(float(value), path)  # YAML 1.1 reads `5e-4` (no dot) as a string
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise MtkdrlError(
        f"recipe key {path!r} must be of type {hint.__name__}, "
        f"got {shown(value)} ({type(value).__name__})"
    )


def _finite(value: float, path: str) -> float:
    """A number the run can compute with: NaN and infinity are refused before any compute."""
    if not math.isfinite(value):
        raise MtkdrlError(f"recipe key {path!r} must be a finite number, got {value}")
    return value


YAML_BOOL_WORDS = {True: ("on", "yes", "true"), False: ("no", "off", "false")}


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
