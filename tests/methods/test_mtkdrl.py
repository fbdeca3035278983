"""MTKD-RL against the formulas of docs/methods/mtkdrl.md, written out independently here."""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mtkdrl.checkpoint import flatten_state, unflatten_state
from mtkdrl.errors import MtkdrlError
from mtkdrl.losses import kl_per_sample
from mtkdrl.methods import DistillBatch, StudentAccess, TeacherTerms, TeacherWeights
from mtkdrl.methods._mtkdrl_gain import held_out_direction, term_slopes
from mtkdrl.methods.mtkdrl import MTKDRL, MTKDRLOptions, label_reward
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig
from mtkdrl.weighted_loss import WeightedLoss

from .helpers import build

B, C, DIMS = 5, 7, [6, 4, 6]
K = len(DIMS)
T = 4.0


def make_batch(seed: int = 0, batch: int = B, dims=DIMS) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (batch,), generator=g)
    teachers = [
        ModelOutputs(
            torch.randn(batch, C, generator=g) * 3,
            torch.rand(batch, d, generator=g),
            torch.rand(batch, d, 2, 2, generator=g),
        )
        for d in dims
    ]
    student = ModelOutputs(torch.randn(batch, C, generator=g), torch.rand(batch, 3))
    adapted = [torch.rand(batch, d, 2, 2, generator=g) for d in dims]
    return DistillBatch(labels, student, teachers, adapted)


def mtkdrl_loss(
    name="mtkdrl-official",
    dims=DIMS,
    classes=C,
    alpha=1.0,
    beta=5.0,
    weights_by_class=False,
    **options,
) -> WeightedLoss:
    """MTKD-RL on the objective the formulas below assume (T = 4, its default map term, α, β):
    the official settings unless `name` says."""
    options.setdefault("buffer_dtype", "float32")
    config = MethodConfig(name=name, temperature=T, alpha=alpha, beta=beta, options=options)
    return build(config, len(dims), classes, list(dims), weights_by_class=weights_by_class)


def method(name="mtkdrl-official", **settings) -> MTKDRL:
    """The weighting method of `mtkdrl_loss(name, **settings)`."""
    return mtkdrl_loss(name, **settings).method


def teacher_terms(strategy: MTKDRL, batch: DistillBatch, epoch: int) -> TeacherTerms:
    """The objective's unweighted terms for a batch, at its T."""
    objective = strategy.context.objective
    return objective.terms(batch, epoch, objective.base_temperature)


def weights_of(strategy: MTKDRL, batch: DistillBatch, epoch: int) -> TeacherWeights:
    return strategy.teacher_weights(batch, teacher_terms(strategy, batch, epoch), epoch)


def step(loss: WeightedLoss, batch: DistillBatch, epoch: int) -> torch.Tensor:
    """Forward then observe, as the loop does; returns the per-sample loss the agent saw."""
    sample_loss = loss(batch, epoch)[0].detach()
    loss.observe(batch, sample_loss, epoch)
    return sample_loss


def record_applied(loss: WeightedLoss) -> list[TeacherWeights]:
    """The weights each later forward of `loss` applies to the objective's terms, recorded as
    the objective combines them."""
    applied = []
    combine = loss.objective.combine

    def spy(terms: TeacherTerms, weights: TeacherWeights) -> dict[str, torch.Tensor]:
        applied.append(weights)
        return combine(terms, weights)

    loss.objective.combine = spy
    return applied


def kl_matrix(batch: DistillBatch) -> torch.Tensor:
    """T²·KL of the student against each teacher (B×K)."""
    return torch.stack(
        [kl_per_sample(batch.student.logits, t.logits, T) for t in batch.teachers], 1
    )


def mse_matrix(batch: DistillBatch) -> torch.Tensor:
    return torch.stack(
        [
            ((a - t.features) ** 2).mean(dim=(1, 2, 3))
            for a, t in zip(batch.adapted, batch.teachers, strict=True)
        ],
        1,
    )


def expected_loss(batch: DistillBatch, weights: TeacherWeights, alpha: float, beta: float):
    """CE + α Σ w·KL + β Σ v·MSE per sample (mtkdrl.md, Reward)."""
    ce = -torch.log_softmax(batch.student.logits, 1).gather(1, batch.labels[:, None])[:, 0]
    return (
        ce
        + alpha * (weights.logit * kl_matrix(batch)).sum(1)
        + beta * (weights.feature * mse_matrix(batch)).sum(1)
    )


def normalised(reward: torch.Tensor) -> torch.Tensor:
    return ((reward - reward.mean()) / reward.std(unbiased=True)).clamp(0, 1)


def expected_state(batch: DistillBatch) -> torch.Tensor:
    kl = kl_matrix(batch)
    rows = []
    for i in range(batch.labels.shape[0]):
        row = []
        for k, t in enumerate(batch.teachers):
            pooled = batch.adapted[k][i].mean(dim=(1, 2))
            cos = torch.dot(pooled, t.embedding[i]) / (pooled.norm() * t.embedding[i].norm())
            tce = -torch.log_softmax(t.logits[i], 0)[batch.labels[i]]
            row += [cos.view(1), kl[i, k].view(1), tce.view(1), t.embedding[i], t.logits[i]]
        rows.append(torch.cat(row))
    return torch.stack(rows)


