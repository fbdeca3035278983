"""The `mtkdrl` console command: one sub-command per job, each delegating to its module."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .compare import main as compare_main
from .distill import main as distill_main
from .errors import CommandParser
from .evaluate import main as evaluate_main
from .fill_cache import main as cache_main
from .hub.export import main as export_main
from .hub.push import main as push_main
from .hub.zoo_command import main as zoo_main
from .plot import main as plot_main
from .recipes import main as recipes_main
from .train import distill

# importing the `mtkdrl.distill` module (above) set the package's `distill` to it; the package's
# `distill` is the function (the module is what `python -m mtkdrl.distill` runs)
sys.modules[__package__].distill = distill

COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "distill": ("distil a student from a recipe", distill_main),
    "recipes": ("list the packaged recipes, or print one to save and edit", recipes_main),
    "compare": ("which method for your teachers: methods x seeds, with intervals", compare_main),
    "cache": ("fill the teacher-output cache of a recipe, without training", cache_main),
    "evaluate": ("top-1/top-5 of a model on a data set", evaluate_main),
    "plot": ("PNG of a run's learned teacher weights and accuracy", plot_main),
    "export": ("a run's student as a timm Hub repo folder, with its model card", export_main),
    "push": ("upload an export to the Hugging Face Hub", push_main),
    "zoo": ("the registry of published students: list, card, add", zoo_main),
}


EXAMPLES = """examples:
  mtkdrl recipes quickstart > my_recipe.yaml                 a packaged recipe, to edit
  mtkdrl distill my_recipe.yaml train.epochs=5               distil, overriding a recipe key
  mtkdrl compare my_recipe.yaml --methods avg mtkdrl --seeds 0 1 2 --work runs/compare

`mtkdrl COMMAND --help` for a command's arguments."""


def build_parser() -> CommandParser:
    commands = "\n".join(f"  {name:10s} {text}" for name, (text, _) in COMMANDS.items())
    parser = CommandParser(
        prog="mtkdrl",
        usage="mtkdrl COMMAND [ARGS ...]",
        description="Multi-teacher knowledge distillation for timm models.",
        epilog=f"commands:\n{commands}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="what to do")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    try:
        return COMMANDS[args.command][1](argv[1:])
    except SystemExit as stop:  # the command's parser refused its arguments, or printed --help
        return stop.code if isinstance(stop.code, int) else 2
    except BrokenPipeError:  # the reader stopped early (`mtkdrl zoo list | head`): no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet flush at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
