"""Optimizer factory and the epoch-based LR schedules."""

import math

import pytest
import torch

from mtkdrl.errors import MtkdrlError
from mtkdrl.optim import EpochSchedule, build_optimizer, build_scheduler
from mtkdrl.recipe import OptimConfig


def test_multistep_matches_paper_milestones():
    schedule = EpochSchedule(
        OptimConfig(milestones=[150, 180, 210]), steps_per_epoch=10, epochs=240
    )
    assert schedule(0) == 1.0
    assert schedule(149 * 10 + 9) == 1.0
    assert math.isclose(schedule(150 * 10), 0.1)
    assert math.isclose(schedule(210 * 10), 0.1**3)


def test_cosine_with_warmup():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=1, lr=1.0, min_lr=0.0)
    schedule = EpochSchedule(cfg, steps_per_epoch=4, epochs=5)
    assert schedule(0) == pytest.approx(0.25)
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(4 * 5) == pytest.approx(0.0, abs=1e-9)


def test_sgd_nesterov_flag_and_scheduler_steps():
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = build_optimizer(params, OptimConfig(lr=0.5, nesterov=True, milestones=[1]))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["nesterov"] is True
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    plain = build_optimizer(params, OptimConfig(nesterov=False))
    assert plain.param_groups[0]["nesterov"] is False
    scheduler = build_scheduler(optimizer, OptimConfig(lr=0.5, milestones=[1]), 2, 3)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_unknown_optimizer():
    with pytest.raises(MtkdrlError, match=r"optim.optimizer"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(optimizer="sgdd"))
