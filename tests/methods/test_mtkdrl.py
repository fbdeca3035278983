"""MTKD-RL against the formulas of mtkdrl.md §2, written out independently here."""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import DistillBatch, MethodContext, TeacherWeights, create_method
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

B, C, DIMS = 5, 7, [6, 4, 6]
K = len(DIMS)


def make_context(dims=DIMS, classes=C) -> MethodContext:
    return MethodContext([f"t{i}" for i in range(len(dims))], classes, list(dims), 4.0, 1.0, 5.0)


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
    kl = torch.rand(batch, len(dims), generator=g) * 10
    mse = torch.rand(batch, len(dims), generator=g)
    ce = torch.rand(batch, generator=g) * 2
    return DistillBatch(labels, student, teachers, adapted, ce, kl, mse)


def method(**options):
    options.setdefault("buffer_dtype", "float32")
    return create_method(MethodConfig(name="mtkdrl", options=options), make_context())


def expected_state(batch: DistillBatch) -> torch.Tensor:
    rows = []
    for i in range(batch.labels.shape[0]):
        row = []
        for k, t in enumerate(batch.teachers):
            pooled = batch.adapted[k][i].mean(dim=(1, 2))
            cos = torch.dot(pooled, t.embedding[i]) / (pooled.norm() * t.embedding[i].norm())
            tce = -torch.log_softmax(t.logits[i], 0)[batch.labels[i]]
            row += [cos.view(1), batch.kl[i, k].view(1), tce.view(1), t.embedding[i], t.logits[i]]
        rows.append(torch.cat(row))
    return torch.stack(rows)


def expected_weights(p, batch, dynamic_mix=None):
    state = expected_state(batch)
    hidden = torch.clamp(state @ p.trunk.weight.T, min=0)
    a_logit = torch.softmax(hidden @ p.logit_head.weight.T + p.logit_head.bias, 1)
    a_feat = torch.softmax(hidden @ p.feature_head.weight.T + p.feature_head.bias, 1)
    tce = torch.stack([state[:, sum(w + C + 3 for w in DIMS[:k]) + 2] for k in range(K)], 1)
    conf = (1 - torch.softmax(tce, 1)) / (K - 1)
    kl = torch.softmax(batch.kl, 1)
    cos = torch.softmax(
        torch.stack([state[:, sum(w + C + 3 for w in DIMS[:k])] for k in range(K)], 1), 1
    )
    lam_l, lam_f = dynamic_mix if dynamic_mix else (torch.full((3,), 1 / 3),) * 2
    w_l = lam_l[0] * a_logit + lam_l[1] * conf + lam_l[2] * kl
    w_f = lam_f[0] * a_feat + lam_f[1] * conf + lam_f[2] * cos
    return w_l, w_f


def test_state_layout_matches_section_2_4():
    strategy, batch = method(), make_batch()
    state = strategy.agent_state(batch)
    assert state.vector.shape == (B, sum(d + C + 3 for d in DIMS))
    torch.testing.assert_close(state.vector, expected_state(batch), atol=1e-6, rtol=0)


def test_paper_pool_dimensions_and_parameter_count():
    """§7: the CIFAR-100 pool gives a 1692-wide state and 217,608 agent parameters (+6 dynamic)."""
    ctx = make_context(dims=[384, 384, 256, 256], classes=100)
    for dynamic, expected in ((False, 217_608), (True, 217_614)):
        config = MethodConfig(name="mtkdrl", options={"dynamic": dynamic})
        strategy = create_method(config, ctx)
        assert strategy.state_dim == 1692
        assert sum(p.numel() for p in strategy.policy.parameters()) == expected


def test_fixed_combination_matches_formula():
    strategy, batch = method(), make_batch(1)
    weights = strategy.weights(batch, epoch=1)
    w_l, w_f = expected_weights(strategy.policy, batch)
    torch.testing.assert_close(weights.logit, w_l, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, w_f, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.logit.sum(1), torch.ones(B), atol=1e-6, rtol=0)


