"""MTKD-RL's `reinforce` agent update: the paper's policy-gradient reading (docs/methods/mtkdrl.md).

The policy's mixed weights are the mean of a Dirichlet; the weights applied to the student's
loss are sampled from it, and after every step REINFORCE with a baseline (learned, or a running
mean) and an entropy bonus updates the agent on-policy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Dirichlet

from ._mtkdrl_agent import AgentState, AgentUpdate, PolicyNetwork


class ReinforceUpdate(AgentUpdate):
    """Dirichlet policy around the mixed weights, REINFORCE with a baseline and entropy bonus."""

    def __init__(
        self, policy: PolicyNetwork, context: Any, options: Any, widths: list[int]
    ) -> None:
        super().__init__(policy, context, options, widths)
        self.log_concentration = torch.nn.Parameter(torch.tensor(options.concentration).log())
        self.value_head = torch.nn.Linear(options.hidden_dim, 1)
        lr = 1e-3 if options.agent_lr is None else options.agent_lr
        self.optimizer = torch.optim.Adam(self.agent_parameters(), lr=lr)
        self.register_buffer("running_baseline", torch.zeros(()))  # checkpointed, no host sync

    def agent_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.policy.parameters(), self.log_concentration, *self.value_head.parameters()]

    def dirichlet(self, mean: Tensor) -> Dirichlet:
        concentration = self.log_concentration.exp() * mean.shape[1] * mean.clamp_min(1e-4)
        return Dirichlet(concentration)

    def act(self, logit_weights: Tensor, feature_weights: Tensor) -> tuple[Tensor, Tensor]:
        """Weights sampled around the policy's, kept strictly inside the simplex."""
        logit_w = self.dirichlet(logit_weights).sample()
        feature_w = self.dirichlet(feature_weights).sample()
        return _floor(logit_w), _floor(feature_w)

    def observe(
        self, state: AgentState, logit_w: Tensor, feature_w: Tensor, reward: Tensor, epoch: int
    ) -> None:
        if epoch < self.options.warmup_epochs:
            return
        hidden = F.relu(self.policy.trunk(state.vector))
        logit_out, feature_out = self.policy.logit_head(hidden), self.policy.feature_head(hidden)
        logit_mean, feature_mean = self.policy.combine(
            F.softmax(logit_out, 1), F.softmax(feature_out, 1), state
        )
        logit_pi, feature_pi = self.dirichlet(logit_mean), self.dirichlet(feature_mean)
        log_prob = logit_pi.log_prob(logit_w) + feature_pi.log_prob(feature_w)
        entropy = logit_pi.entropy() + feature_pi.entropy()
        advantage, value_loss = self.advantage(hidden, reward)
        scale = advantage.new_ones(())
        if advantage.numel() > 1:
            gather = self.context.gather
            scale = (advantage if gather is None else gather(advantage)).std()
        advantage = advantage / scale.clamp_min(1e-8)
        loss = -(advantage * log_prob).mean() - self.options.entropy_coef * entropy.mean()
        self.step(loss + value_loss, self.agent_parameters())

    def advantage(self, hidden: Tensor, reward: Tensor) -> tuple[Tensor, Tensor]:
        """Reward minus the baseline, and the baseline's own loss (zero for the running mean)."""
        if self.options.baseline == "learned":
            value = self.value_head(hidden.detach()).squeeze(1)
            return reward - value.detach(), F.mse_loss(value, reward)
        advantage = reward - self.running_baseline
        momentum = self.options.baseline_momentum
        gather = self.context.gather
        mean_reward = (reward if gather is None else gather(reward)).mean()
        self.running_baseline.mul_(momentum).add_((1 - momentum) * mean_reward)
        return advantage, reward.new_zeros(())


def _floor(weights: Tensor) -> Tensor:
    """Keep sampled weights strictly inside the simplex so their log-probability stays finite."""
    weights = weights.clamp_min(1e-6)
    return weights / weights.sum(dim=1, keepdim=True)
