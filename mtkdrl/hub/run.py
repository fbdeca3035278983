"""A finished run's outputs, read and never written: recipe, summary, teachers, metrics, weights."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from safetensors import SafetensorError, safe_open

from ..data import describe_split
from ..errors import MtkdrlError, first_line
from ..evaluate import evaluate_model
from ..outputs import PLOT_FILE, read_records, run_file
from ..recipe import DataConfig, Recipe
from .public import local_paths

WEIGHT_FILES = {"best": "student_best.safetensors", "last": "student_last.safetensors"}
Which = Literal["best", "last"]


@dataclass
class Score:
    """Top-1/top-5 accuracy (%) on one split, and where the figures come from."""

    top1: float
    top5: float | None
    split: str
    count: int | None = None
    source: str = ""


@dataclass
class FinishedRun:
    """What the distiller left in a run's output_dir."""

    run_dir: Path
    recipe: Recipe
    recipe_text: str
    summary: dict
    teachers: list[dict]
    epochs: list[dict]

    def weights(self, which: Which) -> Path:
        """The student's weights file (best or last epoch); an error naming it when absent."""
        path = run_file(self.run_dir, WEIGHT_FILES[which])
        if path is None:
            present = [f for f in WEIGHT_FILES.values() if (self.run_dir / f).is_file()]
            found = f" (it has {', '.join(present)}: pass --weights last)" if present else ""
            raise MtkdrlError(
                f"RUN_DIR: {self.run_dir} has no {WEIGHT_FILES[which]}{found}; a finished run's "
                f"output_dir holds {' and '.join(WEIGHT_FILES.values())}"
            )
        return path

    def score(self, which: Which) -> Score:
        """The student's accuracy as the run recorded it, for the best or the last weights,
        checked against the run's log and the weights file (a hand-edited summary is refused)."""
        split = self.recipe.data.eval_split
        if which == "last":
            top1, top5 = self.summary.get("last_top1"), self.summary.get("last_top5")
            epoch = (self.summary.get("epochs") or 0) - 1
            source = f"recorded by the run after its last epoch ({self.summary.get('epochs')})"
        else:
            epoch, top1 = self.summary.get("best_epoch"), self.summary.get("best_top1")
            record = next(
                (r for r in self.epochs if r.get("epoch") == epoch and "val_top5" in r), {}
            )
            top5 = record.get("val_top5")
            source = f"recorded by the run at its best epoch ({epoch})"
        if top1 is None or top1 < 0:
            raise MtkdrlError(
                f"RUN_DIR: {self.run_dir / 'summary.json'} records no {which} top-1 accuracy"
            )
        self._check_recorded(which, top1, epoch)
        return Score(top1=top1, top5=top5, split=split, count=self.eval_count(), source=source)

    def _check_recorded(self, which: Which, top1: float, epoch: int) -> None:
        """The summary's figure must be the one the run logged at that epoch, and the weights
        file the one it saved then."""
        logged = next(
            (r["val_top1"] for r in self.epochs if r.get("epoch") == epoch and "val_top1" in r),
            None,
        )
        path = self.weights(which)
        try:
            with safe_open(str(path), framework="pt") as handle:
                saved = (handle.metadata() or {}).get("epoch")
        except SafetensorError as err:
            raise MtkdrlError(
                f"RUN_DIR/{path.name} is not a readable safetensors file ({first_line(err)})"
            ) from None
        if logged is None or not math.isclose(logged, top1, abs_tol=1e-6) or saved != str(epoch):
            raise MtkdrlError(
                f"RUN_DIR: {self.run_dir / 'summary.json'} says {which} top-1 {top1} at epoch "
                f"{epoch}, but metrics.jsonl logged {logged} then and {WEIGHT_FILES[which]} was "
                f"saved at epoch {saved}; the run folder was edited: pass --measure to measure "
                "the weights instead"
            )

    def eval_count(self) -> int | None:
        """How many images the run evaluated on (the teachers' evaluation shares the student's)."""
        counts = {t.get("count") for t in self.teachers if t.get("count")}
        return counts.pop() if len(counts) == 1 else None

    def local_paths(self) -> dict[str, str]:
        """The local paths the run's recipe names, each with the form a published file shows."""
        return local_paths(yaml.safe_load(self.recipe_text) or {})

    @property
    def plot(self) -> Path | None:
        """The teacher-weights plot `mtkdrl plot` drew for this run, if any."""
        return run_file(self.run_dir, PLOT_FILE)


