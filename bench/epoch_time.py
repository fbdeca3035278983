"""Wall time of one training epoch on the shared CIFAR-10 data: student alone vs 4 teachers.

Rows, each a real `python -m mtkdrl.distill` run of one epoch in a fresh process (same student,
data slice, batch and seed): (1) the student alone (`none`), (2) `avg` with the teacher cache
off, (3) `avg` reading a warm cache, (4) `mtkdrl` reading the same warm cache (agent acting from
the first step). The cache is filled by one extra epoch before (3), which is not a row. Times are
the training loop's (`epoch_seconds`, evaluation excluded); ratios are to (1), from this one run.

    python bench/epoch_time.py --subset 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mtkdrl.outputs import read_epochs

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_mtkdrl.yaml"

ROWS: dict[str, list[str]] = {
    "student alone (none)": ["method.name=none", "method.options={}", "teacher_cache.mode=off"],
    "avg, 4 teachers, no cache": ["method.name=avg", "method.options={}", "teacher_cache.mode=off"],
    "avg, 4 teachers, cache warm": ["method.name=avg", "method.options={}"],
    "mtkdrl, 4 teachers, cache warm": ["method.name=mtkdrl", "method.options.warmup_epochs=0"],
}
FILL = ["method.name=avg", "method.options={}"]


def epoch_seconds(overrides: list[str], shared: list[str], out: Path) -> tuple[float, dict]:
    command = [
        sys.executable, "-m", "mtkdrl.distill", str(RECIPE), *overrides, *shared,
        f"output_dir={out}", "--overwrite",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(overrides)} failed:\n{done.stderr[-3000:]}")
    return read_epochs(out)[-1]["epoch_seconds"], json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtkdrl_epoch_time_"))
    shared = [
        f"data.train_subset={args.subset}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "train.epochs=1",
        "train.eval_teachers=false",
        "data.eval_subset=500",
        "teacher_cache.views=1",
        f"teacher_cache.dir={work / 'cache'}",
        f"train.log_every={10**6}",
    ]
    results = {}
    for row, overrides in ROWS.items():
        if "cache warm" in row and not (work / "cache").is_dir():
            _, fill = epoch_seconds(FILL, shared, work / "fill")
            assert fill["teacher_cache_hits"] == 0, "the fill epoch should find an empty cache"
        seconds, summary = epoch_seconds(overrides, shared, work / row.split(",")[0])
        if "cache warm" in row and summary["teacher_cache_misses"] != 0:
            raise SystemExit(f"{row}: {summary['teacher_cache_misses']} batches missed the cache")
        results[row] = seconds
    base = results["student alone (none)"]
    print(f"one epoch of {args.subset} CIFAR-10 images, batch {args.batch_size}, fp32, ResNet-20")
    print("| run | epoch (s) | vs student alone |\n| --- | --- | --- |")
    for row, seconds in results.items():
        print(f"| {row} | {seconds:.1f} | {seconds / base:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "seconds": results}, indent=2
            )
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
