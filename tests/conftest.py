"""Test-wide settings: never reach the Hub, and find the shared CIFAR-10 data and teachers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def pytest_configure(config) -> None:
    """Under `pytest -n N` each worker gets its share of the cores, its subprocesses too, so that
    parallel tests do not oversubscribe them (torch threads that wait on each other are slow)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared CIFAR-10 data folder; tests that need it fail loudly where it is absent."""
    if not (SHARED / "cifar10-jpeg" / "train.parquet").is_file():
        pytest.fail(f"{SHARED} is missing: put the shared data beside the repository")
    return SHARED


@pytest.fixture(scope="session")
def tiny_cifar(shared_data: Path, tmp_path_factory) -> dict[str, str]:
    """The first rows of the shared CIFAR-10 splits as small parquet files (schema kept)."""
    folder = tmp_path_factory.mktemp("tiny_cifar")
    files = {}
    for split, source, rows in (("train", "train.parquet", 96), ("validation", "val.parquet", 64)):
        table = pq.read_table(shared_data / "cifar10-jpeg" / source).slice(0, rows)
        target = folder / f"{split}.parquet"
        pq.write_table(table, target)
        files[split] = str(target)
    return files


@pytest.fixture(scope="session")
def teacher_file(shared_data: Path):
    """Path of a shared pretrained CIFAR-10 teacher by depth."""

    def path(depth: int) -> str:
        return str(shared_data / "teachers" / f"cifar10_resnet{depth}.safetensors")

    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_cifar, teacher_file):
    """Raw recipe data for a short real run: two shared teachers, the tiny CIFAR-10 slices."""

    def raw(out: Path, method: str = "avg", **train) -> dict:
        return {
            "seed": 3,
            "output_dir": str(out),
            "student": {"name": "resnet20_cifar"},
            "teachers": [
                {"name": "resnet20_cifar", "checkpoint": teacher_file(20)},
                {"name": "resnet32_cifar", "checkpoint": teacher_file(32)},
            ],
            "data": {
                "name": "parquet",
                "data_files": tiny_cifar,
                "train_transform": "cifar",
                "batch_size": 16,
                "eval_batch_size": 32,
                "num_workers": 0,
            },
            "method": {"name": method},
            "optim": {"lr": 0.05, "schedule": "multistep", "milestones": [1]},
            # fp32 pinned: `auto` would pick bf16 on some CI machines and move recorded figures
            "train": {"epochs": 2, "log_every": 2, "mixed_precision": "no", **train},
        }

    return raw


@pytest.fixture
def cnn_and_vit_dry_run(tmp_path):
    """A dry run of a method with a CNN and a ViT teacher together; returns its two losses."""
    from mtkdrl import Recipe, distill

    def run(method: str, options: dict | None = None, precision: str = "no") -> list[float]:
        recipe = Recipe.from_dict(
            {
                "output_dir": str(tmp_path / "dry"),
                "student": {"name": "resnet20_cifar"},
                "teachers": [{"name": "resnet32_cifar"}, {"name": "vit_tiny_patch16_224"}],
                "data": {"num_classes": 10, "batch_size": 2},
                "method": {"name": method, "options": options or {}},
                "train": {"mixed_precision": precision},
            }
        )
        return distill(recipe, dry_run=True)["losses"]

    return run


def assert_same_state(a, b, where: str = "") -> None:
    """Two checkpoint states (nested dicts, lists, tensors, plain values) are equal exactly."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture
def same_state():
    """`assert_same_state`, for tests in other folders."""
    return assert_same_state


@pytest.fixture
def same_students():
    """Asserts that two runs ended with the same student and the same last checkpoint (optimizer,
    method state and RNG of every process), tensor for tensor; the metrics log's length, which
    its wall-clock times change, and where each ran, aside."""
    from safetensors.torch import load_file

    from mtkdrl.checkpoint import _read_pair
    from mtkdrl.recipe_diff import differences

    where_it_ran = ("recipe.output_dir:", "recipe.teacher_cache.dir:", "recipe.train.stop_after")

    def check(first: Path, second: Path) -> None:
        a = load_file(str(first / "student_last.safetensors"))
        b = load_file(str(second / "student_last.safetensors"))
        assert_same_state(a, b, "student_last")
        folders = [
            run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
            for run in (first, second)
        ]
        stems = sorted(p.name.split(".")[0] for p in folders[0].glob("*.safetensors"))
        assert stems == sorted(p.name.split(".")[0] for p in folders[1].glob("*.safetensors"))
        for stem in stems:
            a, b = (_read_pair(folder, stem) for folder in folders)
            if stem == "shared":
                a.pop("log_length"), b.pop("log_length")
                changed = differences(a.pop("identity"), b.pop("identity"))
                assert all(item.startswith(where_it_ran) for item in changed), changed
            assert_same_state(a, b, stem)

    return check


@pytest.fixture
def run_and_resumed(tmp_path, tiny_run, same_students):
    """A short real run of a method on the shared data (6 steps an epoch), and the same run
    stopped after `stop_after` steps (a checkpoint there) and resumed; asserts both end with the
    same student and returns the uninterrupted run's summary and folder."""
    from mtkdrl import Recipe, distill

    def run(
        method: str, options: dict | None = None, epochs: int = 1, stop_after: int = 4, **keys
    ) -> tuple[dict, Path]:
        recipes = {}
        for name in ("full", "part"):
            raw = tiny_run(tmp_path / name, method, epochs=epochs, checkpoint_every=2)
            raw["train"]["eval_teachers"] = False
            raw["method"]["options"] = options or {}
            raw["method"].update(keys)
            recipes[name] = Recipe.from_dict(raw)
        summary = distill(recipes["full"])
        part = recipes["part"]
        part.train.stop_after_steps = stop_after
        assert distill(part)["stopped"]
        part.train.stop_after_steps = None
        distill(part, resume=True)
        same_students(tmp_path / "full", tmp_path / "part")
        return summary, tmp_path / "full"

    return run


@pytest.fixture
def two_processes(tmp_path):
    """Runs a raw recipe under `accelerate launch` with 2 CPU processes; asserts that the method's
    and the student's tensors end identical on both ranks and returns them per rank.

    Accelerate starts several CPU processes through torch's elastic launcher when asked for
    `--multi_gpu` with ACCELERATE_USE_CPU set (its `--cpu` flag alone needs MPI for more than one).
    """
    import socket
    import subprocess
    import sys

    import yaml
    from safetensors.torch import load_file

    def run(recipe: dict) -> tuple[list[dict], list[dict]]:
        path = tmp_path / "two_process_recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        script = Path(__file__).parent / "methods" / "two_process_run.py"
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port),
            str(script), str(path), str(tmp_path),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "rank 0: done" in done.stdout and "rank 1: done" in done.stdout
        states = {}
        for kind in ("method", "student"):
            ranks = [load_file(str(tmp_path / f"{kind}_rank{r}.safetensors")) for r in (0, 1)]
            assert_same_state(ranks[0], ranks[1], kind)
            states[kind] = ranks
        return states["method"], states["student"]

    return run
