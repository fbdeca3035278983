"""The registry's entries: the students we train and the teachers they learn from.

Each entry has one status word (`STATUSES` says what each means) and, once measured, its top-1
and top-5 on the eval split of the recipe it names, so students and teachers are compared on
the same images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import MtkdrlError
from .run import Score

PLANNED, TRAINED, EXPORTED, PUBLISHED = "planned", "trained", "exported", "published"
STATUSES = {
    PLANNED: "a recipe only: no weights, no figures yet",
    TRAINED: "weights measured on the eval split, not exported in this repository",
    EXPORTED: "weights, config.json and card in this repository (`mtkdrl zoo verify`)",
    PUBLISHED: "exported, and uploaded to its Hub repository",
}


def build_entry(cls: type, raw: dict, where: str) -> Any:
    """An entry from its registry mapping; errors name the entry (`where`) and the key."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MtkdrlError(
            f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(sorted(known))})"
        )
    try:
        entry = cls(**raw)
    except TypeError as err:
        raise MtkdrlError(f"{where}: {err}") from None
    if isinstance(entry.score, dict):
        try:
            entry.score = Score(**entry.score)
        except TypeError as err:
            raise MtkdrlError(f"{where}.score: {err}") from None
    _check_status(entry, where)
    return entry


def _check_status(entry: Any, where: str) -> None:
    """A status word the entry's fields bear out: figures from `trained` on, an export folder
    from `exported` on, and neither while `planned`."""
    if entry.status not in STATUSES:
        raise MtkdrlError(f"{where}.status: {entry.status!r} must be one of {', '.join(STATUSES)}")
    if entry.status == PLANNED and (entry.score is not None or entry.export_dir is not None):
        raise MtkdrlError(f"{where}: a {PLANNED!r} entry has no score and no export_dir")
    if entry.status != PLANNED and entry.score is None:
        raise MtkdrlError(f"{where}: a {entry.status!r} entry needs its score")
    if entry.status in (EXPORTED, PUBLISHED) and entry.export_dir is None:
        raise MtkdrlError(f"{where}: an {entry.status!r} entry needs its export_dir")


def entry_dict(entry: Any) -> dict:
    """The entry as the registry stores it, without empty fields."""
    raw = dataclasses.asdict(entry)
    return {k: v for k, v in raw.items() if v not in (None, [], {})}


@dataclass
class StudentEntry:
    """A student we train: its recipe and overrides, and what it measured."""

    name: str
    repo: str
    architecture: str
    dataset: str
    method: str
    recipe: str
    teachers: list[str] = field(default_factory=list)  # only where the method learns from them
    overrides: list[str] = field(default_factory=list)
    schedule: str | None = None
    status: str = PLANNED
    dataset_id: str | None = None
    score: Score | None = None
    baseline: str | None = None  # the `none` student of the same schedule: the gain is over it
    weights: str = "best"
    license: str = "apache-2.0"
    run_dir: str | None = None
    export_dir: str | None = None
    references: dict[str, str] = field(default_factory=dict)


@dataclass
class TeacherEntry:
    """A pretrained teacher, named by its timm tag, measured on the students' eval split."""

    name: str
    repo: str
    architecture: str
    dataset: str
    recipe: str  # whose eval split measured it
    source: str  # where the weights come from
    license: str
    status: str = PLANNED
    score: Score | None = None
    export_dir: str | None = None
