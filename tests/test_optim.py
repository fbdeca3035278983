"""Optimizer factory and the LR schedules (timm's schedulers, milestones in whole epochs)."""

import json
import logging
import math

import pytest
import torch

from mtkdrl.errors import MtkdrlError
from mtkdrl.optim import build_optimizer, build_scheduler
from mtkdrl.recipe import OptimConfig


def lrs(cfg: OptimConfig, steps_per_epoch: int, epochs: int, updates: list[int]) -> list[float]:
    """The learning rate after each number of optimizer updates, as the loop steps it."""
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    values = []
    for done in updates:
        if done:
            scheduler.step_update(num_updates=done)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_multistep_decays_at_the_first_update_of_each_milestone_epoch():
    cfg = OptimConfig(lr=1.0, schedule="multistep", milestones=[150, 180, 210])
    before, at, last = lrs(cfg, 10, 240, [1499, 1500, 2100])
    assert before == 1.0
    assert at == pytest.approx(0.1)
    assert last == pytest.approx(0.1**3)


def test_cosine_with_warmup():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=1, lr=1.0, min_lr=0.0)
    start, warm, middle, end = lrs(cfg, 4, 5, [0, 4, 4 + 8, 4 * 5])
    assert start == pytest.approx(0.25)  # lr / warm-up updates
    assert warm == pytest.approx(1.0)
    assert middle == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert end == pytest.approx(0.0, abs=1e-9)


def test_constant_holds_the_learning_rate():
    assert lrs(OptimConfig(schedule="constant", lr=0.3), 5, 3, [0, 7, 15]) == [0.3] * 3


def test_scheduler_state_is_plain_json():
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig())
    state = build_scheduler(optimizer, OptimConfig(schedule="cosine"), 3, 2).state_dict()
    assert json.loads(json.dumps(state)) == state


def test_sgd_nesterov_flag():
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = build_optimizer(params, OptimConfig(lr=0.5, nesterov=True))
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["nesterov"] is True
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    plain = build_optimizer(params, OptimConfig(nesterov=False))
    assert plain.param_groups[0]["nesterov"] is False


def test_unknown_optimizer():
    with pytest.raises(MtkdrlError, match=r"optim.optimizer"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(optimizer="sgdd"))


def test_a_one_step_cosine_span_is_built_without_timms_warning(caplog):
    """A dry run or a one-step run: nothing to anneal, and no warning from timm saying so."""
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig())
    with caplog.at_level(logging.WARNING):
        build_scheduler(optimizer, OptimConfig(schedule="cosine"), 1, 1)
    assert not [r for r in caplog.records if "no effect" in r.getMessage()]
    assert logging.getLogger("timm.scheduler.cosine_lr").level == logging.NOTSET  # restored
