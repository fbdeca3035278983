"""The teacher-output cache: exact replay of stored views, invalidation, and its refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mtkdrl import Recipe, TeacherPool, build_run, distill
from mtkdrl.data import build_data, sample_seed
from mtkdrl.data.loading import to_pixels
from mtkdrl.errors import MtkdrlError
from mtkdrl.recipe import DataConfig, ModelSpec, apply_override
from mtkdrl.teacher_cache import CachedTeachers, CacheLayout, TeacherCache, cache_key

CIFAR_CFG = {
    "input_size": (3, 32, 32),
    "mean": (0.4914, 0.4822, 0.4465),
    "std": (0.2470, 0.2435, 0.2616),
    "crop_pct": 1.0,
    "interpolation": "bilinear",
}


def _pool(teacher_file) -> TeacherPool:
    specs = [ModelSpec(name=f"resnet{d}_cifar", checkpoint=teacher_file(d)) for d in (20, 32)]
    return TeacherPool.from_specs(specs, 10, CIFAR_CFG)


def _cached(tmp_path: Path, pool: TeacherPool, bundle, views: int, dtype="float16"):
    probe = pool.check_inputs(CIFAR_CFG, torch.device("cpu"))
    layout = CacheLayout(
        num_samples=bundle.train_size,
        views=views,
        num_classes=[10, 10],
        logit_codec="float32",
        logit_topk=100,
        embedding_dims=[int(p.embedding.shape[1]) for p in probe],
        embedding_dtype="float32",
        feature_shapes=[list(p.features.shape[1:]) for p in probe],
        feature_dtype=dtype,
        has_crops=True,
    )
    folder = TeacherCache.create_or_check(tmp_path / "cache", "ab" * 32, layout, {})
    cache = TeacherCache.open(folder, layout, exclusive=True)
    return CachedTeachers(pool, cache, seed=4, transform=bundle.train_set.transform)


def test_cached_outputs_equal_fresh_teacher_outputs_for_the_same_views(
    tmp_path, tiny_cifar, teacher_file
):
    """Fill views 0 and 1, then read them back in epochs 2 and 3 (other batches, same views)."""
    cfg = DataConfig(data_files=tiny_cifar, train_transform="cifar", batch_size=16, num_workers=0)
    bundle = build_data(cfg, CIFAR_CFG, seed=4)
    pool = _pool(teacher_file)
    cached = _cached(tmp_path, pool, bundle, views=2)
    for epoch in range(4):
        bundle.set_epoch(epoch, cached.cache.view_of(epoch))
        for images, _, indices in bundle.train_loader:
            replayed = cached(images, indices, epoch, feature_stage=-1)
            fresh = pool(images, feature_stage=-1)
            for got, want in zip(replayed, fresh, strict=True):
                torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5)
                torch.testing.assert_close(got.embedding, want.embedding, rtol=0, atol=1e-5)
                rounded = want.features.half().float()
                torch.testing.assert_close(got.features, rounded, rtol=1e-3, atol=1e-3)
    cache = cached.cache
    assert cache.misses == 12 and cache.hits == 12  # 6 batches per epoch, views 0/1 filled once
    assert cache.filled(0) == cache.filled(1) == 96

    # the stored crop and flip are the view the loader showed: re-apply them to the pixels
    transform = bundle.train_set.transform
    for index in (0, 41, 95):
        top, left, flip = (int(v) for v in cache.arrays["crops"][1, index])
        view = type(transform.sample(0))(top, left, bool(flip))
        pixels = to_pixels(bundle.train_set.images[index]["img"])
        bundle.set_epoch(7, 1)
        torch.testing.assert_close(transform.apply(pixels, view), bundle.train_set[index][0])
        assert int(cache.arrays["seeds"][1, index]) == sample_seed(4, 1, index)
    cache.close()


def test_entry_with_another_seed_is_recomputed_not_misread(tmp_path, tiny_cifar, teacher_file):
    cfg = DataConfig(data_files=tiny_cifar, train_transform="cifar", batch_size=16, num_workers=0)
    bundle = build_data(cfg, CIFAR_CFG, seed=4)
    cached = _cached(tmp_path, _pool(teacher_file), bundle, views=1, dtype="bfloat16")
    images, _, indices = next(iter(bundle.train_loader))
    rows = indices.numpy()
    seeds = np.array([sample_seed(4, 0, int(i)) for i in rows], dtype=np.int64)
    assert cached.cache.lookup(0, rows, seeds, images.device) is None
    stored = cached(images, indices, 0, feature_stage=-1)
    again = cached.cache.lookup(0, rows, seeds, images.device)
    assert again is not None and torch.equal(again[1].features, stored[1].features)
    assert cached.cache.lookup(0, rows, seeds + 1, images.device) is None  # another view
    with pytest.raises(MtkdrlError, match="in use by another run"):
        TeacherCache.open(cached.cache.folder, cached.cache.layout, exclusive=True)
    cached.cache.close()


def test_a_cache_that_would_not_fit_is_refused_up_front(tmp_path):
    layout = CacheLayout(
        num_samples=10**9,
        views=64,
        num_classes=[1000],
        logit_codec="uint8",
        logit_topk=100,
        embedding_dims=[2048],
        embedding_dtype="float16",
        feature_shapes=[[2048, 7, 7]],
        feature_dtype="float16",
        has_crops=False,
    )
    with pytest.raises(MtkdrlError, match=r"needs .* GB at .* but only .* is free.*views"):
        TeacherCache.create_or_check(tmp_path, cache_key({"x": 1}), layout, {})
    assert not any(tmp_path.iterdir())  # nothing half-made left behind


def _weights(run: Path) -> dict:
    return load_file(str(run / "student_last.safetensors"))


def test_warm_cache_run_equals_the_run_that_filled_it(tmp_path, tiny_run):
    """Views 0/1 replayed in epochs 2/3; a second run reads every step and ends identical."""
    raw = tiny_run(tmp_path / "run", "mtkdrl", epochs=4)
    raw["teacher_cache"] = {"views": 2, "dir": str(tmp_path / "cache")}
    cold = distill(Recipe.from_dict(raw))
    assert (cold["teacher_cache_misses"], cold["teacher_cache_hits"]) == (12, 12)
    first = _weights(tmp_path / "run")
    warm = distill(Recipe.from_dict(raw), overwrite=True)
    assert (warm["teacher_cache_misses"], warm["teacher_cache_hits"]) == (0, 24)
    assert warm["teacher_cache"] == cold["teacher_cache"]
    for key, value in _weights(tmp_path / "run").items():
        assert torch.equal(value, first[key]), key


def test_fp32_cache_within_its_views_equals_an_uncached_run(tmp_path, tiny_run):
    """Within its views (epoch e shows view e, as without a cache) a float32 cache gives the live
    teachers' numbers: the run that fills it and a run that replays every batch from it end with
    the student of an uncached run. (Past its views a cached run replays views that an uncached
    run never shows again, so there is nothing to compare it with.)"""
    plain = tiny_run(tmp_path / "plain", "avg", epochs=2, eval_teachers=False)
    plain["teacher_cache"] = {"mode": "off"}
    assert distill(Recipe.from_dict(plain))["teacher_cache"] is None
    uncached = _weights(tmp_path / "plain")
    raw = tiny_run(tmp_path / "cached", "avg", epochs=2, eval_teachers=False)
    raw["teacher_cache"] = {"views": 2, "feature_dtype": "float32", "dir": str(tmp_path / "c")}
    for overwrite, counts in ((False, (12, 0)), (True, (0, 12))):
        summary = distill(Recipe.from_dict(raw), overwrite=overwrite)
        assert (summary["teacher_cache_misses"], summary["teacher_cache_hits"]) == counts
        cached = _weights(tmp_path / "cached")
        for key, value in uncached.items():
            assert torch.equal(cached[key], value), (counts, key)


def test_changing_teachers_data_or_transform_gives_a_new_cache(tmp_path, tiny_run, teacher_file):
    def folder(**changes) -> str:
        raw = tiny_run(tmp_path / "run", "avg", epochs=1, eval_teachers=False)
        raw["teacher_cache"] = {"dir": str(tmp_path / "cache")}
        for section, values in changes.items():
            if section == "teachers":
                raw["teachers"][1] = values
            else:
                raw[section].update(values)
        return distill(Recipe.from_dict(raw), overwrite=True)["teacher_cache"]

    base = folder()
    assert folder() == base  # same inputs: the same cache
    others = {
        folder(teachers={"name": "resnet44_cifar", "checkpoint": teacher_file(44)}),
        folder(data={"train_subset": 64}),
        folder(data={"train_transform": "timm"}),
    }
    assert base not in others and len(others) == 3


@pytest.fixture(scope="module")
def base_cache_key(tiny_run, tmp_path_factory):
    """The cache key of `_key_recipe`'s run, unchanged."""
    return _cache_key(_key_recipe(tiny_run, tmp_path_factory.mktemp("base_key")))


