"""Logit losses ℓ(z_s, z_t; y, T, epoch) by name, so any weighting method can use any of them.

A recipe picks one with `method.logit_loss` (a name, or a mapping with `name` and its settings);
the method's `teacher_terms` calls it once per teacher. See docs/methods/README.md#the-shared-loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import MtkdrlError
from .losses import kl_per_sample
from .registry import Registry

WHERE = "method.logit_loss"


@dataclass
class NoSettings:
    """A logit loss without settings of its own."""


class LogitLoss:
    """A per-sample logit loss against one teacher, (B,); its settings are an `Options` dataclass.

    `temperature` is a number or one per sample (B or B×1): each sample is scaled by its own T².
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoSettings

    def __init__(self, options: Any = None) -> None:
        self.options = self.Options() if options is None else options

    def __call__(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        labels: Tensor,
        temperature: float | Tensor,
        epoch: int,
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


LOGIT_LOSSES = Registry("logit loss", WHERE)
register_logit_loss = LOGIT_LOSSES.register


@register_logit_loss
class KLLoss(LogitLoss):
    """Hinton's T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over classes: the default."""

    name = "kl"
    description = "T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over classes"

    def __call__(self, student_logits, teacher_logits, labels, temperature, epoch) -> Tensor:
        return kl_per_sample(student_logits, teacher_logits, temperature)


@dataclass
class DKDOptions:
    """DKD's settings (docs/methods/dkd.md#options): the TCKD and NCKD weights and the warm-up."""

    alpha: float = 1.0
    beta: float = 8.0
    warmup_epochs: int = 20

    def check(self, where: str) -> None:
        """One error line naming `where.<setting>` for a setting out of range."""
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise MtkdrlError(
                    f"{where}.{name}: expected a non-negative number (DKD's weight on "
                    f"{'TCKD' if name == 'alpha' else 'NCKD'}), got {value}"
                )
        if self.warmup_epochs < 0:
            raise MtkdrlError(
                f"{where}.warmup_epochs: expected a whole number of epochs, at least 0, "
                f"got {self.warmup_epochs}"
            )


@register_logit_loss
class DecoupledKDLoss(LogitLoss):
    """DKD (Zhao et al., CVPR 2022): KD split into the target class's binary KL (TCKD, weight α)
    and the KL over the other classes (NCKD, weight β), T²-scaled, with a linear warm-up."""

    name = "dkd"
    description = "DKD (Zhao et al. 2022): α·TCKD + β·NCKD, T²-scaled, with a linear warm-up"
    Options = DKDOptions

    def __init__(self, options: DKDOptions | None = None, where: str = WHERE) -> None:
        super().__init__(options)
        self.options.check(where)

    def warmup_factor(self, epoch: int) -> float:
        """min(epoch / warmup_epochs, 1), 1 without a warm-up; epochs count from 0."""
        warmup = self.options.warmup_epochs
        return 1.0 if warmup == 0 else min(epoch / warmup, 1.0)

    def __call__(self, student_logits, teacher_logits, labels, temperature, epoch) -> Tensor:
        options = self.options
        tckd, nckd = decoupled_kl(student_logits, teacher_logits, labels, temperature)
        return self.warmup_factor(epoch) * (options.alpha * tckd + options.beta * nckd)


def decoupled_kl(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float | Tensor
) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) per sample (B each), both T²-scaled, in at least fp32.

    TCKD = T²·KL(b_t ‖ b_s) with b = [p_y, 1 − p_y]; NCKD = T²·KL(p̂_t ‖ p̂_s) with p̂ the softmax
    over the classes other than y. Everything stays in log space (log(1 − p_y) is a logsumexp over
    the other classes), and class y is masked with −∞ then zeroed, so it adds exactly 0 and no
    saturated logit gives a NaN or an infinite gradient.
    """
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    per_sample = isinstance(temperature, Tensor)
    t = temperature.to(dtype).reshape(-1, 1) if per_sample else temperature
    z_s = student_logits.to(dtype) / t
    z_t = teacher_logits.to(dtype) / t
    target = F.one_hot(labels, z_s.shape[1]).bool()
    tckd = _kl_sum(_log_binary(z_t, target, labels), _log_binary(z_s, target, labels))
    log_hat_t, p_hat_t = _log_non_target(z_t, target)
    log_hat_s, _ = _log_non_target(z_s, target)
    nckd = (p_hat_t * (log_hat_t - log_hat_s)).sum(dim=1)
    scale = t.reshape(-1) ** 2 if per_sample else t**2
    return scale * tckd, scale * nckd


def _log_binary(z: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """log [p_y, 1 − p_y] of softmax(z) (B×2), both from logsumexps."""
    total = torch.logsumexp(z, dim=1)
    log_target = z.gather(1, labels.reshape(-1, 1)).squeeze(1) - total
    log_rest = torch.logsumexp(z.masked_fill(target, -math.inf), dim=1) - total
    return torch.stack([log_target, log_rest], dim=1)


def _log_non_target(z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """log p̂ and p̂ of the softmax over the non-target classes (B×C); both 0 at the target."""
    log_hat = F.log_softmax(z.masked_fill(target, -math.inf), dim=1)
    p_hat = log_hat.exp()  # exp(−∞) = 0 at the target
    return log_hat.masked_fill(target, 0.0), p_hat


def _kl_sum(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Σ p (log p − log q) over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def build_logit_loss(spec: str | Mapping[str, Any] | LogitLoss) -> LogitLoss:
    """The logit loss a recipe's `method.logit_loss` names: `dkd`, or `{name: dkd, beta: 2}`.

    Unknown names, unknown settings and wrong types are one line naming `method.logit_loss`.
    """
    if isinstance(spec, LogitLoss):
        return spec
    cls, options = LOGIT_LOSSES.resolve(spec)
    return cls(options)
