"""MTKD-RL's `official` agent update: what the authors' code runs (docs/methods/mtkdrl.md).

The policy is deterministic; each step stores (state, normalised reward), and every
`agent_step` batches and at each epoch's end the agent takes one SGD step per stored batch on a
reward-weighted BCE of its weights towards 1. This pulls each sample's weights towards uniform,
more strongly where the reward is high; it is not a policy gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._mtkdrl_agent import AgentState, AgentUpdate, PolicyNetwork, local_slice, normalise_reward

BUFFER_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def replay_loss(logit_weights: Tensor, feature_weights: Tensor, reward: Tensor) -> Tensor:
    """The official agent objective: reward-weighted BCE of both weight matrices towards 1.

    Equals `BCE(w, 1, weight=r̂)` for each head (mean over B×K, log clamped at -100 as PyTorch does).
    """
    weight = reward.unsqueeze(1)
    logit_term = (weight * -torch.log(logit_weights).clamp(min=-100.0)).mean()
    feature_term = (weight * -torch.log(feature_weights).clamp(min=-100.0)).mean()
    return logit_term + feature_term


class ReplayBuffer:
    """States and normalised rewards kept off the accelerator in reduced precision, size-capped."""

    def __init__(self, dtype: torch.dtype, cap_bytes: int) -> None:
        self.dtype = dtype
        self.cap_bytes = cap_bytes
        self.states: list[Tensor] = []
        self.rewards: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.states)

    @property
    def nbytes(self) -> int:
        return sum(
            s.numel() * s.element_size() + r.numel() * 4
            for s, r in zip(self.states, self.rewards, strict=True)
        )

    def would_overflow(self, batch_size: int, state_dim: int) -> bool:
        """True if adding one more batch of this shape would pass the cap."""
        itemsize = torch.tensor([], dtype=self.dtype).element_size()
        return (
            bool(self.states)
            and self.nbytes + batch_size * (state_dim * itemsize + 4) > self.cap_bytes
        )

    def add(self, state: Tensor, reward: Tensor) -> None:
        self.states.append(state.detach().to("cpu", self.dtype))
        self.rewards.append(reward.detach().to("cpu", torch.float32))

    def clear(self) -> None:
        self.states.clear()
        self.rewards.clear()


class OfficialUpdate(AgentUpdate):
    """Reward-weighted BCE replay of stored experience, every `agent_step` batches and per epoch."""

    def __init__(
        self, policy: PolicyNetwork, context: Any, options: Any, widths: list[int]
    ) -> None:
        super().__init__(policy, context, options, widths)
        lr = 0.1 if options.agent_lr is None else options.agent_lr
        self.optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
        self.buffer = ReplayBuffer(
            BUFFER_DTYPES[options.buffer_dtype], int(options.agent_buffer_mb * 2**20)
        )
        self.state_dim = sum(widths)
        self.batch_in_epoch = 0

    def describe(self) -> str:
        itemsize = torch.tensor([], dtype=self.buffer.dtype).element_size()
        return (
            f"mtkdrl agent: state {self.state_dim} values per sample "
            f"({self.state_dim * itemsize} bytes as {self.options.buffer_dtype}); "
            f"replay buffer capped at {self.options.agent_buffer_mb:g} MB"
        )

    def observe(
        self, state: AgentState, logit_w: Tensor, feature_w: Tensor, reward: Tensor, epoch: int
    ) -> None:
        gather = self.context.gather
        normalised = normalise_reward(reward if gather is None else gather(reward))
        normalised = local_slice(normalised, reward.shape[0], self.context.process_index)
        if self.buffer.would_overflow(state.vector.shape[0], self.state_dim):
            self.replay()
        self.buffer.add(state.vector, normalised)
        if self.batch_in_epoch % self.options.agent_step == 0 and self.batch_in_epoch != 0:
            self.replay()
        self.batch_in_epoch += 1

    def replay(self) -> None:
        """One agent SGD step per stored batch, in stored order, then clear."""
        device = self.policy.trunk.weight.device
        for vector, reward in zip(self.buffer.states, self.buffer.rewards, strict=True):
            state = AgentState.from_vector(vector.to(device, torch.float32), self.widths)
            logit_w, feature_w = self.policy(state)
            self.step(
                replay_loss(logit_w, feature_w, reward.to(device)), list(self.policy.parameters())
            )
        self.buffer.clear()

    def end_epoch(self) -> None:
        if len(self.buffer):
            self.replay()
        self.batch_in_epoch = 0

    def extra_state(self) -> dict[str, Any]:
        return {
            **super().extra_state(),
            "buffer_states": list(self.buffer.states),
            "buffer_rewards": list(self.buffer.rewards),
            "batch_in_epoch": self.batch_in_epoch,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.buffer.states = list(state["buffer_states"])
        self.buffer.rewards = list(state["buffer_rewards"])
        self.batch_in_epoch = state["batch_in_epoch"]