def expected_weights(p, batch, dynamic_mix=None):
    state = expected_state(batch)
    hidden = torch.clamp(state @ p.trunk.weight.T, min=0)
    a_logit = torch.softmax(hidden @ p.logit_head.weight.T + p.logit_head.bias, 1)
    a_feat = torch.softmax(hidden @ p.feature_head.weight.T + p.feature_head.bias, 1)
    tce = torch.stack([state[:, sum(w + C + 3 for w in DIMS[:k]) + 2] for k in range(K)], 1)
    conf = (1 - torch.softmax(tce, 1)) / (K - 1)
    kl = torch.softmax(kl_matrix(batch), 1)
    cos = torch.softmax(
        torch.stack([state[:, sum(w + C + 3 for w in DIMS[:k])] for k in range(K)], 1), 1
    )
    lam_l, lam_f = dynamic_mix if dynamic_mix else (torch.full((3,), 1 / 3),) * 2
    w_l = lam_l[0] * a_logit + lam_l[1] * conf + lam_l[2] * kl
    w_f = lam_f[0] * a_feat + lam_f[1] * conf + lam_f[2] * cos
    return w_l, w_f


def test_state_layout_matches_the_state_section():
    strategy, batch = method(), make_batch()
    state = strategy.agent_state(batch, teacher_terms(strategy, batch, 1))
    assert state.vector.shape == (B, sum(d + C + 3 for d in DIMS))
    torch.testing.assert_close(state.vector, expected_state(batch), atol=1e-6, rtol=0)


def test_state_embedding_dims_average_channel_groups_before_or_after_a_cache():
    """Each embedding enters the state as `state_embedding_dims` channel-group means, whether the
    method gets it whole (live teachers) or already averaged (a compact cache stores that)."""
    strategy, batch = method(state_embedding_dims=2), make_batch()
    assert [strategy.teacher_embedding_width(d) for d in (6, 4, 1)] == [2, 2, 1]
    state = strategy.agent_state(batch, teacher_terms(strategy, batch, 1))
    assert state.vector.shape == (B, sum(2 + C + 3 for _ in DIMS))
    first = state.vector[:, 3:5]  # teacher 0: cos, kl, ce, then its embedding
    whole = batch.teachers[0].embedding
    torch.testing.assert_close(first, torch.stack([whole[:, :3].mean(1), whole[:, 3:].mean(1)], 1))
    averaged = copy.deepcopy(batch)
    for teacher, width in zip(averaged.teachers, (2, 2, 2), strict=True):
        teacher.embedding = torch.nn.functional.adaptive_avg_pool1d(
            teacher.embedding.unsqueeze(1), width
        ).squeeze(1)
    again = strategy.agent_state(averaged, teacher_terms(strategy, averaged, 1))
    assert torch.equal(again.vector, state.vector)


def test_paper_pool_dimensions_and_parameter_count():
    """The CIFAR-100 pool gives a 1692-wide state and 217,608 agent parameters (+6 dynamic)."""
    for dynamic, expected in ((False, 217_608), (True, 217_614)):
        config = MethodConfig(name="mtkdrl-official", options={"dynamic": dynamic})
        strategy = build(config, 4, num_classes=100, dims=[384, 384, 256, 256]).method
        assert strategy.agent.state_dim == 1692
        assert sum(p.numel() for p in strategy.agent.policy.parameters()) == expected


def test_fixed_combination_matches_formula():
    strategy, batch = method(), make_batch(1)
    weights = weights_of(strategy, batch, epoch=1)
    w_l, w_f = expected_weights(strategy.agent.policy, batch)
    torch.testing.assert_close(weights.logit, w_l, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, w_f, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.logit.sum(1), torch.ones(B), atol=1e-6, rtol=0)


def test_dynamic_combination_matches_formula_and_starts_at_thirds():
    strategy, batch = method(dynamic=True), make_batch(2)
    fixed = method()
    fixed.agent.policy.load_state_dict(
        strategy.agent.policy.state_dict(), strict=False
    )  # the fixed policy has no mixing logits
    torch.testing.assert_close(
        weights_of(strategy, batch, 1).logit, weights_of(fixed, batch, 1).logit, atol=1e-6, rtol=0
    )
    with torch.no_grad():
        strategy.agent.policy.logit_mix.copy_(torch.tensor([0.3, -1.0, 2.0]))
        strategy.agent.policy.feature_mix.copy_(torch.tensor([1.5, 0.2, -0.7]))
    mix = (
        torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0),
        torch.softmax(torch.tensor([1.5, 0.2, -0.7]), 0),
    )
    weights = weights_of(strategy, batch, 1)
    w_l, w_f = expected_weights(strategy.agent.policy, batch, mix)
    torch.testing.assert_close(weights.logit, w_l, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, w_f, atol=1e-6, rtol=0)


def test_mix_shares_set_the_fixed_proportions():
    """`logit_mix`/`feature_mix` are the shares of (agent, confidence, gap/similarity)."""
    strategy, batch = method(logit_mix=[1, 1, 0], feature_mix=[2, 1, 1]), make_batch(1)
    weights = weights_of(strategy, batch, epoch=1)
    mix = (torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.5, 0.25, 0.25]))
    w_l, w_f = expected_weights(strategy.agent.policy, batch, mix)
    torch.testing.assert_close(weights.logit, w_l, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, w_f, atol=1e-6, rtol=0)


def test_dynamic_mixing_starts_at_the_shares():
    default = method(dynamic=True).agent.policy
    assert torch.equal(default.logit_mix.detach(), torch.ones(3))  # the official start
    shares = method(dynamic=True, logit_mix=[2, 1, 1], feature_mix=[1, 1, 0]).agent.policy
    logit_mix, feature_mix = shares.mixing()
    torch.testing.assert_close(logit_mix, torch.tensor([0.5, 0.25, 0.25]))
    torch.testing.assert_close(feature_mix, torch.tensor([0.5, 0.5, 0.0]))


@pytest.mark.parametrize("mix", [[1, -1, 1], [0, 0, 0], [1, 1]])
def test_bad_mix_is_one_line_naming_the_option(mix):
    with pytest.raises(MtkdrlError, match=r"method\.options\.logit_mix: expected 3 non-negative"):
        method(logit_mix=mix)


