"""A run folder's files: `--overwrite` leaves nothing of the former run that could pass for the
new run's, and nothing that mtkdrl did not write is touched."""

import json
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.outputs import read_records
from mtkdrl.plot import plot_run


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_overwrite_starts_from_a_clean_run_folder(tmp_path, tiny_run, teacher_file):
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = tiny_run(out, "avg", epochs=2, checkpoint_every=1)
    first["teacher_cache"] = {"dir": str(cache)}
    distill(Recipe.from_dict(first))
    plot_run(out)
    # what a tensorboard tracker of the first run leaves (the tracker is not installed here)
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe["train"]["trackers"] = ["tensorboard"]
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (out / out.name).mkdir()
    (out / out.name / "events.out.tfevents.1.host").write_bytes(b"old curves")
    (out / "notes.txt").write_text("the user's own file")
    first_caches = _entries(cache)
    assert {"teacher_weights.png", "student_best.safetensors", "summary.json"} <= _entries(out)
    assert max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("checkpoint_*")) > 0

    second = tiny_run(out, "avg", epochs=1, checkpoint_every=2, stop_after_steps=2)
    second["teachers"] = [
        {"name": f"resnet{depth}_cifar", "checkpoint": teacher_file(depth)} for depth in (44, 56)
    ]
    second["teacher_cache"] = {"dir": str(cache)}
    assert distill(Recipe.from_dict(second), overwrite=True)["stopped"]

    # cut off after 2 steps: only what the second run wrote so far, and the user's file
    expected = {"recipe.yaml", "metrics.jsonl", "teachers.json", "checkpoints", "notes.txt"}
    assert _entries(out) == expected
    assert _entries(out / "checkpoints") == {"checkpoint_0", "latest"}
    assert (out / "notes.txt").read_text() == "the user's own file"
    names = ["resnet44_cifar", "resnet56_cifar"]
    assert [t["name"] for t in json.loads((out / "teachers.json").read_text())] == names
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    assert first_caches < _entries(cache)  # the teacher cache outside the run folder is kept

    second["train"]["stop_after_steps"] = None
    summary = distill(Recipe.from_dict(second), resume=True)
    assert [t["name"] for t in summary["teachers"]] == names
    with safe_open(str(out / "student_best.safetensors"), framework="pt") as handle:
        assert handle.metadata()["epoch"] == "0"  # the second run's only epoch


def test_a_torn_last_line_is_not_a_record_and_a_bad_line_is_named(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_records(tmp_path) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(MtkdrlError, match=r"metrics\.jsonl line 2 is not a JSON record"):
        read_records(tmp_path)