def test_dynamic_combination_matches_formula_and_starts_at_thirds():
    strategy, batch = method(dynamic=True), make_batch(2)
    fixed = method()
    fixed.policy.load_state_dict(
        strategy.policy.state_dict(), strict=False
    )  # the fixed policy has no mixing logits
    torch.testing.assert_close(
        strategy.weights(batch, 1).logit, fixed.weights(batch, 1).logit, atol=1e-6, rtol=0
    )
    with torch.no_grad():
        strategy.policy.logit_mix.copy_(torch.tensor([0.3, -1.0, 2.0]))
        strategy.policy.feature_mix.copy_(torch.tensor([1.5, 0.2, -0.7]))
    mix = (
        torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0),
        torch.softmax(torch.tensor([1.5, 0.2, -0.7]), 0),
    )
    weights = strategy.weights(batch, 1)
    w_l, w_f = expected_weights(strategy.policy, batch, mix)
    torch.testing.assert_close(weights.logit, w_l, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, w_f, atol=1e-6, rtol=0)


def test_warmup_weights():
    batch = make_batch()
    assert torch.equal(method().weights(batch, 0).logit, torch.ones(B, K))
    uniform = method(warmup_weight="uniform").weights(batch, 0)
    torch.testing.assert_close(uniform.feature, torch.full((B, K), 1 / K))


def test_reward_normalisation_and_one_replay_update():
    strategy, batch = method(agent_step=10_000), make_batch(3)
    before = copy.deepcopy(strategy.policy)
    weights = strategy.weights(batch, epoch=1)
    sample_loss = (
        batch.ce + (weights.logit * batch.kl).sum(1) + 5.0 * (weights.feature * batch.mse).sum(1)
    )
    strategy.observe(batch, weights, sample_loss, epoch=1)
    reward = -sample_loss
    expected_r = ((reward - reward.mean()) / reward.std(unbiased=True)).clamp(0, 1)
    torch.testing.assert_close(strategy.buffer.rewards[0], expected_r, atol=1e-6, rtol=0)

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
    strategy.end_epoch(1)
    for (name, new), old, grad in zip(
        strategy.policy.named_parameters(), before.parameters(), grads, strict=True
    ):
        torch.testing.assert_close(new, old - 0.1 * grad, atol=1e-6, rtol=0, msg=name)
    assert len(strategy.buffer) == 0


def test_replay_fires_every_agent_step_batches():
    strategy = method(agent_step=2)
    for step in range(3):
        batch = make_batch(step)
        weights = strategy.weights(batch, 1)
        strategy.observe(batch, weights, batch.ce, 1)
    assert strategy.agent_updates == 3  # batches 0, 1, 2 replayed when batch 2 arrives
    assert len(strategy.buffer) == 0


def test_buffer_cap_brings_replay_forward():
    strategy = method(agent_buffer_mb=1e-4)
    for step in range(3):
        batch = make_batch(step)
        strategy.observe(batch, strategy.weights(batch, 1), batch.ce, 1)
    assert strategy.agent_updates >= 1
    assert strategy.buffer.nbytes <= 1e-4 * 2**20 + B * (strategy.state_dim + 1) * 4


def test_one_teacher_is_refused():
    with pytest.raises(MtkdrlError, match=r"teachers:.*at least 2.*use method 'kd'"):
        create_method(MethodConfig(name="mtkdrl"), make_context(dims=[4]))


def test_batch_of_one_and_zero_variance_rewards_are_finite():
    strategy = method(agent_step=1)
    single = make_batch(4, batch=1)
    strategy.observe(single, strategy.weights(single, 1), single.ce, 1)
    assert torch.equal(strategy.buffer.rewards[0], torch.zeros(1))
    batch = make_batch(5)
    strategy.observe(batch, strategy.weights(batch, 1), torch.full((B,), 3.0), 1)
    assert all(torch.isfinite(p).all() for p in strategy.policy.parameters())


def test_checkpoint_round_trip_restores_agent_optimizer_and_buffer():
    strategy = method(agent_step=100)
    for step in range(2):
        batch = make_batch(step)
        strategy.observe(batch, strategy.weights(batch, 1), batch.ce, 1)
    clone = method(agent_step=100)
    clone.load_state_dict(strategy.state_dict())
    assert len(clone.buffer) == 2 and clone.batch_in_epoch == 2
    for a, b in zip(clone.buffer.states, strategy.buffer.states, strict=True):
        assert torch.equal(a, b)


