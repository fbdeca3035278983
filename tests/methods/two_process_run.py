"""Run under `accelerate launch --num_processes 2`: a short run of a recipe, then each rank saves
its loss's tensors (the method's under `method.`, the objective's, such as a temperature policy's,
under `objective.`, as the run checkpoints them) and its student's, so that a test can compare them
across ranks."""

import sys
from pathlib import Path

import yaml
from safetensors.torch import save_file

from mtkdrl import Recipe, build_run, train


def main(recipe_path: str, out_dir: str) -> None:
    recipe = Recipe.from_dict(yaml.safe_load(Path(recipe_path).read_text()))
    run = build_run(recipe, overwrite=True)
    train(run)
    rank = run.accelerator.process_index
    for kind, module in (("method", run.task.loss), ("student", run.unwrapped_student())):
        state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(Path(out_dir) / f"{kind}_rank{rank}.safetensors"))
    print(f"rank {rank}: done")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
