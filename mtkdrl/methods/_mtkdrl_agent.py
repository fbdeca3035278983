"""MTKD-RL's agent, shared by both updates: the state, the policy network, reward normalisation.

See docs/methods/mtkdrl.md (State, Action and weights, Reward). The module name starts with `_`
so the method registry does not treat it as a method.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._weighting import confidence_weights


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
    normalise: bool = False,
) -> AgentState:
    """Assemble the state (docs/methods/mtkdrl.md#state) from per-teacher terms (B×K each) and
    the teachers' outputs; with `normalise`, each embedding and logit vector is standardised per
    sample (zero mean, unit variance), so wide teachers do not swamp the three per-teacher terms."""
    parts = []
    for k, (embedding, logits) in enumerate(zip(embeddings, teacher_logits, strict=True)):
        if normalise:
            embedding = standardise(embedding.float())
            logits = standardise(logits.float())
        parts += [cos[:, k : k + 1], kl[:, k : k + 1], teacher_ce[:, k : k + 1], embedding, logits]
    vector = torch.cat(parts, dim=1).detach()
    return AgentState(vector, teacher_ce.detach(), kl.detach(), cos.detach())


def standardise(values: Tensor) -> Tensor:
    """Each row to zero mean and unit variance (a layer norm without parameters)."""
    return F.layer_norm(values, values.shape[1:])


def state_widths(embedding_dims: list[int], num_classes: int) -> list[int]:
    """Width of each teacher's slice of the state: d_k + C + 3."""
    return [dim + num_classes + 3 for dim in embedding_dims]


def handcrafted_sources(state: AgentState) -> tuple[Tensor, Tensor, Tensor]:
    """The three hand-crafted weight sources, each summing to 1 over teachers
    (docs/methods/mtkdrl.md#action-and-weights).

    Confidence (1 - softmax(tCE))/(K - 1): a teacher with lower CE gets more weight; logit gap
    softmax(KL): the teacher farthest from the student gets more; feature similarity softmax(cos).
    """
    return (
        confidence_weights(state.teacher_ce),
        F.softmax(state.kl, dim=1),
        F.softmax(state.cos, dim=1),
    )


class PolicyNetwork(nn.Module):
    """The official `PolicyTrans`: a shared bias-free trunk, ReLU, and logit/feature heads.

    The final weights mix each head's softmax with the hand-crafted sources in fixed proportions
    (`logit_mix`, `feature_mix`, normalised; thirds in the official code), or (`dynamic`) by
    softmax-normalised learnable vectors that start at those proportions: at 1 + log(m / mean m),
    which is (1, 1, 1) for thirds, as the official code starts them.
    """

    def __init__(
        self,
        state_dim: int,
        num_teachers: int,
        hidden: int,
        dynamic: bool,
        logit_mix: Sequence[float] = (1.0, 1.0, 1.0),
        feature_mix: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.trunk = nn.Linear(state_dim, hidden, bias=False)
        self.logit_head = nn.Linear(hidden, num_teachers)
        self.feature_head = nn.Linear(hidden, num_teachers)
        self.dynamic = dynamic
        if dynamic:
            self.logit_mix = nn.Parameter(_mixing_logits(logit_mix))
            self.feature_mix = nn.Parameter(_mixing_logits(feature_mix))
        else:  # not in the state dict: the recipe says it
            self.register_buffer("fixed_logit_mix", _proportions(logit_mix), persistent=False)
            self.register_buffer("fixed_feature_mix", _proportions(feature_mix), persistent=False)

    def head_logits(self, state: AgentState) -> tuple[Tensor, Tensor]:
        """Pre-softmax outputs of the logit and feature heads."""
        hidden = F.relu(self.trunk(state.vector))
        return self.logit_head(hidden), self.feature_head(hidden)

    def mixing(self) -> tuple[Tensor, Tensor]:
        """The weights of (agent, confidence, gap) in the logit and in the feature weights."""
        if self.dynamic:
            return F.softmax(self.logit_mix, dim=0), F.softmax(self.feature_mix, dim=0)
        return self.fixed_logit_mix, self.fixed_feature_mix

    def sources(self, state: AgentState) -> dict[str, Tensor]:
        """Every weight source before mixing (B×K, rows on the simplex), by name."""
        logit_out, feature_out = self.head_logits(state)
        return weight_sources(F.softmax(logit_out, dim=1), F.softmax(feature_out, dim=1), state)

    def mix(self, sources: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The logit and feature weights: each kind's sources, mixed by `mixing()`."""
        logit_mix, feature_mix = self.mixing()
        logit_weights = (
            logit_mix[0] * sources["logit_agent"]
            + logit_mix[1] * sources["logit_confidence"]
            + logit_mix[2] * sources["logit_gap"]
        )
        feature_weights = (
            feature_mix[0] * sources["feature_agent"]
            + feature_mix[1] * sources["feature_confidence"]
            + feature_mix[2] * sources["feature_similarity"]
        )
        return logit_weights, feature_weights

    def forward(self, state: AgentState) -> tuple[Tensor, Tensor]:
        """Per-sample teacher weights (B×K each, rows on the simplex) for logits and features."""
        return self.mix(self.sources(state))

    def combine(
        self, logit_action: Tensor, feature_action: Tensor, state: AgentState
    ) -> tuple[Tensor, Tensor]:
        """Mix the agent's actions (the heads' softmax) with the hand-crafted sources."""
        return self.mix(weight_sources(logit_action, feature_action, state))


def _proportions(mix: Sequence[float]) -> Tensor:
    values = torch.tensor([float(m) for m in mix])
    return values / values.sum()


def _mixing_logits(mix: Sequence[float]) -> Tensor:
    mean = sum(mix) / len(mix)
    return torch.tensor([1.0 + math.log(m / mean) if m > 0 else -math.inf for m in mix])


def weight_sources(
    logit_action: Tensor, feature_action: Tensor, state: AgentState
) -> dict[str, Tensor]:
    """The agent's two actions and the hand-crafted sources, named as they are logged."""
    confidence, logit_gap, feature_similarity = handcrafted_sources(state)
    return {
        "logit_agent": logit_action,
        "logit_confidence": confidence,
        "logit_gap": logit_gap,
        "feature_agent": feature_action,
        "feature_confidence": confidence,
        "feature_similarity": feature_similarity,
    }


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


def agent_step(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss: Tensor,
    reduce: Callable[[Tensor], Tensor] | None,
) -> None:
    """One step of the agent's optimizer, gradients averaged over processes when `reduce` is set,
    so every rank's agent stays identical."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if reduce is not None:
        for param in params:
            if param.grad is not None:
                param.grad = reduce(param.grad)
    optimizer.step()


def local_slice(tensor: Tensor, size: int, rank: int) -> Tensor:
    """This process's rows of a tensor gathered over processes in rank order."""
    return tensor[rank * size : (rank + 1) * size]


class AgentUpdate(nn.Module, abc.ABC):
    """How the agent turns its policy's weights into applied ones and learns from the reward.

    One subclass per `agent_update` option, each in its own file; `MTKDRL` holds one and never
    asks which. The update owns the policy it trains; `updates` counts the agent's optimizer
    steps. Subclasses set `optimizer` in their `__init__`.
    """

    optimizer: torch.optim.Optimizer

    def __init__(
        self, policy: PolicyNetwork, context: Any, options: Any, widths: list[int]
    ) -> None:
        super().__init__()
        self.policy = policy
        self.context = context
        self.options = options
        self.widths = widths
        self.updates = 0

    def act(self, logit_weights: Tensor, feature_weights: Tensor) -> tuple[Tensor, Tensor]:
        """The weights applied to the student's loss, from the policy's (no gradient)."""
        return logit_weights, feature_weights

    @abc.abstractmethod
    def observe(
        self, state: AgentState, logit_w: Tensor, feature_w: Tensor, reward: Tensor, epoch: int
    ) -> None:
        """Learn from one step: its state, the applied weights and the per-sample reward."""

    def end_epoch(self) -> None:
        """Called at each epoch's end."""

    def describe(self) -> str:
        return ""

    def step(self, loss: Tensor, params: list[nn.Parameter]) -> None:
        agent_step(self.optimizer, params, loss, self.context.reduce)
        self.updates += 1

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
