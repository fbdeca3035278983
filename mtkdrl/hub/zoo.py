"""`mtkdrl zoo`: the registry of students we publish (`mtkdrl/hub/registry.yaml`, shipped with the
package so that `mtkdrl zoo list` works anywhere).

Each entry names a student, its Hub repo, architecture, data set, teachers, method and recipe,
and either its measured accuracy and the run/export it came from ("trained") or nothing more
("not yet trained": it needs hardware we do not have). `zoo add` fills an entry from a finished
run, `zoo list` prints the registry, `zoo card` rewrites an entry's model card and `zoo verify`
re-measures entries from their exports (`zoo_verify.py`); the command line is `zoo_command.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..checkpoint import write_atomic
from ..errors import MtkdrlError
from ..recipe import Recipe
from ..recipe_diff import overrides_between
from .context import CardContext, dataset_display
from .export import (
    Export,
    ExportConfig,
    ExportOptions,
    export_run,
    write_card,
)
from .names import DEFAULT_ORG, check_repo_id
from .run import Score, read_reference, read_run

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
TRAINED, NOT_TRAINED = "trained", "not yet trained"
HEADER = """\
# The students mtkdrl publishes on the Hugging Face Hub, as timm models.
# Repo ids are ORGANISATION/REPO. Written by `mtkdrl zoo add`; read by `mtkdrl zoo list` and
# `mtkdrl zoo card`. Paths are relative to this file. An entry "not yet trained" has a recipe and
# no numbers: accuracies appear only once a run has measured them.
"""


@dataclass
class ZooEntry:
    """One published (or planned) student."""

    name: str
    repo: str
    architecture: str
    dataset: str
    method: str
    teachers: list[str]
    recipe: str
    status: str = NOT_TRAINED
    dataset_id: str | None = None
    overrides: list[str] = field(default_factory=list)
    score: Score | None = None
    weights: str = "best"
    license: str = "apache-2.0"
    run_dir: str | None = None
    export_dir: str | None = None
    references: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> ZooEntry:
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
        if entry.status not in (TRAINED, NOT_TRAINED):
            raise MtkdrlError(
                f"{where}.status: {entry.status!r} must be {TRAINED!r} or {NOT_TRAINED!r}"
            )
        if entry.status == NOT_TRAINED and entry.score is not None:
            raise MtkdrlError(f"{where}: a student {NOT_TRAINED!r} cannot have a score")
        return entry

    def to_dict(self) -> dict:
        """The entry as the registry stores it, without empty fields."""
        raw = dataclasses.asdict(self)
        return {k: v for k, v in raw.items() if v not in (None, [], {})}


@dataclass
class Registry:
    """The registry file and its entries; relative paths in it are relative to the file."""

    path: Path
    organisation: str = DEFAULT_ORG
    students: list[ZooEntry] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_REGISTRY) -> Registry:
        """Read and check a registry file."""
        path = Path(path)
        if not path.is_file():
            raise MtkdrlError(
                f"--registry: no registry file at {path}; pass an existing registry file, or "
                "leave --registry out for the one mtkdrl ships"
            )
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise MtkdrlError(f"--registry: {path} is not valid YAML: {err}") from None
        students = [
            ZooEntry.from_dict(item, f"{path}: students.{i}")
            for i, item in enumerate(raw.get("students") or [])
        ]
        return cls(path, raw.get("organisation", DEFAULT_ORG), students)

    def save(self) -> None:
        """Write the registry back (atomically), under its explanatory header."""
        data = {
            "organisation": self.organisation,
            "students": [entry.to_dict() for entry in self.students],
        }
        body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        write_atomic(self.path, (HEADER + body).encode())

    def get(self, name: str) -> ZooEntry:
        """The entry called `name`; an error listing the valid names otherwise."""
        for entry in self.students:
            if entry.name == name:
                return entry
        valid = ", ".join(e.name for e in self.students) or "none yet"
        raise MtkdrlError(f"NAME: unknown zoo entry {name!r}; the registry has: {valid}")

    def upsert(self, entry: ZooEntry) -> None:
        """Add the entry, or replace the one of the same name in place."""
        names = [e.name for e in self.students]
        if entry.name in names:
            self.students[names.index(entry.name)] = entry
        else:
            self.students.append(entry)

    def repo_id(self, repo: str, organisation: str | None = None) -> str:
        """`ORG/REPO`, the organisation being the one given or the registry's setting."""
        return f"{organisation or self.organisation}/{repo}"

    def resolve(self, relative: str) -> Path:
        """A path the registry records, relative to its file, as a usable path."""
        return self.path.parent / relative

    def relative(self, path: Path) -> str:
        """`path` as the registry records it: relative to the registry file's folder."""
        return os.path.relpath(path.resolve(), self.path.parent.resolve())


