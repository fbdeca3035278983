"""Resuming: a checkpoint whose method state does not fit the run is one clear error."""

import pytest

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError


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
