"""`mtkdrl export RUN_DIR --repo-id ORG/NAME --out DIR`: a run's student as a timm Hub repository.

timm's `save_for_hf` writes `model.safetensors` and `config.json`; this adds what it lacks: the
preprocessing the student was trained with, its class names, no metadata inherited from the
architecture's default pretrained tag, an `mtkdrl` block, the model card and the teacher plot.
The run directory is only read; the export is staged beside DIR and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from timm.models import save_for_hf
from torch import nn

from .. import __version__
from ..checkpoint import fsync_dir, fsync_file
from ..data import load_splits
from ..errors import CommandParser, MtkdrlError, exit_code, first_line
from ..pool import create_model, data_config_of, load_checkpoint
from ..recipe import DataConfig
from .card import CardContext, render_card
from .names import check_repo_id
from .public import scrub_paths
from .run import FinishedRun, Score, Which, measure, read_reference, read_run
from .sections import PLOT_NAME

EXPORT_MARKER = ".mtkdrl-export"  # written into each export: --overwrite replaces only those
# pretrained_cfg keys that describe the weights of an architecture's default tag, not ours
SOURCE_KEYS = ("tag", "license", "origin_url", "paper_ids", "paper_name", "notes", "description")


@dataclass
class ExportOptions:
    """Which weights, whether to replace an export, and what the card says beyond the run."""

    weights: Which = "best"
    license: str = "apache-2.0"
    dataset_id: str | None = None
    dataset_name: str | None = None
    references: dict[str, Path] = field(default_factory=dict)
    measure: bool = False
    overwrite: bool = False
    template: Path | None = None


@dataclass
class ExportConfig:
    """Which run to export, for which Hub repo, into which folder, and how."""

    run_dir: Path
    repo_id: str
    out: Path
    options: ExportOptions = field(default_factory=ExportOptions)


@dataclass
class Export:
    """A written export: its folder, the student's accuracy in its card, remarks for the user."""

    folder: Path
    score: Score
    notes: list[str] = field(default_factory=list)


def build_student(run: FinishedRun, which: Which) -> nn.Module:
    """The run's student architecture with its best or last weights, loaded strictly, in eval."""
    spec = run.recipe.student
    bare = spec.without_weights()
    weights = run.weights(which)
    model = create_model(bare, None, "student")
    classes = _classifier_rows(model, weights)
    if classes is not None and classes != model.num_classes:
        model = create_model(bare, classes, "student")
    load_checkpoint(model, weights, f"RUN_DIR/{weights.name}", spec.name)
    tensors = model.state_dict().values()
    bad = sum(int((~t.isfinite()).sum()) for t in tensors if t.is_floating_point())
    if bad:
        total = sum(t.numel() for t in tensors if t.is_floating_point())
        raise MtkdrlError(
            f"RUN_DIR/{weights.name}: {bad:,} of {total:,} values are NaN or infinite (the run "
            "diverged); export refuses a student that cannot predict"
        )
    return model.eval()


def _classifier_rows(model: nn.Module, weights: Path) -> int | None:
    """How many classes the weights file's classifier predicts (None if it has no classifier)."""
    classifier = model.get_classifier()
    name = next((n for n, m in model.named_modules() if m is classifier), None)
    try:
        with safe_open(str(weights), framework="pt") as handle:
            key = f"{name}.weight"
            return handle.get_slice(key).get_shape()[0] if key in set(handle.keys()) else None
    except SafetensorError as err:
        raise MtkdrlError(
            f"RUN_DIR/{weights.name} is not a readable safetensors file ({first_line(err)})"
        ) from None


