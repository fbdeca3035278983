"""`mtkdrl distill RECIPE [key=value ...]`, also `python -m mtkdrl.distill` and under
`accelerate launch -m mtkdrl.distill`: the command line of a distillation run.

The loop lives in `mtkdrl.train`; this module only parses arguments and reports errors.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .errors import CommandParser, exit_code
from .train import distill


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="mtkdrl distill", description="Distil a student from one or more teachers."
    )
    parser.add_argument(
        "recipe", help="a recipe YAML file, or a packaged recipe's name (mtkdrl recipes)"
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.epochs=2")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument("--overwrite", action="store_true", help="start again in output_dir")
    parser.add_argument(
        "--dry-run", action="store_true", help="build everything and run two steps on random inputs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """0 for a finished run, 128 + the signal's number for one stopped by SIGTERM/SIGINT (after
    its checkpoint), 2 for an error in the input."""
    args = build_parser().parse_args(argv)
    outcome: dict = {}

    def job() -> None:
        outcome.update(
            distill(args.recipe, args.overrides, args.resume, args.overwrite, args.dry_run)
        )

    code = exit_code(job)
    return 128 + signal.Signals[outcome["signal"]] if code == 0 and "signal" in outcome else code


if __name__ == "__main__":
    sys.exit(main())
