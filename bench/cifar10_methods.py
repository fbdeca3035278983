"""Compare methods on the four shared CIFAR-10 teachers (superseded by bench/compare.py, kept to
reproduce the README's earlier tables): same student, budget and seeds.

Each (method, seed) is one `python -m mtkdrl.distill recipes/cifar10_mtkdrl.yaml ...` run in a
fresh process; the table gives mean ± std val top-1 over seeds, and time per epoch and peak
memory (resident set size of the training process on CPU) as ratios to `avg`, all from one run
of this script. Every row reads one teacher-output cache per seed (`--views` augmented views per
sample), filled before the rows by `python -m mtkdrl.fill_cache` (the teachers alone, no
training), so the teachers run once per seed, not once per row.

    python bench/cifar10_methods.py --seeds 0 1 2 --subset 2000 --epochs 12 --views 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import compare  # bench/compare.py, beside this file

from mtkdrl.outputs import read_epochs

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_mtkdrl.yaml"

ROWS: dict[str, list[str]] = {
    "none": ["method.name=none", "method.options={}"],
    "avg": ["method.name=avg", "method.options={}"],
    "mtkdrl (official)": ["method.name=mtkdrl"],
    "mtkdrl (official, dynamic)": ["method.name=mtkdrl", "method.options.dynamic=true"],
    "mtkdrl (reinforce)": ["method.name=mtkdrl", "method.options.agent_update=reinforce"],
    "mtkdrl (official, uniform warm-up)": [
        "method.name=mtkdrl",
        "method.options.warmup_weight=uniform",
    ],
    "avg (no cache)": ["method.name=avg", "method.options={}", "teacher_cache.mode=off"],
}
EXTRA_ROWS = ("avg (no cache)", "mtkdrl (official, dynamic)")  # on request (--rows)
DEFAULT_ROWS = [row for row in ROWS if row not in EXTRA_ROWS]


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The budget every row shares: the harness's (bench/compare.py), with one cache folder."""
    return [
        *compare.budget_overrides(args),
        f"teacher_cache.dir={Path(args.work) / 'teacher_cache'}",
    ]


def fill_cache(seed: int, args: argparse.Namespace) -> float:
    """Run the teachers over every cached view once (`python -m mtkdrl.fill_cache`, no
    training), so that every row reads the same warm cache and their times compare; returns
    its wall time."""
    overrides = [*ROWS["avg"], *budget_overrides(args), f"seed={seed}"]
    command = [sys.executable, "-m", "mtkdrl.fill_cache", str(RECIPE), *overrides]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"filling the teacher cache for seed {seed} failed:\n{done.stderr[-2000:]}"
        )
    return time.perf_counter() - started


def run_one(row: str, seed: int, args: argparse.Namespace, work: Path) -> dict:
    out = (
        work / f"{row.replace(' ', '_').replace('(', '').replace(')', '').replace(',', '')}_s{seed}"
    )
    overrides = [*ROWS[row], *budget_overrides(args), f"seed={seed}", f"output_dir={out}"]
    command = [sys.executable, "-m", "mtkdrl.distill", str(RECIPE), *overrides, "--overwrite"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{row} seed {seed} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    epochs = read_epochs(out)
    return {
        "row": row,
        "seed": seed,
        "last_top1": summary["last_top1"],
        "best_top1": summary["best_top1"],
        "epoch_seconds": statistics.mean(e["epoch_seconds"] for e in epochs),
        "peak_memory_mb": summary["peak_memory_mb"],
        "wall_seconds": time.perf_counter() - started,
        "teacher_cache_misses": summary.get("teacher_cache_misses"),
    }


def table(results: list[dict]) -> str:
    by_row = {row: [r for r in results if r["row"] == row] for row in ROWS}
    by_row = {row: runs for row, runs in by_row.items() if runs}
    base = by_row["avg"]
    base_time = statistics.mean(r["epoch_seconds"] for r in base)
    base_memory = statistics.mean(r["peak_memory_mb"] for r in base)
    lines = [
        "| method | val top-1 (last epoch), mean ± std | seeds "
        "| time/epoch vs avg | peak memory vs avg |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row, runs in by_row.items():
        top1 = [r["last_top1"] for r in runs]
        spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
        time_ratio = statistics.mean(r["epoch_seconds"] for r in runs) / base_time
        memory_ratio = statistics.mean(r["peak_memory_mb"] for r in runs) / base_memory
        lines.append(
            f"| {row} | {statistics.mean(top1):.2f} ± {spread:.2f} | {len(runs)} | "
            f"{time_ratio:.2f}x | {memory_ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subset", type=int, default=5000, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    parser.add_argument("--views", type=int, default=4, help="teacher-cache views per sample")
    parser.add_argument("--work", default=str(REPO / "runs" / "bench_methods"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "cifar10_methods.json"))
    args = parser.parse_args()
    if "avg" not in args.rows:
        parser.error("--rows must include avg (the ratios are to avg)")
    results, fills = [], []
    started = time.perf_counter()
    for seed in args.seeds:  # seeds outermost: a cut-short run still has every row
        fills.append(fill_cache(seed, args))
        print(json.dumps({"cache_fill_seed": seed, "seconds": fills[-1]}), flush=True)
        for row in args.rows:
            result = run_one(row, seed, args, Path(args.work))
            results.append(result)
            print(json.dumps(result), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = {"subset": args.subset, "epochs": args.epochs, "batch_size": args.batch_size}
    wall = time.perf_counter() - started
    record = {"budget": budget, "views": args.views, "cache_fill_seconds": fills,
              "wall_seconds": wall, "results": results}  # fmt: skip
    out.write_text(json.dumps(record, indent=2))
    print(f"\nbudget: {budget}, student resnet20_cifar, 4 shared teachers, fp32 on CPU")
    print(f"wall time {wall / 60:.1f} min, of which filling the teacher cache "
          f"({args.views} views per sample) {sum(fills) / 60:.1f} min")  # fmt: skip
    print(table(results))


if __name__ == "__main__":
    main()
