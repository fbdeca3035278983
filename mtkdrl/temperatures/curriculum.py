"""`curriculum`: CTKD's global temperature (Li et al., AAAI 2023), learned adversarially.

T = t_start + t_range·sigmoid(τ), with τ one learnable number behind a gradient reversal layer:
the student's loss reaches τ multiplied by λ_e, which falls on a cosine from 0 to −1 over the
first `ramp_epochs` epochs and stays at −1, so T is pushed to raise the distillation loss the
student lowers (easy to hard). τ takes SGD steps at the student's learning rate, momentum and
weight decay. See docs/temperatures.md#curriculum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import MtkdrlError
from . import register_temperature_policy
from .base import PolicyInput, TemperatureContext, TemperaturePolicy


@dataclass
class CurriculumOptions:
    """CTKD settings; `initial` is where T starts (ours: the official start is not verified)."""

    t_start: float = 1.0
    t_range: float = 20.0  # the official `t_end`: T lies in (t_start, t_start + t_range)
    initial: float = 4.0
    lambda_max: float = 0.0
    lambda_min: float = -1.0
    ramp_epochs: int = 10

    def __post_init__(self) -> None:
        if self.t_range <= 0 or self.t_start <= 0 or self.ramp_epochs < 1:
            raise MtkdrlError(
                "method.temperature: t_start and t_range must be > 0 and ramp_epochs >= 1"
            )
        if not self.t_start < self.initial < self.t_start + self.t_range:
            raise MtkdrlError(
                f"method.temperature.initial: must lie in ({self.t_start:g}, "
                f"{self.t_start + self.t_range:g}), got {self.initial:g}"
            )


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by `scale` (negative: reversal)."""

    @staticmethod
    def forward(ctx, value: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def reversal_scale(epoch: int, options: CurriculumOptions) -> float:
    """λ_e: a cosine from `lambda_max` to `lambda_min` over the ramp, then `lambda_min`."""
    if epoch >= options.ramp_epochs:
        return options.lambda_min
    span = options.lambda_max - options.lambda_min
    return (math.cos(math.pi * epoch / options.ramp_epochs) + 1) / 2 * span + options.lambda_min


@register_temperature_policy
class CurriculumTemperature(TemperaturePolicy):
    """One global T, trained against the student through a gradient reversal layer."""

    name = "curriculum"
    description = "CTKD: a global T learned adversarially, on an easy-to-hard cosine schedule"
    Options = CurriculumOptions

    def __init__(self, options: CurriculumOptions, context: TemperatureContext) -> None:
        super().__init__(options, context)
        share = (options.initial - options.t_start) / options.t_range
        self.tau = nn.Parameter(torch.tensor(math.log(share / (1 - share))))
        self.optimizer = torch.optim.SGD([self.tau], lr=0.0)
        self.last_value = options.initial

    def value(self, epoch: int) -> Tensor:
        tau = _ScaleGradient.apply(self.tau, reversal_scale(epoch, self.options))
        return self.options.t_start + self.options.t_range * torch.sigmoid(tau)

    def choose(self, seen: PolicyInput) -> Tensor:
        temperature = self.value(seen.epoch).to(seen.student_logits.device)
        self.last_value = float(temperature.detach())
        return temperature

    def before_step(self, access: Any) -> None:
        """One SGD step of τ with the student's settings (gradients averaged over processes)."""
        if self.tau.grad is not None and self.context.reduce is not None:
            self.tau.grad = self.context.reduce(self.tau.grad)
        group = self.optimizer.param_groups[0]
        group.update(lr=access.lr, momentum=access.momentum, weight_decay=access.weight_decay)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"temperature_mean": self.last_value, "temperature_std": 0.0}

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "last_value": self.last_value}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.last_value = state["last_value"]
