"""`mtkdrl`: MTKD-RL (Yang et al., AAAI 2025), an agent that sets per-sample teacher weights.

Two agent updates share the state, the network and the reward (see mtkdrl.md):

* `official` (default) is what the authors' code runs: a deterministic policy whose outputs are
  mixed with hand-crafted confidence and gap terms; experience (state, normalised reward) is
  stored, and every `agent_step` batches and at each epoch end the agent takes one SGD step per
  stored batch on a reward-weighted BCE towards 1. This pushes each sample's weights towards
  uniform, more strongly where the reward is high; it is not a policy gradient.
* `reinforce` is the paper's policy-gradient reading, reconstructed (the paper's text of the
  update could not be read): the mixed weights are the mean of a Dirichlet policy, the sampled
  weights are applied to the student's loss, and REINFORCE with a learned (or running) baseline
  and an entropy bonus updates the agent on-policy after every step.

Both read the student's pre-update loss as the reward, r = -(CE + Σ wL·KL + β Σ wF·MSE) with the
applied weights, normalised over the global batch. Each feature adapter reads the student's own
map: the official code chains the resized maps from one teacher to the next by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Dirichlet

from ..errors import MtkdrlError
from . import register_method
from ._mtkdrl_agent import (
    AgentState,
    PolicyNetwork,
    ReplayBuffer,
    build_state,
    normalise_reward,
    replay_loss,
    state_widths,
)
from .base import DistillBatch, MethodContext, TeacherWeights, WeightingStrategy

BUFFER_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class MTKDRLOptions:
    """MTKD-RL settings; defaults are the official code's (mtkdrl.md §2.9)."""

    agent_update: Literal["official", "reinforce"] = "official"
    dynamic: bool = False
    warmup_epochs: int = 1
    warmup_weight: Literal["one", "uniform"] = "one"
    hidden_dim: int = 128
    agent_lr: float | None = None
    agent_step: int = 1000
    agent_buffer_mb: float = 2048.0
    buffer_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    baseline: Literal["learned", "running"] = "learned"
    baseline_momentum: float = 0.9
    entropy_coef: float = 1e-3
    concentration: float = 20.0


