"""Atomic writes and numbered checkpoints with a `latest` pointer."""

from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from mtkdrl.checkpoint import CheckpointManager, TrainingState, save_weights_atomic, write_atomic


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


def test_manager_keeps_last_and_points_at_newest(tmp_path: Path):
    accelerator = Accelerator(cpu=True)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)
    manager = CheckpointManager(accelerator, tmp_path, keep=2)
    assert manager.latest() is None
    for step in (1, 2, 3):
        state.global_step = step
        manager.save(step)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_000000002", "step_000000003"]
    assert manager.latest().name == "step_000000003"
    state.global_step = 0
    accelerator.load_state(str(manager.latest()))
    assert state.global_step == 3


def test_partial_checkpoint_is_ignored(tmp_path: Path):
    """A staging folder left by a kill mid-write never becomes `latest`."""
    accelerator = Accelerator(cpu=True)
    manager = CheckpointManager(accelerator, tmp_path, keep=2)
    manager.save(1)
    (tmp_path / "checkpoints" / ".step_000000002.partial").mkdir()
    assert manager.latest().name == "step_000000001"
