"""Student optimizer and LR schedule, both from timm's factories (multistep, cosine, constant)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler
from timm.scheduler.scheduler import Scheduler

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


def _cosine(optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int, warmup: dict):
    """Cosine from lr to `min_lr` over the epochs after the warm-up. A span of one step (a dry
    run, a one-step run) has nothing to anneal: timm's warning that says so is kept quiet."""
    span = max(epochs - cfg.warmup_epochs, 1) * steps_per_epoch
    timm_log = logging.getLogger(CosineLRScheduler.__module__)
    level = timm_log.level
    if span == 1:
        timm_log.setLevel(logging.ERROR)
    try:
        return CosineLRScheduler(optimizer, t_initial=span, lr_min=cfg.min_lr, **warmup)
    finally:
        timm_log.setLevel(level)


def _multistep(optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int, warmup: dict):
    """lr × gamma at the first update of each milestone epoch (counted from the run's start).

    timm applies a milestone t at update t − 1, hence the + 1; milestones include the warm-up.
    """
    milestones = [m * steps_per_epoch + 1 for m in sorted(cfg.milestones)]
    warmup = {**warmup, "warmup_prefix": False}
    return MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=cfg.gamma, **warmup)


def _constant(optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int, warmup: dict):
    """lr throughout, after the warm-up."""
    return MultiStepLRScheduler(optimizer, decay_t=[], **{**warmup, "warmup_prefix": False})


SCHEDULES = {"cosine": _cosine, "multistep": _multistep, "constant": _constant}


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> Scheduler:
    """timm's scheduler for `optim.schedule`, stepped per optimizer update with
    `step_update(updates_done)`; its state is plain values, checkpointed as JSON.

    The warm-up rises linearly from lr / (warm-up updates) to lr over `optim.warmup_epochs`.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    warmup = {
        "warmup_t": warmup_steps,
        "warmup_lr_init": cfg.lr / max(1, warmup_steps),
        "warmup_prefix": True,
        "t_in_epochs": False,
    }
    return SCHEDULES[cfg.schedule](optimizer, cfg, steps_per_epoch, epochs, warmup)
