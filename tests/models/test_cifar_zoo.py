"""The CIFAR zoo follows timm's model interface and matches the MTKD-RL reference architectures."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import mtkdrl.models  # noqa: F401  (registers the zoo)
from mtkdrl.models.resnet_cifar import ZeroPadShortcut

ZOO_MODULES = [
    "resnet_cifar",
    "wrn_cifar",
    "mobilenetv2_cifar",
    "shufflenetv2_cifar",
    "regnet_cifar",
]

# name: (forward_features shape, last intermediate shape) on a 32×32 input, channels first.
# The last intermediate is the map MTKD-RL distils (spec mtkdrl.md §2.1).
SHAPES = {
    "resnet20_cifar": ((64, 8, 8), (64, 8, 8)),
    "resnet32_cifar": ((64, 8, 8), (64, 8, 8)),
    "resnet44_cifar": ((64, 8, 8), (64, 8, 8)),
    "resnet56_cifar": ((64, 8, 8), (64, 8, 8)),
    "resnet110_cifar": ((64, 8, 8), (64, 8, 8)),
    "resnet8x4_cifar": ((256, 8, 8), (256, 8, 8)),
    "resnet32x4_cifar": ((256, 8, 8), (256, 8, 8)),
    "wrn_16_2_cifar": ((128, 8, 8), (128, 8, 8)),
    "wrn_28_4_cifar": ((256, 8, 8), (256, 8, 8)),
    "wrn_40_2_cifar": ((128, 8, 8), (128, 8, 8)),
    "mobilenetv2_cifar": ((1280, 2, 2), (320, 2, 2)),
    "shufflenetv2_cifar": ((1024, 4, 4), (1024, 4, 4)),
    "regnetx_200mf_cifar": ((368, 8, 8), (368, 8, 8)),
    "regnetx_400mf_cifar": ((384, 8, 8), (384, 8, 8)),
    "regnety_400mf_cifar": ((384, 8, 8), (384, 8, 8)),
}

# Millions of parameters with 100 classes, as instantiated from the official MTKD-RL repo (§5.1).
PARAMS_M = {
    "regnety_400mf_cifar": 5.75,
    "regnetx_400mf_cifar": 4.81,
    "resnet32x4_cifar": 7.43,
    "wrn_28_4_cifar": 5.87,
    "regnetx_200mf_cifar": 2.36,
    "mobilenetv2_cifar": 2.35,
    "shufflenetv2_cifar": 1.36,
    "resnet56_cifar": 0.86,
}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_registry_lists_exactly_the_zoo() -> None:
    assert set(timm.list_models(module=ZOO_MODULES)) == set(SHAPES)


@pytest.mark.parametrize("name", SHAPES)
def test_timm_interface(name: str, images: torch.Tensor) -> None:
    features_shape, last_map_shape = SHAPES[name]
    model = timm.create_model(name, num_classes=10).eval()
    assert (model.num_classes, model.in_chans) == (10, 3)
    assert model.num_features == model.head_hidden_size == features_shape[0]
    assert model.feature_info[-1]["num_chs"] == last_map_shape[0]

    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)
        final, intermediates = model.forward_intermediates(images, indices=1)
        embedding = model.forward_head(final, pre_logits=True)
        head_logits = model.forward_head(final)

    assert logits.shape == (2, 10)
    assert features.shape == final.shape == (2, *features_shape)
    assert [tuple(t.shape) for t in intermediates] == [(2, *last_map_shape)]
    assert embedding.shape == (2, features_shape[0])
    assert torch.equal(head_logits, logits)
    assert torch.equal(final, features)


@pytest.mark.parametrize("name", SHAPES)
def test_intermediates_follow_feature_info(name: str, images: torch.Tensor) -> None:
    model = timm.create_model(name).eval()
    with torch.no_grad():
        every_map = model.forward_intermediates(images, intermediates_only=True)
        first_and_last = model.forward_intermediates(
            images, indices=[0, -1], intermediates_only=True
        )
        early = model.forward_intermediates(images, indices=[1], stop_early=True)[1]
    expected = [
        (2, f["num_chs"], 32 // f["reduction"], 32 // f["reduction"]) for f in model.feature_info
    ]
    assert [tuple(t.shape) for t in every_map] == expected
    assert [tuple(t.shape) for t in first_and_last] == [expected[0], expected[-1]]
    assert torch.equal(early[0], every_map[1])


@pytest.mark.parametrize("name", SHAPES)
def test_features_only_wraps_forward_intermediates(name: str, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    torch.manual_seed(0)
    extractor = timm.create_model(name, features_only=True, out_indices=(-2, -1)).eval()
    with torch.no_grad():
        maps = extractor(images)
        expected = model.forward_intermediates(images, indices=2, intermediates_only=True)
    assert extractor.feature_info.channels() == [t.shape[1] for t in expected]
    assert all(torch.equal(a, b) for a, b in zip(maps, expected, strict=True))


@pytest.mark.parametrize("name", SHAPES)
def test_reset_classifier(name: str, images: torch.Tensor) -> None:
    model = timm.create_model(name, num_classes=10).eval()
    model.reset_classifier(5)
    assert model.get_classifier().out_features == 5
    assert model.get_classifier(name_only=True) == "linear"
    with torch.no_grad():
        assert model(images).shape == (2, 5)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(images).shape == (2, model.num_features)


@pytest.mark.parametrize("name", SHAPES)
def test_data_config(name: str) -> None:
    model = timm.create_model(name, num_classes=10)
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32)
    assert config["crop_pct"] == 1.0
    assert (config["mean"], config["std"]) == (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


@pytest.mark.parametrize("name", PARAMS_M)
def test_parameter_count_matches_reference(name: str) -> None:
    model = timm.create_model(name, num_classes=100)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PARAMS_M[name]


def test_pretrained_without_weights_raises_timm_error() -> None:
    with pytest.raises(RuntimeError, match=r"No pretrained weights"):
        timm.create_model("resnet56_cifar", pretrained=True)


def test_option_a_shortcut_subsamples_and_pads_a_quarter_each_side() -> None:
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).view(1, 16, 4, 4)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (1, 32, 2, 2)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
