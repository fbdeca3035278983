"""Resuming: a checkpoint whose method state does not fit the run is one clear error; the
metrics log is cut back to the checkpoint's."""

import pytest

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.outputs import read_records


def test_method_state_that_does_not_fit_is_one_line(tmp_path, tiny_run):
    raw = tiny_run(tmp_path / "run", "mtkdrl-official", checkpoint_every=2, stop_after_steps=2)
    raw["train"]["eval_teachers"] = False
    assert distill(Recipe.from_dict(raw))["stopped"]
    raw["method"]["options"] = {"agent_update": "reinforce"}  # an agent with other parameters
    raw["train"]["stop_after_steps"] = None
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
