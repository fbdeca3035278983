"""Resuming: the recipe must be the run's (changes that move the result are refused, listing
each; extending it is recorded in its history); a checkpoint whose method state does not fit the
run is one clear error; the metrics log is cut back to the checkpoint's."""

import json

import pytest
import yaml
from safetensors.torch import load_file, save_file

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.outputs import read_records
from mtkdrl.run_lock import LOCK_NAME


def _stopped_run(tmp_path, tiny_run, method: str = "avg") -> dict:
    raw = tiny_run(tmp_path / "run", method, checkpoint_every=2, stop_after_steps=2, epochs=1)
    raw["train"]["eval_teachers"] = False
    assert distill(Recipe.from_dict(raw))["stopped"]
    raw["train"]["stop_after_steps"] = None
    return raw


def _changed_teacher(tmp_path, raw) -> None:
    """The first teacher's file, copied elsewhere with one weight changed."""
    weights = load_file(raw["teachers"][0]["checkpoint"])
    name = next(iter(weights))
    weights[name] = weights[name] * 1.01
    path = tmp_path / "edited_teacher.safetensors"
    save_file(weights, path)
    raw["teachers"][0]["checkpoint"] = str(path)


CHANGES = {
    "method": (
        lambda tmp, raw: raw["method"].update(name="ca_mkd"),
        "recipe.method.name: 'avg' -> 'ca_mkd'",
    ),
    "learning rate": (
        lambda tmp, raw: raw["optim"].update(lr=0.1),
        "recipe.optim.lr: 0.05 -> 0.1",
    ),
    "teacher weights": (_changed_teacher, "teacher_weights.0: '"),
    "training subset": (
        lambda tmp, raw: raw["data"].update(train_subset=48),
        "recipe.data.train_subset: None -> 48",
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_resume_that_changes_the_run_is_refused_listing_each_change(change, tmp_path, tiny_run):
    raw = _stopped_run(tmp_path, tiny_run)
    run = tmp_path / "run"
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}
    edit, expected = CHANGES[change]
    edit(tmp_path, raw)
    with pytest.raises(MtkdrlError) as caught:
        distill(Recipe.from_dict(raw), resume=True)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--resume: this recipe is not the one")
    assert expected in message, message
    assert {p: p.read_bytes() for p in files} == files  # nothing of the run was touched


def test_extending_a_run_is_allowed_and_recorded_in_its_history(tmp_path, tiny_run):
    raw = _stopped_run(tmp_path, tiny_run)
    raw["train"]["epochs"] = 2
    raw["train"]["log_every"] = 1
    summary = distill(Recipe.from_dict(raw), resume=True)
    assert summary["epochs"] == 2
    run = tmp_path / "run"
    (entry,) = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert entry["event"] == "resume" and entry["step"] == 2
    assert entry["changes"] == [
        "recipe.train.epochs: 1 -> 2",
        "recipe.train.log_every: 2 -> 1",
        "recipe.train.stop_after_steps: 2 -> None",
    ]
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["epochs"] == 2


def test_method_state_that_does_not_fit_is_one_line(tmp_path, tiny_run):
    """A method state laid out otherwise (as another mtkdrl version may write it)."""
    raw = _stopped_run(tmp_path, tiny_run, "mtkdrl-official")
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint_0"
    skeleton = json.loads((checkpoint / "rank0.json").read_text())
    module = skeleton["__dict__"]["method"]["__dict__"]["module"]["__dict__"]
    first = next(iter(module))
    module["renamed." + first] = module.pop(first)
    (checkpoint / "rank0.json").write_text(json.dumps(skeleton))
    with pytest.raises(MtkdrlError) as caught:
        distill(Recipe.from_dict(raw), resume=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "the saved state of method 'mtkdrl-official' does not fit this run's" in message
    assert "--overwrite" in message


def _log_without_timings(run) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in read_records(run)]


def test_resume_cuts_the_log_back_to_its_checkpoint(tmp_path, tiny_run):
    """Records logged after the checkpoint (the resumed run logs them again) and a line a kill
    tore are dropped, so the resumed log equals the uninterrupted run's."""
    recipes = {}
    for name in ("full", "part"):
        raw = tiny_run(tmp_path / name, "avg", checkpoint_every=2, log_every=1)
        raw["train"]["eval_teachers"] = False
        recipes[name] = Recipe.from_dict(raw)
    distill(recipes["full"])
    part = recipes["part"]
    part.train.stop_after_steps = 3  # the checkpoint is at step 2: step 3's record comes after
    assert distill(part)["stopped"]
    with open(tmp_path / "part" / "metrics.jsonl", "a") as log:
        log.write('{"step": 4, "loss": 0.')  # torn by a kill mid-write
    part.train.stop_after_steps = None
    distill(part, resume=True)
    assert _log_without_timings(tmp_path / "part") == _log_without_timings(tmp_path / "full")