def read_run(run_dir: str | Path) -> FinishedRun:
    """Read a finished run; errors name the missing file and what a run directory holds."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MtkdrlError(f"RUN_DIR: no such directory: {run_dir}")
    recipe_path = run_file(run_dir, "recipe.yaml")
    if recipe_path is None:
        raise MtkdrlError(
            f"RUN_DIR: {run_dir} has no recipe.yaml; give the output_dir of a run of "
            "`mtkdrl distill` (it holds recipe.yaml, summary.json and student_*.safetensors)"
        )
    summary_path = run_file(run_dir, "summary.json")
    if summary_path is None:
        raise MtkdrlError(
            f"RUN_DIR: {run_dir} has no summary.json: the run has not finished "
            "(finish it with `mtkdrl distill RECIPE --resume`)"
        )
    recipe_text = recipe_path.read_text()
    try:
        recipe = Recipe.from_dict(yaml.safe_load(recipe_text) or {})
    except (MtkdrlError, yaml.YAMLError) as err:
        raise MtkdrlError(f"RUN_DIR: {recipe_path}: {err}") from None
    teachers_path = run_file(run_dir, "teachers.json")
    teachers = _read_json(teachers_path) if teachers_path else []
    return FinishedRun(
        run_dir=run_dir,
        recipe=recipe,
        recipe_text=recipe_text,
        summary=_read_json(summary_path),
        teachers=teachers,
        epochs=_epoch_records(run_dir),
    )


def _read_json(path: Path) -> dict | list:
    """A JSON file the run wrote, or one line naming it when it is not JSON (edited by hand)."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MtkdrlError(
            f"RUN_DIR: {path} is not valid JSON ({first_line(err)}); the run folder was edited: "
            "restore the file, or rerun the run"
        ) from None


def measure(run: FinishedRun, which: Which) -> Score:
    """The student's accuracy measured now, from its weights file, on the run's eval split."""
    spec = run.recipe.student
    weights = dataclasses.replace(spec.without_weights(), checkpoint=str(run.weights(which)))
    result = evaluate_model(weights, run.recipe.data)
    return Score(
        top1=result["top1"],
        top5=result["top5"],
        split=result["split"],
        count=result["count"],
        source=f"measured from {WEIGHT_FILES[which]} at export",
    )


def _epoch_records(run_dir: Path) -> list[dict]:
    """The per-epoch records of the run's `metrics.jsonl` (none when it has no such file)."""
    if run_file(run_dir, "metrics.jsonl") is None:
        return []
    return [r for r in read_records(run_dir) if "epoch_seconds" in r]


def eval_data_of(data: DataConfig) -> str:
    """A short, path-free description of the data a run evaluated on (file, folder or Hub name)."""
    return describe_split(data, data.eval_split, data.eval_subset)


@dataclass
class Reference:
    """Another run of the same data, named in the card's results (e.g. the no-KD or AVER one)."""

    label: str
    run: FinishedRun
    score: Score


def read_reference(label: str, run_dir: str | Path, student: FinishedRun) -> Reference:
    """A reference run, refused when it was evaluated on other data than the student's."""
    field = f"--reference {label}={run_dir}"
    try:
        run = read_run(run_dir)
    except MtkdrlError as err:
        raise MtkdrlError(f"{field}: {str(err).removeprefix('RUN_DIR: ')}") from None
    if _eval_source(run.recipe.data) != _eval_source(student.recipe.data):
        raise MtkdrlError(
            f"{field}: it was evaluated on {eval_data_of(run.recipe.data)} but the student on "
            f"{eval_data_of(student.recipe.data)}; a reference must share the student's "
            "evaluation data"
        )
    return Reference(label=label, run=run, score=run.score("best"))


def _eval_source(data: DataConfig) -> tuple:
    """What identifies the images a run evaluated on."""
    files = data.data_files or {}
    path = files.get(data.eval_split)
    return (
        data.name,
        str(Path(path).resolve()) if path else None,
        data.data_dir and str(Path(data.data_dir).resolve()),
        data.eval_split,
        data.eval_subset,
    )
