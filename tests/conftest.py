"""Test-wide settings: never reach the Hub, and find the shared CIFAR-10 data and teachers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared CIFAR-10 data folder; tests that need it fail loudly where it is absent."""
    if not (SHARED / "cifar10-jpeg" / "train.parquet").is_file():
        pytest.fail(f"{SHARED} is missing: put the shared data beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def tiny_cifar(shared_data: Path, tmp_path_factory) -> dict[str, str]:
    """The first rows of the shared CIFAR-10 splits as small parquet files (schema kept)."""
    folder = tmp_path_factory.mktemp("tiny_cifar")
    files = {}
    for split, source, rows in (("train", "train.parquet", 96), ("validation", "val.parquet", 64)):
        table = pq.read_table(shared_data / "cifar10-jpeg" / source).slice(0, rows)
        target = folder / f"{split}.parquet"
        pq.write_table(table, target)
        files[split] = str(target)
    return files


@pytest.fixture(scope="session")
def teacher_file(shared_data: Path):
    """Path of a shared pretrained CIFAR-10 teacher by depth."""

    def path(depth: int) -> str:
        return str(shared_data / "teachers" / f"cifar10_resnet{depth}.safetensors")

    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_cifar, teacher_file):
    """Raw recipe data for a short real run: two shared teachers, the tiny CIFAR-10 slices."""

    def raw(out: Path, method: str = "avg", **train) -> dict:
        return {
            "seed": 3,
            "output_dir": str(out),
            "student": {"name": "resnet20_cifar"},
            "teachers": [
                {"name": "resnet20_cifar", "checkpoint": teacher_file(20)},
                {"name": "resnet32_cifar", "checkpoint": teacher_file(32)},
            ],
            "data": {
                "name": "parquet",
                "data_files": tiny_cifar,
                "train_transform": "cifar",
                "batch_size": 16,
                "eval_batch_size": 32,
                "num_workers": 0,
            },
            "method": {"name": method},
            "optim": {"lr": 0.05, "schedule": "multistep", "milestones": [1]},
            "train": {"epochs": 2, "log_every": 2, **train},
        }

    return raw


@pytest.fixture
def cnn_and_vit_dry_run(tmp_path):
    """A dry run of a method with a CNN and a ViT teacher together; returns its two losses."""
    from mtkdrl import Recipe, distill

    def run(method: str, options: dict | None = None, precision: str = "no") -> list[float]:
        recipe = Recipe.from_dict(
            {
                "output_dir": str(tmp_path / "dry"),
                "student": {"name": "resnet20_cifar"},
                "teachers": [{"name": "resnet32_cifar"}, {"name": "vit_tiny_patch16_224"}],
                "data": {"num_classes": 10, "batch_size": 2},
                "method": {"name": method, "options": options or {}},
                "train": {"mixed_precision": precision},
            }
        )
        return distill(recipe, dry_run=True)["losses"]

    return run


@pytest.fixture
def same_students():
    """Asserts that two runs ended with the same student, tensor for tensor."""
    from safetensors.torch import load_file

    def check(first: Path, second: Path) -> None:
        a = load_file(str(first / "student_last.safetensors"))
        b = load_file(str(second / "student_last.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key

    return check


@pytest.fixture
def run_and_resumed(tmp_path, tiny_run, same_students):
    """A short real run of a method on the shared data, and the same run stopped after 4 of its
    6 steps (a checkpoint at step 4) and resumed; asserts both end with the same student and
    returns the uninterrupted run's summary and folder."""
    from mtkdrl import Recipe, distill

    def run(method: str, options: dict | None = None) -> tuple[dict, Path]:
        recipes = {}
        for name in ("full", "part"):
            raw = tiny_run(tmp_path / name, method, epochs=1, checkpoint_every=2)
            raw["train"]["eval_teachers"] = False
            raw["method"]["options"] = options or {}
            recipes[name] = Recipe.from_dict(raw)
        summary = distill(recipes["full"])
        part = recipes["part"]
        part.train.stop_after_steps = 4
        assert distill(part)["stopped"]
        part.train.stop_after_steps = None
        distill(part, resume=True)
        same_students(tmp_path / "full", tmp_path / "part")
        return summary, tmp_path / "full"

    return run
