"""Distillation losses: temperature KL, feature MSE through per-teacher adapters, and their sum."""

from __future__ import annotations

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


class FeatureAdapter(nn.Module):
    """Maps the student's last-stage map onto one teacher's: resize, then 1×1 conv, BN, ReLU.

    Down-sizing uses adaptive average pooling and up-sizing bilinear interpolation, as in MTKD-RL's
    `TransFeat`; unlike the official code, each adapter reads the student's own map (the official
    loop chains the resized maps from one teacher to the next, which is wrong for mixed sizes).
    """

    def __init__(self, student_channels: int, teacher_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = teacher_shape
        self.size = (height, width)
        self.proj = nn.Sequential(
            nn.Conv2d(student_channels, channels, kernel_size=1, bias=True),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, student_map: Tensor) -> Tensor:
        height, width = student_map.shape[-2:]
        if (height, width) != self.size:
            if height >= self.size[0] and width >= self.size[1]:
                student_map = F.adaptive_avg_pool2d(student_map, self.size)
            else:
                student_map = F.interpolate(
                    student_map, size=self.size, mode="bilinear", align_corners=False
                )
        return self.proj(student_map)


class FeatureAdapters(nn.ModuleList):
    """One `FeatureAdapter` per teacher, trained with the student by the student's optimizer."""

    @classmethod
    def build(cls, student_channels: int, teacher_maps: list[Tensor]) -> FeatureAdapters:
        return cls(FeatureAdapter(student_channels, tuple(m.shape[1:])) for m in teacher_maps)

    def forward(self, student_map: Tensor) -> list[Tensor]:
        return [adapter(student_map) for adapter in self]


def stack_teacher_terms(terms: list[Tensor]) -> Tensor:
    """Per-teacher per-sample terms (K tensors of shape B) as one B×K matrix."""
    return torch.stack(terms, dim=1)


def weighted_distillation_terms(
    ce: Tensor,
    logit: Tensor,
    feature: Tensor | None,
    logit_weights: Tensor,
    feature_weights: Tensor | None,
    alpha: float,
    beta: float,
) -> dict[str, Tensor]:
    """The multi-teacher loss per sample as named terms: `ce`, `kd` = α Σ_k w_k·ℓ_k and, with a
    feature loss, `feature` = β Σ_k v_k·MSE_k (B each; their sum is the sample's loss)."""
    terms = {"ce": ce}
    if logit.shape[1]:
        terms["kd"] = alpha * (logit_weights * logit).sum(dim=1)
    if feature is not None and feature_weights is not None:
        terms["feature"] = beta * (feature_weights * feature).sum(dim=1)
    return terms
