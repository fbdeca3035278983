"""One run per output folder: while a real run trains, a second run into its folder (fresh,
`--overwrite` or `--resume`) refuses in one line and deletes nothing; once the first is killed,
its lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from accelerate import Accelerator

from mtkdrl.cli import main
from mtkdrl.errors import MtkdrlError
from mtkdrl.run_lock import LOCK_NAME, RunLock

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def test_a_second_run_into_a_live_runs_folder_refuses(tmp_path, tiny_run, capsys):
    out = tmp_path / "run"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_run(out, epochs=200, checkpoint_every=2)))
    first = subprocess.Popen([sys.executable, "-m", "mtkdrl", "distill", str(recipe)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "latest").is_file() and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()[-2000:]
            time.sleep(0.5)
        assert f"pid {first.pid} on " in (out / LOCK_NAME).read_text()
        before = sorted(p.relative_to(out) for p in out.rglob("*") if "checkpoints" not in p.parts)
        assert main(["distill", str(recipe)]) == 2  # refused before the lock is even tried
        assert f"output_dir {out} already holds a run" in capsys.readouterr().err
        for flags in (["--overwrite"], ["--resume"], ["teacher_cache.mode=off", "--overwrite"]):
            assert main(["distill", str(recipe), *flags]) == 2, flags
            err = capsys.readouterr().err.strip()
            assert "\n" not in err, err
            assert f"output_dir {out} is in use by another run (pid {first.pid} on " in err
            assert first.poll() is None  # the live run goes on
        kept = sorted(p.relative_to(out) for p in out.rglob("*") if "checkpoints" not in p.parts)
        assert set(before) <= set(kept)  # nothing of the live run's was removed
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    lock = RunLock.acquire(Accelerator(cpu=True), out)  # a killed run's lock is taken over
    assert f"pid {os.getpid()} on " in (out / LOCK_NAME).read_text()
    lock.release()


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("someone else's file\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(elsewhere)
    with pytest.raises(MtkdrlError) as refused:
        RunLock.acquire(Accelerator(cpu=True), out)
    message = str(refused.value)
    assert message.startswith(f"output_dir: cannot open {out / LOCK_NAME} (")
    assert "\n" not in message
    assert elsewhere.read_text() == "someone else's file\n"
