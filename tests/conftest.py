"""Test-wide settings: never reach the Hub, and find the shared CIFAR-10 data and teachers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared CIFAR-10 data folder; tests that need it skip where it is absent."""
    if not (SHARED / "cifar10-jpeg" / "train.parquet").is_file():
        pytest.skip("../shared/data is not beside the repository")
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
