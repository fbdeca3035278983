"""RegNets for CIFAR (Radosavovic et al. 2020), the variant of the pytorch-cifar/MTKD-RL lineage.

A 3×3 stride-1 stem of 64 channels, then four stages of X blocks (1×1, grouped 3×3, optional
squeeze-excite, 1×1; bottleneck ratio 1) with strides 1, 1, 2, 2, so a 32×32 image ends at 8×8.
"""

from dataclasses import dataclass
from functools import partial
from typing import Any

from timm.layers import ConvNormAct, SqueezeExcite
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ._cifar import CifarNet, build_cifar_model, cifar_cfg, stack_blocks

__all__ = ["CifarRegNet", "RegNetBlock", "RegNetCfg"]

_STEM_CHS = 64
_STAGE_STRIDES = (1, 1, 2, 2)


@dataclass(frozen=True)
class RegNetCfg:
    """Architecture of one RegNet: per-stage depths and widths, group width, SE ratio."""

    depths: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    group_width: int
    se_ratio: float = 0.0


_MODEL_CFGS = {
    "regnetx_200mf_cifar": RegNetCfg(depths=(1, 1, 4, 7), widths=(24, 56, 152, 368), group_width=8),
    "regnetx_400mf_cifar": RegNetCfg(
        depths=(1, 2, 7, 12), widths=(32, 64, 160, 384), group_width=16
    ),
    "regnety_400mf_cifar": RegNetCfg(
        depths=(1, 2, 7, 12), widths=(32, 64, 160, 384), group_width=16, se_ratio=0.25
    ),
}


class RegNetBlock(nn.Module):
    """X/Y block: 1×1, grouped 3×3 (stride here), SE (Y only), linear 1×1; residual, ReLU.

    The SE bottleneck is `se_ratio` times the block's input width, as in the lineage's code.
    """

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, group_width: int, se_ratio: float
    ) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 1)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, stride=stride, groups=out_chs // group_width)
        self.se = (
            SqueezeExcite(out_chs, rd_channels=round(in_chs * se_ratio))
            if se_ratio
            else nn.Identity()
        )
        self.conv3 = ConvNormAct(out_chs, out_chs, 1, apply_act=False)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_chs == out_chs
            else ConvNormAct(in_chs, out_chs, 1, stride=stride, apply_act=False)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act(out + self.shortcut(x))


class CifarRegNet(CifarNet):
    """RegNet on 32×32 inputs; feature maps at strides 1, 1, 1, 2, 4."""

    def __init__(
        self,
        cfg: RegNetCfg,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_chans)
        self.stem = ConvNormAct(in_chans, _STEM_CHS, 3)
        self.set_stem("stem", _STEM_CHS, reduction=1)

        make_block = partial(RegNetBlock, group_width=cfg.group_width, se_ratio=cfg.se_ratio)
        in_chs = _STEM_CHS
        stages = zip(cfg.depths, cfg.widths, _STAGE_STRIDES, strict=True)
        for i, (depth, out_chs, stride) in enumerate(stages, start=1):
            blocks = stack_blocks(make_block, in_chs, out_chs, stride, depth)
            self.add_stage(f"layer{i}", nn.Sequential(*blocks), out_chs, stride)
            in_chs = out_chs

        self.init_classifier(in_chs, num_classes, global_pool, drop_rate)
        self.init_weights()

    def forward_stages(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _create_regnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarRegNet:
    num_maps = len(_STAGE_STRIDES) + 1
    return build_cifar_model(
        CifarRegNet, variant, pretrained, num_maps, model_cfg=_MODEL_CFGS[variant], **kwargs
    )


default_cfgs = generate_default_cfgs(
    {name: cifar_cfg(first_conv="stem.conv", pool_size=(8, 8)) for name in _MODEL_CFGS}
)


@register_model
def regnetx_200mf_cifar(pretrained: bool = False, **kwargs: Any) -> CifarRegNet:
    """RegNetX-200MF for CIFAR (2.36 M params with 100 classes); an MTKD-RL student."""
    return _create_regnet("regnetx_200mf_cifar", pretrained, **kwargs)


@register_model
def regnetx_400mf_cifar(pretrained: bool = False, **kwargs: Any) -> CifarRegNet:
    """RegNetX-400MF for CIFAR (4.81 M params with 100 classes); an MTKD-RL teacher."""
    return _create_regnet("regnetx_400mf_cifar", pretrained, **kwargs)


@register_model
def regnety_400mf_cifar(pretrained: bool = False, **kwargs: Any) -> CifarRegNet:
    """RegNetY-400MF for CIFAR (5.75 M params with 100 classes); an MTKD-RL teacher."""
    return _create_regnet("regnety_400mf_cifar", pretrained, **kwargs)
