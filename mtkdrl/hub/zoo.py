"""`mtkdrl zoo`: the registry of students we publish and the teachers they learn from
(`mtkdrl/hub/registry.yaml`, shipped with the package so that `mtkdrl zoo list` works anywhere).

Entries are in `zoo_entries.py`. `zoo add` exports a finished run and records it, `zoo list`
prints the tables a user chooses from, `zoo card` rewrites an entry's model card and `zoo verify`
re-measures entries as users load them (`zoo_verify.py`); the command line is `zoo_command.py`.
"""

from __future__ import annotations

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
from .run import FinishedRun, read_reference, read_run
from .sections import method_text
from .zoo_entries import (
    EXPORTED,
    STATUSES,
    StudentEntry,
    TeacherEntry,
    build_entry,
    entry_dict,
)

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
HEADER = """\
# The students mtkdrl publishes on the Hugging Face Hub as timm models, and the pretrained
# teachers they learn from (by timm tag). Repo ids are ORGANISATION/REPO. Written by
# `mtkdrl zoo add`; read by `mtkdrl zoo list`, `zoo card` and `zoo verify`. Paths are relative
# to this file. Figures are top-1/top-5 on the eval split of the entry's recipe; a student's
# gain is over its `baseline`, the no-KD student of the same schedule. Status words:
""" + "".join(f"#   {word}: {meaning}\n" for word, meaning in STATUSES.items())

Entry = StudentEntry | TeacherEntry


@dataclass
class Registry:
    """The registry file and its entries; relative paths in it are relative to the file."""

    path: Path
    organisation: str = DEFAULT_ORG
    students: list[StudentEntry] = field(default_factory=list)
    teachers: list[TeacherEntry] = field(default_factory=list)

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
        registry = cls(
            path,
            raw.get("organisation", DEFAULT_ORG),
            [
                build_entry(StudentEntry, item, f"{path}: students.{i}")
                for i, item in enumerate(raw.get("students") or [])
            ],
            [
                build_entry(TeacherEntry, item, f"{path}: teachers.{i}")
                for i, item in enumerate(raw.get("teachers") or [])
            ],
        )
        registry.check_baselines()
        return registry

    def check_baselines(self, pending: StudentEntry | None = None) -> None:
        """Each `baseline` names a student of the same schedule, so its gain compares like with
        like; one line naming the entry otherwise. `pending` is checked as if it were recorded
        (before anything is written for it)."""
        students = {entry.name: entry for entry in self.students}
        if pending is not None:
            students[pending.name] = pending
        for entry in students.values():
            base = students.get(entry.baseline) if entry.baseline else entry
            if base is None or base.schedule != entry.schedule:
                raise MtkdrlError(
                    f"{self.path}: {entry.name}.baseline: {entry.baseline!r} is not a student of "
                    f"the same schedule ({entry.schedule!r}); name the no-KD student trained "
                    "like it"
                )

    def save(self) -> None:
        """Write the registry back (atomically), under its explanatory header."""
        data = {
            "organisation": self.organisation,
            "students": [entry_dict(entry) for entry in self.students],
            "teachers": [entry_dict(entry) for entry in self.teachers],
        }
        body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        write_atomic(self.path, (HEADER + body).encode())

    def get(self, name: str, field_name: str = "NAME") -> Entry:
        """The student or teacher called `name`; an error listing the valid names otherwise."""
        for entry in [*self.students, *self.teachers]:
            if entry.name == name:
                return entry
        valid = ", ".join(e.name for e in [*self.students, *self.teachers]) or "none yet"
        raise MtkdrlError(f"{field_name}: unknown zoo entry {name!r}; the registry has: {valid}")

    def upsert(self, entry: StudentEntry) -> None:
        """Add the student, or replace the one of the same name in place."""
        names = [e.name for e in self.students]
        if entry.name in names:
            self.students[names.index(entry.name)] = entry
        else:
            self.students.append(entry)

    def gain(self, entry: StudentEntry) -> float | None:
        """Top-1 points over the entry's baseline, when both are measured."""
        if entry.baseline is None or entry.score is None:
            return None
        base = self.get(entry.baseline)
        return None if base.score is None else entry.score.top1 - base.score.top1

    def best_teacher(self, entry: StudentEntry) -> TeacherEntry | None:
        """The entry's measured teacher with the highest top-1 (teachers named by tag only)."""
        measured = [t for t in self.teachers if t.name in entry.teachers and t.score is not None]
        return max(measured, key=lambda t: t.score.top1, default=None)

    def repo_id(self, repo: str, organisation: str | None = None) -> str:
        """`ORG/REPO`, the organisation being the one given or the registry's setting."""
        return f"{organisation or self.organisation}/{repo}"

    def resolve(self, relative: str) -> Path:
        """A path the registry records, relative to its file, as a usable path."""
        return self.path.parent / relative

    def relative(self, path: Path) -> str:
        """`path` as the registry records it: relative to the registry file's folder."""
        return os.path.relpath(path.resolve(), self.path.parent.resolve())

    def project_root(self) -> Path:
        """The git work tree holding the registry file, or its folder outside one: what the
        registry's recorded paths may point into, so a shipped file names no machine's folders."""
        folder = self.path.parent.resolve()
        return next((p for p in (folder, *folder.parents) if (p / ".git").exists()), folder)

    def relative_inside(self, path: Path) -> str | None:
        """`path` as recorded where it lies in the registry's project, else None (not recorded)."""
        return self.relative(path) if path.resolve().is_relative_to(self.project_root()) else None


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
    baseline: str | None = None,
) -> tuple[StudentEntry, Export]:
    """Export a finished run and record it in the registry as an exported student."""
    repo = repo or f"mtkdrl-{name}"
    repo_id = check_repo_id(registry.repo_id(repo, organisation), "--repo-name")
    run = read_run(run_dir)
    if recipe is not None:
        overrides = _overrides_reproducing(run.recipe, recipe, overrides)
    method = run.recipe.method.name
    entry = StudentEntry(
        name=name,
        repo=repo,
        architecture=run.recipe.student.name,  # timm's architecture name once exported
        dataset=dataset_display(run.recipe.data, options.dataset_id, options.dataset_name),
        method=method,
        teachers=[t.name for t in run.recipe.teachers] if method_text(method).uses_teachers else [],
        recipe=registry.relative(recipe or run_dir / "recipe.yaml"),
        schedule=schedule_of(run),
        status=EXPORTED,
        baseline=baseline,
        dataset_id=options.dataset_id,
        overrides=list(overrides),
        weights=options.weights,
        license=options.license,
        run_dir=registry.relative_inside(run_dir),  # a run elsewhere: `zoo card --run`
        export_dir=registry.relative(export_dir),
        references={k: registry.relative(v) for k, v in options.references.items()},
    )
    registry.check_baselines(entry)  # before the export is written
    export = export_run(ExportConfig(run_dir, repo_id, export_dir, options))
    entry.architecture = json.loads((export_dir / "config.json").read_text())["architecture"]
    entry.score = export.score
    registry.upsert(entry)
    registry.save()
    return entry, export


