"""`rl` (RLKD): the squashed-Gaussian actor's log-probability, the reward schedule and
redistribution, and an agent that learns to give two groups of samples different temperatures."""

import math

import pytest
import torch
from torch.distributions import AffineTransform, Normal, SigmoidTransform, TransformedDistribution

from mtkdrl.errors import MtkdrlError
from mtkdrl.temperatures import PolicyInput, TemperatureContext, build_temperature_policy
from mtkdrl.temperatures.rl import (
    Trajectory,
    agent_states,
    critical_state_loss,
    discounted_advantages,
    redistribute,
    reward_scale,
)


def rl(**settings):
    return build_temperature_policy({"policy": "rl", **settings}, TemperatureContext())


def test_log_prob_is_the_density_of_the_squashed_sample():
    torch.manual_seed(0)
    policy = rl()
    states = torch.rand(6, 3)
    pre = torch.randn(6)
    dist = policy.actor.distribution(states)
    squashed = TransformedDistribution(
        Normal(dist.mean, dist.stddev), [SigmoidTransform(), AffineTransform(0.0, 10.0)]
    )
    temperatures = policy.actor.squash(pre)
    expected = squashed.log_prob(temperatures)
    torch.testing.assert_close(policy.actor.log_prob(states, pre), expected, atol=1e-5, rtol=1e-5)
    # the official code's quirk, log N(T; μ, σ) of the squashed value, is another number
    assert not torch.allclose(dist.log_prob(temperatures), expected, atol=1e-3)


def test_sampled_temperatures_follow_that_density():
    """Monte-Carlo: the share of samples in a bin matches the integral of the density there."""
    policy = rl()
    states = torch.full((20000, 3), 0.5)
    seen = PolicyInput(
        torch.zeros(20000, 4),
        torch.full((20000, 4), 0.25),
        torch.zeros(20000, dtype=torch.long),
        20,
    )
    temperatures = policy.choose(seen)
    grid = torch.linspace(0.05, 9.95, 400)
    pre = torch.log(grid / 10) - torch.log1p(-grid / 10)
    with torch.no_grad():
        density = policy.actor.log_prob(states[:400], pre).exp()
    low, high = 3.0, 6.0
    inside = (grid >= low) & (grid < high)
    integral = float((density[inside] * (grid[1] - grid[0])).sum())
    share = float(((temperatures >= low) & (temperatures < high)).float().mean())
    assert share == pytest.approx(integral, abs=0.02)


def test_states_are_confidences_and_the_student_margin():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]]))
    ensemble = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    expected = torch.tensor([[0.7, 0.5, 0.5], [0.4, 0.8, 0.05]])
    torch.testing.assert_close(agent_states(logits, ensemble), expected, atol=1e-6, rtol=0)


def test_reward_schedule_is_the_official_one():
    assert reward_scale(0, "cifar") == pytest.approx(10 * ((math.cos(math.pi / 75) + 1) / 2 + 1))
    assert reward_scale(160, "cifar") == pytest.approx(
        5 * ((math.cos(math.pi * 161 / 30) + 1) / 2 + 1)
    )
    assert reward_scale(239, "cifar") == 1.0 and reward_scale(100, "imagenet") == 1.0
    assert reward_scale(5, "none") == 1.0


