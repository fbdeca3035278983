"""`rl`: RLKD / ITKD's instance temperature (Zhang, Zhou et al., arXiv 2407.00115), by PPO.

Each sample's state is [student top-1 probability, teachers' top-1 probability (their mix, for
several teachers), student top-1 minus top-2], at T = 1. A squashed-Gaussian actor samples
u ~ N(μ(s), σ) and T = t_max·sigmoid(u), for the whole batch in one call; a critic values the
state. A batch is one trajectory whose only reward, on its last sample, is the change in the
student's batch accuracy since the previous batch, scaled by the official epoch schedule. With
`redistribution`, a small model of (state, action) spreads that return over the samples (a
RUDDER-style decomposition) before GAE and PPO. The first `warmup_epochs` use T = `initial`;
the agent learns in the epochs e with (e + 1) % `rl_every` == 0. With `critical_states`, a
detector weighs each state by how much it bears on the return before PPO sees it; with
`remix_every`, the samples the student finds easiest are blended with hard ones for one epoch in
every `remix_every` after the warm-up (`_remix.py`). The agent's networks are in
`_rl_networks.py`. See docs/temperatures.md#rl.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MtkdrlError
from . import register_temperature_policy
from ._remix import EntropyRemix
from ._rl_networks import (
    STATE_WIDTH,
    CriticalStateDetector,
    RewardRedistribution,
    SquashedGaussianActor,
    mlp,
)
from .base import PolicyInput, TemperatureContext, TemperaturePolicy

HISTOGRAM_BINS = 20


@dataclass
class RLOptions:
    """RLKD settings (docs/temperatures.md#rl); the defaults are the official CIFAR config's."""

    initial: float = 4.0  # T of the warm-up epochs
    t_max: float = 10.0
    warmup_epochs: int = 20
    rl_every: int = 20
    reward_schedule: Literal["cifar", "imagenet", "none"] = "cifar"
    redistribution: bool = True
    critical_states: bool = True
    credit: Literal["trajectory", "shared"] = "trajectory"
    remix_every: int = 20  # 0: no entropy remix (the official ImageNet setting)
    clip: float = 0.2
    policy_epochs: int = 5
    value_epochs: int = 5
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 2.0
    hidden: int = 256

    def __post_init__(self) -> None:
        bounds = {
            "t_max": 0, "initial": 0, "clip": 0, "max_grad_norm": 0,  # > 0
            "rl_every": 1, "policy_epochs": 1, "value_epochs": 1, "hidden": 1,  # >= 1
            "actor_lr": 0, "critic_lr": 0, "warmup_epochs": 0, "remix_every": 0,  # >= 0
        }  # fmt: skip
        strict = {"t_max", "initial", "clip", "max_grad_norm"}
        for key, low in bounds.items():
            value = getattr(self, key)
            if value < low or (key in strict and value == low):
                relation = "> 0" if key in strict else f">= {low}"
                raise MtkdrlError(f"method.temperature.{key}: must be {relation}, got {value}")
        if not self.initial < self.t_max:
            raise MtkdrlError(
                f"method.temperature.initial: must lie in (0, t_max = {self.t_max:g}), got "
                f"{self.initial:g}"
            )


def adam(module: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over the module, one fused kernel per step for all its tensors (the agent's models are
    small, so per-tensor launches would dominate a learning step)."""
    return torch.optim.Adam(module.parameters(), lr=lr, foreach=True)


def discounted_advantages(
    rewards: Tensor, values: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE over one trajectory that ends after its last step: (advantages, returns)."""
    advantages = torch.zeros_like(rewards)
    running = rewards.new_zeros(())
    for t in range(len(rewards) - 1, -1, -1):
        following = values[t + 1] if t + 1 < len(rewards) else rewards.new_zeros(())
        delta = rewards[t] + gamma * following - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values


def reward_scale(epoch: int, schedule: str) -> float:
    """The official epoch-dependent factor on the reward (e = epoch + 1), "for exploration"."""
    e = epoch + 1
    bands = {
        "cifar": [(150, 10, 75), (210, 5, 30), (240, 2, 30)],
        "imagenet": [(30, 10, 75), (60, 5, 30), (90, 2, 30)],
        "none": [],
    }[schedule]
    for end, factor, period in bands:
        if e < end:
            return factor * ((math.cos(math.pi * e / period) + 1) / 2 + 1)
    return 1.0


def redistribute(predicted: Tensor, episode_return: Tensor) -> Tensor:
    """r̃_0 = R_0, r̃_t = R_t − R_{t−1}, each plus an equal share of the last prediction's error,
    so that Σ r̃ is the episode's return."""
    rewards = torch.cat([predicted[:1], predicted[1:] - predicted[:-1]])
    return rewards + (episode_return - predicted[-1]) / len(predicted)


def critical_state_loss(mask: Tensor, states: Tensor, returns: Tensor) -> Tensor:
    """The official objective: 5e-3·‖m‖₁ plus the cross-entropy of the trajectory's masked
    state means, softmaxed over its steps, against its returns as soft targets."""
    scores = mask * states.mean(dim=1)
    return 5e-3 * mask.abs().sum() - (returns * scores.log_softmax(dim=0)).sum()


@dataclass
class Trajectory:
    """One batch as the agent saw it: states (B×3), pre-squash actions u, and their
    log-probabilities and values under the acting policy."""

    states: Tensor
    pre: Tensor
    log_prob: Tensor
    values: Tensor


@register_temperature_policy
class RLTemperature(TemperaturePolicy):
    """A per-sample T from a PPO agent rewarded by the student's batch accuracy."""

    name = "rl"
    description = "RLKD: a per-sample T from a PPO agent rewarded by the student's progress"
    Options = RLOptions
    needs_ensemble = True

    def __init__(self, options: RLOptions, context: TemperatureContext) -> None:
        super().__init__(options, context)
        self.actor = SquashedGaussianActor(options.hidden, options.t_max)
        self.critic = mlp(STATE_WIDTH, options.hidden)
        self.redistribution = RewardRedistribution()
        self.actor_optimizer = adam(self.actor, options.actor_lr)
        self.critic_optimizer = adam(self.critic, options.critic_lr)
        self.redistribution_optimizer = adam(self.redistribution, 1e-3)
        self.detector = CriticalStateDetector()
        self.detector_optimizer = adam(self.detector, 1e-3)
        self.remix = None
        if options.remix_every:
            if not context.random_access:
                raise MtkdrlError(
                    "method.temperature.remix_every: the entropy remix reads training samples by "
                    "index, which a streamed data set cannot; set remix_every: 0"
                )
            self.remix = EntropyRemix(context.num_samples, context.reduce)
        self._seen: tuple[Tensor, Tensor] | None = None  # this batch's (indices, logits)
        seed = int(torch.randint(0, 2**62, (1,)).item()) + context.process_index
        self.generator = torch.Generator().manual_seed(seed)
        self.previous_accuracy: Tensor | float | None = None  # a float after a resume
        self.updates = 0
        self.sums = torch.zeros(3 + HISTOGRAM_BINS, dtype=torch.float64)  # n, ΣT, ΣT², histogram
        self._pending: Trajectory | None = None  # this batch's, until `observe`
        self._accuracy: Tensor | None = None

    # ---------------------------------------------------------------- acting
    def choose(self, seen: PolicyInput) -> float | Tensor:
        logits = seen.student_logits.detach().float()
        # a tensor: read on the host only in a learning step, so acting never waits on the device
        self._accuracy = (logits.argmax(dim=1) == seen.labels).float().mean()
        self._pending = None
        self._seen = None if seen.indices is None else (seen.indices, logits)
        if seen.epoch < self.options.warmup_epochs:
            return self.options.initial
        states = agent_states(logits, seen.ensemble)
        with torch.no_grad():
            dist = self.actor.distribution(states)
            noise = torch.randn(dist.mean.shape, generator=self.generator).to(dist.mean)
            pre = dist.mean + dist.stddev * noise
            temperatures = self.actor.squash(pre)
            log_prob = self.actor.log_prob(states, pre)
            values = self.critic(states).squeeze(1)
        self._pending = Trajectory(states, pre, log_prob, values)
        self.record(temperatures)
        return temperatures

    def record(self, temperatures: Tensor) -> None:
        t = temperatures.detach().double().cpu()
        bins = torch.histc(t, bins=HISTOGRAM_BINS, min=0.0, max=self.options.t_max)
        self.sums += torch.cat([torch.tensor([len(t), t.sum(), t.pow(2).sum()]), bins.double()])

    # ---------------------------------------------------------------- learning
    def prepare_batch(
        self, images: Tensor, indices: Tensor, epoch: int, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """In a remix epoch, the planned samples blended with their partners."""
        if self.remix is None:
            return images, None
        return self.remix.blend(images, indices, fetch)

    def remixes(self, epoch: int) -> bool:
        """Whether `epoch` is a remix epoch: every `remix_every` epochs after the warm-up."""
        after = epoch - self.options.warmup_epochs
        return self.remix is not None and after > 0 and after % self.options.remix_every == 0

    def observe(self, sample_loss: Tensor, epoch: int) -> None:
        """The batch's reward (its accuracy before the step minus the previous batch's), and in
        RL epochs one PPO update on its trajectory; the samples' entropies for the remix."""
        pending, accuracy = self._pending, self._accuracy
        self._pending = self._accuracy = None
        if self.remix is not None and self._seen is not None:
            self.remix.record(*self._seen)
        self._seen = None
        if accuracy is None:
            return
        previous, self.previous_accuracy = self.previous_accuracy, accuracy
        learning = (epoch + 1) % self.options.rl_every == 0
        if learning and pending is not None and previous is not None:
            scale = reward_scale(epoch, self.options.reward_schedule)
            self.update(pending, float(accuracy - previous) * scale)

    def update(self, trajectory: Trajectory, reward: float) -> None:
        """PPO on one batch's trajectory. `credit: trajectory` (official): the batch's `reward`
        on its last step only (or spread by the return model), GAE along the batch, advantages
        normalised within it; `credit: shared`: each sample's advantage is the batch's reward
        minus the critic's value of its state."""
        options = self.options
        if options.credit == "shared":  # every sample a one-step episode with the batch's reward
            returns = torch.full_like(trajectory.values, reward)
            self.fit_critic(trajectory.states, returns)  # first: the reward is shared by the batch,
            with torch.no_grad():  # so only the critic's baseline, across batches, can centre it
                advantages = returns - self.critic(trajectory.states).squeeze(1)
        else:
            rewards = torch.zeros_like(trajectory.values)
            rewards[-1] = reward
            if options.critical_states:
                trajectory = self.masked(trajectory, rewards)
            if options.redistribution:
                rewards = self.redistributed(trajectory, rewards)
            advantages, returns = discounted_advantages(
                rewards, trajectory.values, options.gamma, options.gae_lambda
            )
            if len(advantages) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        for _ in range(options.policy_epochs):
            ratio = (
                self.actor.log_prob(trajectory.states, trajectory.pre) - trajectory.log_prob
            ).exp()
            clipped = ratio.clamp(1 - options.clip, 1 + options.clip)
            loss = -torch.min(ratio * advantages, clipped * advantages).mean()
            self.step(self.actor_optimizer, self.actor, loss)
        if options.credit != "shared":
            self.fit_critic(trajectory.states, returns)
        self.updates += 1

    def fit_critic(self, states: Tensor, returns: Tensor) -> None:
        for _ in range(self.options.value_epochs):
            loss = F.mse_loss(self.critic(states).squeeze(1), returns)
            self.step(self.critic_optimizer, self.critic, loss)

    def masked(self, trajectory: Trajectory, rewards: Tensor) -> Trajectory:
        """Fit the critical-state detector to the trajectory's returns (10 Adam steps, as the
        official code) and scale its states by the mask; the acting policy's log-probabilities
        and values are taken again at the masked states, so PPO's ratio starts at 1."""
        _, returns = discounted_advantages(
            rewards, trajectory.values, self.options.gamma, self.options.gae_lambda
        )
        for _ in range(10):
            loss = critical_state_loss(self.detector(trajectory.states), trajectory.states, returns)
            self.step(self.detector_optimizer, self.detector, loss)
        with torch.no_grad():
            states = trajectory.states * self.detector(trajectory.states).unsqueeze(1)
            log_prob = self.actor.log_prob(states, trajectory.pre)
            values = self.critic(states).squeeze(1)
        return Trajectory(states, trajectory.pre, log_prob, values)

    def redistributed(self, trajectory: Trajectory, rewards: Tensor) -> Tensor:
        """Fit the return model (9 Adam steps, as the official code) and spread the return."""
        episode_return = rewards.sum()
        actions = trajectory.pre.detach()
        for _ in range(9):
            predicted = self.redistribution(trajectory.states, actions)
            loss = (predicted[-1] - episode_return) ** 2 + 0.5 * (
                (predicted - episode_return) ** 2
            ).mean()
            self.step(self.redistribution_optimizer, self.redistribution, loss)
        with torch.no_grad():
            predicted = self.redistribution(trajectory.states, actions)
        return redistribute(predicted, episode_return)

    def step(self, optimizer: torch.optim.Optimizer, module: nn.Module, loss: Tensor) -> None:
        """One clipped step, gradients averaged over processes so every rank's agent agrees."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.context.reduce is not None:
            for param in module.parameters():
                if param.grad is not None:
                    param.grad = self.context.reduce(param.grad)
        nn.utils.clip_grad_norm_(module.parameters(), self.options.max_grad_norm, foreach=True)
        optimizer.step()

    # ---------------------------------------------------------------- logging, state
    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Per-instance temperatures of the epoch: mean, spread, histogram over (0, t_max); the
        remix plan for the next epoch (made now, so that a checkpoint carries it)."""
        count, total, squares = (float(v) for v in self.sums[:3])
        figures: dict[str, Any] = {"temperature_updates": self.updates}
        if self.remix is not None:
            figures["remixed_samples"] = self.remix.take_count()
            figures["remix_next_epoch"] = self.remixes(epoch + 1)
            if self.remixes(epoch + 1):
                self.remix.plan()
            else:
                self.remix.clear()
        if count:
            mean = total / count
            figures["temperature_mean"] = mean
            figures["temperature_std"] = math.sqrt(max(squares / count - mean**2, 0.0))
            figures["temperature_histogram"] = [int(v) for v in self.sums[3:]]
        self.sums = torch.zeros_like(self.sums)
        return figures

    def extra_state(self) -> dict[str, Any]:
        return {
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "redistribution_optimizer": self.redistribution_optimizer.state_dict(),
            "detector_optimizer": self.detector_optimizer.state_dict(),
            "remix": {} if self.remix is None else self.remix.state(),
            "generator": self.generator.get_state(),
            "previous_accuracy": None
            if self.previous_accuracy is None
            else float(self.previous_accuracy),
            "updates": self.updates,
            "sums": self.sums,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.redistribution_optimizer.load_state_dict(state["redistribution_optimizer"])
        self.detector_optimizer.load_state_dict(state["detector_optimizer"])
        if self.remix is not None:
            self.remix.load_state(state["remix"])
        self.generator.set_state(state["generator"])
        self.previous_accuracy, self.updates = state["previous_accuracy"], state["updates"]
        self.sums = state["sums"]


def agent_states(student_logits: Tensor, ensemble: Tensor | None) -> Tensor:
    """[student top-1 probability, teachers' top-1 probability, student top-1 − top-2] (B×3)."""
    student = student_logits.softmax(dim=1)
    top = student.topk(2, dim=1).values
    teacher = ensemble.max(dim=1).values if ensemble is not None else torch.zeros_like(top[:, 0])
    return torch.stack([top[:, 0], teacher.to(top), top[:, 0] - top[:, 1]], dim=1)
