"""Run under `accelerate launch --num_processes 2`: a short MTKD-RL run, then each rank saves
its agent and student parameters so the test can compare them across ranks."""

import sys
from pathlib import Path

import yaml
from safetensors.torch import save_file

from mtkdrl import Distiller, Recipe


def main(recipe_path: str, out_dir: str) -> None:
    recipe = Recipe.from_dict(yaml.safe_load(Path(recipe_path).read_text()))
    distiller = Distiller(recipe, overwrite=True)
    distiller.run()
    rank = distiller.accelerator.process_index
    agent = {
        k: v.detach().contiguous()
        for k, v in distiller.method.state_dict().items()
        if k.startswith("policy.")
    }
    student = distiller.accelerator.unwrap_model(distiller.student).model.state_dict()
    save_file(agent, str(Path(out_dir) / f"agent_rank{rank}.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in student.items()},
        str(Path(out_dir) / f"student_rank{rank}.safetensors"),
    )
    print(f"rank {rank}: agent_updates={distiller.method.agent_updates}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
