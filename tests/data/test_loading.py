"""Data: sources, column detection, seeded views and loaders on slices of the shared CIFAR-10."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from mtkdrl.data import build_data, build_eval_loader, load_splits, sample_seed
from mtkdrl.data.transforms import CifarTrainTransform, CropFlip, EvalTransform
from mtkdrl.errors import MtkdrlError
from mtkdrl.recipe import DataConfig

CIFAR_CFG = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 1.0,
}


def parquet_cfg(files, **fields) -> DataConfig:
    return DataConfig(name="parquet", data_files=dict(files), num_workers=0, **fields)


def test_parquet_splits_columns_and_class_names(tiny_cifar):
    train, val, info = load_splits(parquet_cfg(tiny_cifar))
    assert (train.num_rows, val.num_rows) == (96, 64)
    assert (info.image_column, info.label_column, info.num_classes) == ("img", "label", 10)
    assert info.label_names[0] == "airplane" and info.label_names[-1] == "truck"


def test_missing_file_split_and_column_name_the_field(tiny_cifar, tmp_path):
    with pytest.raises(MtkdrlError, match=r"data.data_files.train: no such file"):
        load_splits(parquet_cfg({**tiny_cifar, "train": str(tmp_path / "nope.parquet")}))
    with pytest.raises(MtkdrlError, match=r"data.data_files has no 'test' entry"):
        load_splits(parquet_cfg(tiny_cifar, eval_split="test"))
    with pytest.raises(MtkdrlError, match=r"data.label_column: no column 'lable'.*label"):
        load_splits(parquet_cfg(tiny_cifar, label_column="lable"))
    with pytest.raises(MtkdrlError, match=r"data.data_dir: no such directory"):
        load_splits(DataConfig(name="imagefolder", data_dir=str(tmp_path / "none")))


def test_unknown_hub_dataset_offline_is_one_clear_error():
    with pytest.raises(MtkdrlError, match=r"data.name: cannot open data set 'no-such-org/none'"):
        load_splits(DataConfig(name="no-such-org/none"))


def test_fine_label_and_image_columns_are_detected(tmp_path):
    buffer = Image.new("RGB", (8, 8), (10, 200, 30))
    import io

    raw = io.BytesIO()
    buffer.save(raw, format="PNG")
    table = pa.table(
        {
            "image": [{"bytes": raw.getvalue(), "path": None}] * 6,
            "fine_label": [0, 1, 2, 3, 4, 5],
        }
    )
    for split in ("train", "validation"):
        pq.write_table(table, tmp_path / f"{split}.parquet")
    files = {s: str(tmp_path / f"{s}.parquet") for s in ("train", "validation")}
    _, _, info = load_splits(parquet_cfg(files))
    assert (info.image_column, info.label_column, info.num_classes) == ("image", "fine_label", 6)


def test_imagefolder_source(tmp_path):
    for split in ("train", "validation"):
        for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    cfg = DataConfig(name="imagefolder", data_dir=str(tmp_path), num_workers=0, batch_size=2)
    bundle = build_data(cfg, CIFAR_CFG, seed=0)
    assert bundle.num_classes == 2 and bundle.label_names == ["cat", "dog"]
    images, labels, _ = next(iter(bundle.eval_loader))
    red = images[labels == 0]
    assert red.shape[1:] == (3, 32, 32) and (red[:, 0] > red[:, 2]).all()


def test_cifar_view_is_pad_crop_flip():
    pixels = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3).astype(np.uint8)
    transform = CifarTrainTransform(32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    unshifted = transform.apply(pixels, CropFlip(4, 4, False))
    torch.testing.assert_close(unshifted, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
    shifted = transform.apply(pixels, CropFlip(0, 8, True))
    # rows shift down by 4 (zero padding on top), columns left by 4, then the view is mirrored
    assert shifted[:, :4].abs().sum() == 0 and shifted[:, :, :4].abs().sum() == 0
    expected = torch.from_numpy(pixels[:28, 4:]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(shifted[:, 4:, 4:], expected.flip(-1))


def test_views_depend_on_seed_epoch_and_index_only(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, train_transform="cifar", batch_size=16)
    first, again = build_data(cfg, CIFAR_CFG, seed=5), build_data(cfg, CIFAR_CFG, seed=5)
    dataset, same = first.train_loader.dataset, again.train_loader.dataset
    torch.testing.assert_close(dataset[7][0], same[7][0])
    first.set_epoch(1)
    assert not torch.equal(dataset[7][0], same[7][0])
    assert sample_seed(5, 1, 7) != sample_seed(5, 0, 7) != sample_seed(5, 1, 8)


def test_shuffle_is_epoch_seeded_and_global_rng_untouched(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, train_transform="timm", batch_size=16)
    bundle = build_data(cfg, CIFAR_CFG, seed=1)
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    order0 = torch.cat([idx for _, _, idx in bundle.train_loader])
    assert torch.equal(torch.rand(1), expected_draw)  # loading drew nothing from the global RNG
    bundle.set_epoch(1)
    order1 = torch.cat([idx for _, _, idx in bundle.train_loader])
    bundle.set_epoch(0)
    again = torch.cat([idx for _, _, idx in bundle.train_loader])
    assert torch.equal(order0, again) and not torch.equal(order0, order1)
    assert sorted(order0.tolist()) == list(range(96)) and len(bundle.train_loader) == 6


def test_workers_give_the_same_batches_as_the_main_process(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, train_transform="cifar", batch_size=32)
    inline = build_data(cfg, CIFAR_CFG, seed=2)
    cfg.num_workers = 2
    pooled = build_data(cfg, CIFAR_CFG, seed=2)
    for (a, la, ia), (b, lb, ib) in zip(inline.train_loader, pooled.train_loader, strict=True):
        torch.testing.assert_close(a, b)
        assert torch.equal(la, lb) and torch.equal(ia, ib)


def test_decoded_cache_matches_decoding_each_time(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, train_transform="cifar", batch_size=16)
    plain = build_data(cfg, CIFAR_CFG, seed=0).train_loader.dataset
    cfg.cache_decoded = True
    cached = build_data(cfg, CIFAR_CFG, seed=0).train_loader.dataset
    for index in (0, 50, 95):
        torch.testing.assert_close(plain[index][0], cached[index][0])


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_cifar_views_equal_the_per_image_ones(tiny_cifar, workers):
    """Decoded CIFAR images are augmented a batch at a time (one tensor gather): the very numbers
    of the per-image path, for every batch of two epochs, in the loader's process or workers."""
    cfg = parquet_cfg(tiny_cifar, train_transform="cifar", batch_size=16, cache_decoded=True)
    cfg.num_workers = workers
    bundle = build_data(cfg, CIFAR_CFG, seed=5)
    for epoch in (0, 1):
        bundle.set_epoch(epoch)
        for images, labels, indices in bundle.train_loader:
            per_image = [bundle.train_set[int(i)] for i in indices]
            stacked = torch.stack([sample[0] for sample in per_image])
            assert torch.equal(images, stacked) and images.stride() == stacked.stride()
            assert labels.tolist() == [sample[1] for sample in per_image]
    if workers == 0:  # the batched path ran here (in workers it runs in their copies)
        assert bundle.train_set._stacked is not None


