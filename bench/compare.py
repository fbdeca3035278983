"""The project's comparisons: the shared teacher pools and the harness's budget, run by
`mtkdrl compare` (one comparison per pool), with the record kept in the repository.

A pool is the shared four teachers plus, in some, one more: confidently wrong on four classes
(`shared4+swapped`: the shared `resnet56_swapped`), weak but honest (`shared4+weak`: a ResNet-20
trained by `recipes/cifar10_weak_teacher.yaml`), or, held out so that no default is chosen on it,
confidently wrong on four other classes (`shared4+wrong44`: the shared ResNet-44 with its
classifier rows swapped for cat <-> dog and deer <-> horse). The budget: a ResNet-20 on 2,000
shared training images x 30 epochs, batch 64, SGD 0.05 cosine, 4 cached views, fp32.

    python bench/compare.py --pools shared4+swapped shared4+weak \
        --methods avg ebkd aekd ca_mkd amtml mtkdrl mmkd --features none map --seeds 0 1 2

Runs go to `--work/<pool>`; each pool's record, table and plot to `docs/results/compare/<pool>/`.
Run it again to continue: recorded runs are skipped, here or on another machine. The same budget
on more data, e.g. the 10,000-image check, is a record of its own per pool
(`--train-images 10000`: `docs/results/compare/<pool>_10000images/`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from safetensors.torch import load_file, save_file

from mtkdrl.compare import main as compare_main
from mtkdrl.compare.command import slug

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "cifar10_mtkdrl.yaml"
WEAK_TEACHER_RECIPE = REPO / "recipes" / "cifar10_weak_teacher.yaml"
WEAK_TEACHER = REPO / "bench" / "teachers" / "cifar10_resnet20_weak.safetensors"
RESULTS = REPO / "docs" / "results" / "compare"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SUBSET, EPOCHS, BATCH_SIZE = 2000, 30, 64
WEIGHTING_METHODS = ["avg", "ebkd", "aekd", "ca_mkd", "amtml", "mtkdrl", "mmkd"]
WRONG44_SWAPS = [(3, 5), (4, 7)]  # cat <-> dog, deer <-> horse


def shared_teacher(depth: int, suffix: str = "") -> dict:
    return {
        "name": f"resnet{depth}_cifar",
        "checkpoint": str(SHARED / "teachers" / f"cifar10_resnet{depth}{suffix}.safetensors"),
    }


SHARED4 = [shared_teacher(d) for d in (20, 32, 44, 56)]
POOLS: dict[str, list[dict]] = {
    "shared4": SHARED4,
    "shared4+swapped": [*SHARED4, shared_teacher(56, "_swapped")],
    "shared4+weak": [*SHARED4, {"name": "resnet20_cifar", "checkpoint": "@weak"}],
    "shared4+wrong44": [*SHARED4, {"name": "resnet44_cifar", "checkpoint": "@wrong44"}],
}


def budget_overrides(views: int = 4, precision: str = "no", images: int = SUBSET) -> list[str]:
    """The budget every row shares: a cosine schedule over a fixed training subset."""
    return [
        f"data.train_subset={images}",
        f"train.epochs={EPOCHS}",
        f"train.eval_every={EPOCHS}",  # the tables need the last epoch's only
        f"data.batch_size={BATCH_SIZE}",
        "optim.lr=0.05",
        "optim.schedule=cosine",
        "optim.weight_decay=5e-4",
        "train.eval_teachers=false",
        "train.checkpoint_every=200",
        "train.keep_checkpoints=1",
        f"train.log_every={10**6}",
        "train.log_weights_by_class=true",  # for bench/agent_weights.py
        f"teacher_cache.views={views}",
        f"train.mixed_precision={precision}",  # one precision for every row
    ]


def wrong_teacher(work: Path) -> Path:
    """The held-out pool's extra teacher: the shared ResNet-44 with the classifier rows of
    `WRONG44_SWAPS` exchanged, so it names the partner class with the network's own confidence."""
    target = work / "teachers" / "cifar10_resnet44_wrong.safetensors"
    if not target.is_file():
        weights = load_file(SHARED / "teachers" / "cifar10_resnet44.safetensors")
        for name in ("linear.weight", "linear.bias"):
            rows = weights[name].clone()
            for a, b in WRONG44_SWAPS:
                rows[[a, b]] = weights[name][[b, a]]
            weights[name] = rows
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(weights, target)
    return target