def _key_recipe(tiny_run, folder: Path) -> dict:
    raw = tiny_run(folder / "run", "avg", epochs=1, eval_teachers=False)
    raw["teacher_cache"] = {"dir": str(folder / "cache")}
    return raw


def _cache_key(raw: dict) -> str:
    """The teacher-cache key of the run a raw recipe builds (its cache's `meta.json`)."""
    run = build_run(Recipe.from_dict(raw), overwrite=True)
    try:
        return json.loads((run.teacher_source.cache.folder / "meta.json").read_text())["key"]
    finally:
        run.teacher_source.close()


def _other_resnet32(folder: Path, teacher_file) -> str:
    """A resnet32_cifar checkpoint other than the shared one (one classifier bias moved)."""
    state = load_file(teacher_file(32))
    state["linear.bias"] = state["linear.bias"] + 0.01
    path = folder / "other_resnet32.safetensors"
    save_file(state, str(path))
    return str(path)


@pytest.mark.parametrize(
    ("overrides", "same"),
    [
        ([], True),
        (["teachers.1.checkpoint=__OTHER_RESNET32__"], False),
        (["teachers.0.mean=[0.5, 0.5, 0.5]", "teachers.0.std=[0.25, 0.25, 0.25]"], False),
        (["teachers.0.kwargs={global_pool: max}"], False),
        (["seed=4"], False),
        (["teacher_cache.views=2"], False),
        (["train.mixed_precision=bf16"], False),
        (["data.train_transform=timm"], False),
        (["method.name=ebkd"], False),  # logit-only: no feature maps
        (["method.name=fitnet_mkd"], False),  # the second stage's maps
    ],
    ids=[
        "unchanged",
        "teacher weights, same name",
        "teacher mean/std",
        "teacher kwargs",
        "seed",
        "views",
        "precision",
        "train transform",
        "feature flag",
        "feature stage",
    ],
)
def test_cache_key_covers_everything_that_changes_a_cached_output(
    tmp_path, tiny_run, teacher_file, base_cache_key, overrides, same
):
    raw = _key_recipe(tiny_run, tmp_path)
    for item in overrides:
        apply_override(
            raw, item.replace("__OTHER_RESNET32__", _other_resnet32(tmp_path, teacher_file))
        )
    assert (_cache_key(raw) == base_cache_key) is same


