"""Fixtures of the Hub tests: a real tiny MTKD-RL run, a timm `resnet18` run directory, the
CIFAR run's export, and a copy of the shipped registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

from mtkdrl import Recipe, distill
from mtkdrl.checkpoint import save_weights_atomic
from mtkdrl.hub import ExportConfig, ExportOptions, export_run
from mtkdrl.plot import plot_run

from .helpers import CIFAR_MEAN, CIFAR_REPO, CIFAR_STD

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_REGISTRY = REPO_ROOT / "mtkdrl" / "hub" / "registry.yaml"


@pytest.fixture(scope="session")
def cifar_run(tiny_run, tmp_path_factory) -> Path:
    """A real two-epoch MTKD-RL run (resnet20_cifar from two shared teachers) and its plot."""
    out = tmp_path_factory.mktemp("cifar") / "run"
    raw = tiny_run(out, "mtkdrl")
    raw.update(seed=1, optim={"lr": 0.05, "schedule": "constant"})
    raw["method"]["options"] = {"warmup_epochs": 1}
    distill(Recipe.from_dict(raw))
    plot_run(out)
    return out


@pytest.fixture(scope="session")
def cifar_export(cifar_run, tmp_path_factory) -> Path:
    """The CIFAR run exported with its card (CIFAR-10 named as the Hub's uoft-cs/cifar10)."""
    out = tmp_path_factory.mktemp("cifar_export") / "export"
    options = ExportOptions(dataset_id="uoft-cs/cifar10", dataset_name="CIFAR-10")
    config = ExportConfig(cifar_run, CIFAR_REPO, out, options)
    export_run(config)
    return out


@pytest.fixture(scope="session")
def resnet18_run(tiny_cifar, teacher_file, tmp_path_factory) -> Path:
    """A run directory as the distiller leaves it, for a plain timm `resnet18` student with 10
    classes and CIFAR mean/std; its weights (BatchNorm statistics too) are random, not trained."""
    out = tmp_path_factory.mktemp("resnet18") / "run"
    out.mkdir()
    recipe = Recipe.from_dict(
        {
            "output_dir": str(out),
            "student": {"name": "resnet18", "mean": CIFAR_MEAN, "std": CIFAR_STD},
            "teachers": [{"name": "resnet20_cifar", "checkpoint": teacher_file(20)}],
            "data": {"name": "parquet", "data_files": tiny_cifar, "num_workers": 0},
            "method": {"name": "none"},
            "train": {"epochs": 1},
        }
    )
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10)
    for name, buffer in model.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            buffer.copy_(torch.rand_like(buffer) + 0.5)
    for which in ("best", "last"):
        save_weights_atomic(model, out / f"student_{which}.safetensors", {"epoch": "0"})
    teachers = [{"name": "resnet20_cifar", "top1": 81.25, "top5": 98.4375, "count": 64}]
    (out / "teachers.json").write_text(json.dumps(teachers))
    summary = {
        "mtkdrl_version": "0.1.0",
        "student": "resnet18",
        "teachers": teachers,
        "method": "none",
        "epochs": 1,
        "last_top1": 12.5,
        "last_top5": 51.5625,
        "best_top1": 12.5,
        "best_epoch": 0,
        "global_steps": 6,
        "num_processes": 1,
        "mixed_precision": "no",
    }
    (out / "summary.json").write_text(json.dumps(summary))
    record = {"epoch": 0, "step": 6, "epoch_seconds": 3.0, "val_top1": 12.5, "val_top5": 51.5625}
    (out / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    return out


@pytest.fixture
def registry_copy(tmp_path, shared_data) -> Path:
    """The shipped registry copied into a project-like folder, with its recipes beside it and
    the shared data where they look for it (`../shared`)."""
    target = tmp_path / "project" / "mtkdrl" / "hub" / "registry.yaml"
    target.parent.mkdir(parents=True)
    shutil.copyfile(SHIPPED_REGISTRY, target)
    shutil.copytree(REPO_ROOT / "recipes", tmp_path / "project" / "recipes")
    (tmp_path / "shared").symlink_to(shared_data.parent)
    return target