def export_run(config: ExportConfig) -> Export:
    """Write `config.out` as a timm Hub repo of the run's student; returns what was written."""
    check_repo_id(config.repo_id)
    options = config.options
    run = read_run(config.run_dir)
    out = Path(config.out)
    staging, former = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.former")
    if former.is_dir() and not out.exists():  # a kill between the last swap's two renames
        os.replace(former, out)
    _check_target(out, run.run_dir, options.overwrite)
    references = [read_reference(k, v, run) for k, v in options.references.items()]
    model = build_student(run, options.weights)
    score = measure(run, options.weights) if options.measure else run.score(options.weights)
    notes: list[str] = []
    names = _label_names(run.recipe.data, model.num_classes, notes)
    num_params = sum(p.numel() for p in model.parameters())
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(former, ignore_errors=True)  # a kill after the last swap's second rename
    try:
        _save_for_hf(model, staging, _model_config(run, options.weights, score, names, num_params))
        _drop_source_metadata(staging / "config.json", options.license, run.local_paths())
        if run.plot:
            shutil.copyfile(run.plot, staging / PLOT_NAME)
        context = CardContext(
            repo_id=config.repo_id,
            run=run,
            score=score,
            which=options.weights,
            architecture=model.pretrained_cfg["architecture"],
            num_params=num_params,
            license=options.license,
            dataset_id=options.dataset_id,
            dataset_name=options.dataset_name,
            references=references,
            plot=run.plot is not None,
        )
        (staging / "README.md").write_text(render_card(context, options.template))
        (staging / EXPORT_MARKER).write_text(f"written by mtkdrl {__version__} export\n")
        for path in staging.iterdir():
            fsync_file(path)
        fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_into_place(staging, out, former)
    return Export(folder=out, score=score, notes=notes)


def _swap_into_place(staging: Path, out: Path, former: Path) -> None:
    """Put the finished export at `out` by renames, so that a kill leaves the former export or
    the new one whole: at `out`, or, between the two renames, the former one beside it, where the
    next export puts it back before anything else."""
    replacing = out.exists()
    if replacing:
        os.replace(out, former)
    os.replace(staging, out)
    fsync_dir(out.parent)
    if replacing:
        shutil.rmtree(former)


def _save_for_hf(model: nn.Module, folder: Path, model_config: dict) -> None:
    """timm's export of weights and config, with the preprocessing the student trained with."""
    try:
        save_for_hf(
            model,
            folder,
            model_config=model_config,
            data_config=data_config_of(model),
            safe_serialization=True,
        )
    except ValueError as err:  # a build argument that JSON cannot hold
        raise MtkdrlError(f"student.kwargs: cannot be written to config.json: {err}") from None


def write_card(context: CardContext, folder: Path, template: Path | None = None) -> Path:
    """(Re)write the card of an existing export, and copy the run's plot beside it if it has one."""
    if context.run.plot:
        shutil.copyfile(context.run.plot, folder / PLOT_NAME)
    target = folder / "README.md"
    target.write_text(render_card(context, template))
    return target


