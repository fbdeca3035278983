"""Pickle-free encoding, atomic writes and numbered checkpoints with a `latest` pointer."""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from safetensors.torch import load_file

from mtkdrl import Recipe, distill
from mtkdrl.checkpoint import (
    Checkpoints,
    flatten_state,
    rng_state,
    save_weights_atomic,
    set_rng_state,
    unflatten_state,
    write_atomic,
)
from mtkdrl.errors import MtkdrlError


def test_write_atomic_replaces_whole_file(tmp_path):
    target = tmp_path / "f"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert not list(tmp_path.glob(".*tmp"))


def test_save_weights_atomic(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_weights_atomic(model, tmp_path / "w.safetensors", {"architecture": "linear"})
    loaded = load_file(str(tmp_path / "w.safetensors"))
    torch.testing.assert_close(loaded["weight"], model.weight.detach())


def test_optimizer_state_round_trips_through_safetensors_and_json():
    """Int keys, tuples (betas), tensors and plain numbers come back as they were."""
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    tensors, skeleton = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    back = unflatten_state(tensors, skeleton)
    assert back["param_groups"] == state["param_groups"]
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(back["state"]) == {0, 1}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            assert torch.equal(back["state"][index][key], value)
    fresh = torch.optim.Adam(torch.nn.Linear(4, 3).parameters(), lr=1e-3)
    fresh.load_state_dict(back)


def test_random_generators_round_trip():
    """Python, NumPy and torch generators restored from the plain encoding draw the same."""
    tensors, skeleton = flatten_state(rng_state())
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(unflatten_state(tensors, skeleton))
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_an_object_without_a_plain_form_is_refused():
    with pytest.raises(TypeError, match="without pickle"):
        flatten_state({"fn": print})


def manager(tmp_path: Path, keep: int = 2) -> Checkpoints:
    config = ProjectConfiguration(str(tmp_path), total_limit=keep)
    return Checkpoints(Accelerator(cpu=True, project_config=config), tmp_path)


def test_keeps_the_last_and_points_at_the_newest(tmp_path: Path):
    checkpoints = manager(tmp_path)
    assert checkpoints.latest() is None
    for step in (1, 2, 3):
        checkpoints.save({"loop": {"step": step}}, {"rng": torch.tensor([step])})
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*"))
    assert kept == ["checkpoint_1", "checkpoint_2"]
    assert checkpoints.latest().name == "checkpoint_2"
    shared, own = checkpoints.load(checkpoints.latest())
    assert shared == {"loop": {"step": 3}} and torch.equal(own["rng"], torch.tensor([3]))


def test_saving_the_same_step_twice_keeps_both_and_latest_valid(tmp_path: Path):
    """A mid-epoch save then the epoch-end save of one step: new folders, never a removal."""
    checkpoints = manager(tmp_path)
    checkpoints.save({"loop": {"step": 5, "epoch": 0}}, {})
    checkpoints.save({"loop": {"step": 5, "epoch": 1}}, {})
    shared, _ = checkpoints.load(checkpoints.latest())
    assert shared["loop"] == {"step": 5, "epoch": 1}


def test_partial_checkpoint_is_ignored(tmp_path: Path):
    """A staging folder left by a kill mid-write never becomes `latest`."""
    checkpoints = manager(tmp_path)
    checkpoints.save({"loop": 1}, {})
    (tmp_path / "checkpoints" / ".checkpoint_1.partial").mkdir()
    assert checkpoints.latest().name == "checkpoint_0"


def test_a_pickle_in_a_checkpoint_is_refused_unopened(tmp_path: Path):
    checkpoints = manager(tmp_path)
    path = checkpoints.save({"loop": 1}, {})
    marker = tmp_path / "pickle_ran"
    (path / "custom_checkpoint_0.pkl").write_bytes(_payload(marker))
    with pytest.raises(MtkdrlError, match=r"holds custom_checkpoint_0.pkl.*never unpickles"):
        checkpoints.load(path)
    assert not marker.exists()


def _payload(marker: Path) -> bytes:
    """A pickle that creates `marker` when loaded (proved on a control file first)."""
    import pickle

    class Plant:
        def __init__(self, target: Path) -> None:
            self.target = target

        def __reduce__(self):
            return (open, (str(self.target), "w"))

    control = marker.with_name("control")
    pickle.loads(pickle.dumps(Plant(control))).close()
    assert control.exists()  # the payload is live: loading it runs code
    return pickle.dumps(Plant(marker))


class SimulatedCrash(Exception):
    """Stands for the process dying at that point of `Checkpoints.save`."""


@pytest.mark.parametrize("dies_at", [1, 2], ids=["folder rename", "latest pointer"])
def test_crash_inside_a_save_leaves_latest_on_a_checkpoint_that_resumes(
    tmp_path, tiny_run, same_students, monkeypatch, dies_at
):
    """A run's second save (step 4) dies at its first `os.replace` (the checkpoint folder's
    rename) or at its second (the `latest` pointer's): `latest` still names the first checkpoint,
    whole, and `--resume` from it ends with the student of an uninterrupted run."""
    raws = {
        name: tiny_run(tmp_path / name, "avg", epochs=1, checkpoint_every=2, eval_teachers=False)
        for name in ("full", "crashed")
    }
    distill(Recipe.from_dict(raws["full"]))
    real_save, real_replace = Checkpoints.save, os.replace
    calls = {"save": 0, "replace": 0}

    def save(self, shared, per_rank):
        calls["save"] += 1
        return real_save(self, shared, per_rank)

    def replace(src, dst):
        if calls["save"] == 2:
            calls["replace"] += 1
            if calls["replace"] == dies_at:
                raise SimulatedCrash(f"died before os.replace({src}, {dst})")
        return real_replace(src, dst)

    monkeypatch.setattr(Checkpoints, "save", save)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SimulatedCrash):
        distill(Recipe.from_dict(raws["crashed"]))
    monkeypatch.undo()
    root = tmp_path / "crashed" / "checkpoints"
    assert (root / "latest").read_text() == "checkpoint_0"
    files = {p.name for p in (root / "checkpoint_0").iterdir()}
    assert files == {"shared.safetensors", "shared.json", "rank0.safetensors", "rank0.json"}
    distill(Recipe.from_dict(raws["crashed"]), resume=True)
    same_students(tmp_path / "full", tmp_path / "crashed")