def test_normalised_state_standardises_embeddings_and_logits_only():
    """`normalise_state` makes each e_k and z_k zero-mean, unit-variance per sample, leaves the
    three per-teacher terms raw, and so does not depend on the teachers' output scale."""
    batch = make_batch(3)
    raw = method().agent_state(batch, teacher_terms(method(), batch, 1)).vector
    strategy = method(normalise_state=True)
    state = strategy.agent_state(batch, teacher_terms(strategy, batch, 1)).vector
    start = 0
    for dim in DIMS:
        torch.testing.assert_close(state[:, start : start + 3], raw[:, start : start + 3])
        for block in (
            slice(start + 3, start + 3 + dim),
            slice(start + 3 + dim, start + 3 + dim + C),
        ):
            values = state[:, block]
            torch.testing.assert_close(values.mean(1), torch.zeros(B), atol=1e-5, rtol=0)
            torch.testing.assert_close(
                values.std(1, unbiased=False), torch.ones(B), atol=1e-3, rtol=0
            )
        start += dim + C + 3
    scaled = copy.deepcopy(batch)
    for teacher in scaled.teachers:
        teacher.embedding = teacher.embedding * 1000.0
    rescaled = strategy.agent_state(scaled, teacher_terms(strategy, scaled, 1)).vector
    emb = slice(3, 3 + DIMS[0])
    torch.testing.assert_close(rescaled[:, emb], state[:, emb], atol=2e-3, rtol=0)  # eps
    assert not torch.allclose(
        method().agent_state(scaled, teacher_terms(method(), scaled, 1)).vector[:, emb], raw[:, emb]
    )


def test_defaults_depart_from_the_official_settings_where_measured():
    """`mtkdrl`: uniform warm-up, agent head and confidence in halves (no gap term);
    `mtkdrl-official`: weights 1 in warm-up, thirds; both the replay update and r = -loss."""
    ours, official = method(name="mtkdrl"), method()
    for strategy in (ours, official):
        assert (strategy.options.agent_update, strategy.options.reward) == ("official", "loss")
    assert (ours.options.warmup_weight, official.options.warmup_weight) == ("uniform", "one")
    assert ours.agent.policy.mixing()[0].tolist() == [0.5, 0.5, 0.0]
    assert official.agent.policy.mixing()[0].tolist() == pytest.approx([1 / 3] * 3)
    batch = make_batch()
    torch.testing.assert_close(weights_of(ours, batch, 0).logit, torch.full((B, K), 1 / K))
    torch.testing.assert_close(weights_of(official, batch, 0).logit, torch.ones(B, K))
    state = ours.agent_state(batch, teacher_terms(ours, batch, 1))
    sources = ours.agent.policy.sources(state)
    expected = 0.5 * sources["logit_agent"] + 0.5 * sources["logit_confidence"]
    torch.testing.assert_close(weights_of(ours, batch, 1).logit, expected)


def test_warmup_weights():
    batch = make_batch()
    one = weights_of(method(), batch, 0)
    assert torch.equal(one.logit, torch.ones(B, K)) and torch.equal(one.feature, torch.ones(B, K))
    uniform = weights_of(method(warmup_weight="uniform"), batch, 0)
    torch.testing.assert_close(uniform.logit, torch.full((B, K), 1 / K))
    torch.testing.assert_close(uniform.feature, torch.full((B, K), 1 / K))


def test_reward_normalisation_and_one_replay_update():
    loss, batch = mtkdrl_loss(agent_step=10_000), make_batch(3)
    strategy = loss.method
    before = copy.deepcopy(strategy.agent.policy)
    sample_loss = step(loss, batch, epoch=1)
    expected_r = normalised(-sample_loss)
    torch.testing.assert_close(strategy.agent.buffer.rewards[0], expected_r, atol=1e-6, rtol=0)

    w_l, w_f = expected_weights(before, batch)
    objective = (expected_r[:, None] * -torch.log(w_l)).mean() + (
        expected_r[:, None] * -torch.log(w_f)
    ).mean()
    torch.testing.assert_close(
        objective,
        F.binary_cross_entropy(w_l, torch.ones_like(w_l), weight=expected_r[:, None])
        + F.binary_cross_entropy(w_f, torch.ones_like(w_f), weight=expected_r[:, None]),
    )
    grads = torch.autograd.grad(objective, list(before.parameters()))
    assert any(g.abs().max() > 0 for g in grads)  # the update below moves the policy
    strategy.end_epoch(1)
    assert strategy.agent.updates == 1
    for (name, new), old, grad in zip(
        strategy.agent.policy.named_parameters(), before.parameters(), grads, strict=True
    ):
        torch.testing.assert_close(new, old - 0.1 * grad, atol=1e-6, rtol=0, msg=name)
    assert len(strategy.agent.buffer) == 0


