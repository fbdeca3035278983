"""Kill a run at any instant and resume to the same result.

A short real run (two shared teachers, the shared CIFAR-10 slices, a checkpoint every step, an
evaluation every epoch, a teacher cache being filled) is sent SIGKILL after random delays,
whatever it is doing (a step, evaluation, a checkpoint or cache write), and resumed each time,
until it finishes; its student and its method's state (MTKD-RL's agent) must then equal those
of an uninterrupted run of the same seed, tensor for tensor, and its metrics log that run's
record for record (wall-clock times aside). SIGTERM instead writes a checkpoint
and exits with 128 + 15.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from mtkdrl.checkpoint import _read_pair
from mtkdrl.cli import main as cli
from mtkdrl.outputs import read_records

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
MIN_KILLS = 3


def recipe_file(tmp: Path, tiny_run, name: str, method: str, seed: int, processes: int = 1) -> Path:
    raw = copy.deepcopy(tiny_run(tmp / name, method, epochs=3, checkpoint_every=1))
    raw.update(seed=seed)
    raw["data"]["batch_size"] = 16 // processes  # 6 steps an epoch, whatever the processes
    if method == "mtkdrl":  # the agent acts and learns from the second epoch
        raw["method"]["options"] = {"warmup_epochs": 1}
    raw["train"].update(eval_teachers=False, log_every=1, keep_checkpoints=1)
    raw["teacher_cache"] = {"views": 2, "dir": str(tmp / f"{name}_cache")}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def command(recipe: Path, *flags: str, processes: int = 1) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "mtkdrl", "distill", str(recipe), *flags]
    with socket.socket() as sock:  # a free port: not one a killed launch may still hold
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", str(processes), "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port)]  # fmt: skip
    return [*launch, "-m", "mtkdrl.distill", str(recipe), *flags]


def run_to_end(recipe: Path, processes: int = 1) -> None:
    env = {**ENV, "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command(recipe, processes=processes), capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def final_state(run: Path) -> dict:
    """The finished run's student and, from its last checkpoint, every process's method state."""
    checkpoints = run / "checkpoints"
    last = checkpoints / (checkpoints / "latest").read_text().strip()
    ranks = sorted(p.stem for p in last.glob("rank*.safetensors"))
    return {
        "student": load_file(str(run / "student_last.safetensors")),
        **{rank: _read_pair(last, rank)["method"] for rank in ranks},
        "loop": _read_pair(last, "shared")["loop"],
    }


def log_without_timings(run: Path) -> list[dict]:
    """The run's metrics log, less the figures that are wall-clock times."""
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in read_records(run)]


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def killed_until_done(recipe: Path, run: Path, seed: int, processes: int = 1) -> int:
    """Start the run and SIGKILL it (its whole process group) once it has logged 1-2 more lines
    (a step or an epoch each), after a further random 0-0.4 s, so that kills land anywhere in
    the loop: a step, an evaluation, a checkpoint or cache write; resume, and again, `MIN_KILLS`
    times;
    then let it finish. Returns how many kills landed on a running process."""
    rng, kills = random.Random(seed), 0
    env = {**ENV, "ACCELERATE_USE_CPU": "true"}
    metrics = run / "metrics.jsonl"
    while True:
        resumable = (run / "checkpoints" / "latest").is_file()
        flags = ("--resume",) if resumable else ("--overwrite",)
        before = lines(metrics) if resumable else 0
        process = subprocess.Popen(command(recipe, *flags, processes=processes), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True)  # fmt: skip
        target = before + rng.randint(1, 2)
        while kills < MIN_KILLS and process.poll() is None and lines(metrics) < target:
            time.sleep(0.01)
        if kills < MIN_KILLS and process.poll() is None:
            time.sleep(rng.uniform(0.0, 0.4))
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                assert process.returncode == -signal.SIGKILL
                kills += 1
                continue
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:].decode()
        return kills


