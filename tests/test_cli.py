"""The `mtkdrl` command: its help lists every command with examples, `python -m mtkdrl.distill`
starts without runpy's warning, and the package's `distill` stays the function."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys

from mtkdrl.cli import COMMANDS, main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_help_lists_every_command_and_examples(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name} " in text for name in COMMANDS)
    examples = text.split("examples:\n", 1)[1]
    assert sum(line.startswith("  mtkdrl ") for line in examples.splitlines()) == 3


def test_python_m_distill_prints_no_warning():
    done = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "mtkdrl.distill", "--help"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mtkdrl distill") and done.stderr == ""


def test_the_package_distill_is_the_function_after_the_command_is_imported():
    importlib.import_module("mtkdrl.cli")  # imports the `mtkdrl.distill` module too
    from mtkdrl import distill

    assert distill is importlib.import_module("mtkdrl.train").distill


class _ClosedPipe(io.StringIO):
    """A stdout whose reader has gone, as `mtkdrl zoo list | head` leaves it."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        return self.fd


def test_a_reader_that_stops_early_is_no_error(tmp_path, monkeypatch, capsys):
    with open(tmp_path / "stdout", "w") as target:
        monkeypatch.setattr(sys, "stdout", _ClosedPipe(target.fileno()))
        assert main(["zoo", "list"]) == 0
    assert capsys.readouterr().err == ""
