"""A run folder from someone else, edited to reach outside itself: symlinks to files elsewhere, a
`latest` pointer out of the folder, a forged `summary.json`. `--resume`, `export`, `push --dry-run`
and `plot` each refuse in one line, and no file outside the folder is read into an output,
changed or listed for upload."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mtkdrl import Recipe, distill
from mtkdrl.cli import main

OUTSIDE_TEXT = "a file of someone else's, outside the run folder\n"


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory) -> Path:
    """A real one-epoch run with its checkpoint and plot."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    raw = tiny_run(out, "avg", epochs=1, checkpoint_every=2, eval_teachers=False)
    distill(Recipe.from_dict(raw))
    assert main(["plot", str(out)]) == 0
    return out


def link_out(run: Path, name: str, outside: Path) -> None:
    """Replace the run's file `name` with a symlink to `outside`."""
    target = run / name
    if target.is_dir():
        shutil.move(target, outside)
    else:
        target.unlink()
    target.symlink_to(outside)


def latest_name(run: Path) -> str:
    return (run / "checkpoints" / "latest").read_text().strip()


Edit = Callable[[Path, Path], None]
EDITS: dict[str, Edit] = {
    "summary.json linked out": lambda run, out: link_out(run, "summary.json", out / "a.json"),
    "recipe.yaml linked out": lambda run, out: link_out(run, "recipe.yaml", out / "a.yaml"),
    "metrics.jsonl linked out": lambda run, out: link_out(run, "metrics.jsonl", out / "a.jsonl"),
    "plot linked out": lambda run, out: link_out(run, "teacher_weights.png", out / "a.png"),
    "weights linked out": lambda run, out: link_out(
        run, "student_best.safetensors", out / "a.safetensors"
    ),
    "checkpoints linked out": lambda run, out: link_out(run, "checkpoints", out / "ckpt"),
    "latest points outside": lambda run, out: (run / "checkpoints" / "latest").write_text(
        "../../outside/ckpt"
    ),
    "checkpoint file linked out": lambda run, out: link_out(
        run, f"checkpoints/{latest_name(run)}/shared.json", out / "a.json"
    ),
}


def forge_summary(run: Path, outside: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary["best_top1"] = 99.5
    (run / "summary.json").write_text(json.dumps(summary))


# which command meets which edit first (each refuses it in one line)
CASES = [
    ("resume", "metrics.jsonl linked out"),
    ("resume", "checkpoints linked out"),
    ("resume", "latest points outside"),
    ("resume", "checkpoint file linked out"),
    ("export", "summary.json linked out"),
    ("export", "recipe.yaml linked out"),
    ("export", "metrics.jsonl linked out"),
    ("export", "plot linked out"),
    ("export", "weights linked out"),
    ("export", "forged summary"),
    ("plot", "metrics.jsonl linked out"),
    ("plot", "recipe.yaml linked out"),
    ("plot", "plot linked out"),
    ("push", "exported file linked out"),
]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize(("command", "edit"), CASES, ids=[f"{c}: {e}" for c, e in CASES])
def test_a_hostile_run_folder_is_refused_and_nothing_outside_it_is_touched(
    command, edit, finished_run, tmp_path, capsys
):
    run, outside = tmp_path / "run", tmp_path / "outside"
    shutil.copytree(finished_run, run, symlinks=True)
    outside.mkdir()
    for name in ("a.json", "a.yaml", "a.jsonl", "a.png", "a.safetensors"):
        (outside / name).write_text(OUTSIDE_TEXT)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["output_dir"] = str(run)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    export = tmp_path / "export"
    if edit == "forged summary":
        forge_summary(run, outside)
    elif edit == "exported file linked out":
        assert main(["export", str(run), "--repo-id", "org/mtkdrl-x", "--out", str(export)]) == 0
        link_out(export, "README.md", outside / "a.json")
    else:
        EDITS[edit](run, outside)
    before = snapshot(outside)
    capsys.readouterr()

    argv = {
        "resume": ["distill", str(tmp_path / "recipe.yaml"), "--resume"],
        "export": ["export", str(run), "--repo-id", "org/mtkdrl-x", "--out", str(export)],
        "plot": ["plot", str(run)],
        "push": ["push", str(export), "--repo-id", "org/mtkdrl-x", "--dry-run"],
    }[command]
    code = main(argv)
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("mtkdrl: error: ")]
    assert code == 2, captured.err[-2000:]
    assert len(err) == 1, captured.err[-2000:]
    assert "symlink" in err[0] or "edited" in err[0] or "names '../" in err[0], err[0]
    assert OUTSIDE_TEXT.strip() not in captured.out + captured.err
    assert snapshot(outside) == before  # nothing outside read into an output or changed
    if command == "export":
        assert not export.exists()
    if command == "resume":
        assert not (run / "history.jsonl").exists()
    if command == "plot" and edit == "plot linked out":
        assert (outside / "a.png").read_text() == OUTSIDE_TEXT
    assert all(not p.name.endswith(".partial") for p in tmp_path.rglob("*"))
    assert os.listdir(outside)  # the outside files are all still there
