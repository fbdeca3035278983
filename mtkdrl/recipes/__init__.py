"""The recipes that ship with mtkdrl, known by name: `mtkdrl recipes` lists them, `mtkdrl recipes
NAME` prints one to save and edit, and a name works wherever a recipe file does.

Packaged recipes name their data and teachers the way anyone gets them (Hub data sets, timm
pretrained tags), so they hold no local paths; a recipe file can start from one with `base: NAME`
and override what differs (the repository's `recipes/quickstart.yaml` points it at local files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CommandParser, MtkdrlError, exit_code

PACKAGED_DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    """The packaged recipes' names, sorted."""
    return sorted(path.stem for path in PACKAGED_DIR.glob("*.yaml"))


def packaged_recipe(name: str) -> Path | None:
    """The file of packaged recipe `name`, or None when no packaged recipe has that name."""
    return PACKAGED_DIR / f"{name}.yaml" if name in names() else None


def summary(name: str) -> str:
    """A packaged recipe's one-line description: its first comment line."""
    for line in (PACKAGED_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def require(name: str, field: str) -> Path:
    """Packaged recipe `name`, or one line naming `field` and the valid names."""
    path = packaged_recipe(name)
    if path is None:
        raise MtkdrlError(
            f"{field}: no packaged recipe {name!r}; packaged recipes: {', '.join(names())} "
            "(mtkdrl recipes)"
        )
    return path


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="mtkdrl recipes",
        description="List the packaged recipes, or print one (save it, edit it, distil from it).",
        epilog="example: mtkdrl recipes quickstart > my_recipe.yaml",
    )
    parser.add_argument("name", nargs="?", help="the recipe to print; without it, list them all")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        if args.name is None:
            width = max(map(len, names()))
            for name in names():
                print(f"{name:{width}s}  {summary(name)}")
        else:
            sys.stdout.write(require(args.name, "recipe").read_text(encoding="utf-8"))

    return exit_code(job)
