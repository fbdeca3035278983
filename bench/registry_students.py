"""The registry's full-data CIFAR-10 students, trained from `recipes/cifar10_full.yaml`, one run
each, in order; run it again to continue (a finished student is skipped, a cut-off one resumed).

    python bench/registry_students.py                      # every student, into ../mtkdrl_registry
    python bench/registry_students.py --students none      # some of them

Each student is the recipe plus its overrides below; the command each run was made with is the
first line of its `registry.log`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_full.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
HINT = ["method.feature={kind: hint, stage: 2}", "method.beta=100"]  # beta chosen on shared4
STUDENTS: dict[str, list[str]] = {
    "none": ["method.name=none"],
    "avg_hint": ["method.name=avg", *HINT],
    "mtkdrl": ["method.name=mtkdrl"],
}


def train(name: str, work: Path) -> None:
    """One student: skipped when finished, resumed when cut off, else started."""
    out = work / name
    if (out / "summary.json").is_file():
        print(f"{name}: finished, in {out}")
        return
    flag = "--resume" if (out / "checkpoints" / "latest").is_file() else "--overwrite"
    command = [sys.executable, "-m", "mtkdrl", "distill", str(RECIPE), *STUDENTS[name]]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--work", type=Path, default=REPO.parent / "mtkdrl_registry")
    args = parser.parse_args()
    for name in args.students:
        train(name, args.work)


if __name__ == "__main__":
    main()
