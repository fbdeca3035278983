"""What a PyPI user gets: the sdist and wheel pass `twine check`, and the wheel, installed into a
fresh venv and run from an empty folder, lists and prints its recipes, distils from a printed
one pointed at local data, and lists the zoo.

The fresh venv holds the wheel alone; its dependencies (torch, timm, ...) are read from the test
environment through a path file, so nothing is downloaded and this repository is not importable
there (the test checks which `mtkdrl` it ran).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}


def check(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel, built from this checkout without network access."""
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)]
    check(build, out)
    return out


def test_sdist_and_wheel_pass_twine_check(dist):
    files = sorted(str(p) for p in dist.iterdir())
    assert sorted(Path(f).suffix for f in files) == [".gz", ".whl"]
    assert "PASSED" in check([sys.executable, "-m", "twine", "check", "--strict", *files], dist)


def test_the_wheel_alone_works_from_an_empty_folder(dist, shared_data, tmp_path):
    venv = tmp_path / "venv"
    check([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    check([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
           "--no-index", str(wheel)], tmp_path)  # fmt: skip
    venv_site = check([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                      tmp_path).strip()  # fmt: skip
    dependencies = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (Path(venv_site) / "test_dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    work = tmp_path / "empty"
    work.mkdir()
    mtkdrl = str(venv / "bin" / "mtkdrl")
    where = check([str(python), "-c", "import mtkdrl; print(mtkdrl.__file__)"], work)
    assert where.startswith(venv_site), where

    listed = check([mtkdrl, "recipes"], work)
    assert [line.split()[0] for line in listed.splitlines()][:1] == ["cifar10_mtkdrl"]
    assert "quickstart" in listed
    (work / "q.yaml").write_text(check([mtkdrl, "recipes", "quickstart"], work))
    data = shared_data / "cifar10-jpeg"
    teacher = shared_data / "teachers" / "cifar10_resnet20.safetensors"
    files = f"{{train: {data / 'train.parquet'}, validation: {data / 'val.parquet'}}}"
    check([mtkdrl, "distill", "q.yaml", "data.name=parquet", "data.eval_split=validation",
           f"data.data_files={files}",
           f"teachers=[{{name: resnet20_cifar, checkpoint: {teacher}}}]",
           "data.train_subset=64", "data.eval_subset=100", "train.epochs=1",
           "teacher_cache.views=1", "output_dir=runs/q"], work)  # fmt: skip
    assert (work / "runs" / "q" / "student_best.safetensors").is_file()
    zoo = check([mtkdrl, "zoo", "list"], work)
    assert "mtkdrl/mtkdrl-resnet20-cifar10-avg-hint" in zoo
    assert "mtkdrl/resnet56_cifar.akamaster_cifar10" in zoo
