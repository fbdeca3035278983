"""`mtkdrl compare` on a recipe of the user's own: two methods x two seeds on a tiny slice, killed
after its first run and resumed to the end, a changed budget refused, the verdict printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mtkdrl.compare import main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture
def user_recipe(tmp_path, tiny_run) -> Path:
    raw = tiny_run(tmp_path / "unused", epochs=1)
    raw["data"]["train_subset"] = 32  # 2 steps of 16
    raw["train"]["eval_teachers"] = False
    path = tmp_path / "my_recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def rows(work: Path) -> list[dict]:
    path = work / "results.json"
    return json.loads(path.read_text())["results"] if path.is_file() else []


def test_compare_resumes_after_a_kill_and_prints_its_verdict(
    user_recipe, tmp_path, capsys, teacher_file
):
    work = tmp_path / "work"
    teacher = Path(teacher_file(32))  # the recipe's own, named again on the command line
    args = [str(user_recipe), f"teachers.1.checkpoint={teacher}", "--methods", "avg", "ebkd",
            "--seeds", "0", "1", "--work", str(work)]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "mtkdrl", "compare", *args], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not rows(work) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the comparison and its run in progress, at once
    first.wait()
    recorded = rows(work)
    assert len(recorded) == 1, first.stderr.read()[-2000:]

    assert main(args) == 2  # an existing comparison is not started over silently
    assert "pass --resume to continue it" in capsys.readouterr().err

    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    final = rows(work)
    assert len(final) == 4 and final[0] == recorded[0]  # the killed sitting's row kept
    assert {(r["method"], r["seed"]) for r in final} == {
        (m, s) for m in ("avg", "ebkd") for s in (0, 1)
    }
    assert all(0 <= r["top1"] <= 100 and r["epoch_seconds"] > 0 for r in final)
    assert "1 runs recorded, 3 to go" in out
    leader = max(("avg", "ebkd"), key=lambda m: sum(r["top1"] for r in final if r["method"] == m))
    assert f"leader: {leader}, top-1 " in out
    assert "tied with the leader" in out or "no row is tied" in out
    table = (work / "compare.md").read_text()
    assert "my_recipe.yaml" in table and str(tmp_path) not in table  # no local path
    assert f"teachers.1.checkpoint={teacher.name}" in table and str(teacher.parent) not in table
    assert str(tmp_path) not in (work / "results.json").read_text()  # files by name and hash
    assert (work / "compare.png").stat().st_size > 0

    assert main([*args[:1], "train.epochs=2", *args[1:], "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train.epochs: 1 -> 2" in err
    assert rows(work) == final  # the record is untouched


def test_a_row_that_cannot_run_is_refused_before_any_run(user_recipe, tmp_path, capsys):
    work = tmp_path / "work"
    args = [str(user_recipe), "--methods", "avg", "ca_mkd", "--features", "hint:stage=2,beta=50",
            "--seeds", "0", "--work", str(work)]  # fmt: skip
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the data set's progress bars
    assert last.startswith("mtkdrl: error: row ca_mkd / hint:stage=2,beta=50 cannot run: "), last
    assert "method.feature" in last
    assert not (work / "runs").exists() and rows(work) == []  # refused before the first run
