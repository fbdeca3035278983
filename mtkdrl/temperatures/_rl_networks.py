"""The neural networks of RLKD's agent: the actor, the critic's MLP, the return model, the
critical-state detector; `rl.py` trains them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STATE_WIDTH = 3


def mlp(width: int, hidden: int) -> nn.Sequential:
    """Two hidden ReLU layers to one output: the actor's mean and the critic's value."""
    return nn.Sequential(
        nn.Linear(width, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
    )


class SquashedGaussianActor(nn.Module):
    """μ = tanh(MLP(s)), a state-free log σ (σ = e^−0.5 at the start), T = t_max·sigmoid(u)."""

    def __init__(self, hidden: int, t_max: float) -> None:
        super().__init__()
        self.mean = mlp(STATE_WIDTH, hidden)
        self.log_std = nn.Parameter(torch.tensor(-0.5))
        self.t_max = t_max

    def distribution(self, states: Tensor) -> torch.distributions.Normal:
        """N(μ(s), σ), the distribution of the pre-squash action u at each state."""
        mean = torch.tanh(self.mean(states)).squeeze(1)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def squash(self, pre: Tensor) -> Tensor:
        """T = t_max·sigmoid(u), in (0, t_max)."""
        return self.t_max * torch.sigmoid(pre)

    def log_prob(self, states: Tensor, pre: Tensor) -> Tensor:
        """log density of T = squash(u) at the sampled u: log N(u) − log |dT/du|."""
        jacobian = math.log(self.t_max) + F.logsigmoid(pre) + F.logsigmoid(-pre)
        return self.distribution(states).log_prob(pre) - jacobian


class RewardRedistribution(nn.Module):
    """Predicts a trajectory's return from each (state, action); the differences of consecutive
    predictions, corrected to sum to the return, are the samples' own rewards."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_WIDTH + 1, 16), nn.Linear(16, 1))

    def forward(self, states: Tensor, actions: Tensor) -> Tensor:
        """The return predicted at each step of the trajectory."""
        return self.net(torch.cat([states, actions.unsqueeze(1)], dim=1)).squeeze(1)


class CriticalStateDetector(nn.Module):
    """m(s) = sigmoid(Linear(16→1)(Linear(3→16)(s))): how much each state of a trajectory bears
    on its return; PPO sees the states scaled by m."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_WIDTH, 16), nn.Linear(16, 1))

    def forward(self, states: Tensor) -> Tensor:
        """The mask m(s) of each state, in (0, 1)."""
        return torch.sigmoid(self.net(states)).squeeze(1)