def useful_teacher_weights(options: dict, steps: int = 300) -> list[float]:
    """Two teachers, one useful and one with random logits, a fixed student close to the useful
    one: the mean logit weight the agent gives the useful teacher after each step."""
    torch.manual_seed(0)
    ctx = make_context(dims=[4, 4], classes=C)
    config = MethodConfig(name="mtkdrl", options={"warmup_epochs": 0, **options})
    strategy = create_method(config, ctx)
    g = torch.Generator().manual_seed(1)
    history = []
    for _ in range(steps):
        labels = torch.randint(0, C, (32,), generator=g)
        good = F.one_hot(labels, C).float() * 6 + torch.randn(32, C, generator=g) * 0.5
        bad = torch.randn(32, C, generator=g) * 3
        student = good + torch.randn(32, C, generator=g) * 0.5
        outs = [ModelOutputs(z, torch.rand(32, 4, generator=g), None) for z in (good, bad)]
        log_student = F.log_softmax(student / 4, 1)
        kl = torch.stack(
            [
                F.kl_div(log_student, F.softmax(z / 4, 1), reduction="none").sum(1) * 16
                for z in (good, bad)
            ],
            1,
        )
        mse = torch.rand(32, 2, generator=g)
        adapted = [torch.rand(32, 4, 1, 1, generator=g) for _ in range(2)]
        ce = F.cross_entropy(student, labels, reduction="none")
        batch = DistillBatch(labels, ModelOutputs(student, student), outs, adapted, ce, kl, mse)
        weights = strategy.weights(batch, epoch=0)
        loss = ce + (weights.logit * kl).sum(1) + 5 * (weights.feature * mse).sum(1)
        strategy.observe(batch, weights, loss, epoch=0)
        with torch.no_grad():
            mean_logit, _ = strategy.policy(strategy.agent_state(batch))
        history.append(mean_logit[:, 0].mean().item())
    return history


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
    strategy = method(dynamic=True)
    batch = make_batch()
    strategy.observe(batch, strategy.weights(batch, 1), batch.ce, 1)
    figures = strategy.end_epoch(1)
    assert {f"w_logit_mean/{k}" for k in range(K)} <= set(figures)
    assert sum(figures[f"w_logit_mean/{k}"] for k in range(K)) == pytest.approx(1.0, abs=1e-5)
    assert "mix_logit/agent" in figures


def test_weights_are_teacher_weights():
    assert isinstance(method().weights(make_batch(), 0), TeacherWeights)


def test_two_processes_keep_identical_agents(tiny_run, tmp_path):
    """Two CPU processes under `accelerate launch`: the agent ends identical on both ranks.

    Accelerate starts several CPU processes through torch's elastic launcher when asked for
    `--multi_gpu` with ACCELERATE_USE_CPU set (its `--cpu` flag alone needs MPI for more than one).
    """
    recipe = tiny_run(tmp_path / "run", "mtkdrl", epochs=2, eval_teachers=False)
    recipe["student"] = {"name": "resnet8x4_cifar"}
    recipe["data"]["batch_size"] = 8
    recipe["method"]["options"] = {"agent_step": 2, "warmup_epochs": 1}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    script = Path(__file__).with_name("two_process_run.py")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(script),
        str(path),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: agent_updates=" in done.stdout and "rank 1: agent_updates=" in done.stdout
    updates = {line.split("=")[-1] for line in done.stdout.splitlines() if "agent_updates=" in line}
    assert len(updates) == 1 and int(updates.pop()) > 0  # the agent was trained, on both ranks
    for kind in ("agent", "student"):
        ranks = [load_file(str(tmp_path / f"{kind}_rank{r}.safetensors")) for r in (0, 1)]
        assert ranks[0] and ranks[0].keys() == ranks[1].keys()
        for key in ranks[0]:
            assert torch.equal(ranks[0][key], ranks[1][key]), (kind, key)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
