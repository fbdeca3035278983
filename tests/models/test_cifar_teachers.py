"""The shared pretrained CIFAR-10 ResNets load strictly into the zoo's option-A ResNets and work."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import mtkdrl.models  # noqa: F401  (registers the zoo)

# depth: top-1 (%) on the full shared val split, from ../shared/data/README.md.
README_VAL_TOP1 = {20: 81.22, 32: 82.52, 44: 82.60, 56: 83.32}


def teacher_path(shared_data: Path, depth: int) -> Path:
    return shared_data / "teachers" / f"cifar10_resnet{depth}.safetensors"


@pytest.mark.parametrize("depth", README_VAL_TOP1)
def test_teacher_loads_strictly(shared_data: Path, depth: int) -> None:
    model = timm.create_model(f"resnet{depth}_cifar", num_classes=10)
    state_dict = load_file(teacher_path(shared_data, depth))
    model.load_state_dict(state_dict, strict=True)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_dict.items())


def test_teacher_loads_through_timm_pretrained_file(shared_data: Path) -> None:
    path = teacher_path(shared_data, 20)
    model = timm.create_model(
        "resnet20_cifar",
        pretrained=True,
        num_classes=10,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 10},
    )
    state_dict = load_file(path)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_dict.items())


def test_renamed_key_fails_strict_load(shared_data: Path, tmp_path: Path) -> None:
    state_dict = load_file(teacher_path(shared_data, 20))
    state_dict["classifier.weight"] = state_dict.pop("linear.weight")
    broken = tmp_path / "broken.safetensors"
    save_file(state_dict, broken)
    model = timm.create_model("resnet20_cifar", num_classes=10)
    with pytest.raises(RuntimeError, match=r"linear\.weight"):
        model.load_state_dict(load_file(broken), strict=True)


def test_teacher_of_other_depth_fails_strict_load(shared_data: Path) -> None:
    model = timm.create_model("resnet32_cifar", num_classes=10)
    with pytest.raises(RuntimeError, match=r"Missing key"):
        model.load_state_dict(load_file(teacher_path(shared_data, 20)), strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("depth", README_VAL_TOP1)
def test_teacher_accuracy_on_val_head(
    shared_data: Path, cifar10_val_head: tuple[Tensor, Tensor], depth: int
) -> None:
    images, labels = cifar10_val_head
    model = timm.create_model(f"resnet{depth}_cifar", num_classes=10).eval()
    model.load_state_dict(load_file(teacher_path(shared_data, depth)), strict=True)
    config = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        predictions = model((images - mean) / std).argmax(dim=1)
    top1 = (predictions == labels).float().mean().item() * 100
    assert abs(top1 - README_VAL_TOP1[depth]) < 3.0