def schedule_of(run: FinishedRun) -> str:
    """The run's training budget in words; one line when its summary predates the image count."""
    images = run.summary.get("train_images")
    if images is None:
        raise MtkdrlError(
            f"RUN_DIR: {run.run_dir}/summary.json does not say how many training images the run "
            "had (an earlier mtkdrl wrote it); train the student again to record it"
        )
    return run.recipe.budget(images)


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
    run_dir: Path | None = None,
) -> Path:
    """Rewrite an exported entry's README.md from its run (`run_dir`, else the one the registry
    records), its export and its recorded score."""
    entry = registry.get(name)
    if not isinstance(entry, StudentEntry) or entry.export_dir is None:
        exported = ", ".join(e.name for e in registry.students if e.export_dir) or "none yet"
        raise MtkdrlError(
            f"NAME: zoo entry {name!r} ({entry.status}) has no run and export to make a card "
            f"from (entries that have: {exported})"
        )
    run = read_run(run_dir or _recorded_run(registry, entry))
    if (run.recipe.student.name.split(".")[0], run.recipe.method.name) != (
        entry.architecture,
        entry.method,
    ):
        raise MtkdrlError(
            f"--run: {run.run_dir} trained {run.recipe.student.name} by "
            f"{run.recipe.method.name}, but {name!r} is {entry.architecture} by {entry.method}; "
            "pass the run the entry was exported from"
        )
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


def _recorded_run(registry: Registry, entry: StudentEntry) -> Path:
    """The entry's run folder as the registry records it (only runs inside its project are)."""
    if entry.run_dir is None:
        raise MtkdrlError(
            f"--run: zoo entry {entry.name!r} records no run folder (its run lay outside "
            f"{registry.path.name}'s repository); pass --run RUN_DIR, the run it was exported from"
        )
    return registry.resolve(entry.run_dir)


def format_table(
    registry: Registry, organisation: str | None = None, markdown: bool = False
) -> str:
    """The students, then the teachers, as aligned text tables (or Markdown): what a user
    chooses from."""
    students = [["student", "repo id", "architecture", "method", "top-1", "top-5"]]
    students[0] += ["gain vs no-KD", "best teacher", "status"]
    for entry in registry.students:
        gain, best = registry.gain(entry), registry.best_teacher(entry)
        students.append(
            [
                entry.name,
                registry.repo_id(entry.repo, organisation),
                entry.architecture,
                entry.method,
                *_figures(entry),
                "—" if gain is None else f"{gain:+.2f}",
                "—" if best is None else f"{best.score.top1:.2f} ({best.architecture})",
                entry.status,
            ]
        )
    schedules: dict[str, list[str]] = {}
    for entry in registry.students:
        if entry.schedule:
            schedules.setdefault(entry.schedule, []).append(entry.name)
    trained_as = "".join(f"\n{', '.join(names)}: {text}\n" for text, names in schedules.items())
    teachers = [["teacher", "repo id", "architecture", "data set", "top-1", "top-5", "status"]]
    for entry in registry.teachers:
        teachers.append(
            [
                entry.name,
                registry.repo_id(entry.repo, organisation),
                entry.architecture,
                entry.dataset,
                *_figures(entry),
                entry.status,
            ]
        )
    if not markdown:
        return f"{_aligned(students)}\n{trained_as}\n{_aligned(teachers)}"
    words = "".join(f"- {word}: {meaning}\n" for word, meaning in STATUSES.items())
    return (
        "# The mtkdrl zoo\n\nGenerated by `mtkdrl zoo list --markdown` from the registry "
        "(`mtkdrl/hub/registry.yaml`). Top-1/top-5 (%) are on the eval split of each entry's "
        "recipe; the gain is over the no-KD student of the same schedule.\n\n"
        f"{_markdown(students)}\n{trained_as}\n{_markdown(teachers)}\n\nStatus words:\n{words}"
    )


def _figures(entry: Entry) -> list[str]:
    score = entry.score
    top5 = None if score is None else score.top5
    return ["—" if score is None else f"{score.top1:.2f}", "—" if top5 is None else f"{top5:.2f}"]


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + " --- |" * len(rows[0]))
    return "\n".join(lines)
