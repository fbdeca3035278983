"""The README's commands, run in the order a reader meets them, so that the guide cannot drift
from what works: the quickstart, the run commands, the Python API and the task snippet, the
model-zoo snippet, and export, push and local loading of the result.

They run verbatim in a scratch project beside `../shared` (as the repository sits), on the
repository's recipes with a tiny budget laid over them. The few lines that cannot run here are
listed in `NOT_RUN` with the reason; a listed line the README no longer has is an error too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY_BUDGET = {
    "data": {"train_subset": 64, "eval_subset": 100, "num_workers": 0},
    "train": {"epochs": 2, "eval_every": 1, "log_every": 1},
    "teacher_cache": {"views": 1},
}
NOT_RUN = {
    "pytest -q": "the test command: this suite",
    "accelerate launch -m mtkdrl.distill recipes/imagenet_vit.yaml": "needs ImageNet and GPUs",
    "accelerate launch --multi_gpu": "two processes: tests/methods/two_process_run.py runs them",
    "mtkdrl compare my_recipe.yaml": "hours of runs: tests/compare/test_command.py runs it small",
    "hf-hub:mtkdrl/": "needs the Hugging Face Hub",
    "mtkdrl distill q.yaml": "a full quickstart: tests/test_wheel.py runs it on a tiny budget",
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONWARNINGS": ""}


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced bash or python block, in order."""
    pattern = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
    return [(m.group(1), m.group(2)) for m in pattern.finditer(README.read_text())]


def bash_commands(block: str) -> list[str]:
    """The block's command lines, continuation lines joined; an install line gives only its
    `mtkdrl` part."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("python3 -m venv"):
            line = line.split(" && ")[-1]
        commands.append(line)
    return commands


def tiny_project(tmp_path: Path, shared_data: Path) -> Path:
    """A project folder with the repository's recipes under the tiny budget, `../shared` beside."""
    (tmp_path / "shared").symlink_to(shared_data.parent)
    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    for path in (REPO / "recipes").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        for section, values in TINY_BUDGET.items():
            raw[section] = {**raw.get(section, {}), **values}
        (project / "recipes" / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return project


def run(command: list[str], project: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, cwd=project, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (
        f"{command[-1][:200]}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def test_readme_commands_run_in_order(shared_data, tmp_path):
    project = tiny_project(tmp_path, shared_data)
    ran, skipped = [], set()
    for language, block in readme_blocks():
        if language == "python":
            run([sys.executable, "-c", block], project)
            ran.append(block.splitlines()[0])
            continue
        for command in bash_commands(block):
            reasons = [key for key in NOT_RUN if key in command]
            if reasons:
                skipped.update(reasons)
                continue
            run(["bash", "-c", command], project)
            ran.append(command)
    assert skipped == set(NOT_RUN), f"no longer in the README: {set(NOT_RUN) - skipped}"
    runs = project / "runs"
    assert (runs / "quickstart" / "summary.json").is_file()
    assert (runs / "quickstart_none" / "summary.json").is_file()
    assert (runs / "quickstart" / "teacher_weights.png").is_file()
    export = project / "exports" / "resnet20-cifar10-avg"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in export.iterdir()}
    assert "no-KD" in (export / "README.md").read_text()
    assert (project / "q.yaml").read_text().startswith("# A CIFAR-10 ResNet-20")
    assert any("local-dir:exports/" in command for command in ran)
