"""Describing where a split comes from, without local paths."""

from mtkdrl.data import describe_split, local_source
from mtkdrl.recipe import DataConfig


def test_describe_split_names_files_folders_and_hub_sets_without_paths(tmp_path):
    files = {"train": str(tmp_path / "cifar" / "train.parquet"), "validation": "val.parquet"}
    parquet = DataConfig(name="parquet", data_files=files, eval_subset=500)
    assert describe_split(parquet, "train") == "train.parquet, split 'train'"
    text = describe_split(parquet, "validation", parquet.eval_subset)
    assert text == "val.parquet, split 'validation', first 500 images"
    assert local_source(parquet, "train") == tmp_path / "cifar" / "train.parquet"
    folder = DataConfig(name="imagefolder", data_dir=str(tmp_path / "pets"))
    assert describe_split(folder, "validation") == "pets/ (imagefolder), split 'validation'"
    assert str(tmp_path) not in describe_split(folder, "train")
    hub = DataConfig(name="uoft-cs/cifar10", eval_split="test")
    assert describe_split(hub, "test") == "uoft-cs/cifar10, split 'test'"
    assert local_source(hub, "test") is None