def add_run(
    registry: Registry,
    run_dir: Path,
    name: str,
    export_dir: Path,
    options: ExportOptions,
    repo: str | None = None,
    recipe: Path | None = None,
    overrides: tuple[str, ...] = (),
    organisation: str | None = None,
) -> tuple[ZooEntry, Export]:
    """Export a finished run and record it in the registry as a trained student."""
    repo = repo or f"mtkdrl-{name}"
    repo_id = check_repo_id(registry.repo_id(repo, organisation), "--repo-name")
    run = read_run(run_dir)
    if recipe is not None:
        overrides = _overrides_reproducing(run.recipe, recipe, overrides)
    export = export_run(ExportConfig(run_dir, repo_id, export_dir, options))
    config = json.loads((export_dir / "config.json").read_text())
    entry = ZooEntry(
        name=name,
        repo=repo,
        architecture=config["architecture"],
        dataset=dataset_display(run.recipe.data, options.dataset_id, options.dataset_name),
        method=run.recipe.method.name,
        teachers=[t.name for t in run.recipe.teachers],
        recipe=registry.relative(recipe or run_dir / "recipe.yaml"),
        status=TRAINED,
        dataset_id=options.dataset_id,
        overrides=list(overrides),
        score=export.score,
        weights=options.weights,
        license=options.license,
        run_dir=registry.relative(run_dir),
        export_dir=registry.relative(export_dir),
        references={k: registry.relative(v) for k, v in options.references.items()},
    )
    registry.upsert(entry)
    registry.save()
    return entry, export


def _overrides_reproducing(ran: Recipe, path: Path, given: tuple[str, ...]) -> tuple[str, ...]:
    """`given` plus the overrides that make recipe file `path` reproduce the run (so the entry
    says exactly how to train its student again); refuses a file with other models."""
    source = Recipe.from_yaml(path, list(given))
    for what, ours, theirs in (
        ("student", source.student.name, ran.student.name),
        ("teachers", [t.name for t in source.teachers], [t.name for t in ran.teachers]),
    ):
        if ours != theirs:
            raise MtkdrlError(
                f"--recipe: {path} gives {what} {ours!r} but the run used {theirs!r}; "
                "pass the recipe (and --override values) the run was made from"
            )
    overrides = (*given, *overrides_between(source, ran))
    left = overrides_between(Recipe.from_yaml(path, list(overrides)), ran)
    if left:
        raise MtkdrlError(
            f"--recipe: {path} with overrides {list(overrides)} still differs from the run in "
            f"{left}; pass the recipe the run was made from"
        )
    return overrides


def regenerate_card(
    registry: Registry,
    name: str,
    organisation: str | None = None,
    template: Path | None = None,
) -> Path:
    """Rewrite a trained entry's README.md from its run, its export and its recorded score."""
    entry = registry.get(name)
    if entry.status != TRAINED or entry.run_dir is None or entry.export_dir is None:
        trained = ", ".join(e.name for e in registry.students if e.status == TRAINED) or "none yet"
        raise MtkdrlError(
            f"NAME: zoo entry {name!r} is {entry.status}: it has no run to make a card from "
            f"(trained entries: {trained})"
        )
    run = read_run(registry.resolve(entry.run_dir))
    folder = registry.resolve(entry.export_dir)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MtkdrlError(
            f"NAME: the export of {name!r} is missing ({config_path}); run `mtkdrl zoo add` again"
        )
    config = json.loads(config_path.read_text())
    context = CardContext(
        repo_id=registry.repo_id(entry.repo, organisation),
        run=run,
        score=entry.score,
        which=entry.weights,
        architecture=config["architecture"],
        num_params=config["mtkdrl"]["num_params"],
        license=entry.license,
        dataset_id=entry.dataset_id,
        dataset_name=entry.dataset,
        references=[
            read_reference(label, registry.resolve(path), run)
            for label, path in entry.references.items()
        ],
        plot=run.plot is not None,
    )
    return write_card(context, folder, template)


def format_table(registry: Registry, organisation: str | None = None) -> str:
    """The registry as an aligned text table."""
    headers = ["name", "repo id", "architecture", "data set", "method", "top-1", "top-5"]
    headers += ["status", "teachers"]
    rows = [headers]
    for entry in registry.students:
        score = entry.score
        rows.append(
            [
                entry.name,
                registry.repo_id(entry.repo, organisation),
                entry.architecture,
                entry.dataset,
                entry.method,
                "—" if score is None else f"{score.top1:.2f}",
                "—" if score is None or score.top5 is None else f"{score.top5:.2f}",
                entry.status,
                ", ".join(entry.teachers),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
