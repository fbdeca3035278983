"""Student optimizer (timm's factory) and a per-step LR schedule (multistep, cosine, constant)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from torch.optim.lr_scheduler import LambdaLR

from .errors import MtkdrlError
from .recipe import OptimConfig


def build_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """timm's optimizer factory; `sgd` follows the recipe's `nesterov` flag (the paper: True)."""
    name = cfg.optimizer.lower()
    if name == "sgd" and not cfg.nesterov:
        name = "momentum"
    if name not in list_optimizers():
        raise MtkdrlError(
            f"optim.optimizer: unknown optimizer {cfg.optimizer!r}; e.g. sgd, adamw, lamb "
            f"(any of timm's: {', '.join(list_optimizers()[:12])}, ...)"
        )
    extra = {"momentum": cfg.momentum} if name in ("sgd", "momentum") else {}
    return create_optimizer_v2(
        list(params), opt=name, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra
    )


class EpochSchedule:
    """LR factor at an optimizer step, as a function of the fractional epoch.

    `multistep` multiplies by `gamma` at each milestone epoch (the paper's 150/180/210);
    `cosine` anneals to `min_lr` over the run; both can start with a linear warm-up.
    """

    def __init__(self, cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> None:
        self.kind = cfg.schedule
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.epochs = epochs
        self.milestones = sorted(cfg.milestones)
        self.gamma = cfg.gamma
        self.warmup_epochs = cfg.warmup_epochs
        self.min_ratio = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0

    def __call__(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            return (step + 1) / (self.warmup_epochs * self.steps_per_epoch)
        if self.kind == "multistep":
            return self.gamma ** sum(1 for m in self.milestones if int(epoch) >= m)
        if self.kind == "cosine":
            span = max(self.epochs - self.warmup_epochs, 1e-8)
            progress = min((epoch - self.warmup_epochs) / span, 1.0)
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            return self.min_ratio + (1.0 - self.min_ratio) * cosine
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state is checkpointed with the run."""
    return LambdaLR(optimizer, EpochSchedule(cfg, steps_per_epoch, epochs))
