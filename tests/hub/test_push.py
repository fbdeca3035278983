"""`mtkdrl push`: the dry run lists the files; a failed push says why, leaves the export as it
was and never shows the token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtkdrl.errors import MtkdrlError
from mtkdrl.hub.push import PushConfig, export_files, main, push_export, scrub

from .helpers import CIFAR_REPO, tree_digest

FAKE_TOKEN = "hf_fakeTOKEN123"


def run_push(folder: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`mtkdrl push` in a fresh process, with its own HF_HOME (so no stored token) and `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    command = [sys.executable, "-m", "mtkdrl", "push", str(folder), "--repo-id", CIFAR_REPO]
    environment = {**base, "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def test_dry_run_lists_every_file_with_its_size(cifar_export, capsys):
    assert main([str(cifar_export), "--repo-id", CIFAR_REPO, "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out
    assert f"would upload to {CIFAR_REPO}@main (private), 4 files:" in out
    names = ["README.md", "config.json", "model.safetensors", "teacher_weights.png"]
    assert [name for name, _ in export_files(cifar_export)] == names
    for name in names:
        size = (cifar_export / name).stat().st_size
        assert f"{size:,d}  {name}" in out


def test_push_to_an_unreachable_hub_fails_cleanly_without_the_token(cifar_export, tmp_path):
    before = tree_digest(cifar_export)
    done = run_push(
        cifar_export,
        tmp_path,
        HF_TOKEN=FAKE_TOKEN,
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_OFFLINE="0",
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"mtkdrl: error: push to {CIFAR_REPO} failed")
    assert done.stderr.count("\n") == 1 and "is the Hub reachable" in done.stderr
    assert FAKE_TOKEN not in done.stdout + done.stderr
    assert tree_digest(cifar_export) == before


def test_push_offline_or_without_a_token_says_so(cifar_export, tmp_path):
    offline = run_push(cifar_export, tmp_path, HF_TOKEN=FAKE_TOKEN, HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and "offline mode is enabled" in offline.stderr
    assert FAKE_TOKEN not in offline.stdout + offline.stderr
    anonymous = run_push(cifar_export, tmp_path, HF_HUB_OFFLINE="1")
    assert anonymous.returncode == 2
    assert "no Hugging Face token found: set HF_TOKEN or run `hf auth login`" in anonymous.stderr


def test_push_checks_the_folder_and_repo_id_first(cifar_run, cifar_export, tmp_path):
    with pytest.raises(MtkdrlError, match=r"is not an export: it has no config.json"):
        push_export(PushConfig(cifar_run, CIFAR_REPO))
    with pytest.raises(MtkdrlError, match=r"no such directory"):
        push_export(PushConfig(tmp_path / "missing", CIFAR_REPO))
    with pytest.raises(MtkdrlError, match=r"'bad id/x' is not a valid Hub repo id"):
        push_export(PushConfig(cifar_export, "bad id/x"))


def test_scrub_hides_the_token():
    assert scrub(f"401 for token {FAKE_TOKEN}", FAKE_TOKEN) == "401 for token hf_***"
    assert scrub("nothing secret", None) == "nothing secret"
