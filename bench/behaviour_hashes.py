"""SHA-256 of the weights in `student_last.safetensors` of short seeded runs of every method.

A refactor that must not change behaviour records these before and checks them after: the same
recipe, seed and machine give byte-identical students. Each row runs `mtkdrl.distill` on a
small slice of the shared CIFAR-10 data (with and without the teacher-output cache), writes its
run under `--work`, and the table goes to `--out` (JSON). `--check FILE` compares with a
recorded table and exits 1 on any difference. Compare only tables of the same torch, CPU
capability and thread count (`OMP_NUM_THREADS`): each changes the floating-point sums.

    python bench/behaviour_hashes.py --out bench/results/behaviour_hashes.json
    python bench/behaviour_hashes.py --check bench/results/behaviour_hashes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

# row -> (method, teacher depths, other `method:` keys). Every registered method at its default
# feature term, and each temperature policy on one method.
ROWS: dict[str, tuple[str, tuple[int, ...], dict]] = {
    "none": ("none", (), {}),
    "kd": ("kd", (56,), {}),
    "avg": ("avg", (20, 32, 44), {}),
    "avg (logits only)": ("avg", (20, 32, 44), {"feature": "none"}),
    "fitnet_mkd": ("fitnet_mkd", (20, 32, 44), {"beta": 100}),
    "dkd": ("dkd", (20, 32, 44), {"options": {"warmup_epochs": 1}}),
    "ebkd": ("ebkd", (20, 32, 44), {}),
    "aekd": ("aekd", (20, 32, 44), {}),
    "ca_mkd": ("ca_mkd", (20, 32, 44), {}),
    "amtml": ("amtml", (20, 32, 44), {}),
    "mmkd": ("mmkd", (20, 32, 44), {"options": {"batch_size": 32, "buffer_size": 64}}),
    "mtkdrl": ("mtkdrl", (20, 32, 44), {"options": {"agent_step": 3}}),
    "mtkdrl (official)": ("mtkdrl-official", (20, 32, 44), {"options": {"agent_step": 3}}),
    "mtkdrl (reinforce)": (
        "mtkdrl-official",
        (20, 32, 44),
        {"options": {"agent_update": "reinforce"}},
    ),
    "kd + rl temperature": (
        "kd",
        (56,),
        {"temperature": {"policy": "rl", "warmup_epochs": 1, "rl_every": 1, "remix_every": 2}},
    ),
    "kd + curriculum": ("kd", (56,), {"temperature": {"policy": "curriculum", "ramp_epochs": 2}}),
    "avg + rl temperature": (
        "avg",
        (20, 32, 44),
        {"temperature": {"policy": "rl", "warmup_epochs": 1, "rl_every": 1}},
    ),
}
CACHE_MODES = ("on", "off")


def recipe_dict(row: str, cache: str, work: Path) -> dict:
    method, depths, method_keys = ROWS[row]
    data = SHARED / "cifar10-jpeg"
    return {
        "seed": 5,
        "output_dir": str(work / f"{_slug(row)}-cache_{cache}"),
        "student": {"name": "resnet20_cifar"},
        "teachers": [
            {
                "name": f"resnet{d}_cifar",
                "checkpoint": str(SHARED / "teachers" / f"cifar10_resnet{d}.safetensors"),
            }
            for d in depths
        ],
        "data": {
            "name": "parquet",
            "data_files": {
                "train": str(data / "train.parquet"),
                "validation": str(data / "val.parquet"),
            },
            "num_classes": 10,
            "train_transform": "cifar",
            "train_subset": 160,
            "eval_subset": 64,
            "batch_size": 32,
            "eval_batch_size": 64,
            "num_workers": 0,
        },
        "method": {"name": method, **method_keys},
        "optim": {"lr": 0.05, "schedule": "cosine", "weight_decay": 5e-4},
        "train": {"epochs": 3, "log_every": 2, "eval_teachers": False, "mixed_precision": "no"},
        "teacher_cache": {
            "mode": cache,
            "views": 2,
            "dir": str(work / "cache" / f"{'-'.join(map(str, depths))}-{_slug(row)}"),
        },
    }


def _slug(row: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in row)


def sha256(path: Path) -> str:
    """SHA-256 over the file's tensors (sorted names, dtypes, shapes, bytes). The file's own bytes
    are not stable: safetensors writes its metadata in a varying order."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_all(work: Path) -> dict[str, str]:
    from mtkdrl import Recipe, distill

    hashes = {}
    for row in ROWS:
        for cache in CACHE_MODES if ROWS[row][1] else ("off",):
            recipe = Recipe.from_dict(recipe_dict(row, cache, work))
            distill(recipe, overwrite=True)
            hashes[f"{row}, cache {cache}"] = sha256(
                Path(recipe.output_dir) / "student_last.safetensors"
            )
            print(f"{row}, cache {cache}: {hashes[f'{row}, cache {cache}']}", flush=True)
    return hashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--work", default="/tmp/mtkdrl_behaviour_hashes")
    parser.add_argument("--out", help="write the table (JSON) here")
    parser.add_argument("--check", help="compare with this recorded table")
    args = parser.parse_args()
    hashes = run_all(Path(args.work))
    record = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "hashes": hashes,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if args.check:
        recorded = json.loads(Path(args.check).read_text())
        differ = [k for k in recorded["hashes"] if recorded["hashes"][k] != hashes.get(k)]
        print(
            f"{len(recorded['hashes']) - len(differ)} of {len(recorded['hashes'])} hashes equal; "
            f"differ: {differ or 'none'}"
        )
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
