"""Where a cached epoch's time goes: one warm-cache epoch of a recipe under cProfile, split into
waiting for data, the teachers' source (cache reads), the student's forward, the losses, the
backward pass and the optimizer step. The cache is filled by an epoch before, outside the profile.

    python bench/profile_epoch.py recipes/cifar10_mtkdrl.yaml data.train_subset=5000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
from pathlib import Path

from mtkdrl import Recipe, distill
from mtkdrl.outputs import read_epochs

# (part of the step, file suffix, function name) whose cumulative time is reported
PARTS = [
    ("waiting for data", "dataloader.py", "__next__"),
    ("teacher source (cache read)", "teacher_cache/sources.py", "__call__"),
    ("student forward", "mtkdrl/task.py", "run_student"),
    ("feature adapters", "mtkdrl/task.py", "run_adapters"),
    ("losses (objective, method)", "mtkdrl/task.py", "losses"),
    ("backward", "accelerate/accelerator.py", "backward"),
    ("optimizer step", "accelerate/optimizer.py", "step"),
    ("the whole step", "mtkdrl/step.py", "train_step"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--top", type=int, default=25, help="also list the N costliest calls")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtkdrl_profile_"))
    shared = [
        *args.overrides,
        "train.epochs=1",
        "train.eval_teachers=false",
        "data.eval_subset=100",
        "teacher_cache.views=1",
        f"teacher_cache.dir={work / 'cache'}",
        f"train.log_every={10**6}",
    ]
    distill(Recipe.from_yaml(args.recipe, [*shared, f"output_dir={work / 'fill'}"]))
    warm = Recipe.from_yaml(args.recipe, [*shared, f"output_dir={work / 'warm'}"])
    profiler = cProfile.Profile()
    profiler.runcall(distill, warm)
    stats = pstats.Stats(profiler)
    totals = {}
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for part, suffix, function in PARTS:
            if name == function and path.endswith(suffix):
                totals[part] = totals.get(part, 0.0) + cumulative
    epoch = read_epochs(work / "warm")[-1]["epoch_seconds"]  # under the profiler
    print(f"warm-cache epoch: {epoch:.1f} s under cProfile")
    print("| part | seconds | share of the epoch |\n| --- | --- | --- |")
    for part, _, _ in PARTS:
        seconds = totals.get(part, 0.0)
        print(f"| {part} | {seconds:.2f} | {seconds / epoch:.1%} |")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
