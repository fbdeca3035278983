"""The `mtkdrl zoo` command: `list`, `card`, `add` and `verify` on the registry (`zoo.py`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import CommandParser, exit_code
from .export import add_card_options, card_options, report
from .zoo import DEFAULT_REGISTRY, Registry, add_run, format_table, regenerate_card
from .zoo_verify import TOLERANCE, verify


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="mtkdrl zoo", description=__doc__)
    commands = parser.add_subparsers(dest="action", required=True)
    common = CommandParser(add_help=False)
    common.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, help="registry file")
    common.add_argument("--org", help="Hub organisation (default: the registry's, mtkdrl)")
    listing = commands.add_parser("list", parents=[common], help="print students and teachers")
    listing.add_argument("--markdown", action="store_true", help="Markdown tables")
    card = commands.add_parser("card", parents=[common], help="rewrite an entry's model card")
    card.add_argument("name", help="the entry's name (see `mtkdrl zoo list`)")
    card.add_argument("--template", type=Path, help="model-card template (default: packaged)")
    card.add_argument(
        "--run", type=Path, help="the run the entry was exported from (default: the recorded one)"
    )
    add = commands.add_parser("add", parents=[common], help="export a run and record it")
    add.add_argument("run_dir", type=Path, help="a finished run's output_dir")
    add.add_argument("--name", required=True, help="entry name, e.g. resnet20-cifar10-mtkdrl")
    add.add_argument("--repo-name", help="Hub repo name (default mtkdrl-NAME)")
    add.add_argument("--export-dir", type=Path, help="where to export (default exports/NAME)")
    add.add_argument(
        "--recipe",
        type=Path,
        help="the recipe file the run was made from; the overrides that turn it into the run's "
        "recipe.yaml are recorded with it",
    )
    add.add_argument(
        "--override", action="append", default=[], help="an override the run used (key=value)"
    )
    add.add_argument(
        "--baseline", help="the no-KD student of the same schedule (an entry): the gain is over it"
    )
    add_card_options(add)
    check = commands.add_parser(
        "verify", parents=[common], help="re-measure entries from their exports (timm local-dir:)"
    )
    check.add_argument(
        "names", nargs="*", help="entries to verify (default: every student exported here)"
    )
    check.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="points a figure may be off (0.1)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(lambda: ACTIONS[args.action](args))


def _list(args: argparse.Namespace) -> None:
    print(format_table(Registry.load(args.registry), args.org, args.markdown))


def _card(args: argparse.Namespace) -> None:
    registry = Registry.load(args.registry)
    print(f"wrote {regenerate_card(registry, args.name, args.org, args.template, args.run)}")


def _add(args: argparse.Namespace) -> None:
    registry = Registry.load(args.registry)
    _, export = add_run(
        registry,
        args.run_dir,
        args.name,
        args.export_dir or Path("exports") / args.name,
        card_options(args),
        repo=args.repo_name,
        recipe=args.recipe,
        overrides=tuple(args.override),
        organisation=args.org,
        baseline=args.baseline,
    )
    print(report(export))
    print(f"recorded {args.name!r} in {registry.path}")


def _verify(args: argparse.Namespace) -> None:
    verify(Registry.load(args.registry), args.names, args.tolerance)


ACTIONS = {"list": _list, "card": _card, "add": _add, "verify": _verify}


if __name__ == "__main__":
    sys.exit(main())