def test_subsets_and_their_bounds(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, train_subset=40, eval_subset=10, batch_size=16)
    bundle = build_data(cfg, CIFAR_CFG, seed=0)
    assert bundle.train_size == 40 and len(bundle.eval_loader.dataset) == 10
    cfg.train_subset = 1000
    with pytest.raises(MtkdrlError, match=r"data.train_subset is 1000 but the split has only 96"):
        build_data(cfg, CIFAR_CFG, seed=0)


def test_streaming_needs_a_length_and_yields_indexed_views(tiny_cifar, tmp_path):
    never_prepared = tmp_path / "stream.parquet"  # no cached split sizes for this file
    never_prepared.write_bytes(Path(tiny_cifar["train"]).read_bytes())
    files = {**tiny_cifar, "train": str(never_prepared)}
    cfg = parquet_cfg(files, streaming=True, train_transform="cifar", batch_size=16)
    with pytest.raises(MtkdrlError, match=r"data.train_subset: a streamed split"):
        build_data(cfg, CIFAR_CFG, seed=0)
    cfg.train_subset = 48
    bundle = build_data(cfg, CIFAR_CFG, seed=0)
    batches = list(bundle.train_loader)
    assert len(bundle.train_loader) == 3 and sum(len(b[1]) for b in batches) == 48
    assert batches[0][0].shape == (16, 3, 32, 32)


def test_eval_loader_uses_timm_eval_transform(tiny_cifar):
    cfg = parquet_cfg(tiny_cifar, eval_batch_size=64)
    loader, classes, names = build_eval_loader(cfg, CIFAR_CFG)
    images, _labels, indices = next(iter(loader))
    assert classes == 10 and names[3] == "cat"
    assert torch.equal(indices, torch.arange(64))
    row = load_splits(cfg, train=False)[1][0]["img"]
    torch.testing.assert_close(images[0], EvalTransform(CIFAR_CFG)(np.asarray(row.convert("RGB"))))


@pytest.mark.parametrize("cache_decoded", [False, True])
def test_grey_palette_cmyk_and_alpha_images_become_rgb(tmp_path, cache_decoded):
    import io

    modes = ["L", "LA", "P", "CMYK", "RGBA", "RGB"]
    cells = []
    for mode in modes:
        raw = io.BytesIO()
        Image.new(mode, (32, 32), 90 if mode in ("L", "P") else None).save(
            raw, format="JPEG" if mode == "CMYK" else "PNG"
        )
        cells.append({"bytes": raw.getvalue(), "path": None})
    table = pa.table({"img": cells, "label": list(range(len(modes)))})
    for split in ("train", "validation"):
        pq.write_table(table, tmp_path / f"{split}.parquet")
    files = {s: str(tmp_path / f"{s}.parquet") for s in ("train", "validation")}
    cfg = parquet_cfg(files, cache_decoded=cache_decoded, train_transform="cifar")  # no jitter
    dataset = build_data(cfg, CIFAR_CFG, seed=0).train_loader.dataset
    mean, std = (torch.tensor(CIFAR_CFG[k]).view(3, 1, 1) for k in ("mean", "std"))
    for index, mode in enumerate(modes):
        image = dataset[index][0]
        assert image.shape == (3, 32, 32), mode
    grey = dataset[modes.index("L")][0] * std + mean  # back to [0, 1]: equal channels
    torch.testing.assert_close(grey[0], grey[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(grey[1], grey[2], atol=1e-6, rtol=0)
    assert abs(grey.max().item() - 90 / 255) < 1e-6
