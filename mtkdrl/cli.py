"""The `mtkdrl` console command: one sub-command per job, each delegating to its module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .compare import main as compare_main
from .distill import main as distill_main
from .evaluate import main as evaluate_main
from .fill_cache import main as cache_main
from .hub.export import main as export_main
from .hub.push import main as push_main
from .hub.zoo import main as zoo_main
from .plot import main as plot_main

COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "distill": ("distil a student from a recipe", distill_main),
    "compare": ("which method for your teachers: methods x seeds, with intervals", compare_main),
    "cache": ("fill the teacher-output cache of a recipe, without training", cache_main),
    "evaluate": ("top-1/top-5 of a model on a data set", evaluate_main),
    "plot": ("PNG of a run's learned teacher weights and accuracy", plot_main),
    "export": ("a run's student as a timm Hub repo folder, with its model card", export_main),
    "push": ("upload an export to the Hugging Face Hub", push_main),
    "zoo": ("the registry of published students: list, card, add", zoo_main),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="mtkdrl", description=__doc__)
    parser.add_argument("command", choices=sorted(COMMANDS), help="what to do")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        for name, (text, _) in sorted(COMMANDS.items()):
            print(f"  {name:10s} {text}")
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    return COMMANDS[args.command][1](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
