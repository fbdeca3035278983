"""The registry's full-data CIFAR-10 students, trained from `recipes/cifar10_full.yaml`, one run
each, in order, then exported into `zoo/NAME/` and recorded in the registry (`mtkdrl zoo add
--measure`, the gain over `resnet20-cifar10-none`); run it again to continue (a finished student
is skipped, a cut-off one resumed, an exported one left as it is).

    python bench/registry_students.py                      # every student, into ../mtkdrl_registry
    python bench/registry_students.py --students resnet20-cifar10-none   # some of them
    python bench/registry_students.py --jobs 3 --train-only   # on a GPU: train side by side

`--train-only` leaves the export to a later call (the GPU script trains on the device, and the
students are exported and measured here from the run folders it brings back).

Each student is the recipe plus its overrides below; the command each run was made with is the
first line of its `registry.log`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_full.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HINT = ["method.feature={kind: hint, stage: 2}", "method.beta=100"]  # beta chosen on shared4


@dataclass(frozen=True)
class Student:
    """A registry student: its overrides of the recipe, and the no-KD entry its gain is over."""

    overrides: list[str]
    baseline: str | None


STUDENTS: dict[str, Student] = {
    "resnet20-cifar10-none": Student(["method.name=none"], None),
    "resnet20-cifar10-avg-hint": Student(["method.name=avg", *HINT], "resnet20-cifar10-none"),
    "resnet20-cifar10-mtkdrl": Student(["method.name=mtkdrl"], "resnet20-cifar10-none"),
    # the second architecture: its own no-KD baseline first, then the comparison's leader
    "wrn16-2-cifar10-none": Student(["student.name=wrn_16_2_cifar", "method.name=none"], None),
}
ZOO = REPO / "zoo"  # the exports, committed (about 1 MB of safetensors each)
REGISTRY = REPO / "mtkdrl" / "hub" / "registry.yaml"


def run_folder(work: Path, name: str) -> Path:
    """A student's run folder under `--work`: `none`, `avg-hint`, ..., `wrn16-2-cifar10-none`."""
    return work / name.removeprefix("resnet20-cifar10-")


def train(name: str, work: Path) -> None:
    """One student: skipped when exported or finished, resumed when cut off, else started."""
    out = run_folder(work, name)
    if (ZOO / name / "model.safetensors").is_file():
        print(f"{name}: exported, in {ZOO / name}")
        return
    if (out / "summary.json").is_file():
        print(f"{name}: finished, in {out}")
        return
    flag = "--resume" if (out / "checkpoints" / "latest").is_file() else "--overwrite"
    command = [sys.executable, "-m", "mtkdrl", "distill", str(RECIPE), *STUDENTS[name].overrides]
    command += [f"output_dir={out}", flag]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "registry.log", "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE})  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}; see {out / 'registry.log'}")
    print(f"{name}: finished, in {out}")


def export(name: str, work: Path) -> None:
    """Export a finished student into `zoo/NAME` and record it, its figures measured afresh: the
    last epoch's weights, so no figure is picked on the split it is reported on."""
    if (ZOO / name / "model.safetensors").is_file():
        print(f"{name}: exported, in {ZOO / name}")
        return
    command = [sys.executable, "-m", "mtkdrl", "zoo", "add", str(run_folder(work, name)),
               "--name", name, "--registry", str(REGISTRY), "--recipe", str(RECIPE),
               "--export-dir", str(ZOO / name), "--measure", "--weights", "last",
               "--dataset-id", "uoft-cs/cifar10", "--dataset-name", "CIFAR-10"]  # fmt: skip
    student = STUDENTS[name]
    for override in student.overrides:
        command += ["--override", override]
    if student.baseline is not None:
        command += ["--baseline", student.baseline]
    subprocess.run(command, check=True, env={**os.environ, **OFFLINE})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--work", type=Path, default=REPO.parent / "mtkdrl_registry")
    parser.add_argument("--jobs", type=int, default=1, help="students trained side by side")
    parser.add_argument("--train-only", action="store_true", help="train; export in a later call")
    args = parser.parse_args()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda name: train(name, args.work), args.students))
    if not args.train_only:
        for name in args.students:
            export(name, args.work)


if __name__ == "__main__":
    main()
