"""Pretrained tags of the zoo: timm resolves, describes and loads them whole, or fails loudly.

`resnetN_cifar.akamaster_cifar10` are the shared CIFAR-10 teachers; the untagged names stay
random-init defaults with 100 classes.
"""

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor

import mtkdrl.models  # noqa: F401  (registers the zoo)

from ..hub.helpers import populate_hub_cache

DEPTHS = (20, 32, 44, 56)
TAGS = [f"resnet{depth}_cifar.akamaster_cifar10" for depth in DEPTHS]
README_TOP1_FLOOR = 75.0


def teacher_path(shared_data: Path, depth: int) -> Path:
    return shared_data / "teachers" / f"cifar10_resnet{depth}.safetensors"


def load_tag(shared_data: Path, depth: int, **kwargs) -> torch.nn.Module:
    """`resnetN_cifar.akamaster_cifar10` with the shared file as its weights, as the README does."""
    overlay = {"file": str(teacher_path(shared_data, depth))}
    name = f"resnet{depth}_cifar.akamaster_cifar10"
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)


def test_tags_are_the_pretrained_zoo() -> None:
    assert timm.list_pretrained("*_cifar*") == TAGS
    assert timm.list_models("*_cifar", pretrained=True) == TAGS


@pytest.mark.parametrize("tag", TAGS)
def test_tag_cfg_describes_its_weights(tag: str) -> None:
    cfg = timm.models.get_pretrained_cfg(tag)
    assert (cfg.num_classes, len(cfg.label_names), cfg.label_names[0]) == (10, 10, "airplane")
    assert (cfg.mean, cfg.std) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert (cfg.input_size, cfg.crop_pct) == ((3, 32, 32), 1.0)
    assert cfg.license == "bsd-2-clause"
    assert cfg.origin_url == "https://github.com/akamaster/pytorch_resnet_cifar10"
    assert cfg.hf_hub_id == f"mtkdrl/{tag}"


@pytest.mark.parametrize("depth", DEPTHS)
def test_untagged_name_stays_the_random_init_default(depth: int) -> None:
    name = f"resnet{depth}_cifar"
    assert timm.models.get_pretrained_cfg(name).hf_hub_id is None
    assert timm.create_model(name).num_classes == 100
    assert timm.create_model(name, num_classes=10).pretrained_cfg["num_classes"] == 100
    with pytest.raises(RuntimeError, match=r"No pretrained weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("depth", DEPTHS)
def test_tag_loads_the_whole_file(shared_data: Path, depth: int) -> None:
    model = load_tag(shared_data, depth)
    state_dict = load_file(teacher_path(shared_data, depth))
    assert model.num_classes == 10
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_dict.items())


@pytest.mark.slow
@pytest.mark.parametrize("depth", DEPTHS)
def test_tag_classifies_cifar10(
    shared_data: Path, cifar10_val_head: tuple[Tensor, Tensor], depth: int
) -> None:
    images, labels = (t[:500] for t in cifar10_val_head)
    model = load_tag(shared_data, depth).eval()
    config = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        predictions = model((images - mean) / std).argmax(dim=1)
    assert (predictions == labels).float().mean().item() * 100 > README_TOP1_FLOOR


def test_untagged_cfg_refuses_weights_of_another_class_count(shared_data: Path) -> None:
    """The old README form: its cfg says 100 classes, so timm would drop the 10-class head."""
    overlay = {"file": str(teacher_path(shared_data, 56))}
    with pytest.raises(RuntimeError, match=r"10-class classifier .* says 100 classes"):
        timm.create_model(
            "resnet56_cifar", num_classes=10, pretrained=True, pretrained_cfg_overlay=overlay
        )


def test_tag_for_other_class_count_warns_and_keeps_the_backbone(shared_data: Path) -> None:
    with pytest.warns(UserWarning, match=r"10-class classifier is dropped"):
        model = load_tag(shared_data, 20, num_classes=100)
    state_dict = load_file(teacher_path(shared_data, 20))
    assert model.get_classifier().out_features == 100
    assert all(
        torch.equal(model.state_dict()[key], value)
        for key, value in state_dict.items()
        if not key.startswith("linear.")
    )


def test_tag_loads_from_the_hub_cache_offline(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copyfile(teacher_path(shared_data, 32), repo / "model.safetensors")
    populate_hub_cache(tmp_path / "hub", "mtkdrl/resnet32_cifar.akamaster_cifar10", repo)
    model = timm.create_model(
        "resnet32_cifar.akamaster_cifar10", pretrained=True, cache_dir=tmp_path / "hub"
    )
    state_dict = load_file(repo / "model.safetensors")
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state_dict.items())
