"""Run under `accelerate launch --num_processes 2`: a short MTKD-RL run, then each rank saves
its agent and student parameters so the test can compare them across ranks."""

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
    agent = {
        k: v.detach().contiguous()
        for k, v in run.method.state_dict().items()
        if k.startswith("agent.")
    }
    student = run.unwrapped_student().state_dict()
    save_file(agent, str(Path(out_dir) / f"agent_rank{rank}.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in student.items()},
        str(Path(out_dir) / f"student_rank{rank}.safetensors"),
    )
    print(f"rank {rank}: agent_updates={run.method.agent.updates}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