def weak_teacher(work: Path) -> Path:
    """The weak pool's extra teacher: the committed file (`WEAK_TEACHER`), made once from its
    recipe where it is missing. Committed, so that every machine compares the same weights (the
    record holds their hash) rather than a retraining that float kernels make differ."""
    if WEAK_TEACHER.is_file():
        return WEAK_TEACHER
    out = work / "teachers" / "weak"
    if not (out / "summary.json").is_file():
        flag = "--resume" if (out / "checkpoints" / "latest").is_file() else "--overwrite"
        command = [sys.executable, "-m", "mtkdrl", "distill", str(WEAK_TEACHER_RECIPE),
                   f"output_dir={out}", flag]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, **OFFLINE})
    WEAK_TEACHER.parent.mkdir(exist_ok=True)
    shutil.copyfile(out / "student_last.safetensors", WEAK_TEACHER)
    return WEAK_TEACHER


MADE_TEACHERS = {"@weak": weak_teacher, "@wrong44": wrong_teacher}


def resolve_pool(pool: str, work: Path) -> list[dict]:
    """The pool's teacher specs, the made ones (`@weak`, `@wrong44`) made where missing."""
    return [
        {**spec, "checkpoint": str(MADE_TEACHERS[spec["checkpoint"]](work))}
        if spec["checkpoint"] in MADE_TEACHERS
        else spec
        for spec in POOLS[pool]
    ]


def pool_overrides(
    pool: str, work: Path, views: int = 4, precision: str = "no", images: int = SUBSET
) -> list[str]:
    """The recipe overrides of one pool's comparison: the budget and the pool's teachers."""
    teachers = yaml.safe_dump(resolve_pool(pool, work), default_flow_style=True, width=10**9)
    return [*budget_overrides(views, precision, images), f"teachers={teachers.strip()}"]


def pool_folder(pool: str, images: int = SUBSET) -> str:
    """A pool's folder name, for its runs and its record: `shared4+swapped`, or with another
    training-set size `shared4+swapped_10000images` (a record of its own: another budget)."""
    return slug(pool) if images == SUBSET else f"{slug(pool)}_{images}images"


def pool_work(pool: str, work: Path, images: int = SUBSET) -> Path:
    return work / pool_folder(pool, images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--methods", nargs="+", default=WEIGHTING_METHODS, help="method rows")
    parser.add_argument("--features", nargs="+", help="feature rows (the recipe's by default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--views", type=int, default=4, help="teacher-cache views per sample")
    parser.add_argument("--precision", default="no", choices=["no", "bf16"])
    parser.add_argument(
        "--train-images", type=int, default=SUBSET, help=f"training images ({SUBSET})"
    )
    parser.add_argument("--work", type=Path, default=REPO.parent / "mtkdrl_compare")
    parser.add_argument("--out", type=Path, default=RESULTS, help="one folder per pool in it")
    args = parser.parse_args()
    os.environ.update(OFFLINE)
    images = args.train_images
    for pool in args.pools:
        print(f"== {pool}", flush=True)
        code = compare_main(
            [str(RECIPE), *pool_overrides(pool, args.work, args.views, args.precision, images),
             "--methods", *args.methods, *(["--features", *args.features] if args.features else []),
             "--seeds", *map(str, args.seeds), "--work", str(pool_work(pool, args.work, images)),
             "--out", str(args.out / pool_folder(pool, images)), "--resume"]
        )  # fmt: skip
        if code != 0:
            raise SystemExit(code)


if __name__ == "__main__":
    main()
