"""CIFAR ResNets (He et al. 2016): three stages of basic blocks on 32×32 inputs.

Two shortcut flavours:
- option A (resnet20/32/44/56/110): identity, or a parameter-free stride-2 subsample plus zero
  channel padding where a block changes shape. Module names follow the shared pretrained CIFAR-10
  teachers (`conv1`, `bn1`, `layer1..3`, `linear`), so their state dicts load strictly.
- option B (resnet8x4/32x4, the 4×-wide teachers of the CRD/RepDistiller lineage): a 1×1
  conv + BN projection where a block changes shape.
"""

from functools import partial
from typing import Any, Literal

import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ._cifar import CifarNet, build_cifar_model, cifar_cfg, stack_blocks
from ._weights import CIFAR10_LABELS, hub_id

__all__ = ["CifarBasicBlock", "CifarResNet", "ZeroPadShortcut"]

ShortcutType = Literal["A", "B"]
_STAGE_STRIDES = (1, 2, 2)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels equally on both sides."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_chs - in_chs) // 2
        self.pad_after = out_chs - in_chs - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class CifarBasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus a shortcut, then ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, shortcut: ShortcutType) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)
        if stride == 1 and in_chs == out_chs:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_chs, out_chs, stride)
        else:
            self.shortcut = ConvNormAct(in_chs, out_chs, 1, stride=stride, apply_act=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(CifarNet):
    """CIFAR ResNet of depth 6n+2: a 3×3 stem and three stages of n basic blocks, strides 1-2-2."""

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int] = (16, 16, 32, 64),
        shortcut: ShortcutType = "A",
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        """`widths` are the stem's and the three stages' channels."""
        super().__init__(in_chans)
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.set_stem("act1", widths[0], reduction=1)

        make_block = partial(CifarBasicBlock, shortcut=shortcut)
        for i, stride in enumerate(_STAGE_STRIDES, start=1):
            blocks = stack_blocks(make_block, widths[i - 1], widths[i], stride, (depth - 2) // 6)
            self.add_stage(f"layer{i}", nn.Sequential(*blocks), widths[i], stride)

        self.init_classifier(widths[-1], num_classes, global_pool, drop_rate)
        self.init_weights()

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def forward_stages(self, x: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(x)))


def _create_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_cifar_model(CifarResNet, variant, pretrained, len(_STAGE_STRIDES) + 1, **kwargs)


def _akamaster_cfg(name: str) -> dict[str, Any]:
    """A CIFAR-10 ResNet of akamaster/pytorch_resnet_cifar10 (its `.th` file as safetensors)."""
    return cifar_cfg(
        first_conv="conv1",
        pool_size=(8, 8),
        hf_hub_id=hub_id(name),
        num_classes=10,
        label_names=CIFAR10_LABELS,
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        license="bsd-2-clause",
        origin_url="https://github.com/akamaster/pytorch_resnet_cifar10",
        paper_ids="arXiv:1512.03385",
        paper_name="Deep Residual Learning for Image Recognition",
    )


# The tagged cfgs come first so that the untagged one, marked `.*`, stays each name's default:
# `resnet56_cifar` is a random-init model with 100 classes, `resnet56_cifar.akamaster_cifar10`
# the CIFAR-10 weights.
default_cfgs = generate_default_cfgs(
    {
        **{
            f"resnet{depth}_cifar.akamaster_cifar10": _akamaster_cfg(
                f"resnet{depth}_cifar.akamaster_cifar10"
            )
            for depth in (20, 32, 44, 56)
        },
        **{
            f"resnet{depth}_cifar.*": cifar_cfg(first_conv="conv1", pool_size=(8, 8))
            for depth in (20, 32, 44, 56)
        },
        "resnet110_cifar": cifar_cfg(first_conv="conv1", pool_size=(8, 8)),
        "resnet8x4_cifar": cifar_cfg(first_conv="conv1", pool_size=(8, 8)),
        "resnet32x4_cifar": cifar_cfg(first_conv="conv1", pool_size=(8, 8)),
    }
)

_X4_WIDTHS = (32, 64, 128, 256)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20, option-A shortcuts (0.27 M params with 10 classes)."""
    return _create_resnet("resnet20_cifar", pretrained, **dict({"depth": 20}, **kwargs))


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32, option-A shortcuts (0.46 M params with 10 classes)."""
    return _create_resnet("resnet32_cifar", pretrained, **dict({"depth": 32}, **kwargs))


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44, option-A shortcuts (0.66 M params with 10 classes)."""
    return _create_resnet("resnet44_cifar", pretrained, **dict({"depth": 44}, **kwargs))


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56, option-A shortcuts (0.86 M params with 100 classes); the MTKD-RL student."""
    return _create_resnet("resnet56_cifar", pretrained, **dict({"depth": 56}, **kwargs))


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110, option-A shortcuts (1.7 M params)."""
    return _create_resnet("resnet110_cifar", pretrained, **dict({"depth": 110}, **kwargs))


@register_model
def resnet8x4_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-8×4: one block per stage, widths 32-64-128-256, option-B shortcuts."""
    model_args = {"depth": 8, "widths": _X4_WIDTHS, "shortcut": "B"}
    return _create_resnet("resnet8x4_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet32x4_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32×4: widths 32-64-128-256, option-B shortcuts (7.43 M params); an MTKD-RL teacher."""
    model_args = {"depth": 32, "widths": _X4_WIDTHS, "shortcut": "B"}
    return _create_resnet("resnet32x4_cifar", pretrained, **dict(model_args, **kwargs))
