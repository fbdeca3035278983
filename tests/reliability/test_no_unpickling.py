"""Opening someone else's run never executes code: a planted pickle in a checkpoint is refused
without being opened, and pickled weights are never loaded."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

from mtkdrl.cli import main


class Payload:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def stopped_run(tmp_path: Path, tiny_run) -> tuple[list[str], Path]:
    import yaml

    raw = copy.deepcopy(tiny_run(tmp_path / "run", "avg", epochs=1, eval_teachers=False))
    raw["train"]["checkpoint_every"] = 2
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["distill", str(recipe), "train.stop_after_steps=2"]) == 0
    run = tmp_path / "run"
    return ["distill", str(recipe), "--resume"], run / "checkpoints" / (
        run / "checkpoints" / "latest"
    ).read_text().strip()


def test_a_planted_pickle_is_refused_without_being_opened(tmp_path, tiny_run, capsys):
    resume, checkpoint = stopped_run(tmp_path, tiny_run)
    marker = tmp_path / "unpickled"
    live = pickle.dumps(Payload(marker))
    pickle.loads(live)  # the payload is live: loading it does create the marker
    assert marker.is_file()
    marker.unlink()
    (checkpoint / "optimizer.pkl").write_bytes(live)
    capsys.readouterr()
    assert main(resume) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer.pkl" in err[0] and "never unpickles" in err[0], err
    assert not marker.exists()


def test_a_pickle_named_like_safetensors_is_not_unpickled(tmp_path, tiny_run, capsys):
    resume, checkpoint = stopped_run(tmp_path, tiny_run)
    marker = tmp_path / "unpickled"
    (checkpoint / "rank0.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    capsys.readouterr()
    assert main(resume) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rank0.safetensors cannot be read" in err[0], err
    assert not marker.exists()
