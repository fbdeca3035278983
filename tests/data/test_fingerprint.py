"""A split's identity: the same local data copied elsewhere or touched (new modification time,
as a fresh machine or sitting gives it) has the same fingerprint; one changed label or image, or
another subset, has another; an image folder is identified by its images' bytes, not paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mtkdrl import Recipe, distill
from mtkdrl.data import build_data
from mtkdrl.recipe import DataConfig

from .test_loading import CIFAR_CFG, parquet_cfg


def train_fingerprint(cfg: DataConfig) -> str:
    return build_data(cfg, CIFAR_CFG, seed=0).train_set.fingerprint


@pytest.fixture
def cifar_copy(tiny_cifar, tmp_path) -> dict[str, str]:
    """The tiny CIFAR files copied to another folder, written anew (another mtime)."""
    files = {}
    for split, source in tiny_cifar.items():
        target = tmp_path / "copy" / os.path.basename(source)
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(source, target)
        os.utime(target, (1e9, 1e9))
        files[split] = str(target)
    return files


def test_a_copy_of_the_same_files_has_the_same_fingerprint(tiny_cifar, cifar_copy):
    original = train_fingerprint(parquet_cfg(tiny_cifar))
    assert len(original) == 16
    assert train_fingerprint(parquet_cfg(cifar_copy)) == original


def test_a_changed_label_image_or_subset_changes_the_fingerprint(tiny_cifar, cifar_copy):
    original = train_fingerprint(parquet_cfg(tiny_cifar))
    assert train_fingerprint(parquet_cfg(tiny_cifar, train_subset=48)) != original
    path = cifar_copy["train"]
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[5] = (labels[5] + 1) % 10
    pq.write_table(table.set_column(1, "label", pa.array(labels, table.schema[1].type)), path)
    relabelled = train_fingerprint(parquet_cfg(cifar_copy))
    assert relabelled not in (original, None)
    images = table.column("img").to_pylist()
    images[7], images[8] = images[8], images[7]
    pq.write_table(table.set_column(0, "img", pa.array(images, table.schema[0].type)), path)
    assert train_fingerprint(parquet_cfg(cifar_copy)) not in (original, relabelled)


def test_an_image_folder_is_identified_by_its_images_not_their_paths(tmp_path):
    for split in ("train", "validation"):
        for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / "a" / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), (colour[0], i * 40, colour[2])).save(folder / f"{i}.png")
    shutil.copytree(tmp_path / "a", tmp_path / "b")

    def fingerprint(root: str) -> str:
        return train_fingerprint(DataConfig(name="imagefolder", data_dir=root, num_workers=0))

    assert fingerprint(str(tmp_path / "a")) == fingerprint(str(tmp_path / "b"))
    Image.new("RGB", (32, 32), (0, 255, 0)).save(tmp_path / "b" / "train" / "cat" / "1.png")
    assert fingerprint(str(tmp_path / "a")) != fingerprint(str(tmp_path / "b"))


def test_a_run_resumes_after_its_data_files_were_written_anew(tiny_cifar, tiny_run, tmp_path):
    """The files at the same paths with a new modification time (a fresh machine's copy)."""
    files = {}
    for split, source in tiny_cifar.items():
        files[split] = str(tmp_path / os.path.basename(source))
        shutil.copyfile(source, files[split])
    raw = tiny_run(tmp_path / "run", "avg", checkpoint_every=2, stop_after_steps=2, epochs=1)
    raw["data"]["data_files"] = files
    raw["train"]["eval_teachers"] = False
    assert distill(Recipe.from_dict(raw))["stopped"]
    for path in files.values():
        data = Path(path).read_bytes()
        os.remove(path)
        Path(path).write_bytes(data)
        os.utime(path, (2e9, 2e9))
    raw["train"]["stop_after_steps"] = None
    summary = distill(Recipe.from_dict(raw), resume=True)
    assert summary["global_steps"] > 2