@pytest.mark.parametrize("agent_update", ["official", "reinforce"])
def test_reward_is_minus_the_loss_under_the_applied_weights(agent_update):
    """r = -(CE + α Σ w·KL + β Σ v·MSE) with the weights the forward applied; `official` stores
    it z-scored and clamped to [0, 1], `reinforce` receives it as it is."""
    alpha, beta = 0.7, 5.0
    torch.manual_seed(0)
    loss = mtkdrl_loss(alpha=alpha, beta=beta, agent_update=agent_update)
    strategy = loss.method
    batch = make_batch(6)
    seen = []
    original = strategy.agent.observe

    def observe(state, logit_w, feature_w, reward, epoch):
        seen.append((logit_w, feature_w, reward))
        original(state, logit_w, feature_w, reward, epoch)

    strategy.agent.observe = observe
    recorded = record_applied(loss)
    step(loss, batch, epoch=1)
    [applied] = recorded
    loss = expected_loss(batch, applied, alpha, beta)

    assert len(seen) == 1
    logit_w, feature_w, reward = seen[0]
    assert torch.equal(logit_w, applied.logit) and torch.equal(feature_w, applied.feature)
    torch.testing.assert_close(reward, -loss, atol=1e-6, rtol=0)
    mean_w = expected_weights(strategy.agent.policy, batch)
    if agent_update == "official":  # deterministic: the applied weights are the policy's
        torch.testing.assert_close(applied.logit, mean_w[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(applied.feature, mean_w[1], atol=1e-6, rtol=0)
        stored = strategy.agent.buffer.rewards[0]
        assert stored.max() > 0  # the check below is not of an all-zero reward
        torch.testing.assert_close(stored, normalised(-loss), atol=1e-6, rtol=0)
    else:  # sampled around the policy's: the reward must use the sample, not the mean
        assert not torch.allclose(applied.logit, mean_w[0], atol=1e-3)
        mean_loss = expected_loss(batch, TeacherWeights(*mean_w), alpha, beta)
        assert not torch.allclose(reward, -mean_loss, atol=1e-4)


@pytest.mark.parametrize("agent_update", ["official", "reinforce"])
def test_centred_reward_measures_each_term_from_its_teachers_batch_mean(agent_update):
    """`reward: centred`: r = -(CE + α Σ w·(KL - mean_batch KL) + β Σ v·(MSE - mean_batch MSE))."""
    alpha, beta = 0.7, 5.0
    torch.manual_seed(0)
    loss = mtkdrl_loss(alpha=alpha, beta=beta, agent_update=agent_update)
    strategy = loss.method
    strategy.options.reward = "centred"
    batch, seen = make_batch(6), []
    original = strategy.agent.observe

    def observe(state, logit_w, feature_w, reward, epoch):
        seen.append(reward)
        original(state, logit_w, feature_w, reward, epoch)

    strategy.agent.observe = observe
    recorded = record_applied(loss)
    step(loss, batch, epoch=1)
    [w] = recorded
    kl, mse = kl_matrix(batch), mse_matrix(batch)
    ce = expected_loss(batch, TeacherWeights(w.logit * 0, w.feature * 0), alpha, beta)
    centred = (
        ce
        + alpha * (w.logit * (kl - kl.mean(0))).sum(1)
        + beta * (w.feature * (mse - mse.mean(0))).sum(1)
    )
    torch.testing.assert_close(seen[0], -centred, atol=1e-5, rtol=0)
    assert not torch.allclose(seen[0], -expected_loss(batch, w, alpha, beta), atol=1e-3)


def reinforce_head_trace(reward: str, logits_for, teacher: int, steps: int = 400) -> list[float]:
    """`reinforce` (its default agent_lr, 1e-3) on two teachers whose logits `logits_for` gives:
    the mean weight its head gives teacher `teacher` after each step."""
    torch.manual_seed(0)
    options = {"agent_update": "reinforce", "warmup_epochs": 0}
    loss = mtkdrl_loss("mtkdrl", dims=[4, 4], reward=reward, **options)

    def head_weight(strategy, state):
        return strategy.agent.policy.sources(state)["logit_agent"][:, teacher].mean().item()

    return agent_trace(loss, logits_for, head_weight, steps)


def closer_teacher_weights(reward: str) -> list[float]:
    """Two teachers equally right on every label, the first much closer to the (fixed) student:
    the head's weight on the closer one."""

    def logits_for(labels, g):
        student = F.one_hot(labels, C).float() * 6 + torch.randn(32, C, generator=g)
        close = student + torch.randn(32, C, generator=g) * 0.3
        far = F.one_hot(labels, C).float() * 6 + torch.randn(32, C, generator=g) * 2
        return student, (close, far)

    return reinforce_head_trace(reward, logits_for, teacher=0)


def test_loss_reward_drives_the_agent_to_the_closest_teacher_and_centred_does_not():
    """With r = -loss the agent head learns to put its weight on whichever teacher is nearest the
    student (lowering the loss it is rewarded for), not on a better one; centring each teacher's
    term on its batch mean removes that pull, so two equally right teachers stay near halves."""
    by_loss = closer_teacher_weights("loss")
    centred = closer_teacher_weights("centred")
    assert min(by_loss[-100:]) > 0.95
    assert max(centred[-100:]) < 0.9 and abs(sum(centred[-100:]) / 100 - 0.5) < 0.15


def wrong_teacher_weights(reward: str) -> list[float]:
    """Two teachers: the first confidently wrong on every label and much nearer the (fixed)
    student, the second right and farther: the head's weight on the right one."""

    def logits_for(labels, g):
        wrong = F.one_hot((labels + 1) % C, C).float() * 6 + torch.randn(32, C, generator=g)
        student = wrong + torch.randn(32, C, generator=g) * 0.3
        right = F.one_hot(labels, C).float() * 6 + torch.randn(32, C, generator=g) * 2
        return student, (wrong, right)

    return reinforce_head_trace(reward, logits_for, teacher=1)


def test_label_reward_weights_the_right_teacher_where_loss_reward_follows_the_near_one():
    """`reward: label` pays for the label's likelihood under the weighted teachers, so the agent
    head moves its weight to the teacher that is right, away from a wrong one nearer the
    student; with r = -loss it moves the other way."""
    by_label = wrong_teacher_weights("label")
    by_loss = wrong_teacher_weights("loss")
    assert min(by_label[-100:]) > 0.9
    assert max(by_loss[-100:]) < 0.1


def test_label_reward_is_the_log_likelihood_of_the_label_under_the_weighted_teachers():
    labels = torch.tensor([0, 1])
    right, wrong = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([[0.0, 4.0], [4.0, 0.0]])
    teachers = [ModelOutputs(right, right), ModelOutputs(wrong, wrong)]
    batch = DistillBatch(labels, ModelOutputs(right, right), teachers, [])
    w = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
    p_right = torch.sigmoid(torch.tensor(4.0))
    mixture = torch.stack(
        [0.75 * p_right + 0.25 * (1 - p_right), 0.25 * p_right + 0.75 * (1 - p_right)]
    )
    torch.testing.assert_close(label_reward(batch, TeacherWeights(w)), mixture.log())
    both = label_reward(batch, TeacherWeights(w, w.flip(1)))
    flipped = torch.stack([mixture[1], mixture[0]])
    torch.testing.assert_close(both, (mixture.log() + flipped.log()) / 2)


def test_replay_fires_every_agent_step_batches():
    loss = mtkdrl_loss(agent_step=2)
    strategy = loss.method
    for index in range(3):
        step(loss, make_batch(index), 1)
    assert strategy.agent.updates == 3  # batches 0, 1, 2 replayed when batch 2 arrives
    assert len(strategy.agent.buffer) == 0


def test_buffer_cap_brings_replay_forward():
    loss = mtkdrl_loss(agent_buffer_mb=1e-4)
    strategy = loss.method
    for index in range(3):
        step(loss, make_batch(index), 1)
    assert strategy.agent.updates >= 1
    assert strategy.agent.buffer.nbytes <= 1e-4 * 2**20 + B * (strategy.agent.state_dim + 1) * 4


@pytest.mark.parametrize(("agent_update", "default_lr"), [("official", 0.1), ("reinforce", 1e-3)])
def test_agent_lr_zero_means_zero(agent_update, default_lr):
    """`agent_lr: 0` freezes the agent (it used to mean the default); None is the default."""
    assert method(agent_update=agent_update).agent.optimizer.param_groups[0]["lr"] == default_lr
    loss = mtkdrl_loss(agent_update=agent_update, agent_lr=0, agent_step=1, warmup_epochs=0)
    strategy = loss.method
    assert strategy.agent.optimizer.param_groups[0]["lr"] == 0
    before = copy.deepcopy(strategy.agent.state_dict())
    for index in range(3):
        step(loss, make_batch(index), 1)
    loss.end_epoch(1)
    assert strategy.agent.updates >= 2
    for name, value in strategy.agent.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_one_teacher_is_refused():
    with pytest.raises(MtkdrlError, match=r"teachers: method 'mtkdrl' needs at least 2.*use 'kd'"):
        build(MethodConfig(name="mtkdrl"), 1, num_classes=C, dims=4)


def test_batch_of_one_and_zero_variance_rewards_are_finite():
    loss = mtkdrl_loss(agent_step=100)
    strategy = loss.method
    single = make_batch(4, batch=1)
    step(loss, single, 1)
    batch = make_batch(5)
    loss(batch, 1)
    loss.observe(batch, torch.full((B,), 3.0), 1)
    assert torch.equal(strategy.agent.buffer.rewards[0], torch.zeros(1))
    assert torch.equal(strategy.agent.buffer.rewards[1], torch.zeros(B))
    loss.end_epoch(1)  # replays both
    assert strategy.agent.updates == 2
    assert all(torch.isfinite(p).all() for p in strategy.agent.policy.parameters())


def through_checkpoint_files(state, folder: Path, name: str):
    """`state` written and read back as the checkpoint does: safetensors plus JSON, no pickle."""
    tensors, skeleton = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))
    return unflatten_state(
        load_file(str(folder / f"{name}.safetensors")),
        json.loads((folder / f"{name}.json").read_text()),
    )


