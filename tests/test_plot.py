"""`mtkdrl plot`: a PNG of the teacher weights and accuracy from a real (tiny) MTKD-RL run."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from mtkdrl import Recipe, distill
from mtkdrl.errors import MtkdrlError
from mtkdrl.plot import plot_run, read_epochs


def test_plot_of_a_real_mtkdrl_run(tiny_run, tmp_path):
    raw = tiny_run(tmp_path / "run", "mtkdrl-official", epochs=3, eval_every=2, eval_teachers=False)
    raw["method"]["options"] = {"warmup_epochs": 1, "dynamic": True}
    distill(Recipe.from_dict(raw))
    epochs = read_epochs(tmp_path / "run")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]
    assert ["val_top1" in r for r in epochs] == [False, True, True]  # eval_every=2 and the last
    assert {"w_logit_mean/0", "w_feature_std/1", "mix_logit/agent"} <= set(epochs[-1])
    assert epochs[0]["w_logit_mean/0"] == 1.0  # warm-up weight of the official code
    done = subprocess.run(
        [sys.executable, "-m", "mtkdrl", "plot", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    image = Image.open(tmp_path / "run" / "teacher_weights.png")
    assert image.format == "PNG" and image.size[0] > 2 * image.size[1]  # three panels side by side


def test_plot_without_weights_draws_accuracy_only(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps({"epoch": e, "epoch_seconds": 1.0, "val_top1": 10.0 * e}) for e in range(3)
        )
    )
    target = plot_run(tmp_path, tmp_path / "out.png")
    assert Image.open(target).format == "PNG"


def test_plot_of_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(MtkdrlError, match=r"no metrics.jsonl"):
        plot_run(tmp_path)
