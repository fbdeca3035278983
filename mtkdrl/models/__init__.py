"""The CIFAR model zoo: importing this package registers every `*_cifar` architecture in timm."""

from ._cifar import CifarNet
from .mobilenetv2_cifar import CifarMobileNetV2
from .regnet_cifar import CifarRegNet, RegNetCfg
from .resnet_cifar import CifarResNet
from .shufflenetv2_cifar import CifarShuffleNetV2
from .wrn_cifar import WideResNet

__all__ = [
    "CifarMobileNetV2",
    "CifarNet",
    "CifarRegNet",
    "CifarResNet",
    "CifarShuffleNetV2",
    "RegNetCfg",
    "WideResNet",
]
