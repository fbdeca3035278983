"""The ImageNet-1k recipe end to end on a small image folder of 224 px images made here: its
four teachers (without their weights: no Hub) cached in the compact layout, for a logit method
and for MTKD-RL, with the bytes per sample and view that the recipe's size arithmetic uses."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtkdrl import Recipe, distill
from mtkdrl.teacher_cache import format_bytes

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "imagenet_resnet18.yaml"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """3 classes of 256x256 JPEGs (4 training and 1 validation image each)."""
    root = tmp_path_factory.mktemp("imagenet_like")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("validation", 1)):
        for label in ("n01440764", "n01443537", "n01484850"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{i}.JPEG", quality=90)
    return root


def _run(image_folder: Path, out: Path, overrides: list[str]) -> tuple[dict, dict, int]:
    teachers = [f"teachers.{k}.pretrained=false" for k in range(4)]
    recipe = Recipe.from_yaml(
        RECIPE,
        [
            "data.name=imagefolder",
            f"data.data_dir={image_folder}",
            "data.num_classes=3",
            "data.batch_size=4",
            "data.eval_batch_size=4",
            "data.num_workers=0",
            *teachers,
            "train.epochs=2",
            "train.eval_teachers=false",
            "teacher_cache.views=1",
            "teacher_cache.logits=uint8",  # as for 1,000 classes (3 here)
            f"output_dir={out}",
            *overrides,
        ],
    )
    summary = distill(recipe)
    folder = Path(summary["teacher_cache"])
    layout = json.loads((folder / "meta.json").read_text())["layout"]
    on_disk = sum(path.stat().st_size for path in folder.glob("*.bin"))
    return summary, layout, on_disk


@pytest.mark.parametrize(
    ("overrides", "per_teacher"),
    [
        ([], 3 + 8),  # uint8 levels of 3 classes, their low and step
        (["method.name=mtkdrl", "method.options.state_embedding_dims=256"], 3 + 8 + 2 * 256),
    ],
    ids=["avg", "mtkdrl"],
)
def test_imagenet_recipe_runs_cached_in_the_compact_layout(
    image_folder, tmp_path, capsys, overrides, per_teacher
):
    summary, layout, on_disk = _run(image_folder, tmp_path / "run", overrides)
    assert summary["teacher_cache_misses"] == 3 and summary["teacher_cache_hits"] == 3
    assert layout["logit_codec"] == "uint8" and layout["feature_shapes"] is None
    assert layout["has_crops"] is False  # timm's views replay from their seeds
    per_entry = 4 * per_teacher + 8  # and the entry's seed
    assert on_disk == 12 * per_entry  # 12 images x 1 view
    printed = capsys.readouterr().out
    assert f"{format_bytes(per_entry)} per sample and view" in printed
    assert f"teachers.0: {format_bytes(per_teacher)} (uint8 logits" in printed