@pytest.mark.parametrize("agent_update", ["official", "reinforce"])
def test_checkpoint_round_trip_restores_agent_optimizer_and_buffer(agent_update, tmp_path):
    options = {"agent_update": agent_update, "agent_step": 100, "warmup_epochs": 0}
    if agent_update == "reinforce":
        options["baseline"] = "running"
    torch.manual_seed(0)
    strategy = mtkdrl_loss(**options)  # the method on its objective, as the run checkpoints it
    for index in range(2):
        torch.manual_seed(10 + index)
        step(strategy, make_batch(index), 1)
    torch.manual_seed(1)
    clone = mtkdrl_loss(**options)  # a different initial agent
    agents = strategy.method.agent, clone.method.agent
    assert not torch.equal(agents[1].policy.trunk.weight, agents[0].policy.trunk.weight)
    clone.load_state_dict(through_checkpoint_files(strategy.state_dict(), tmp_path, "module"))
    clone.load_extra_state(through_checkpoint_files(strategy.extra_state(), tmp_path, "extra"))
    assert clone.state_dict().keys() == strategy.state_dict().keys()
    assert any(key.startswith("method.agent.policy.") for key in clone.state_dict())
    for key, value in strategy.state_dict().items():
        assert torch.equal(clone.state_dict()[key], value), key
    assert agents[1].updates == agents[0].updates
    if agent_update == "official":
        assert len(agents[1].buffer) == 2 and agents[1].batch_in_epoch == 2
        for a, b in zip(agents[1].buffer.states, agents[0].buffer.states, strict=True):
            assert torch.equal(a, b)
        for a, b in zip(agents[1].buffer.rewards, agents[0].buffer.rewards, strict=True):
            assert torch.equal(a, b)
    else:
        assert agents[0].updates == 2 and agents[0].running_baseline != 0
        saved, restored = agents[0].optimizer.state_dict(), agents[1].optimizer.state_dict()
        assert saved["state"] and saved["state"].keys() == restored["state"].keys()
        for index, moments in saved["state"].items():
            for name, value in moments.items():
                assert torch.equal(restored["state"][index][name], value), (index, name)
    # Both continue alike: the next step (same sampled weights) and the epoch's end (to float
    # rounding: the same sums may vectorise differently on tensors read back from a file).
    for strategy_or_clone in (strategy, clone):
        torch.manual_seed(99)
        step(strategy_or_clone, make_batch(7), 1)
    figures = strategy.end_epoch(1), clone.end_epoch(1)
    assert figures[0]["agent_updates"] > 0
    assert figures[1] == pytest.approx(figures[0], abs=1e-6)
    for (name, a), b in zip(
        strategy.state_dict().items(), clone.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6, msg=name)


