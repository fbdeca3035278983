"""MobileNetV2 for CIFAR (Sandler et al. 2018), the variant of the CRD/RepDistiller/MTKD-RL lineage.

A stride-2 stem, then ImageNet MobileNetV2's inverted-residual settings, so a 32×32 image ends
at 2×2. Every block has its 1×1 expansion conv, even at expansion 1. The feature stages group the
blocks by resolution; the last one ends with the 320-channel linear bottleneck (the map MTKD-RL
distils), and a 1×1 head conv to 1280 channels feeds the classifier.
"""

import math
from functools import partial
from typing import Any

from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ._cifar import CifarNet, build_cifar_model, cifar_cfg, stack_blocks

__all__ = ["CifarMobileNetV2", "InvertedResidual"]

# Per feature stage: (expansion, out channels, repeats, stride) of each run of blocks.
_STAGE_SETTINGS: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((1, 16, 1, 1), (6, 24, 2, 1)),
    ((6, 32, 3, 2),),
    ((6, 64, 4, 2), (6, 96, 3, 1)),
    ((6, 160, 3, 2), (6, 320, 1, 1)),
)
_STEM_CHS = 32
_HEAD_CHS = 1280


class InvertedResidual(nn.Module):
    """1×1 expansion, 3×3 depthwise, 1×1 linear projection; identity shortcut when shapes match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid_chs = in_chs * expansion
        self.conv_pw = ConvNormAct(in_chs, mid_chs, 1)
        self.conv_dw = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, apply_act=False)
        self.has_shortcut = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return out + x if self.has_shortcut else out


class CifarMobileNetV2(CifarNet):
    """MobileNetV2 (width 1.0) on 32×32 inputs; feature maps at strides 2, 2, 4, 8, 16."""

    def __init__(
        self,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_chans)
        self.stem = ConvNormAct(in_chans, _STEM_CHS, 3, stride=2)
        self.set_stem("stem", _STEM_CHS, reduction=2)

        in_chs = _STEM_CHS
        for i, settings in enumerate(_STAGE_SETTINGS, start=1):
            blocks: list[nn.Module] = []
            for expansion, out_chs, repeats, stride in settings:
                make_block = partial(InvertedResidual, expansion=expansion)
                blocks += stack_blocks(make_block, in_chs, out_chs, stride, repeats)
                in_chs = out_chs
            stage_stride = math.prod(stride for *_, stride in settings)
            self.add_stage(f"layer{i}", nn.Sequential(*blocks), in_chs, stage_stride)

        self.conv_head = ConvNormAct(in_chs, _HEAD_CHS, 1)
        self.init_classifier(_HEAD_CHS, num_classes, global_pool, drop_rate)
        self.init_weights()

    def forward_stages(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


default_cfgs = generate_default_cfgs(
    {"mobilenetv2_cifar": cifar_cfg(first_conv="stem.conv", pool_size=(2, 2))}
)


@register_model
def mobilenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """MobileNetV2 ×1.0 for CIFAR (2.35 M params with 100 classes); an MTKD-RL student."""
    return build_cifar_model(
        CifarMobileNetV2, "mobilenetv2_cifar", pretrained, len(_STAGE_SETTINGS) + 1, **kwargs
    )