@register_method
class MTKDRL(WeightingStrategy):
    """Reinforcement-learned per-sample teacher weights for the logit and the feature losses."""

    name = "mtkdrl"
    Options = MTKDRLOptions

    def __init__(self, context: MethodContext, options: MTKDRLOptions) -> None:
        if context.num_teachers < 2:
            raise MtkdrlError(
                f"teachers: method 'mtkdrl' needs at least 2 teachers (its confidence term divides "
                f"by K - 1), the recipe lists {context.num_teachers}; use method 'kd' for one"
            )
        super().__init__(context, options)
        self.widths = state_widths(context.embedding_dims, context.num_classes)
        self.state_dim = sum(self.widths)
        self.policy = PolicyNetwork(
            self.state_dim, context.num_teachers, options.hidden_dim, options.dynamic
        )
        official = options.agent_update == "official"
        if official:
            self.agent_optimizer = torch.optim.SGD(
                self.policy.parameters(), lr=options.agent_lr or 0.1
            )
        else:
            self.log_concentration = torch.nn.Parameter(torch.tensor(options.concentration).log())
            self.value_head = torch.nn.Linear(options.hidden_dim, 1)
            self.agent_optimizer = torch.optim.Adam(
                self.agent_parameters(), lr=options.agent_lr or 1e-3
            )
        self.buffer = ReplayBuffer(
            BUFFER_DTYPES[options.buffer_dtype], int(options.agent_buffer_mb * 2**20)
        )
        self.batch_in_epoch = 0
        self.register_buffer("running_baseline", torch.zeros(()))  # checkpointed, no host sync
        self.agent_updates = 0
        self._pending: AgentState | None = None
        self._stats: Tensor | None = None

    def describe(self) -> str:
        itemsize = torch.tensor([], dtype=self.buffer.dtype).element_size()
        return (
            f"mtkdrl agent: state {self.state_dim} values per sample "
            f"({self.state_dim * itemsize} bytes as {self.options.buffer_dtype}); "
            f"replay buffer capped at {self.options.agent_buffer_mb:g} MB"
        )

    def agent_parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.policy.parameters())
        if self.options.agent_update == "reinforce":
            params += [self.log_concentration, *self.value_head.parameters()]
        return params

    @property
    def uses_features(self) -> bool:
        return True

    # ------------------------------------------------------------------ weights
    def agent_state(self, batch: DistillBatch) -> AgentState:
        """The detached state of §2.4 for this batch, from the terms the distiller computed."""
        teacher_ce = torch.stack(
            [F.cross_entropy(t.logits, batch.labels, reduction="none") for t in batch.teachers], 1
        )
        cos = torch.stack(
            [
                F.cosine_similarity(adapted.mean(dim=(2, 3)), t.embedding, dim=1, eps=1e-8)
                for adapted, t in zip(batch.adapted, batch.teachers, strict=True)
            ],
            dim=1,
        )
        return build_state(
            batch.kl.detach(),
            teacher_ce,
            cos.detach(),
            [t.embedding for t in batch.teachers],
            [t.logits for t in batch.teachers],
        )

    def weights(self, batch: DistillBatch, epoch: int) -> TeacherWeights:
        state = self.agent_state(batch)
        self._pending = state
        if epoch < self.options.warmup_epochs:
            fill = 1.0 if self.options.warmup_weight == "one" else 1.0 / batch.num_teachers
            ones = batch.kl.new_full(batch.kl.shape, fill)
            return self._track(TeacherWeights(ones, ones.clone()))
        with torch.no_grad():
            logit_w, feature_w = self.policy(state)
            if self.options.agent_update == "reinforce":
                logit_w = self._dirichlet(logit_w).sample()
                feature_w = self._dirichlet(feature_w).sample()
                logit_w, feature_w = _floor(logit_w), _floor(feature_w)
        return self._track(TeacherWeights(logit_w, feature_w))

    def _dirichlet(self, mean: Tensor) -> Dirichlet:
        concentration = self.log_concentration.exp() * mean.shape[1] * mean.clamp_min(1e-4)
        return Dirichlet(concentration)

    def _track(self, weights: TeacherWeights) -> TeacherWeights:
        """Accumulate per-teacher sums of w and w² for the epoch's mean and spread."""
        stacked = torch.stack([weights.logit, weights.feature]).detach()
        stats = torch.cat([stacked.sum(1), stacked.pow(2).sum(1)], dim=0)
        count = stacked.new_full((4, 1), float(stacked.shape[1]))
        stats = torch.cat([stats, count], dim=1)
        self._stats = stats if self._stats is None else self._stats + stats
        return weights

    # ------------------------------------------------------------------ updates
    def observe(
        self, batch: DistillBatch, weights: TeacherWeights, sample_loss: Tensor, epoch: int
    ) -> None:
        state, self._pending = self._pending, None
        reward = -sample_loss.detach().float()
        if self.options.agent_update == "reinforce":
            if epoch >= self.options.warmup_epochs:
                self._reinforce_step(state, weights, reward)
        else:
            self._store(state, reward)
        self.batch_in_epoch += 1

    def _store(self, state: AgentState, reward: Tensor) -> None:
        global_reward = self._global(reward)
        normalised = normalise_reward(global_reward)
        normalised = self._local_slice(normalised, reward.shape[0])
        if self.buffer.would_overflow(state.vector.shape[0], self.state_dim):
            self._replay()
        self.buffer.add(state.vector, normalised)
        index = self.batch_in_epoch
        if index % self.options.agent_step == 0 and index != 0:
            self._replay()

    def _global(self, tensor: Tensor) -> Tensor:
        return tensor if self.context.gather is None else self.context.gather(tensor)

    def _local_slice(self, tensor: Tensor, size: int) -> Tensor:
        rank = self.context.process_index
        return tensor[rank * size : (rank + 1) * size]

    def _replay(self) -> None:
        """One agent SGD step per stored batch, in stored order, then clear (§2.7)."""
        device = self.policy.trunk.weight.device
        for vector, reward in zip(self.buffer.states, self.buffer.rewards, strict=True):
            state = AgentState.from_vector(vector.to(device, torch.float32), self.widths)
            logit_w, feature_w = self.policy(state)
            loss = replay_loss(logit_w, feature_w, reward.to(device))
            self._agent_step(loss)
        self.buffer.clear()

    def _agent_step(self, loss: Tensor) -> None:
        """A step of the agent's optimizer with gradients averaged over processes."""
        self.agent_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.context.reduce is not None:
            for param in self.agent_parameters():
                if param.grad is not None:
                    param.grad = self.context.reduce(param.grad)
        self.agent_optimizer.step()
        self.agent_updates += 1

    def _reinforce_step(self, state: AgentState, weights: TeacherWeights, reward: Tensor) -> None:
        """REINFORCE on this batch's sampled weights, with a baseline and an entropy bonus."""
        hidden = F.relu(self.policy.trunk(state.vector))
        logit_out, feature_out = self.policy.logit_head(hidden), self.policy.feature_head(hidden)
        logit_mean, feature_mean = self.policy.combine(
            F.softmax(logit_out, 1), F.softmax(feature_out, 1), state
        )
        logit_pi, feature_pi = self._dirichlet(logit_mean), self._dirichlet(feature_mean)
        log_prob = logit_pi.log_prob(weights.logit) + feature_pi.log_prob(weights.feature)
        entropy = logit_pi.entropy() + feature_pi.entropy()
        if self.options.baseline == "learned":
            value = self.value_head(hidden.detach()).squeeze(1)
            advantage = reward - value.detach()
            value_loss = F.mse_loss(value, reward)
        else:
            advantage = reward - self.running_baseline
            value_loss = reward.new_zeros(())
            momentum = self.options.baseline_momentum
            mean_reward = self._global(reward).mean()
            self.running_baseline.mul_(momentum).add_((1 - momentum) * mean_reward)
        scale = self._global(advantage).std() if advantage.numel() > 1 else advantage.new_ones(())
        advantage = advantage / scale.clamp_min(1e-8)
        loss = -(advantage * log_prob).mean() - self.options.entropy_coef * entropy.mean()
        self._agent_step(loss + value_loss)

    def end_epoch(self, epoch: int) -> dict[str, float]:
        if self.options.agent_update == "official" and len(self.buffer):
            self._replay()
        self.batch_in_epoch = 0
        figures: dict[str, float] = {"agent_updates": float(self.agent_updates)}
        if self._stats is not None:
            stats = self._global(self._stats.unsqueeze(0)).sum(0)
            k = self.context.num_teachers
            count = stats[0, k].clamp_min(1)
            for row, kind in enumerate(("logit", "feature")):
                mean = stats[row, :k] / count
                spread = (stats[row + 2, :k] / count - mean.pow(2)).clamp_min(0).sqrt()
                for index in range(k):
                    figures[f"w_{kind}_mean/{index}"] = float(mean[index])
                    figures[f"w_{kind}_std/{index}"] = float(spread[index])
        self._stats = None
        if self.options.dynamic:
            with torch.no_grad():
                logit_mix, feature_mix = self.policy.mixing()
            for index, source in enumerate(("agent", "confidence", "gap")):
                figures[f"mix_logit/{source}"] = float(logit_mix[index])
                figures[f"mix_feature/{source}"] = float(feature_mix[index])
        return figures

    # -------------------------------------------------------------- checkpoint
    def get_extra_state(self) -> dict:
        return {
            "agent_optimizer": self.agent_optimizer.state_dict(),
            "buffer": self.buffer.state_dict(),
            "batch_in_epoch": self.batch_in_epoch,
            "agent_updates": self.agent_updates,
            "stats": self._stats,
        }

    def set_extra_state(self, state: dict) -> None:
        self.agent_optimizer.load_state_dict(state["agent_optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.batch_in_epoch = state["batch_in_epoch"]
        self.agent_updates = state["agent_updates"]
        self._stats = state["stats"]


def _floor(weights: Tensor) -> Tensor:
    """Keep sampled weights strictly inside the simplex so their log-probability stays finite."""
    weights = weights.clamp_min(1e-6)
    return weights / weights.sum(dim=1, keepdim=True)