def agent_trace(loss: WeightedLoss, logits_for, readout, steps: int) -> list[float]:
    """Train the agent of `loss`'s method on two teachers for `steps` batches of 32;
    `logits_for(labels, g)` gives the (fixed) student's and both teachers' logits,
    `readout(method, state)` the figure recorded after each step."""
    g = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        labels = torch.randint(0, C, (32,), generator=g)
        student, teachers = logits_for(labels, g)
        outs = [
            ModelOutputs(z, torch.rand(32, 4, generator=g), torch.rand(32, 4, 1, 1, generator=g))
            for z in teachers
        ]
        adapted = [torch.rand(32, 4, 1, 1, generator=g) for _ in range(2)]
        batch = DistillBatch(labels, ModelOutputs(student, student), outs, adapted)
        sample_loss = loss(batch, 0)[0].detach()
        state = loss.method.pending
        loss.observe(batch, sample_loss, 0)
        with torch.no_grad():
            history.append(readout(loss.method, state))
    return history


def useful_teacher_weights(options: dict, steps: int = 300) -> list[float]:
    """Two teachers, one useful and one with random logits, a fixed student close to the useful
    one: the mean logit weight the agent gives the useful teacher after each step."""
    torch.manual_seed(0)
    config = MethodConfig(name="mtkdrl-official", options={"warmup_epochs": 0, **options})
    loss = build(config, 2, num_classes=C, dims=[4, 4])

    def logits_for(labels, g):
        good = F.one_hot(labels, C).float() * 6 + torch.randn(32, C, generator=g) * 0.5
        bad = torch.randn(32, C, generator=g) * 3
        return good + torch.randn(32, C, generator=g) * 0.5, (good, bad)

    def mixed_weight(strategy, state):
        return strategy.agent.policy(state)[0][:, 0].mean().item()

    return agent_trace(loss, logits_for, mixed_weight, steps)


def test_reinforce_learns_to_prefer_the_useful_teacher():
    """The policy gradient gives the useful teacher > 0.8 of the weight within 300 updates."""
    history = useful_teacher_weights(
        {"agent_update": "reinforce", "dynamic": True, "agent_lr": 0.05}
    )
    assert history[0] < 0.8
    assert min(history[-20:]) > 0.8


def test_official_update_does_not_learn_to_prefer_the_useful_teacher():
    """The official replay (BCE towards 1) has no gradient towards the better teacher: with the
    same problem and as many agent updates, the useful teacher's weight stays near one half."""
    history = useful_teacher_weights({"agent_update": "official", "dynamic": True, "agent_step": 1})
    assert max(abs(w - 0.5) for w in history[-20:]) < 0.05


def test_weights_logged_per_teacher():
    loss = mtkdrl_loss(dynamic=True)
    batch = make_batch()
    recorded = record_applied(loss)
    step(loss, batch, 1)
    [applied] = recorded
    figures = loss.end_epoch(1)
    for kind in ("logit", "feature"):
        values = getattr(applied, kind)
        for k in range(K):
            assert figures[f"w_{kind}_mean/{k}"] == pytest.approx(values[:, k].mean().item())
            spread = values[:, k].std(unbiased=False).item()
            assert figures[f"w_{kind}_std/{k}"] == pytest.approx(spread, abs=1e-5)
    assert sum(figures[f"w_logit_mean/{k}"] for k in range(K)) == pytest.approx(1.0, abs=1e-5)
    assert figures["agent_updates"] == 1  # the epoch's end replays the one stored batch
    assert "mix_logit/agent" in figures
    assert "w_logit_mean/0" not in loss.end_epoch(2)  # the figures are per epoch


@pytest.mark.parametrize(
    ("name", "epoch", "row_sum"),
    [
        ("mtkdrl-official", 0, K),  # warm-up, `warmup_weight: one`: every weight 1
        ("mtkdrl", 0, 1.0),  # warm-up, `warmup_weight: uniform`: every weight 1/K
        ("mtkdrl-official", 1, 1.0),  # after the warm-up: the agent's mix, on the simplex
    ],
)
def test_weights_are_teacher_weights(name, epoch, row_sum):
    """The applied weights: B×K, non-negative, rows summing to K in the official warm-up and to 1
    otherwise, equal to the hand-computed mix after the warm-up, and the ones the forward's `kd`
    and `feature` terms are weighted with."""
    loss, batch = mtkdrl_loss(name), make_batch(8)
    recorded = record_applied(loss)
    _, terms = loss(batch, epoch)
    [weights] = recorded
    if epoch < loss.method.options.warmup_epochs:
        w_l = w_f = torch.full((B, K), row_sum / K)
    else:
        w_l, w_f = expected_weights(loss.method.agent.policy, batch)
    for got, expected in ((weights.logit, w_l), (weights.feature, w_f)):
        assert got.shape == (B, K)
        assert (got >= 0).all()
        torch.testing.assert_close(got.sum(1), torch.full((B,), float(row_sum)), atol=1e-6, rtol=0)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    ce = F.cross_entropy(batch.student.logits, batch.labels, reduction="none")
    torch.testing.assert_close(terms["ce"], ce)
    torch.testing.assert_close(terms["kd"], (w_l * kl_matrix(batch)).sum(1), atol=1e-5, rtol=0)
    expected_feature = 5.0 * (w_f * mse_matrix(batch)).sum(1)
    torch.testing.assert_close(terms["feature"], expected_feature, atol=1e-5, rtol=0)


