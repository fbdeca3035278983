"""`mtkdrl compare RECIPE --methods NAME… [--features KIND…] [--seeds N…] --work DIR [--resume]`:
which method makes the best student from the user's own recipe, with 95 % intervals over seeds.

Each (method, feature term, seed) is one run of the recipe in a fresh `python -m mtkdrl distill`
process, at the recipe's own budget; every run reads one teacher cache under `--work`, filled
once per seed by the first run that needs it (`teacher_cache.store=all`, so every method finds
what it reads). Runs go seed by seed, so each finished seed pairs every row.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..data import load_splits
from ..errors import CommandParser, MtkdrlError, exit_code
from ..outputs import read_epochs
from ..recipe import Recipe, parse_value
from ..train import distill
from .record import Record, budget_of, without_paths
from .report import markdown, plot, standings, verdict
from .rows import RECIPE_FEATURE, Row, feature_row, method_row

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="mtkdrl compare",
        description="Which method makes the best student from your recipe: every (method, "
        "feature term, seed) trained at the recipe's budget, with 95 % intervals over seeds.",
        epilog="example: mtkdrl compare my_recipe.yaml --methods avg mtkdrl "
        "'mtkdrl:agent_update=reinforce' --features none hint:stage=2,beta=50 --seeds 0 1 2 "
        "--work runs/compare",
    )
    parser.add_argument(
        "recipe", help="your recipe (data, student, teachers): a file or a packaged name"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every run")
    parser.add_argument(
        "--methods",
        nargs="+",
        required=True,
        metavar="NAME[:key=value,…]",
        help="method rows: a method name, its options or objective fields",
    )
    parser.add_argument(
        "--features",
        nargs="+",
        metavar="KIND[:key=value,…]",
        help="feature terms (none, map, hint; beta= is the term's weight); "
        "the recipe's own when left out",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs and cache")
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for results.json, compare.md and "
        "the plot (default: --work); keep it in a repository to share it",
    )
    parser.add_argument(
        "--reference", default="avg", help="the method others are measured against (default: avg)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a comparison: skip recorded runs, continue a run that was cut off",
    )
    return parser


def slug(text: str) -> str:
    """A folder name for a row label."""
    return "".join(c if c.isalnum() or c in "+-." else "_" for c in text).strip("_") or "_"


def run_dir(work: Path, method: str, feature: str, seed: int) -> Path:
    """Where the run of one (method row, feature row, seed) lives under `--work`."""
    return work / "runs" / slug(method) / slug(feature) / f"seed{seed}"


def shown_override(item: str) -> str:
    """An override as published: local paths in its value cut to their file names."""
    key, _, text = item.partition("=")
    value = without_paths(parse_value(text), lambda path: path.name)
    shown = yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n")
    return f"{key}={shown.strip()}"


class Comparison:
    """The runs of one comparison and its record."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.recipe_path = Path(args.recipe)
        base = Recipe.from_yaml(self.recipe_path, args.overrides)
        self.base = base
        self.methods = [method_row(text) for text in args.methods]
        self.features = (
            [feature_row(t) for t in args.features] if args.features else [RECIPE_FEATURE]
        )
        self.check_rows()
        out = args.out or args.work
        self.out = out
        self.record = Record.open(out / "results.json", budget_of(base))
        if not args.resume and (self.record.rows or (args.work / "runs").is_dir()):
            raise MtkdrlError(
                f"--work {args.work} already holds a comparison: pass --resume to continue it, "
                "or another --work"
            )
        self.child: subprocess.Popen | None = None

    def check_rows(self) -> None:
        """Build every (method, feature) row and take two steps on random inputs before hours of
        runs, so a pairing that cannot run (a method that refuses a feature term, say) is refused
        now in one line, not when its turn comes."""
        classes = self.base.data.num_classes or load_splits(self.base.data)[2].num_classes
        for method in self.methods:
            for feature in self.features:
                overrides = [*self.overrides(method, feature, 0), f"data.num_classes={classes}"]
                try:
                    with contextlib.redirect_stdout(io.StringIO()):
                        distill(self.recipe_path, overrides, dry_run=True)
                except MtkdrlError as error:
                    raise MtkdrlError(
                        f"row {method.label} / {feature.label} cannot run: {error}"
                    ) from None

    def overrides(self, method: Row, feature: Row, seed: int) -> list[str]:
        return [*self.args.overrides, *feature.overrides, *method.overrides, f"seed={seed}"]

    def plan(self) -> list[tuple[Row, Row, int]]:
        """The runs not yet recorded, seed by seed."""
        return [
            (method, feature, seed)
            for seed in self.args.seeds
            for feature in self.features
            for method in self.methods
            if (method.label, feature.label, seed) not in self.record.rows
        ]

    def train(self, method: Row, feature: Row, seed: int) -> Path:
        """One run in a fresh process: continued where it was cut off, else started afresh."""
        out = run_dir(self.args.work, method.label, feature.label, seed)
        if (out / "summary.json").is_file():
            return out
        out.mkdir(parents=True, exist_ok=True)
        flag = "--resume" if (out / "checkpoints" / "latest").is_file() else "--overwrite"
        command = [
            sys.executable, "-m", "mtkdrl", "distill", str(self.recipe_path),
            *self.overrides(method, feature, seed), f"output_dir={out}",
            f"teacher_cache.dir={self.args.work / 'cache'}", "teacher_cache.store=all", flag,
        ]  # fmt: skip
        log_path = out / "compare.log"
        with open(log_path, "a") as log:
            log.write(f"$ {shlex.join(command)}\n")
            log.flush()
            self.child = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}
            )
            code = self.child.wait()
            self.child = None
        if code != 0:
            lines = log_path.read_text().strip().splitlines()
            raise MtkdrlError(
                f"run {method.label} / {feature.label} / seed {seed} failed (exit {code}): "
                f"{lines[-1] if lines else 'no output'} (log: {log_path})"
            )
        return out

    def row(self, method: Row, feature: Row, seed: int, out: Path) -> dict:
        """A finished run's figures; time per epoch is its fastest epoch's, the one least slowed
        by other work (the cache-filling epoch aside, every epoch does the same work)."""
        summary = json.loads((out / "summary.json").read_text())
        return {
            "method": method.label,
            "feature": feature.label,
            "seed": seed,
            "top1": summary["last_top1"],
            "top5": summary["last_top5"],
            "epoch_seconds": min(e["epoch_seconds"] for e in read_epochs(out)),
            "peak_memory_mb": summary["peak_memory_mb"],
            "threads": int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))),
            "run": str(out.relative_to(self.args.work)),
        }

    def forward(self, signum: int, frame) -> None:
        """Pass SIGTERM/SIGINT to the run in progress, so it checkpoints before stopping."""
        if self.child is not None:
            self.child.send_signal(signum)
        raise MtkdrlError(f"stopped by {signal.Signals(signum).name}: --resume continues it")

    def run_all(self) -> None:
        plan = self.plan()
        done = len(self.args.seeds) * len(self.methods) * len(self.features) - len(plan)
        print(f"{done} runs recorded, {len(plan)} to go; record: {self.out / 'results.json'}")
        for index, (method, feature, seed) in enumerate(plan, start=1):
            started = time.perf_counter()
            out = self.train(method, feature, seed)
            row = self.row(method, feature, seed, out)
            self.record.add(row)
            print(
                f"[{index}/{len(plan)}] {method.label} / {feature.label} / seed {seed}: "
                f"top-1 {row['top1']:.2f} % in {time.perf_counter() - started:.0f} s",
                flush=True,
            )

    def header(self) -> str:
        """What the figures are, with no local path: the recipe's name, models and budget."""
        base, args = self.base, self.args
        teachers = ", ".join(t.name for t in base.teachers)
        subset = base.data.train_subset or "all"
        recorded = list(self.record.rows)  # every row of the record, not this sitting's only
        features = list(dict.fromkeys(feature for _, feature, _ in recorded))
        command = shlex.join(
            [
                "mtkdrl",
                "compare",
                self.recipe_path.name,
                *map(shown_override, args.overrides),
                "--methods",
                *dict.fromkeys(method for method, _, _ in recorded),
                *(["--features", *features] if features != [RECIPE_FEATURE.label] else []),
                "--seeds",
                *map(str, sorted({seed for _, _, seed in recorded})),
                "--work",
                "DIR",
                "--resume",
            ]
        )
        return (
            f"Recipe `{self.recipe_path.name}`: student {base.student.name}, teachers {teachers}; "
            f"{subset} training images x {base.train.epochs} epochs, batch {base.data.batch_size}; "
            "top-1 at the last epoch on the validation split; time per epoch the fastest epoch, "
            "ratios to the reference with the same feature term. Reproduce (resumable): "
            f"`{command}`"
        )

    def report(self) -> None:
        rows = standings(self.record)
        if not rows:
            return
        (self.out / "compare.md").write_text(markdown(rows, self.args.reference, self.header()))
        drawn = plot(rows, self.out / "compare.png")
        print(
            f"wrote {self.out / 'compare.md'}"
            + ("" if drawn else " (no plot: pip install 'mtkdrl[plot]')")
        )
        for line in verdict(rows, self.args.reference):
            print(line)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        comparison = Comparison(args)
        previous = {
            s: signal.signal(s, comparison.forward) for s in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            comparison.run_all()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            comparison.report()

    return exit_code(job)


if __name__ == "__main__":
    sys.exit(main())
