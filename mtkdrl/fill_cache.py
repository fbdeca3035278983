"""`mtkdrl cache`: run the teachers over every view the teacher-output cache holds, no training.

A run fills the cache as a side effect of its first `teacher_cache.views` epochs. Filling it
on its own first costs the teachers' forwards alone, and every run that shares
`teacher_cache.dir` (methods, hyper-parameters; the same teachers, data, seed and views) then
starts warm. The batches are those the training epochs would show, so a run reading this cache
gets exactly the outputs it would have stored itself.

    accelerate launch -m mtkdrl.fill_cache RECIPE [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import CommandParser, MtkdrlError, exit_code
from .recipe import Recipe
from .run import Run, build_run
from .teacher_cache import CachedTeachers, TeacherCache


def fill_teacher_cache(
    recipe: Recipe | str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> dict:
    """Store every teacher's outputs for every cached view of the recipe's training data;
    returns how many entries this call stored, how many the cache now holds, and the time."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_yaml(recipe, overrides)
    run = build_run(recipe, overwrite=True)  # writes only the cache, never a run's files
    cached = run.teacher_source
    if not isinstance(cached, CachedTeachers):
        raise MtkdrlError(f"teacher_cache: nothing to fill, {_why_uncached(run)}")
    accelerator, cache = run.accelerator, cached.cache
    batch_size = recipe.data.batch_size * accelerator.num_processes
    started, stored_before = time.perf_counter(), _stored(cache)
    try:
        for view in range(cache.layout.views):
            run.data.set_epoch(view, view)  # training epoch `view` shows these batches
            run.task.set_epoch(view)
            batches = tqdm(
                run.train_loader, desc=f"view {view}", disable=not accelerator.is_main_process
            )
            with torch.inference_mode(), accelerator.autocast():
                for images, _, indices in batches:
                    if recipe.train.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    cached(images, indices, view, run.task.feature_stage)
                if accelerator.is_main_process:
                    cached.fill_dropped(
                        run.data.train_set,
                        view,
                        batch_size,
                        run.task.feature_stage,
                        accelerator.device,
                    )
            accelerator.wait_for_everyone()
        held = _stored(cache)
    finally:
        cache.close()
    result = {
        "teacher_cache": str(cache.folder),
        "entries": cache.layout.views * cache.layout.num_samples,
        "held": held,
        "stored": held - stored_before,
        "seconds": time.perf_counter() - started,
    }
    accelerator.print(
        f"teacher cache filled: {result['stored']} entries stored in {result['seconds']:.0f}s, "
        f"{held} of {result['entries']} now held at {cache.folder}"
    )
    return result


def _why_uncached(run: Run) -> str:
    """Why `open_for_run` gave this recipe no cache."""
    if run.recipe.teacher_cache.mode == "off":
        return "teacher_cache.mode is off"
    if not run.task.method.uses_teachers:
        return f"method {run.recipe.method.name!r} uses no teachers"
    return f"the training views cannot be replayed: {run.data.replay_refusal}"


def _stored(cache: TeacherCache) -> int:
    return sum(cache.filled(view) for view in range(cache.layout.views))


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="mtkdrl cache", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument(
        "recipe", help="a recipe YAML file, or a packaged recipe's name (mtkdrl recipes)"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. seed=1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(lambda: fill_teacher_cache(args.recipe, args.overrides))


if __name__ == "__main__":
    sys.exit(main())