def test_two_processes_keep_identical_agents(tiny_run, tmp_path, two_processes):
    """Two CPU processes under `accelerate launch`: the agent ends identical on both ranks, and
    each rank's checkpoint holds the agent it ended with."""
    recipe = tiny_run(tmp_path / "run", "mtkdrl", epochs=2, eval_teachers=False)
    recipe["student"] = {"name": "resnet8x4_cifar"}
    recipe["data"]["batch_size"] = 8
    recipe["method"]["options"] = {"agent_step": 2, "warmup_epochs": 1}
    methods, _ = two_processes(recipe)
    assert any(key.startswith("method.agent.policy.") for key in methods[0])
    root = tmp_path / "run" / "checkpoints"
    latest = root / (root / "latest").read_text().strip()
    assert latest.name.startswith("checkpoint_")
    names = {p.name for p in latest.iterdir()}
    assert {
        f"{stem}.{ext}" for stem in ("shared", "rank0", "rank1") for ext in ("safetensors", "json")
    } <= names
    assert not [n for n in names if not n.endswith((".safetensors", ".json"))]
    saved = [
        unflatten_state(
            load_file(str(latest / f"rank{r}.safetensors")),
            json.loads((latest / f"rank{r}.json").read_text()),
        )["method"]
        for r in (0, 1)
    ]
    updates = [state["extra"]["method"]["agent"]["updates"] for state in saved]
    assert updates[0] == updates[1] > 0  # the agent was trained, on both ranks
    policy = [key for key in saved[0]["module"] if key.startswith("method.agent.policy.")]
    assert policy and saved[0]["module"].keys() == saved[1]["module"].keys()
    for key in policy:
        assert torch.equal(saved[0]["module"][key], saved[1]["module"][key]), key
        assert torch.equal(saved[0]["module"][key], methods[0][key]), key  # the state it ended with
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2


def test_similarity_uses_the_embedding_where_it_is_the_pooled_map_else_the_pooled_maps():
    from mtkdrl.methods.mtkdrl import teacher_similarity

    generator = torch.Generator().manual_seed(0)
    adapted = torch.randn(3, 4, 2, 2, generator=generator)
    maps = torch.randn(3, 4, 2, 2, generator=generator)
    same_width = ModelOutputs(torch.randn(3, C), torch.randn(3, 4, generator=generator), maps)
    wider = ModelOutputs(torch.randn(3, C), torch.randn(3, 9, generator=generator), maps)
    pooled = adapted.mean(dim=(2, 3))
    expected = F.cosine_similarity(pooled, same_width.embedding, dim=1)
    torch.testing.assert_close(teacher_similarity(adapted, same_width, True), expected)
    expected = F.cosine_similarity(pooled, maps.mean(dim=(2, 3)), dim=1)
    torch.testing.assert_close(teacher_similarity(adapted, wider, True), expected)


def test_teachers_whose_embedding_is_not_the_pooled_map_run(tmp_path, tiny_run):
    """MobileNetV2 (a 320-channel map, a 1280-wide embedding) beside a ResNet and a ViT: a dry
    run; then a short real run with the MobileNetV2 beside a pretrained ResNet."""
    from mtkdrl import Recipe, distill

    dry = Recipe.from_dict(
        {
            "output_dir": str(tmp_path / "dry"),
            "student": {"name": "resnet20_cifar"},
            "teachers": [
                {"name": "resnet32_cifar"},
                {"name": "mobilenetv2_cifar"},
                {"name": "vit_tiny_patch16_224"},
            ],
            "data": {"num_classes": 10, "batch_size": 2},
            "method": {"name": "mtkdrl", "options": {"warmup_epochs": 0}},
            "train": {"mixed_precision": "no"},
        }
    )
    assert all(torch.isfinite(torch.tensor(distill(dry, dry_run=True)["losses"])))
    raw = tiny_run(tmp_path / "real", "mtkdrl", epochs=1, eval_teachers=False)
    raw["teachers"][1] = {"name": "mobilenetv2_cifar"}
    raw["method"]["options"] = {"warmup_epochs": 0}
    summary = distill(Recipe.from_dict(raw))
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100


def test_logged_sources_mix_into_the_applied_weights():
    """Each source's per-epoch mean, mixed by thirds, is the applied weights' mean (official,
    deterministic): the logs say what the agent head, confidence and gap terms contribute."""
    loss = mtkdrl_loss(weights_by_class=True)
    batch = make_batch()
    recorded = record_applied(loss)
    step(loss, batch, 1)
    [applied_weights] = recorded
    figures = loss.end_epoch(1)
    for kind, names in (("logit", ("agent", "confidence", "gap")),
                        ("feature", ("agent", "confidence", "similarity"))):  # fmt: skip
        for k in range(K):
            mixed = sum(figures[f"w_{kind}_{name}_mean/{k}"] for name in names) / 3
            assert abs(figures[f"w_{kind}_mean/{k}"] - mixed) < 1e-6
        by_class = torch.tensor(
            [
                [w if w is not None else float("nan") for w in row]
                for row in figures[f"w_{kind}_by_class"]
            ]
        )
        for c in batch.labels.unique().tolist():
            applied = getattr(applied_weights, kind)[batch.labels == c].mean(0)
            assert torch.allclose(by_class[c], applied, atol=1e-6)
    teacher_ce = torch.stack(
        [F.cross_entropy(t.logits, batch.labels, reduction="none") for t in batch.teachers], 1
    )
    confidence = (1 - F.softmax(teacher_ce, 1)) / (K - 1)
    for k in range(K):
        assert abs(figures[f"w_logit_confidence_mean/{k}"] - confidence[:, k].mean().item()) < 1e-6


