"""User-facing errors: one clear line naming the field, file or model at fault."""

from __future__ import annotations

import argparse
import errno
import reprlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn


class MtkdrlError(Exception):
    """An error caused by user input (recipe, data, weights); the CLI prints it as one line."""


def first_line(err: BaseException) -> str:
    """The first line of an error's text, or its type name when it has none."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def shown(value: Any) -> str:
    """A value as an error line shows it: its repr, cut short."""
    return _SHORT_REPR.repr(value)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = short.maxother = 80
    short.maxlist = short.maxdict = 6
    short.maxlevel = 2
    return short


_SHORT_REPR = _short_repr()


def user_message(err: MtkdrlError) -> str:
    """The error's own line, also when a DataLoader worker raised it: torch re-raises it in the
    main process with the worker's traceback as its text, the original line last."""
    text = str(err)
    marker = f"{MtkdrlError.__module__}.{MtkdrlError.__name__}: "
    if "Original Traceback" in text and marker in text:
        return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    return first_line(err)


def exit_code(job: Callable[[], object]) -> int:
    """Run a command's job: 0, or 2 after printing its `MtkdrlError` as one error line."""
    try:
        job()
    except MtkdrlError as err:
        print(f"mtkdrl: error: {user_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        print(
            f"mtkdrl: error: too many open files ({first_line(err)}): raise the limit "
            "(`ulimit -n 4096`) or lower data.num_workers",
            file=sys.stderr,
        )
        return 2
    return 0


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one `mtkdrl: error:` line, as every other error
    of the commands is (argparse's own print the usage first)."""

    def error(self, message: str) -> NoReturn:
        print(f"mtkdrl: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
