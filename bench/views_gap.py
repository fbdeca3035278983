"""What more cached views buy back of the gap to a run without the cache: `avg` on `shared4` at
the comparison's budget (2,000 images x 30 epochs) with 4, 8 and 15 stored views, each against
the uncached `avg` of the same seed (a fresh view every epoch), paired by seed, with a 95 %
t-interval over seeds. Each view count is one `mtkdrl compare` (bench/compare.py's budget and
pool), so this resumes where it stopped:

    python bench/views_gap.py --seeds 0 1 2

The runs go to `--work` (one folder per view count), the records and table to
docs/results/views/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare

from mtkdrl.compare import main as compare_main
from mtkdrl.compare.stats import Interval

UNCACHED = "avg:teacher_cache.mode=off"


def run_compare(views: int, methods: list[str], args: argparse.Namespace) -> list[dict]:
    out = args.out / f"views{views}"
    code = compare_main(
        [str(compare.RECIPE), *compare.pool_overrides("shared4", args.work, views),
         "--methods", *methods, "--seeds", *map(str, args.seeds),
         "--work", str(args.work / f"views{views}"), "--out", str(out), "--resume"]
    )  # fmt: skip
    if code != 0:
        raise SystemExit(code)
    return json.loads((out / "results.json").read_text())["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8, 15])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=compare.REPO.parent / "mtkdrl_views")
    parser.add_argument("--out", type=Path, default=compare.REPO / "docs" / "results" / "views")
    args = parser.parse_args()
    first = run_compare(args.views[0], ["avg", UNCACHED], args)
    uncached = {r["seed"]: r["top1"] for r in first if r["method"] == UNCACHED}
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
        lines.append(
            f"| {views} | {per_seed} | {Interval.of(differences) if differences else '-'} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "views.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
