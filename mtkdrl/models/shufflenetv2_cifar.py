"""ShuffleNetV2 for CIFAR (Ma et al. 2018), the variant of the CRD/RepDistiller/MTKD-RL lineage.

A 1×1 stem (24 channels, no max-pool), three stages of one down-sampling unit plus 3/7/3 basic
units (116/232/464 channels at net size 1), and a final 1×1 conv to 1024 channels. That final
conv is the last feature stage: its 1024×4×4 map is both the distilled map and what the head pools.
"""

from typing import Any

import torch
from timm.layers import ConvNormAct
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ._cifar import CifarNet, build_cifar_model, cifar_cfg

__all__ = ["CifarShuffleNetV2", "ShuffleDownUnit", "ShuffleUnit"]

_STEM_CHS = 24
_STAGE_CHS = (116, 232, 464)
_STAGE_BASIC_UNITS = (3, 7, 3)
_FINAL_CHS = 1024


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """Interleave the channels of `groups` equal groups, so information crosses branches."""
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


def _branch(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    """1×1 conv-BN-ReLU, 3×3 depthwise conv-BN, 1×1 conv-BN-ReLU."""
    return nn.Sequential(
        ConvNormAct(in_chs, out_chs, 1),
        ConvNormAct(out_chs, out_chs, 3, stride=stride, groups=out_chs, apply_act=False),
        ConvNormAct(out_chs, out_chs, 1),
    )


class ShuffleUnit(nn.Module):
    """Basic unit: half the channels pass through, the other half go through a branch; shuffle."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.branch = _branch(chs // 2, chs // 2, stride=1)

    def forward(self, x: Tensor) -> Tensor:
        passthrough, x = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((passthrough, self.branch(x)), dim=1))


class ShuffleDownUnit(nn.Module):
    """Down-sampling unit: two stride-2 branches, each giving half the output channels; shuffle."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid_chs = out_chs // 2
        self.branch_dw = nn.Sequential(
            ConvNormAct(in_chs, in_chs, 3, stride=2, groups=in_chs, apply_act=False),
            ConvNormAct(in_chs, mid_chs, 1),
        )
        self.branch = _branch(in_chs, mid_chs, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat((self.branch_dw(x), self.branch(x)), dim=1))


class CifarShuffleNetV2(CifarNet):
    """ShuffleNetV2 (net size 1) on 32×32 inputs; feature maps at strides 1, 2, 4, 8, 8."""

    def __init__(
        self,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_chans)
        self.stem = ConvNormAct(in_chans, _STEM_CHS, 1)
        self.set_stem("stem", _STEM_CHS, reduction=1)

        in_chs = _STEM_CHS
        stages = zip(_STAGE_CHS, _STAGE_BASIC_UNITS, strict=True)
        for i, (out_chs, basic_units) in enumerate(stages, start=1):
            units = [ShuffleDownUnit(in_chs, out_chs)]
            units += [ShuffleUnit(out_chs) for _ in range(basic_units)]
            self.add_stage(f"layer{i}", nn.Sequential(*units), out_chs, stride=2)
            in_chs = out_chs
        self.add_stage("final_conv", ConvNormAct(in_chs, _FINAL_CHS, 1), _FINAL_CHS, stride=1)

        self.init_classifier(_FINAL_CHS, num_classes, global_pool, drop_rate)
        self.init_weights()

    def forward_stages(self, x: Tensor) -> Tensor:
        return self.final_conv(self.layer3(self.layer2(self.layer1(x))))


default_cfgs = generate_default_cfgs(
    {"shufflenetv2_cifar": cifar_cfg(first_conv="stem.conv", pool_size=(4, 4))}
)


@register_model
def shufflenetv2_cifar(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV2:
    """ShuffleNetV2 ×1 for CIFAR (1.36 M params with 100 classes); an MTKD-RL student."""
    # The stem's map, the three stages' and the final conv's.
    return build_cifar_model(
        CifarShuffleNetV2, "shufflenetv2_cifar", pretrained, len(_STAGE_CHS) + 2, **kwargs
    )
