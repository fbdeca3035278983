"""The teacher cache a recipe would fill: bytes per teacher and per sample and view, and the
projected total for a data set of `--samples` images, from the recipe's own teachers (built
without weights: only their output shapes count) and method. Reads no data.

    python bench/cache_size.py recipes/imagenet_resnet18.yaml
    python bench/cache_size.py recipes/imagenet_resnet18.yaml method.name=mtkdrl \
        method.options.state_embedding_dims=256
"""

from __future__ import annotations

import argparse

from mtkdrl import Recipe, build_run
from mtkdrl.teacher_cache.wiring import layout_for

IMAGENET_TRAIN = 1_281_167


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--samples", type=int, default=IMAGENET_TRAIN, help="training images")
    args = parser.parse_args()
    recipe = Recipe.from_yaml(args.recipe, args.overrides)
    run = build_run(recipe, dry_run=True)
    stage = run.task.feature_stage
    probe = run.teachers.check_inputs(run.student_cfg, run.accelerator.device, stage)
    width = run.task.method.teacher_embedding_width
    layout = layout_for(recipe.teacher_cache, args.samples, probe, stage, width)
    print(f"{recipe.method.name}, {len(probe)} teachers, {recipe.teacher_cache.views} views")
    for k, size in enumerate(layout.teacher_entry_bytes()):
        print(f"  {recipe.teachers[k].name}: {size:,} B per view ({layout.describe(k)})")
    print(f"  per sample and view, with its seed: {layout.entry_bytes():,} B")
    total = layout.nbytes()
    print(
        f"  {args.samples:,} samples x {layout.views} views: {total:,} B = "
        f"{total / 1e9:.1f} GB ({total / 2**30:.1f} GiB)"
    )


if __name__ == "__main__":
    main()