def test_gae_and_redistribution():
    rewards, values = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.1, 0.2, 0.3])
    advantages, returns = discounted_advantages(rewards, values, 0.9, 0.5)
    d2 = 1.0 - 0.3
    d1 = 0.9 * 0.3 - 0.2
    d0 = 0.9 * 0.2 - 0.1
    expected = torch.tensor([d0 + 0.45 * (d1 + 0.45 * d2), d1 + 0.45 * d2, d2])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)
    spread = redistribute(torch.tensor([0.2, 0.5, 0.4]), torch.tensor(1.0))
    assert float(spread.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(spread, torch.tensor([0.2, 0.3, -0.1]) + 0.2)


GROUP_A, GROUP_B = torch.tensor([0.9, 0.9, 0.8]), torch.tensor([0.2, 0.2, 0.05])
GROUPS = (GROUP_A, GROUP_B)


def train_on_two_groups(policy, updates: int = 150) -> tuple[float, float]:
    """Group A's best T is 2, group B's 8; each batch of 8 mixes both, and its reward is minus
    the mean distance to the best T. Returns the mean T the agent gives (A, B) at the end."""
    torch.manual_seed(0)
    for _ in range(updates):
        is_b = torch.rand(8) < 0.5
        states = torch.where(is_b.unsqueeze(1), GROUP_B, GROUP_A)
        with torch.no_grad():
            pre = policy.actor.distribution(states).sample()
            log_prob = policy.actor.log_prob(states, pre)
            values = policy.critic(states).squeeze(1)
        best = torch.where(is_b, 8.0, 2.0)
        reward = -float((policy.actor.squash(pre) - best).abs().mean())
        policy.update(Trajectory(states, pre, log_prob, values), reward)
    with torch.no_grad():
        means = [policy.actor.squash(policy.actor.distribution(g[None]).mean) for g in GROUPS]
    return float(means[0]), float(means[1])


def test_with_shared_credit_the_agent_separates_two_groups():
    """Each sample credited with its batch's reward minus the critic's value of its state."""
    torch.manual_seed(0)
    policy = rl(actor_lr=1e-3, critic_lr=3e-3, redistribution=False, hidden=32, credit="shared")
    t_a, t_b = train_on_two_groups(policy)
    assert t_a < 3.5 and t_b > 6.5, (t_a, t_b)


def test_the_official_trajectory_credit_does_not_separate_them():
    """The official credit (the batch's reward on its last sample, spread by a return model that
    is linear in state and action, GAE along the batch) cannot tell the groups apart: the same
    training leaves both at the same temperature. A record of why `credit: shared` exists."""
    torch.manual_seed(0)
    policy = rl(actor_lr=1e-3, critic_lr=3e-3, hidden=32)
    t_a, t_b = train_on_two_groups(policy)
    assert abs(t_b - t_a) < 1.0, (t_a, t_b)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"clip": 0}, r"^method\.temperature\.clip: must be > 0"),
        ({"rl_every": 0}, r"^method\.temperature\.rl_every: must be >= 1"),
        ({"initial": 12}, r"^method\.temperature\.initial: must lie in \(0, t_max = 10\)"),
        ({"reward_schedule": "weekly"}, r"'method\.temperature\.reward_schedule' must be one of"),
        ({"gamma_ray": 1}, r"^method\.temperature\.gamma_ray: unknown setting of policy 'rl'"),
    ],
)
def test_bad_settings_are_one_line(settings, message):
    with pytest.raises(MtkdrlError, match=message):
        rl(**settings)


def test_critical_state_loss_is_the_official_objective():
    mask, states = torch.tensor([0.2, 0.9, 0.5]), torch.rand(3, 3)
    returns = torch.tensor([0.1, 0.3, 0.6])
    scores = mask * states.mean(dim=1)
    ce = torch.nn.functional.cross_entropy(scores, returns)  # torch's soft-target form
    expected = 5e-3 * mask.sum() + ce
    torch.testing.assert_close(critical_state_loss(mask, states, returns), expected)


def test_masked_trajectory_starts_ppo_at_ratio_one():
    """The detector scales the states; log-probabilities and values are re-taken there."""
    torch.manual_seed(0)
    policy = rl(hidden=8)
    states = torch.rand(6, 3)
    with torch.no_grad():
        pre = policy.actor.distribution(states).sample()
        trajectory = Trajectory(
            states, pre, policy.actor.log_prob(states, pre), policy.critic(states).squeeze(1)
        )
    rewards = torch.zeros(6)
    rewards[-1] = 0.5
    before = [p.clone() for p in policy.detector.parameters()]
    masked = policy.masked(trajectory, rewards)
    after = list(policy.detector.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    with torch.no_grad():
        mask = policy.detector(states)
        torch.testing.assert_close(masked.states, states * mask.unsqueeze(1))
        torch.testing.assert_close(masked.log_prob, policy.actor.log_prob(masked.states, pre))
    assert not torch.allclose(masked.states, states)


def test_remix_epochs_come_every_remix_every_after_the_warm_up():
    policy = rl(warmup_epochs=20, remix_every=20)
    assert [e for e in range(100) if policy.remixes(e)] == [40, 60, 80]
    assert not any(rl(remix_every=0).remixes(e) for e in range(100))


def test_remix_refuses_a_streamed_data_set_in_one_line():
    context = TemperatureContext(random_access=False)
    message = r"^method\.temperature\.remix_every: .*set remix_every: 0$"
    with pytest.raises(MtkdrlError, match=message):
        build_temperature_policy({"policy": "rl"}, context)
    assert build_temperature_policy({"policy": "rl", "remix_every": 0}, context).remix is None
