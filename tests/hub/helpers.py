"""Helpers of the Hub tests: file digests, a Hugging Face cache laid out by hand, and loading
from it in a fresh process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CIFAR_REPO = "mtkdrl-test/mtkdrl-resnet20-cifar10-mtkdrl"
RESNET18_REPO = "mtkdrl-test/mtkdrl-resnet18-cifar10-none"
CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """Lay `folder`'s files out as huggingface_hub caches a download of `repo_id` at `main`:
    blobs named by their hash (SHA-256 for LFS files, the git blob SHA-1 for the others), a
    snapshot folder of relative symlinks to them, and `refs/main` naming that snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blobs = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = path.read_bytes()
        if path.suffix in (".safetensors", ".png"):
            blobs[path.name] = (hashlib.sha256(data).hexdigest(), data)
        else:
            blobs[path.name] = (hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), data)
    commit = hashlib.sha1("".join(h for h, _ in blobs.values()).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, (digest, data) in blobs.items():
        (repo / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def load_from_hub(tmp: Path, repo_id: str, images: torch.Tensor, import_mtkdrl: bool) -> dict:
    """Load `hf-hub:repo_id` with timm in a fresh, offline process whose Hub cache is `tmp/hub`;
    returns its logits on `images` and what it reports (see `load_from_hub.py`)."""
    from safetensors.torch import load_file, save_file

    save_file({"images": images.contiguous()}, str(tmp / "images.safetensors"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp / "hf_home"),
        "HF_HUB_CACHE": str(tmp / "hub"),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, str(HERE / "load_from_hub.py"), repo_id, str(tmp)]
    if import_mtkdrl:
        command.append("--import-mtkdrl")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp / "loaded.json").read_text())
    result["logits"] = load_file(str(tmp / "logits.safetensors"))["logits"]
    return result
