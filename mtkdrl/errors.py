"""User-facing errors: one clear line naming the field, file or model at fault."""

from __future__ import annotations

import sys
from collections.abc import Callable


class MtkdrlError(Exception):
    """An error caused by user input (recipe, data, weights); the CLI prints it as one line."""


def first_line(err: BaseException) -> str:
    """The first line of an error's text, or its type name when it has none."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def exit_code(job: Callable[[], object]) -> int:
    """Run a command's job: 0, or 2 after printing its `MtkdrlError` as one error line."""
    try:
        job()
    except MtkdrlError as err:
        print(f"mtkdrl: error: {err}", file=sys.stderr)
        return 2
    return 0
