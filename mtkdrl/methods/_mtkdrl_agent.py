"""MTKD-RL's agent: state building, the policy network, and the replay buffer (mtkdrl.md §2.4-2.7).

Kept beside the `mtkdrl` strategy; the module name starts with `_` so the method registry does
not treat it as a method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class AgentState:
    """The agent's observation for a batch (detached): the flat state and the three B×K views.

    `vector` is, per sample, concat over teachers k of [cos_k, KL_k, tCE_k, e_k (d_k), z_k (C)],
    in teacher order, exactly as the official `get_agent_state`; `teacher_ce`, `kl` and `cos`
    are the same numbers as B×K matrices, used by the hand-crafted weight sources.
    """

    vector: Tensor
    teacher_ce: Tensor
    kl: Tensor
    cos: Tensor

    @classmethod
    def from_vector(cls, vector: Tensor, widths: list[int]) -> AgentState:
        """Recover the B×K views from the flat state (its first three columns per teacher)."""
        starts = torch.tensor([0, *widths[:-1]]).cumsum(0).tolist()
        cos = torch.stack([vector[:, s] for s in starts], dim=1)
        kl = torch.stack([vector[:, s + 1] for s in starts], dim=1)
        teacher_ce = torch.stack([vector[:, s + 2] for s in starts], dim=1)
        return cls(vector, teacher_ce, kl, cos)


def build_state(
    kl: Tensor,
    teacher_ce: Tensor,
    cos: Tensor,
    embeddings: list[Tensor],
    teacher_logits: list[Tensor],
) -> AgentState:
    """Assemble the state of §2.4 from per-teacher terms (all B×K) and teacher outputs."""
    parts = []
    for k, (embedding, logits) in enumerate(zip(embeddings, teacher_logits, strict=True)):
        parts += [cos[:, k : k + 1], kl[:, k : k + 1], teacher_ce[:, k : k + 1], embedding, logits]
    vector = torch.cat(parts, dim=1).detach()
    return AgentState(vector, teacher_ce.detach(), kl.detach(), cos.detach())


def state_widths(embedding_dims: list[int], num_classes: int) -> list[int]:
    """Width of each teacher's slice of the state: d_k + C + 3."""
    return [dim + num_classes + 3 for dim in embedding_dims]


def handcrafted_sources(state: AgentState) -> tuple[Tensor, Tensor, Tensor]:
    """The three hand-crafted weight sources of §2.5, each summing to 1 over teachers.

    Confidence (1 - softmax(tCE))/(K - 1): a teacher with lower CE gets more weight; logit gap
    softmax(KL): the teacher farthest from the student gets more; feature similarity softmax(cos).
    """
    num_teachers = state.teacher_ce.shape[1]
    confidence = (1.0 - F.softmax(state.teacher_ce, dim=1)) / (num_teachers - 1)
    return confidence, F.softmax(state.kl, dim=1), F.softmax(state.cos, dim=1)


class PolicyNetwork(nn.Module):
    """The official `PolicyTrans`: a shared bias-free trunk, ReLU, and logit/feature heads.

    The final weights mix each head's softmax with the hand-crafted sources: fixed thirds, or
    (`dynamic`) softmax-normalised learnable mixing vectors initialised to (1, 1, 1).
    """

    def __init__(self, state_dim: int, num_teachers: int, hidden: int, dynamic: bool) -> None:
        super().__init__()
        self.trunk = nn.Linear(state_dim, hidden, bias=False)
        self.logit_head = nn.Linear(hidden, num_teachers)
        self.feature_head = nn.Linear(hidden, num_teachers)
        self.dynamic = dynamic
        if dynamic:
            self.logit_mix = nn.Parameter(torch.ones(3))
            self.feature_mix = nn.Parameter(torch.ones(3))

    def head_logits(self, state: AgentState) -> tuple[Tensor, Tensor]:
        """Pre-softmax outputs of the logit and feature heads."""
        hidden = F.relu(self.trunk(state.vector))
        return self.logit_head(hidden), self.feature_head(hidden)

    def mixing(self) -> tuple[Tensor, Tensor]:
        """The weights of (agent, confidence, gap) in the logit and in the feature weights."""
        if self.dynamic:
            return F.softmax(self.logit_mix, dim=0), F.softmax(self.feature_mix, dim=0)
        third = self.trunk.weight.new_full((3,), 1.0 / 3.0)
        return third, third

    def forward(self, state: AgentState) -> tuple[Tensor, Tensor]:
        """Per-sample teacher weights (B×K each, rows on the simplex) for logits and features."""
        logit_out, feature_out = self.head_logits(state)
        return self.combine(F.softmax(logit_out, dim=1), F.softmax(feature_out, dim=1), state)

    def combine(
        self, logit_action: Tensor, feature_action: Tensor, state: AgentState
    ) -> tuple[Tensor, Tensor]:
        """Mix the agent's actions with the hand-crafted sources (§2.5)."""
        confidence, logit_gap, feature_similarity = handcrafted_sources(state)
        logit_mix, feature_mix = self.mixing()
        logit_weights = (
            logit_mix[0] * logit_action + logit_mix[1] * confidence + logit_mix[2] * logit_gap
        )
        feature_weights = (
            feature_mix[0] * feature_action
            + feature_mix[1] * confidence
            + feature_mix[2] * feature_similarity
        )
        return logit_weights, feature_weights


def replay_loss(logit_weights: Tensor, feature_weights: Tensor, reward: Tensor) -> Tensor:
    """The official agent objective: reward-weighted BCE of both weight matrices towards 1.

    Equals `BCE(w, 1, weight=r̂)` for each head (mean over B×K, log clamped at -100 as PyTorch does).
    """
    weight = reward.unsqueeze(1)
    logit_term = (weight * -torch.log(logit_weights).clamp(min=-100.0)).mean()
    feature_term = (weight * -torch.log(feature_weights).clamp(min=-100.0)).mean()
    return logit_term + feature_term


def normalise_reward(reward: Tensor) -> Tensor:
    """z-score within the (global) batch, clamped to [0, 1]; zero where it is undefined.

    A batch of one or rewards of zero variance carry no signal, so they give 0 instead of NaN.
    """
    if reward.numel() < 2:
        return torch.zeros_like(reward)
    std = reward.std()
    if not torch.isfinite(std) or std <= torch.finfo(reward.dtype).eps:
        return torch.zeros_like(reward)
    return ((reward - reward.mean()) / std).clamp(0.0, 1.0)


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

    def state_dict(self) -> dict:
        return {"states": list(self.states), "rewards": list(self.rewards)}

    def load_state_dict(self, state: dict) -> None:
        self.states = list(state["states"])
        self.rewards = list(state["rewards"])