@pytest.mark.parametrize(
    ("method", "seed", "processes"),
    [("mtkdrl", 0, 1), ("mtkdrl", 2, 2)],  # MTKD-RL's state is a superset of avg's
    ids=["mtkdrl-1-process", "mtkdrl-2-processes"],
)
def test_sigkill_at_random_instants_resumes_to_the_same_weights(
    tmp_path, tiny_run, same_state, method, seed, processes
):
    reference = recipe_file(tmp_path, tiny_run, "reference", method, seed, processes)
    run_to_end(reference, processes)
    killed = recipe_file(tmp_path, tiny_run, "killed", method, seed, processes)
    kills = killed_until_done(killed, tmp_path / "killed", seed, processes)
    assert kills >= MIN_KILLS
    print(f"{method}, {processes} process(es): {kills} kills survived")
    expected, got = final_state(tmp_path / "reference"), final_state(tmp_path / "killed")
    assert got["loop"]["global_step"] == expected["loop"]["global_step"]
    same_state(expected, got, "final")
    assert log_without_timings(tmp_path / "killed") == log_without_timings(tmp_path / "reference")


@pytest.fixture(scope="module")
def signal_reference(tiny_run, tmp_path_factory) -> Path:
    """The uninterrupted run both signal cases end equal to (trained once)."""
    folder = tmp_path_factory.mktemp("signal_reference")
    run_to_end(recipe_file(folder, tiny_run, "reference", "mtkdrl", 3))
    return folder / "reference"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_write_a_checkpoint_and_exit_cleanly(
    tmp_path, tiny_run, same_state, signal_reference, signum
):
    stopped = recipe_file(tmp_path, tiny_run, "stopped", "mtkdrl", 3)
    process = subprocess.Popen(command(stopped), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and '"step": 2' in metrics.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    assert f"stopped by {signal.Signals(signum).name} after step" in out
    assert not (tmp_path / "stopped" / "summary.json").exists()
    checkpoints = tmp_path / "stopped" / "checkpoints"
    last = checkpoints / (checkpoints / "latest").read_text().strip()
    step = _read_pair(last, "shared")["loop"]["global_step"]
    assert 2 <= step < 18  # written at the step it stopped after, before the end
    resumed = subprocess.run(command(stopped, "--resume"), env=ENV, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = final_state(signal_reference), final_state(tmp_path / "stopped")
    same_state(expected, got, "final")


def export_command(run: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "mtkdrl", "export", str(run), "--repo-id", "someone/mtkdrl-x",
            "--out", str(out), *flags]  # fmt: skip


def export_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sigkill_during_export_leaves_an_export_whole(tmp_path, tiny_run):
    """An export replacing an earlier one is killed at random instants of its writing: each time
    the folder holds the earlier export or the new one, whole; the export that finishes equals an
    uninterrupted one, with nothing left beside it."""
    from mtkdrl import Recipe, distill

    raw = tiny_run(tmp_path / "run", "avg", epochs=1)
    raw["train"]["eval_teachers"] = False
    distill(Recipe.from_dict(raw))
    reference, out = tmp_path / "reference", tmp_path / "export"
    for folder in (reference, out):  # in this process: only the killed exports need their own
        assert cli(export_command(tmp_path / "run", folder)[3:]) == 0
    whole = export_files(reference)
    staging = tmp_path / ".export.partial"
    rng, kills = random.Random(0), 0
    while kills < MIN_KILLS:
        process = subprocess.Popen(export_command(tmp_path / "run", out, "--overwrite"), env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
        while process.poll() is None and not staging.exists():
            time.sleep(0.002)  # its writing has begun
        time.sleep(rng.uniform(0.0, 0.05))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
        shown = out if out.exists() else tmp_path / ".export.former"
        assert export_files(shown) == whole  # the earlier export (equal to the new), whole
    done = subprocess.run(export_command(tmp_path / "run", out, "--overwrite"), env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert export_files(out) == whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".export")) == []
