"""`mtkdrl cache`: the teachers' outputs stored ahead of training are the ones a run stores."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.fill_cache import fill_teacher_cache, main


def _weights(run: Path) -> dict:
    return load_file(str(run / "student_last.safetensors"))


def test_a_run_after_the_fill_reads_every_step_and_equals_a_self_filling_run(tmp_path, tiny_run):
    """90 images in batches of 16 (drop_last leaves 10 per view), 2 views, 3 epochs of MTKD-RL:
    after `mtkdrl cache` the run never runs a teacher and ends with the same student as a run
    that stored its own outputs."""
    raw = tiny_run(tmp_path / "self", "mtkdrl", epochs=3, eval_teachers=False)
    raw["data"]["train_subset"] = 90
    raw["teacher_cache"] = {"views": 2, "dir": str(tmp_path / "own")}
    assert distill(Recipe.from_dict(raw))["teacher_cache_misses"] > 0
    raw.update(output_dir=str(tmp_path / "filled"))
    raw["teacher_cache"]["dir"] = str(tmp_path / "shared")
    filled = fill_teacher_cache(Recipe.from_dict(raw))
    assert filled["stored"] == filled["held"] == filled["entries"] == 2 * 90
    summary = distill(Recipe.from_dict(raw))
    assert (summary["teacher_cache_misses"], summary["teacher_cache_hits"]) == (0, 3 * 5)
    assert summary["teacher_cache"] == filled["teacher_cache"]
    own = _weights(tmp_path / "self")
    for key, value in _weights(tmp_path / "filled").items():
        assert torch.equal(value, own[key]), key
    assert fill_teacher_cache(Recipe.from_dict(raw))["stored"] == 0  # nothing left to store


def test_a_recipe_without_a_cache_is_refused_with_the_reason(tmp_path, tiny_run, capsys):
    with pytest.raises(MtkdrlError, match=r"nothing to fill, method 'none' uses no teachers"):
        fill_teacher_cache(Recipe.from_dict(tiny_run(tmp_path / "run", "none")))
    streamed = tiny_run(tmp_path / "run", "avg")
    streamed["data"].update(streaming=True, train_subset=32)
    with pytest.raises(MtkdrlError, match=r"nothing to fill, the training views cannot be repl"):
        fill_teacher_cache(Recipe.from_dict(streamed))
    raw = tiny_run(tmp_path / "run", "avg")
    raw["teacher_cache"] = {"mode": "off"}
    path = tmp_path / "off.yaml"
    path.write_text(Recipe.from_dict(raw).to_yaml())
    assert main([str(path)]) == 2
    err = capsys.readouterr().err  # the data set's progress lines may come first
    last = "mtkdrl: error: teacher_cache: nothing to fill, teacher_cache.mode is off"
    assert err.splitlines()[-1] == last and err.count("mtkdrl: error:") == 1
