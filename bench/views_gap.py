"""What more cached views buy back of the gap to a run without the cache: `avg` on `shared4` at
the comparison's budget (2,000 images x 30 epochs) with 4, 8 and 15 stored views, each against
the uncached `avg` of the same seed (a fresh view every epoch), paired by seed, with a 95 %
t-interval over seeds. Every run is `bench/compare.py`'s, so this resumes where it stopped:

    python bench/views_gap.py --seeds 0 1 2

The runs go to `--work` (one folder per view count), the table to bench/results/views/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPARE = REPO / "bench" / "compare.py"
# two-sided 95 % quantiles of Student's t by degrees of freedom
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def run_compare(views: int, methods: list[str], args: argparse.Namespace) -> list[dict]:
    out = args.out / f"views{views}"
    command = [
        sys.executable, str(COMPARE), "--pools", "shared4", "--methods", *methods,
        "--seeds", *map(str, args.seeds), "--views", str(views),
        "--work", str(args.work / f"views{views}"), "--out", str(out), "--no-readme", "--resume",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return json.loads((out / "results.json").read_text())["results"]


def interval(differences: list[float]) -> str:
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return f"{mean:+.2f} (1 seed)"
    half = T975[len(differences) - 1] * statistics.stdev(differences) / math.sqrt(len(differences))
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO.parent / "mtkdrl_views")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "views")
    args = parser.parse_args()
    first = run_compare(args.views[0], ["avg", "avg (no cache)"], args)
    uncached = {r["seed"]: r["top1"] for r in first if r["method"] == "avg (no cache)"}
    lines = [
        "`avg` on shared4, 2,000 shared CIFAR-10 images x 30 epochs, batch 64, fp32; top-1 on the "
        "5,000 val images at the last epoch. Δ: paired by seed to `avg` without the cache (a "
        "fresh view each epoch), mean and 95 % t-interval over seeds. "
        "`python bench/views_gap.py`",
        "",
        "| stored views | top-1 per seed | Δ to no cache |",
        "| --- | --- | --- |",
        f"| none (no cache) | {' / '.join(f'{uncached[s]:.2f}' for s in args.seeds)} | — |",
    ]
    for views in args.views:
        runs = first if views == args.views[0] else run_compare(views, ["avg"], args)
        cached = {r["seed"]: r["top1"] for r in runs if r["method"] == "avg"}
        seeds = [s for s in args.seeds if s in cached and s in uncached]
        per_seed = " / ".join(f"{cached[s]:.2f}" for s in seeds)
        differences = [cached[s] - uncached[s] for s in seeds]
        lines.append(f"| {views} | {per_seed} | {interval(differences)} |")
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "views.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
