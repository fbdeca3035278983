"""The distiller end to end on a small slice of the shared CIFAR-10 data and real teachers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtkdrl import Recipe, distill
from mtkdrl.distiller import Distiller
from mtkdrl.errors import MtkdrlError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


@pytest.fixture
def tiny_recipe(tiny_run):
    """A `Recipe` for a short real run: ResNet-20 student, 96 images in batches of 16."""

    def make(out: Path, method: str = "avg", **train) -> Recipe:
        return Recipe.from_dict(tiny_run(out, method, **train))

    return make


def test_avg_run_writes_student_metrics_and_summary(tmp_path, tiny_recipe):
    summary = distill(tiny_recipe(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("student_best.safetensors", "student_last.safetensors", "recipe.yaml"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "summary.json").read_text())
    assert saved["last_top1"] == summary["last_top1"]
    assert 0 <= saved["best_top1"] <= 100 and saved["global_steps"] == 12
    assert [t["name"] for t in saved["teachers"]] == ["resnet20_cifar", "resnet32_cifar"]
    assert all(t["top1"] > 50 for t in saved["teachers"])  # real pretrained teachers
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "ce", "kd", "feature"} <= set(lines[0])
    assert [x["epoch"] for x in lines if "val_top1" in x] == [0, 1]
    assert summary["last_top1"] == lines[-1]["val_top1"]  # the last epoch's evaluation
    assert (run / "checkpoints" / "latest").is_file()
    weights = load_file(str(run / "student_last.safetensors"))
    assert "linear.weight" in weights and weights["linear.weight"].shape == (10, 64)


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_recipe):
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    distill(recipe)
    with pytest.raises(MtkdrlError, match=r"--resume.*--overwrite"):
        distill(recipe)
    distill(recipe, overwrite=True)


def test_resuming_a_finished_run_evaluates_its_student_again(tmp_path, tiny_recipe):
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    first = distill(recipe)
    again = distill(recipe, resume=True)
    assert again["global_steps"] == first["global_steps"]
    assert (again["last_top1"], again["last_top5"]) == (first["last_top1"], first["last_top5"])


@pytest.mark.parametrize("method", ["avg", "mtkdrl"])
def test_resume_mid_epoch_equals_uninterrupted(tmp_path, method, tiny_recipe):
    """Stop after 4 of 12 steps (mid-epoch 0, checkpoint at step 4), resume: identical weights."""
    full = tiny_recipe(tmp_path / "full", method, checkpoint_every=2)
    distill(full)
    part = tiny_recipe(tmp_path / "part", method, checkpoint_every=2, stop_after_steps=4)
    assert distill(part)["stopped"]
    part.train.stop_after_steps = None
    distill(part, resume=True)
    a = load_file(str(tmp_path / "full" / "student_last.safetensors"))
    b = load_file(str(tmp_path / "part" / "student_last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if method == "mtkdrl":
        agents = [_agent_params(tmp_path / name) for name in ("full", "part")]
        assert agents[0].keys() == agents[1].keys() and agents[0]
        for key in agents[0]:
            assert torch.equal(agents[0][key], agents[1][key]), key


def _agent_params(run: Path) -> dict:
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    for path in sorted(latest.glob("custom_checkpoint_*.pkl")):
        state = torch.load(path, weights_only=True)
        params = {k: v for k, v in state.items() if k.startswith("policy.")}
        if params:
            return params
    return {}


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_recipe):
    """A real SIGKILL of the training process once a checkpoint exists, then `--resume`."""
    full = tiny_recipe(tmp_path / "full", checkpoint_every=1)
    distill(full)
    recipe = tiny_recipe(tmp_path / "killed", checkpoint_every=1)
    path = tmp_path / "killed.yaml"
    path.write_text(recipe.to_yaml())
    command = [sys.executable, "-m", "mtkdrl.distill", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    try:
        while process.poll() is None and not latest.is_file():
            pass
    finally:
        process.kill()
        process.wait()
    assert latest.is_file()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "full" / "student_last.safetensors"))
    b = load_file(str(tmp_path / "killed" / "student_last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_seeded_runs_are_reproducible_in_bf16(tmp_path, tiny_recipe):
    runs = []
    for name in ("a", "b"):
        recipe = tiny_recipe(tmp_path / name, epochs=1)
        recipe.train.mixed_precision = "bf16"
        runs.append(distill(recipe))
    assert runs[0]["mixed_precision"] == "bf16"
    a = load_file(str(tmp_path / "a" / "student_last.safetensors"))
    b = load_file(str(tmp_path / "b" / "student_last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_trains_like_the_default_layout(tmp_path, tiny_recipe):
    """NHWC student and teachers: the same losses up to float reordering, weights stay NHWC."""
    losses = {}
    for layout in (False, True):
        recipe = tiny_recipe(tmp_path / str(layout), epochs=1, stop_after_steps=4)
        recipe.train.channels_last = layout
        recipe.teacher_cache.mode = "off"
        distiller = Distiller(recipe)
        assert distiller.run()["stopped"]
        records = (tmp_path / str(layout) / "metrics.jsonl").read_text().splitlines()
        losses[layout] = [json.loads(line)["loss"] for line in records]
        conv = distiller.teachers.teachers[0].conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
    assert len(losses[True]) == 2
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-4)  # steps 1-2
    assert losses[True][1] == pytest.approx(losses[False][1], rel=1e-2)  # SGD amplifies rounding


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


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mtkdrl", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture
def cli_recipe(tiny_recipe, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(tiny_recipe(tmp_path / "run", epochs=1).to_yaml())
    return path


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
    ],
)
def test_bad_input_gives_one_clear_line(cli_recipe, teacher_file, override, message):
    override = override.replace("__T20__", teacher_file(20))
    result = run_cli("distill", str(cli_recipe), override)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mtkdrl: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


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
