"""`mtkdrl`: MTKD-RL (Yang et al., AAAI 2025), an agent that sets per-sample teacher weights.

Both agent updates share the state, the policy network and the reward (docs/methods/mtkdrl.md);
each update is a file of its own (`_mtkdrl_official.py`, `_mtkdrl_reinforce.py`), picked by
`agent_update` from `AGENT_UPDATES`. The reward is the student's pre-update loss,
r = -(CE + α Σ w·KL + β Σ v·d) with the applied weights, d the recipe's feature term (the
last-stage map by default). Each feature adapter reads the student's own map: the official code
chains the resized maps from one teacher to the next. Without a feature term the state's
student-teacher similarity is 0 and the feature weights apply to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MtkdrlError
from ..pool import ModelOutputs, pooled_channels
from . import register_method
from ._mtkdrl_agent import AgentState, AgentUpdate, PolicyNetwork, build_state, state_widths
from ._mtkdrl_gain import held_out_direction, term_slopes
from ._mtkdrl_official import OfficialUpdate
from ._mtkdrl_reinforce import ReinforceUpdate
from .base import DistillBatch, Method, MethodContext, TeacherTerms, TeacherWeights

if TYPE_CHECKING:
    from .base import StudentAccess

AGENT_UPDATES: dict[str, type[AgentUpdate]] = {
    "official": OfficialUpdate,
    "reinforce": ReinforceUpdate,
}

MTKDRL_CITATION = """@inproceedings{yang2025mtkdrl,
  title     = {Multi-Teacher Knowledge Distillation with Reinforcement Learning
               for Visual Recognition},
  author    = {Yang, C. and Yu, X. and Yang, H. and An, Z. and Yu, C. and Huang, L. and Xu, Y.},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume    = {39},
  number    = {9},
  year      = {2025},
  doi       = {10.1609/aaai.v39i9.32990},
  eprint    = {2502.18510},
  archivePrefix = {arXiv}
}"""


@dataclass
class MTKDRLOptions:
    """MTKD-RL settings (docs/methods/mtkdrl.md#options). The defaults depart from the official
    code in two places, each measured (docs/methods/mtkdrl.md#our-defaults): a uniform warm-up
    and no logit-gap term; `OfficialOptions` has the official values."""

    agent_update: Literal["official", "reinforce"] = "official"
    dynamic: bool = False
    warmup_epochs: int = 1
    warmup_weight: Literal["one", "uniform"] = "uniform"
    hidden_dim: int = 128
    agent_lr: float | None = None
    agent_step: int = 1000
    agent_buffer_mb: float = 2048.0
    buffer_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    baseline: Literal["learned", "running"] = "learned"
    baseline_momentum: float = 0.9
    entropy_coef: float = 1e-3
    concentration: float = 20.0
    logit_mix: list[float] = field(default_factory=lambda: [1.0, 1.0, 0.0])
    feature_mix: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    normalise_state: bool = False
    reward: Literal["loss", "centred", "label", "gain"] = "loss"
    gain_step: float = 0.05  # `reward: gain`: the parameter step of its central difference
    state_embedding_dims: int | None = None  # None: each teacher's whole embedding

    def __post_init__(self) -> None:
        for name, sources in (
            ("logit_mix", "agent, confidence, gap"),
            ("feature_mix", "agent, confidence, similarity"),
        ):
            mix = getattr(self, name)
            if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
                raise MtkdrlError(
                    f"method.options.{name}: expected 3 non-negative shares of ({sources}) "
                    f"with a positive sum, e.g. [1, 1, 1]; got {mix}"
                )
        if self.gain_step <= 0:
            raise MtkdrlError(f"method.options.gain_step must be positive, got {self.gain_step}")
        if self.state_embedding_dims is not None and self.state_embedding_dims < 1:
            raise MtkdrlError(
                "method.options.state_embedding_dims must be at least 1 (or null: the whole "
                f"embedding), got {self.state_embedding_dims}"
            )


def teacher_similarity(adapted: Tensor, teacher: ModelOutputs, whole_embedding: bool) -> Tensor:
    """Cosine between the pooled adapted student map and the teacher's embedding (B,).

    Where the embedding is not the teacher's pooled last map (its width differs, e.g. a conv head
    after the last stage, 320 channels against a 1280-wide embedding), or the method does not
    read it whole (`state_embedding_dims`), the cosine compares the two pooled maps instead
    (docs/methods/mtkdrl.md#state).
    """
    pooled = adapted.mean(dim=(2, 3))
    target = teacher.embedding
    if not whole_embedding or target.shape[1] != pooled.shape[1]:
        target = teacher.features.mean(dim=(2, 3))
    return F.cosine_similarity(pooled, target, dim=1, eps=1e-8)


@dataclass
class OfficialOptions(MTKDRLOptions):
    """MTKD-RL as the authors' code runs it: every weight 1 in warm-up, and the agent head,
    confidence and gap terms mixed in thirds."""

    warmup_weight: Literal["one", "uniform"] = "one"
    logit_mix: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])


@register_method
class MTKDRL(Method):
    """Reinforcement-learned per-sample teacher weights for the logit and the feature losses."""

    name = "mtkdrl"
    description = "MTKD-RL (Yang et al., AAAI 2025): an agent sets per-sample teacher weights"
    citation = MTKDRL_CITATION
    Options = MTKDRLOptions
    tracked_weights = ("logit", "feature")
    min_teachers = 2
    min_teachers_reason = "its confidence term divides by K - 1"
    default_feature = "map"

    def __init__(self, context: MethodContext, options: MTKDRLOptions) -> None:
        super().__init__(context, options)
        self.embedding_widths = [self.teacher_embedding_width(d) for d in context.embedding_dims]
        widths = state_widths(self.embedding_widths, context.num_classes)
        policy = PolicyNetwork(
            sum(widths),
            context.num_teachers,
            options.hidden_dim,
            options.dynamic,
            options.logit_mix,
            options.feature_mix,
        )
        self.agent = AGENT_UPDATES[options.agent_update](policy, context, options, widths)
        self.pending: AgentState | None = None  # this step's state, until `observe`
        self.pending_terms: TeacherTerms | None = None  # this step's per-teacher terms, likewise
        self.pending_weights: TeacherWeights | None = None  # this step's applied weights, likewise
        self.pending_batch: tuple[DistillBatch, int] | None = None  # `reward: gain`'s batch, epoch
        self.pending_gain: Tensor | None = None  # `reward: gain`, from `before_step`
        self.last_sources: dict[str, Tensor] = {}  # this step's weight sources, for the logs

    def describe(self) -> str:
        return self.agent.describe()

    def teacher_embedding_width(self, width: int) -> int:
        """The agent's state reads each embedding whole, or averaged over
        `state_embedding_dims` channel groups."""
        dims = self.options.state_embedding_dims
        return width if dims is None else min(width, dims)

    def agent_state(self, batch: DistillBatch, terms: TeacherTerms) -> AgentState:
        """The detached state (docs/methods/mtkdrl.md#state) from this batch's outputs and terms."""
        teacher_ce = torch.stack(
            [F.cross_entropy(t.logits, batch.labels, reduction="none") for t in batch.teachers], 1
        )
        if batch.adapted:
            cos = torch.stack(
                [
                    teacher_similarity(adapted, t, self.options.state_embedding_dims is None)
                    for adapted, t in zip(batch.adapted, batch.teachers, strict=True)
                ],
                dim=1,
            )
        else:  # no feature term: nothing to compare
            cos = teacher_ce.new_zeros(teacher_ce.shape)
        return build_state(
            terms.logit.detach(),
            teacher_ce,
            cos.detach(),
            [
                pooled_channels(t.embedding, width)
                for t, width in zip(batch.teachers, self.embedding_widths, strict=True)
            ],
            [t.logits for t in batch.teachers],
            self.options.normalise_state,
        )

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        state = self.agent_state(batch, terms)
        feature = None if terms.feature is None else terms.feature.detach()
        self.pending = state
        self.pending_terms = TeacherTerms(terms.ce.detach(), terms.logit.detach(), feature)
        if self.options.reward == "gain":
            self.pending_batch = (batch, epoch)
        with torch.no_grad():
            self.last_sources = self.agent.policy.sources(state)
        if epoch < self.options.warmup_epochs:
            fill = 1.0 if self.options.warmup_weight == "one" else 1.0 / batch.num_teachers
            ones = terms.logit.new_full(terms.logit.shape, fill)
            self.pending_weights = TeacherWeights(ones, ones.clone())
            return self.pending_weights
        with torch.no_grad():
            logit_w, feature_w = self.agent.act(*self.agent.policy.mix(self.last_sources))
        self.pending_weights = TeacherWeights(logit_w, feature_w)
        return self.pending_weights

    def tracked_matrices(self, weights: TeacherWeights) -> dict[str, Tensor]:
        """The applied weights and, to show what each contributes, every source before mixing
        (`logit_agent`, `logit_confidence`, `logit_gap`, `feature_agent`, ...)."""
        return {**super().tracked_matrices(weights), **self.last_sources}

    def before_step(self, access: StudentAccess) -> None:
        """`reward: gain`: each sample's reward, from the student before its step."""
        pending, self.pending_batch = self.pending_batch, None
        if pending is None or self.pending_weights is None:
            return
        batch, epoch = pending
        objective = self.context.objective
        direction = held_out_direction(access)
        if direction is None:  # the other batch's CE is flat: nothing to gain anywhere
            self.pending_gain = batch.labels.new_zeros(batch.labels.shape, dtype=torch.float32)
            return
        slopes = term_slopes(
            access,
            direction,
            lambda at: objective.terms(at, epoch, objective.base_temperature),
            batch.teachers,
            self.options.gain_step,
        )
        self.pending_gain = gain_reward(
            slopes, self.pending_weights, objective.alpha, objective.beta
        )

    def observe(self, batch: DistillBatch, sample_loss: Tensor, epoch: int) -> None:
        state, terms, weights = self.pending, self.pending_terms, self.pending_weights
        self.pending = self.pending_terms = self.pending_weights = None
        if self.options.reward == "gain":
            reward, self.pending_gain = self.pending_gain, None
            if reward is None:  # no optimizer step since this forward (gradient accumulation)
                return
        elif self.options.reward == "label":
            reward = label_reward(batch, weights)
        else:
            reward = -sample_loss.float()
        if self.options.reward == "centred":
            reward = reward + self.reward_centring(terms, weights)
        self.agent.observe(state, weights.logit, weights.feature, reward, epoch)

    def reward_centring(self, terms: TeacherTerms, weights: TeacherWeights) -> Tensor:
        """α Σ_k w_ik·m_k + β Σ_k v_ik·f_k, m_k and f_k teacher k's mean logit and feature terms
        over the (global) batch: added to −loss, each term is measured from its teacher's mean,
        so no teacher is preferred for being closer to the student overall
        (docs/methods/mtkdrl.md#reward)."""
        gather, objective = self.context.gather, self.context.objective
        logit = terms.logit.float()
        centring = objective.alpha * (weights.logit * _batch_mean(logit, gather)).sum(1)
        if terms.feature is not None and weights.feature is not None:
            feature = terms.feature.float()
            centring = centring + objective.beta * (
                weights.feature * _batch_mean(feature, gather)
            ).sum(1)
        return centring

    def end_epoch(self, epoch: int) -> dict[str, float]:
        self.agent.end_epoch()
        figures = {"agent_updates": float(self.agent.updates)}
        if self.options.dynamic:
            with torch.no_grad():
                logit_mix, feature_mix = self.agent.policy.mixing()
            for index, source in enumerate(("agent", "confidence", "gap")):
                figures[f"mix_logit/{source}"] = float(logit_mix[index])
                figures[f"mix_feature/{source}"] = float(feature_mix[index])
        return figures

    def extra_state(self) -> dict[str, Any]:
        return {"agent": self.agent.extra_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.agent.load_extra_state(state["agent"])


@register_method
class MTKDRLOfficial(MTKDRL):
    """MTKD-RL with the official code's settings (a named preset of `mtkdrl`)."""

    name = "mtkdrl-official"
    description = (
        "MTKD-RL (Yang et al., AAAI 2025) as the authors' code runs it: an agent sets per-sample "
        "teacher weights"
    )
    Options = OfficialOptions


def label_reward(batch: DistillBatch, weights: TeacherWeights) -> Tensor:
    """`reward: label`: how likely the applied weights' mixture of the teachers makes each
    sample's label, ½(log Σ_k w_ik·p_ik[y_i] + log Σ_k v_ik·p_ik[y_i]) with p_ik teacher k's
    softmax. It pays for weighting the teachers that are right on the sample, not the ones
    nearest the student (docs/methods/mtkdrl.md#reward)."""
    label_probs = torch.stack(
        [
            F.softmax(t.logits.float(), dim=1).gather(1, batch.labels[:, None]).squeeze(1)
            for t in batch.teachers
        ],
        dim=1,
    )
    reward = (weights.logit.float() * label_probs).sum(1).clamp_min(1e-12).log()
    if weights.feature is None:
        return reward
    feature = (weights.feature.float() * label_probs).sum(1).clamp_min(1e-12).log()
    return (reward + feature) / 2


def gain_reward(slopes: TeacherTerms, weights: TeacherWeights, alpha: float, beta: float) -> Tensor:
    """`reward: gain`: α Σ_k w_ik·∂_g ℓ_ik + β Σ_k v_ik·∂_g d_ik, the slopes of the weighted teacher
    terms along the other batch's CE gradient g: how far the step on sample i's teacher terms
    lowers that CE, to first order (up to the learning rate). The CE term's own part does not
    depend on the weights and is left out."""
    reward = alpha * (weights.logit.float() * slopes.logit).sum(1)
    if slopes.feature is not None and weights.feature is not None:
        reward = reward + beta * (weights.feature.float() * slopes.feature).sum(1)
    return reward


def _batch_mean(values: Tensor, gather: Callable[[Tensor], Tensor] | None) -> Tensor:
    """Per-column mean of a B×K matrix over the batch of every process (1×K)."""
    return (values if gather is None else gather(values)).mean(dim=0, keepdim=True)