def test_logit_only_and_feature_methods_share_a_cache_folder(tmp_path, tiny_run):
    """A method without the feature loss (ebkd), one with last-stage maps (avg) and one with
    second-stage maps (fitnet_mkd), pointed at one `teacher_cache.dir` in any order, each get a
    cache of their own layout beside the others."""
    summaries = {}
    for method in ("avg", "ebkd", "fitnet_mkd", "avg"):
        raw = tiny_run(tmp_path / method, method, epochs=1, eval_teachers=False)
        raw["teacher_cache"] = {"views": 1, "dir": str(tmp_path / "cache")}
        summaries.setdefault(method, []).append(distill(Recipe.from_dict(raw), overwrite=True))
    avg_again = summaries["avg"][1]
    assert avg_again["teacher_cache_misses"] == 0  # its cache survived the other runs
    folders = {summaries[m][0]["teacher_cache"] for m in ("avg", "ebkd", "fitnet_mkd")}
    assert len(folders) == 3


def test_streamed_data_cannot_be_replayed(tmp_path, tiny_run):
    raw = tiny_run(tmp_path / "run", "avg", epochs=1)
    raw["data"].update(streaming=True, train_subset=32)
    raw["teacher_cache"] = {"mode": "on"}
    with pytest.raises(MtkdrlError, match=r"teacher_cache.mode=on cannot replay.*streamed"):
        distill(Recipe.from_dict(raw))
    raw["teacher_cache"] = {"mode": "auto"}
    assert distill(Recipe.from_dict(raw), overwrite=True)["teacher_cache"] is None


def test_samples_left_out_by_drop_last_are_stored_before_the_replays(tmp_path, tiny_run):
    """90 images in batches of 16: each epoch drops 10; they are stored at the epoch's end, so
    the replays (epochs 2 and 3) read every batch."""
    raw = tiny_run(tmp_path / "run", "avg", epochs=4, eval_teachers=False)
    raw["data"]["train_subset"] = 90
    raw["teacher_cache"] = {"views": 2}
    summary = distill(Recipe.from_dict(raw))
    assert summary["teacher_cache_misses"] == 2 * 5 + 2  # 5 batches per fill epoch + the tails
    assert summary["teacher_cache_hits"] == 2 * 5
    seeds = np.fromfile(Path(summary["teacher_cache"]) / "seeds.bin", dtype=np.int64)
    assert seeds.shape == (2 * 90,) and np.count_nonzero(seeds) == 2 * 90


def test_live_rows_run_the_teachers_and_leave_the_cache_as_it_was(
    tmp_path, tiny_cifar, teacher_file
):
    """Rows whose images were altered (RLKD's remix) get the teachers' outputs on those images,
    the others the stored ones; nothing is stored for the altered rows."""
    cfg = DataConfig(data_files=tiny_cifar, train_transform="cifar", batch_size=16, num_workers=0)
    bundle = build_data(cfg, CIFAR_CFG, seed=4)
    pool = _pool(teacher_file)
    cached = _cached(tmp_path, pool, bundle, views=1, dtype="float32")
    images, _, indices = next(iter(bundle.train_loader))
    live = torch.zeros(len(indices), dtype=torch.bool)
    live[[1, 4, 5]] = True
    altered = images.clone()
    altered[live] = images[live].flip(0) * 0.5  # not the stored samples' images
    got = cached(altered, indices, 0, feature_stage=-1, live_rows=live)
    fresh = pool(altered, feature_stage=-1)
    for a, b in zip(got, fresh, strict=True):
        torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-5)
    seeds = cached.cache.arrays["seeds"][0]
    assert (seeds[indices[live].numpy()] == 0).all()  # never stored under their own index
    assert (seeds[indices[~live].numpy()] != 0).all()
    cached.cache.close()
