"""Distillation losses: temperature KL, feature MSE through per-teacher adapters, and their sum."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def kl_per_sample(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float | Tensor
) -> Tensor:
    """T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) for each sample (B,): summed over classes.

    `temperature` is one number or one per sample (B or B×1); each sample's KL is scaled by its
    own T², never by the batch's B×B outer product.
    """
    if isinstance(temperature, Tensor):
        temperature = temperature.reshape(-1, 1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    if isinstance(temperature, Tensor):
        return kl * temperature.reshape(-1) ** 2
    return kl * temperature**2


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton's KD term with `batchmean` reduction: the mean over samples of `kl_per_sample`."""
    return kl_per_sample(student_logits, teacher_logits, temperature).mean()


def feature_mse_per_sample(adapted: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over (C, H, W) for each sample (B,), a mean as in the official code."""
    return (adapted - target).pow(2).flatten(1).mean(dim=1)


def normalised_mse_per_sample(adapted: Tensor, target: Tensor) -> Tensor:
    """‖n(a) − n(t)‖² per sample (B,), n the L2 normalisation of each sample's flattened map, so
    each value lies in [0, 4]: AMTML-KD's hint distance."""
    a = F.normalize(adapted.flatten(1), dim=1)
    t = F.normalize(target.flatten(1), dim=1)
    return (a - t).pow(2).sum(dim=1)


def conv1x1_projection(student_channels: int, channels: int) -> nn.Module:
    """1×1 conv, BN, ReLU: MTKD-RL's `TransFeat` and MMKD's default regressor."""
    return nn.Sequential(
        nn.Conv2d(student_channels, channels, kernel_size=1, bias=True),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def bottleneck_projection(student_channels: int, channels: int) -> nn.Module:
    """1×1 conv to C_s/2, 3×3 conv, 1×1 conv to the teacher's C, each with BN and ReLU: MMKD's
    regressor with `--convs`, as its README runs it."""
    mid = max(student_channels // 2, 1)
    return nn.Sequential(
        nn.Conv2d(student_channels, mid, kernel_size=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, mid, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid, channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def linear_projection(student_channels: int, channels: int) -> nn.Module:
    """A bias-free 1×1 conv initialised U(−0.005, 0.005): AMTML-KD's hint regressor."""
    conv = nn.Conv2d(student_channels, channels, kernel_size=1, bias=False)
    nn.init.uniform_(conv.weight, -0.005, 0.005)
    return conv


class FeatureAdapter(nn.Module):
    """Maps the student's map onto one teacher's: resize, then a projection (1×1 by default).

    Down-sizing uses adaptive average pooling and up-sizing bilinear interpolation, as in MTKD-RL's
    `TransFeat`; unlike the official code, each adapter reads the student's own map (the official
    loop chains the resized maps from one teacher to the next, which is wrong for mixed sizes).
    """

    def __init__(
        self,
        student_shape: tuple[int, int, int],
        teacher_shape: tuple[int, int, int],
        projection: Callable[[int, int], nn.Module] = conv1x1_projection,
    ) -> None:
        super().__init__()
        channels, height, width = teacher_shape
        self.size = (height, width)
        self.proj = projection(student_shape[0], channels)

    def forward(self, student_map: Tensor) -> Tensor:
        return self.proj(resize_map(student_map, self.size))


def resize_map(feature_map: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool a map down to `size`, or interpolate it up (bilinear)."""
    height, width = feature_map.shape[-2:]
    if (height, width) == tuple(size):
        return feature_map
    if height >= size[0] and width >= size[1]:
        return F.adaptive_avg_pool2d(feature_map, size)
    return F.interpolate(feature_map, size=size, mode="bilinear", align_corners=False)


class ConvRegressor(nn.Module):
    """FitNets' regressor (`ConvReg`): a conv chosen by the spatial ratio, then BN and ReLU.

    Student side s, teacher side t: s = 2t, a 3×3 conv of stride 2; 2s = t, a 4×4 transposed conv
    of stride 2; s ≥ t, a valid conv of size 1 + s − t; otherwise the map is resized to t first
    and a 3×3 conv keeps that size.
    """

    def __init__(self, student_shape: tuple[int, int, int], teacher_shape: tuple[int, int, int]):
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape, teacher_shape
        self.size = None
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.size = (t_h, t_w)
            conv = nn.Conv2d(s_c, t_c, kernel_size=3, padding=1)
        self.proj = nn.Sequential(conv, nn.BatchNorm2d(t_c), nn.ReLU(inplace=True))

    def forward(self, student_map: Tensor) -> Tensor:
        if self.size is not None:
            student_map = resize_map(student_map, self.size)
        return self.proj(student_map)


ADAPTERS: dict[str, Callable[[tuple, tuple], nn.Module]] = {
    "conv1x1": FeatureAdapter,
    "bottleneck": partial(FeatureAdapter, projection=bottleneck_projection),
    "linear1x1": partial(FeatureAdapter, projection=linear_projection),
    "convreg": ConvRegressor,
}


class FeatureAdapters(nn.ModuleList):
    """One adapter per teacher, trained with the student by the student's optimizer."""

    @classmethod
    def build(
        cls, student_map: Tensor, teacher_maps: list[Tensor], kind: str = "conv1x1"
    ) -> FeatureAdapters:
        """Adapters of `kind` (a key of `ADAPTERS`) sized from probe maps (B×C×H×W)."""
        student_shape = tuple(student_map.shape[1:])
        return cls(ADAPTERS[kind](student_shape, tuple(m.shape[1:])) for m in teacher_maps)

    def forward(self, student_map: Tensor) -> list[Tensor]:
        return [adapter(student_map) for adapter in self]


def stack_teacher_terms(terms: list[Tensor]) -> Tensor:
    """Per-teacher per-sample terms (K tensors of shape B) as one B×K matrix."""
    return torch.stack(terms, dim=1)
