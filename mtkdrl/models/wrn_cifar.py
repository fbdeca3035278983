"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016): pre-activation blocks, widths 16k-32k-64k.

The final BN-ReLU closes the last stage, so the last feature map (and `forward_features`) is the
post-activation map the head pools, as in the MTKD-RL / RepDistiller lineage.
"""

from typing import Any

from timm.layers import BatchNormAct2d
from timm.models import generate_default_cfgs, register_model
from torch import Tensor, nn

from ._cifar import CifarNet, build_cifar_model, cifar_cfg, stack_blocks

__all__ = ["WideBasicBlock", "WideResNet"]
_STAGE_STRIDES = (1, 2, 2)


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-conv3×3; a 1×1 conv on the pre-activation where the shape changes."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.norm2 = BatchNormAct2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.shortcut = (
            None
            if stride == 1 and in_chs == out_chs
            else nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        preact = self.norm1(x)
        shortcut = x if self.shortcut is None else self.shortcut(preact)
        out = self.conv2(self.norm2(self.conv1(preact)))
        return out + shortcut


class WideResNet(CifarNet):
    """WRN-depth-widen: a 3×3 stem and three stages of (depth-4)/6 wide blocks (strides 1, 2, 2)."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 100,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__(in_chans)
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.stem = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.set_stem("stem", widths[0], reduction=1)

        for i, stride in enumerate(_STAGE_STRIDES, start=1):
            blocks = stack_blocks(
                WideBasicBlock, widths[i - 1], widths[i], stride, (depth - 4) // 6
            )
            self.add_stage(f"layer{i}", nn.Sequential(*blocks), widths[i], stride)
        self.layer3.append(BatchNormAct2d(widths[-1]))

        self.init_classifier(widths[-1], num_classes, global_pool, drop_rate)
        self.init_weights()

    def forward_stages(self, x: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(x)))


def _create_wrn(variant: str, pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return build_cifar_model(WideResNet, variant, pretrained, len(_STAGE_STRIDES) + 1, **kwargs)


default_cfgs = generate_default_cfgs(
    {
        name: cifar_cfg(first_conv="stem", pool_size=(8, 8))
        for name in ("wrn_16_2_cifar", "wrn_28_4_cifar", "wrn_40_2_cifar")
    }
)


@register_model
def wrn_16_2_cifar(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-16-2 (0.70 M params with 100 classes)."""
    model_args = {"depth": 16, "widen_factor": 2}
    return _create_wrn("wrn_16_2_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def wrn_28_4_cifar(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-28-4 (5.87 M params with 100 classes); an MTKD-RL teacher."""
    model_args = {"depth": 28, "widen_factor": 4}
    return _create_wrn("wrn_28_4_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def wrn_40_2_cifar(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    """WRN-40-2 (2.26 M params with 100 classes)."""
    model_args = {"depth": 40, "widen_factor": 2}
    return _create_wrn("wrn_40_2_cifar", pretrained, **dict(model_args, **kwargs))
