"""`mtkdrl distill`: dry runs of every recipe and one clear line for every bad input."""

from pathlib import Path

import pytest
import torch

from mtkdrl import Recipe, distill
from mtkdrl.cli import main as cli
from mtkdrl.errors import MtkdrlError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.fixture
def cli_recipe(tiny_run, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(Recipe.from_dict(tiny_run(tmp_path / "run", epochs=1)).to_yaml())
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_passes_dry_run(path):
    # bf16 autocast at 224 px runs ~10x slower than fp32 on this CPU (its 32 px CIFAR case is
    # faster), so the ImageNet recipes are checked in fp32 here; their wiring is the same.
    overrides = ["train.mixed_precision=no"] if path.name.startswith("imagenet") else []
    summary = distill(path, overrides, dry_run=True)
    assert summary["dry_run"] and len(summary["losses"]) == 2


def test_dry_run_with_mtkdrl_on_a_cnn_and_a_vit_teacher(tmp_path):
    """Teachers of different kinds, widths and map sizes work together (ViT tokens as a grid)."""
    recipe = Recipe.from_dict(
        {
            "output_dir": str(tmp_path),
            "student": {"name": "resnet18"},
            "teachers": [{"name": "resnet34"}, {"name": "vit_tiny_patch16_224"}],
            "data": {"num_classes": 10, "batch_size": 4},
            "method": {"name": "mtkdrl", "options": {"warmup_epochs": 0}},
            "train": {"mixed_precision": "bf16"},
        }
    )
    summary = distill(recipe, dry_run=True)
    assert all(torch.isfinite(torch.tensor(summary["losses"])))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "student.name=resnet20_cifr",
            "unknown timm model 'resnet20_cifr'; close matches: resnet20_cifar",
        ),
        ("train.epohcs=2", "unknown recipe key 'train.epohcs'; did you mean epochs"),
        ("data.data_files.train=/nonexistent/train.parquet", "data.data_files.train"),
        ("teachers.0.kwargs={num_classes: 100}", "does not fit model"),
        ("teachers.1.checkpoint=__T20__", "does not fit model 'resnet32_cifar'"),
        (
            "teachers.1={name: vit_tiny_patch16_224, kwargs: {img_size: 32, patch_size: 4}}",
            "teacher 'vit_tiny_patch16_224' cannot take the student's 32x32 inputs",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(cli_recipe, teacher_file, override, message, capsys):
    """The `mtkdrl` command's own entry point, in this process (tests/test_cli.py starts it as a
    process)."""
    override = override.replace("__T20__", teacher_file(20))
    assert cli(["distill", str(cli_recipe), override]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mtkdrl: error:")]
    assert len(errors) == 1 and message in errors[0], stderr


def test_teacher_with_other_class_count_is_refused(tiny_cifar, tmp_path):
    recipe = Recipe.from_dict(
        {
            "output_dir": str(tmp_path),
            "student": {"name": "resnet20_cifar"},
            "teachers": [{"name": "resnet20_cifar", "kwargs": {"num_classes": 100}}] * 2,
            "data": {"data_files": tiny_cifar, "num_workers": 0},
        }
    )
    with pytest.raises(
        MtkdrlError, match=r"teachers.0: teacher 'resnet20_cifar' predicts 100 classes"
    ):
        distill(recipe)
