"""Wall time of one training epoch on the shared CIFAR-10 data: student alone vs 4 teachers.

Rows (same student, data slice, batch, seed and precision, the recipe's `auto`): (1) the student
alone (`none`), (2) `avg` with the teacher cache off, (3) `avg` reading a warm cache (its default
feature term, the last-stage map), (4) `avg` without a feature term (logits only) reading a warm
cache, (5) `mtkdrl` reading a warm cache (agent acting from the first step). Every row is built
in this one process, and each round trains every row's epoch in lockstep, a batch of each in
turn, so drift on a shared machine falls on all rows alike; a row's time is its fastest round
(other work on the machine only slows an epoch down). Round 0 fills each cached row's cache (what
that row reads) and is not timed; the uncached row, 3x slower, runs in round 1 only. A row's
epoch is its loader's batches, its steps and its end of epoch (MTKD-RL's replay); evaluation
excluded. Ratios are to (1), from this one run.

    python bench/epoch_time.py --subset 10000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from mtkdrl import Recipe
from mtkdrl.run import Run, build_run
from mtkdrl.step import BatchProvider, train_step
from mtkdrl.train import StepLog, epoch_batches, fill_dropped_views

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_mtkdrl.yaml"
UNCACHED = "avg, 4 teachers, no cache"

ROWS: dict[str, list[str]] = {
    "student alone (none)": ["method.name=none", "method.options={}", "teacher_cache.mode=off"],
    UNCACHED: ["method.name=avg", "method.options={}", "teacher_cache.mode=off"],
    "avg, 4 teachers, cache warm": ["method.name=avg", "method.options={}"],
    "avg logits only, 4 teachers, cache warm": [
        "method.name=avg",
        "method.options={}",
        "method.feature=none",
    ],
    "mtkdrl, 4 teachers, cache warm": ["method.name=mtkdrl", "method.options.warmup_epochs=0"],
}


def epochs_in_lockstep(runs: dict[str, Run], epoch: int) -> dict[str, float]:
    """Epoch `epoch` of every run, a batch of each in turn (the order rotating), as the loop
    trains it (no evaluation, no checkpoint); each run's seconds: its batches, its steps and its
    end of epoch. Drift on the machine then falls on every run alike, batch by batch."""
    batches, logs, providers, seconds = {}, {}, {}, dict.fromkeys(runs, 0.0)
    for row, run in runs.items():
        logs[row], providers[row] = StepLog(run), BatchProvider(run.train_loader)
        batches[row] = iter(epoch_batches(run, epoch, logs[row]))  # progress bars on stderr
    order, turn = list(runs), 0
    while order:
        turn += 1
        for row in order[turn % len(order) :] + order[: turn % len(order)]:
            run, started = runs[row], time.perf_counter()
            batch = next(batches[row], None)
            if batch is None:
                fill_dropped_views(run, epoch)
                run.task.end_epoch(epoch)
                run.state.batch_in_epoch = 0
                order.remove(row)
            else:
                logs[row].add(train_step(run, batch, providers[row]))
                run.state.batch_in_epoch += 1
                run.state.global_step += int(run.accelerator.sync_gradients)
            seconds[row] += time.perf_counter() - started
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per row")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtkdrl_epoch_time_"))
    shared = [
        f"data.train_subset={args.subset}",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "train.eval_teachers=false",
        "data.eval_subset=100",
        "teacher_cache.views=1",
        f"teacher_cache.dir={work / 'cache'}",
    ]
    runs = {}
    for row, overrides in ROWS.items():
        out = f"output_dir={work / row.split(',')[0].replace(' ', '_')}"
        runs[row] = build_run(Recipe.from_yaml(RECIPE, [*shared, *overrides, out]), overwrite=True)
    seconds: dict[str, list[float]] = {row: [] for row in ROWS}
    filled: dict[str, dict] = {}
    for epoch in range(args.rounds + 1):
        now = {row: run for row, run in runs.items() if row != UNCACHED or epoch == 1}
        for row, elapsed in epochs_in_lockstep(now, epoch).items():
            if epoch > 0:
                seconds[row].append(elapsed)
            else:
                filled[row] = runs[row].teacher_source.figures()
            print(f"round {epoch}: {row}: {elapsed:.1f} s", flush=True)
    for row, run in runs.items():
        figures = run.teacher_source.figures()
        if (
            "cache warm" in row
            and figures["teacher_cache_misses"] != (filled[row]["teacher_cache_misses"])
        ):
            raise SystemExit(f"{row}: the cache missed after round 0 ({figures})")
        run.teacher_source.close()
    fastest = {row: min(times) for row, times in seconds.items()}
    base = fastest["student alone (none)"]
    precision = runs["student alone (none)"].precision
    print(
        f"one epoch of {args.subset} CIFAR-10 images, batch {args.batch_size}, {precision.label} "
        f"({precision.reason}), {args.workers} loader workers, ResNet-20; the fastest of "
        f"{args.rounds} epochs per row, the rows' batches in turn in one process"
    )
    print("| run | epoch (s) | vs student alone |\n| --- | --- | --- |")
    for row, value in fastest.items():
        print(f"| {row} | {value:.1f} | {value / base:.2f}x |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds}
        args.json.write_text(json.dumps(record, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
