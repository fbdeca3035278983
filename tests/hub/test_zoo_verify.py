"""`mtkdrl zoo verify`: an entry's export, loaded through timm's `local-dir:`, re-measures to the
registry's figures; a tampered weights file or figure fails in one line naming the entry."""

from __future__ import annotations

import shutil

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from mtkdrl.hub.zoo import Registry
from mtkdrl.hub.zoo_command import main

from .helpers import populate_hub_cache

NAME = "resnet20-cifar10-verify"


@pytest.fixture
def added(cifar_run, registry_copy, tmp_path):
    """The tiny CIFAR run recorded in a copy of the registry, exported with its measured score."""
    export = tmp_path / "exports" / NAME
    args = ["add", str(cifar_run), "--name", NAME, "--export-dir", str(export), "--measure"]
    assert main([*args, "--registry", str(registry_copy)]) == 0
    return registry_copy, export


def test_verify_remeasures_the_export_and_passes(added, capsys):
    registry, _ = added
    capsys.readouterr()
    assert main(["verify", NAME, "--registry", str(registry)]) == 0
    entry = Registry.load(registry).get(NAME)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(
        f"{NAME}: top-1 {entry.score.top1:.2f} (recorded {entry.score.top1:.2f})"
    )


def test_verify_fails_on_tampered_weights(added, capsys):
    registry, export = added
    weights = load_file(export / "model.safetensors")
    weights["linear.weight"] = torch.flip(weights["linear.weight"], dims=[0])  # classes swapped
    save_file(weights, export / "model.safetensors", metadata={"format": "pt"})
    capsys.readouterr()
    assert main(["verify", NAME, "--registry", str(registry)]) == 2
    error = capsys.readouterr().err.split("mtkdrl: error: ", 1)[1]  # after the progress bar
    assert error.startswith(f"zoo verify: {NAME} is off by ") and error.count("\n") == 1


def test_verify_fails_on_a_figure_off_by_more_than_the_tolerance(added, capsys):
    registry_path, _ = added
    registry = Registry.load(registry_path)
    registry.get(NAME).score.top1 += 0.2
    registry.save()
    assert main(["verify", NAME, "--registry", str(registry_path)]) == 2
    assert "is off by 0.20 points" in capsys.readouterr().err
    assert main(["verify", NAME, "--registry", str(registry_path), "--tolerance", "0.3"]) == 0


def test_verify_of_a_planned_entry_says_so(registry_copy, capsys):
    assert main(["verify", "vit-tiny-imagenet1k-mtkdrl", "--registry", str(registry_copy)]) == 2
    assert "'vit-tiny-imagenet1k-mtkdrl' is planned: nothing to verify" in capsys.readouterr().err


def test_verify_loads_a_teacher_by_its_tag_from_the_hub_cache(
    registry_copy, shared_data, tmp_path, monkeypatch, capsys
):
    """The shared ResNet-20 laid out as its Hub repository in an offline cache; the registry's
    figure re-measures, and a figure moved by half a point fails."""
    name = "resnet20_cifar.akamaster_cifar10"
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copyfile(
        shared_data / "teachers" / "cifar10_resnet20.safetensors", repo / "model.safetensors"
    )
    populate_hub_cache(tmp_path / "hub", f"mtkdrl/{name}", repo)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    capsys.readouterr()
    assert main(["verify", name, "--registry", str(registry_copy)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{name}: top-1 81.22 (recorded 81.22)") and "5000 images" in line
    registry = Registry.load(registry_copy)
    registry.get(name).score.top1 += 0.5
    registry.save()
    assert main(["verify", name, "--registry", str(registry_copy)]) == 2
    assert f"{name} is off by 0.50 points" in capsys.readouterr().err