def _check_target(out: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse a target inside (or holding) the run, or a folder that is not a previous export."""
    target, run = out.resolve(), run_dir.resolve()
    if target == run or run in target.parents or target in run.parents:
        raise MtkdrlError(
            f"--out: {out} overlaps the run directory {run_dir}; the export must go elsewhere "
            "(the run directory is never written)"
        )
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise MtkdrlError(f"--out: {out} already exists; pass --overwrite to replace that export")
    marker = out / EXPORT_MARKER
    if out.is_symlink() or not out.is_dir() or marker.is_symlink() or not marker.is_file():
        raise MtkdrlError(
            f"--out: {out} is not a folder `mtkdrl export` wrote (no {EXPORT_MARKER} in it); "
            "refusing to replace it: choose another --out, or remove it yourself"
        )


def _label_names(data: DataConfig, num_classes: int, notes: list[str]) -> list[str] | None:
    """The data set's class names, when it can be opened here and they fit the classifier."""
    try:
        _, _, info = load_splits(data, train=False)
    except MtkdrlError as err:
        notes.append(f"class names not recorded: {err}")
        return None
    if info.label_names is None or len(info.label_names) != num_classes:
        notes.append("class names not recorded: the data set's label column has no names")
        return None
    return info.label_names


def _model_config(
    run: FinishedRun, which: Which, score: Score, names: list[str] | None, params: int
) -> dict:
    recipe = run.recipe
    lineage = {
        "version": __version__,
        "method": recipe.method.name,
        "student": recipe.student.name,
        "teachers": [t.name for t in recipe.teachers],
        "weights": run.weights(which).name,
        "num_params": params,
        "accuracy": {"top1": score.top1, "top5": score.top5, "split": score.split},
    }
    return {"mtkdrl": lineage, **({"label_names": names} if names else {})}


def _drop_source_metadata(path: Path, license: str, local: dict[str, str]) -> None:
    """Strip the default tag's provenance from `pretrained_cfg`, state our licence instead, and
    cut the run's local paths (a `local-dir:` teacher's name) to their names."""
    config = json.loads(path.read_text())
    pretrained_cfg = config["pretrained_cfg"]
    for key in SOURCE_KEYS:
        pretrained_cfg.pop(key, None)
    pretrained_cfg["license"] = license
    path.write_text(scrub_paths(json.dumps(config, indent=2), _json_escaped(local)))


def _json_escaped(paths: dict[str, str]) -> dict[str, str]:
    """The paths as they appear inside JSON strings (a Windows path's backslashes doubled)."""
    return {json.dumps(k)[1:-1]: json.dumps(v)[1:-1] for k, v in paths.items()}


def parse_references(items: list[str]) -> dict[str, Path]:
    """`LABEL=RUN_DIR` arguments as a mapping, e.g. `none=runs/quickstart_none`."""
    references = {}
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise MtkdrlError(
                f"--reference {item!r} must look like LABEL=RUN_DIR, e.g. none=runs/quickstart_none"
            )
        references[label] = Path(path)
    return references


def add_card_options(parser: argparse.ArgumentParser) -> None:
    """The options `export` and `zoo add` share: weights, what the card says, overwriting."""
    parser.add_argument(
        "--weights", choices=["best", "last"], default="best", help="which student weights"
    )
    parser.add_argument("--license", default="apache-2.0", help="Hub licence id of the weights")
    parser.add_argument("--dataset-id", help="Hub data set id for the card, e.g. uoft-cs/cifar10")
    parser.add_argument("--dataset-name", help="display name of the data set, e.g. CIFAR-10")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="a reference run for the results table (repeatable), e.g. none=runs/x avg=runs/y",
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="evaluate the weights on the run's eval split instead of reading the run's figures",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--template", type=Path, help="model-card template (default: packaged)")


def card_options(args: argparse.Namespace) -> ExportOptions:
    """The options `add_card_options` parsed."""
    return ExportOptions(
        weights=args.weights,
        license=args.license,
        dataset_id=args.dataset_id,
        dataset_name=args.dataset_name,
        references=parse_references(args.reference),
        measure=args.measure,
        overwrite=args.overwrite,
        template=args.template,
    )


def report(export: Export) -> str:
    """What an export wrote, for the console."""
    files = ", ".join(
        f"{p.name} ({p.stat().st_size / 1e6:.2f} MB)" if p.suffix == ".safetensors" else p.name
        for p in sorted(export.folder.iterdir())
    )
    score = export.score
    lines = [
        f"wrote {export.folder}: {files}",
        f"student top-1 {score.top1:.2f}, top-5 "
        f"{'n/a' if score.top5 is None else f'{score.top5:.2f}'} on {score.split!r} "
        f"({score.source})",
    ]
    return "\n".join(lines + [f"note: {note}" for note in export.notes])


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="mtkdrl export", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a finished run's output_dir")
    parser.add_argument("--repo-id", required=True, help="Hub repo id ORG/NAME for the card")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the repo into")
    add_card_options(parser)
    args = parser.parse_args(argv)

    def job() -> None:
        config = ExportConfig(args.run_dir, args.repo_id, args.out, card_options(args))
        export = export_run(config)
        print(report(export))
        print(f"next: mtkdrl push {export.folder} --repo-id {config.repo_id} --dry-run")

    return exit_code(job)


if __name__ == "__main__":
    sys.exit(main())