def logit_only_mtkdrl(**options) -> WeightedLoss:
    """`mtkdrl` over two teachers with no feature term (T = 4, α = 1)."""
    config = MethodConfig(name="mtkdrl", temperature=T, feature="none", options=options)
    return build(config, 2, C, [4, 4])


def linear_access(model: torch.nn.Linear, x, y, other, teachers) -> StudentAccess:
    """A StudentAccess for a linear student on features `x` (B×D): its logits as the student's
    outputs, `other` the batch `next_batch` draws."""

    def forward(params, inputs):
        logits = torch.func.functional_call(model, params, (inputs,))
        return ModelOutputs(logits, inputs)

    def outputs(params, inputs, labels, teacher_outs):
        return DistillBatch(labels, forward(params, inputs), teacher_outs, [])

    return StudentAccess(
        params=dict(model.named_parameters()),
        lr=0.1,
        batch=(x, y, None),
        forward=forward,
        loss=None,
        next_batch=lambda: other,
        outputs=outputs,
    )


def test_gain_slopes_are_the_terms_derivatives_along_the_other_batchs_gradient():
    """The central difference gives, for every sample and teacher, ⟨∇θ KL_ik, g/‖g⟩ with g the
    CE gradient on the other batch, as autograd computes it one term at a time."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, C)
    x, y = torch.randn(B, 6), torch.randint(0, C, (B,))
    other = (torch.randn(8, 6), torch.randint(0, C, (8,)))
    teachers = [ModelOutputs(torch.randn(B, C) * 3, torch.rand(B, 4)) for _ in range(2)]
    access = linear_access(model, x, y, (*other, None), teachers)
    objective = logit_only_mtkdrl().objective
    direction = held_out_direction(access)

    def terms_at(batch):
        return objective.terms(batch, 0, T)

    slopes = term_slopes(access, direction, terms_at, teachers, MTKDRLOptions.gain_step)
    params = dict(model.named_parameters())
    held_out = F.cross_entropy(model(other[0]), other[1])
    g = torch.autograd.grad(held_out, list(params.values()))
    norm = torch.sqrt(sum(v.pow(2).sum() for v in g))
    logits = model(x)
    for i in range(B):
        for k, teacher in enumerate(teachers):
            term = kl_per_sample(logits[i : i + 1], teacher.logits[i : i + 1], T)[0]
            grads = torch.autograd.grad(term, list(params.values()), retain_graph=True)
            exact = sum((a * b).sum() for a, b in zip(grads, g, strict=True)) / norm
            assert slopes.logit[i, k].item() == pytest.approx(exact.item(), rel=1e-2, abs=1e-4)
    assert slopes.logit.abs().max() > 1e-3  # the check above compares slopes that are not all 0


def test_gain_reward_weights_the_teacher_whose_targets_help_the_other_batch():
    """Two teachers, one confidently wrong on every label (and nearer the student), one right:
    with `reward: gain` the `reinforce` head moves its weight to the right one, as the wrong
    one's targets raise the CE on other batches of the same task. A linear student on labelled
    clusters; the agent learns while the student stays fixed."""
    torch.manual_seed(0)
    centres = torch.randn(C, 6) * 3
    model = torch.nn.Linear(6, C)
    loss = logit_only_mtkdrl(reward="gain", agent_update="reinforce", warmup_epochs=0)
    g = torch.Generator().manual_seed(1)

    def draw(n):
        labels = torch.randint(0, C, (n,), generator=g)
        return centres[labels] + torch.randn(n, 6, generator=g), labels

    history = []
    for _ in range(300):
        x, y = draw(32)
        with torch.no_grad():
            student = model(x)
        wrong = F.one_hot((y + 1) % C, C).float() * 6
        teachers = [
            ModelOutputs(wrong + student * 0.1, torch.rand(32, 4, generator=g)),
            ModelOutputs(F.one_hot(y, C).float() * 6 + torch.randn(32, C, generator=g),
                         torch.rand(32, 4, generator=g)),
        ]  # fmt: skip
        batch = DistillBatch(y, ModelOutputs(student, x), teachers, [])
        sample_loss = loss(batch, 0)[0].detach()
        state = loss.method.pending
        loss.before_step(linear_access(model, x, y, (*draw(32), None), teachers))
        loss.observe(batch, sample_loss, 0)
        with torch.no_grad():
            sources = loss.method.agent.policy.sources(state)
            history.append(sources["logit_agent"][:, 1].mean().item())
    assert history[0] < 0.6
    assert min(history[-50:]) > 0.8


def test_gain_reward_runs_with_a_hint_term_on_real_teachers(tmp_path, tiny_run):
    """`reward: gain` end to end: a dry run (its other batch random, as the dry run's), then one
    real epoch on the shared teachers with the stage-2 hint term, the agent learning every step
    from batches drawn beside the epoch's."""
    from mtkdrl import Recipe, distill

    raw = tiny_run(tmp_path / "gain", "mtkdrl", epochs=1, eval_teachers=False)
    raw["method"].update(feature={"kind": "hint", "stage": 2}, beta=100)
    raw["method"]["options"] = {"reward": "gain", "agent_update": "reinforce", "warmup_epochs": 0}
    dry = {**raw, "output_dir": str(tmp_path / "dry"), "data": {**raw["data"], "num_classes": 10}}
    assert all(torch.isfinite(torch.tensor(distill(Recipe.from_dict(dry), dry_run=True)["losses"])))
    summary = distill(Recipe.from_dict(raw))
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100
    epochs = [json.loads(line) for line in (tmp_path / "gain" / "metrics.jsonl").open()]
    assert [e["agent_updates"] for e in epochs if "agent_updates" in e] == [6.0]
