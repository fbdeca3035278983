"""Temperature policies through the shared objective: per-sample T in `kd`, `dkd` and a
multi-teacher method, recipe syntax and errors, CTKD's reversal, and real runs that resume."""

import math

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.logit_losses import DecoupledKDLoss, DKDOptions
from mtkdrl.methods import DistillBatch
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig
from mtkdrl.temperatures import PolicyInput, TemperatureContext, build_temperature_policy
from mtkdrl.temperatures.base import TemperaturePolicy
from mtkdrl.temperatures.curriculum import reversal_scale
from mtkdrl.weighted_loss import WeightedLoss

from ..methods.helpers import build as build_loss
from ..methods.helpers import terms_of, weights_of

B, C = 5, 6


class GivenTemperatures(TemperaturePolicy):
    """A test policy returning fixed per-sample temperatures, and what it was shown."""

    name, description, needs_ensemble = "given", "test", True

    def __init__(self, temperatures):
        super().__init__(None, TemperatureContext())
        self.temperatures, self.seen = temperatures, None

    def choose(self, seen):
        self.seen = seen.ensemble
        return self.temperatures


def build(name: str, k: int, **config) -> WeightedLoss:
    """The method on its objective as a run builds them (α = β = 1, T from the recipe's)."""
    return build_loss(MethodConfig(name=name, alpha=1.0, beta=1.0, **config), k, C, dims=4)


def batch(k: int) -> DistillBatch:
    g = torch.Generator().manual_seed(k)
    labels = torch.randint(0, C, (B,), generator=g)
    teachers = [
        ModelOutputs(torch.randn(B, C, generator=g) * 2, torch.randn(B, 4)) for _ in range(k)
    ]
    return DistillBatch(
        labels, ModelOutputs(torch.randn(B, C, generator=g), torch.randn(B, 4)), teachers, []
    )


def kl_at(z_s, z_t, t):
    p_t = F.softmax(z_t / t, 0)
    return t**2 * (p_t * (p_t.log() - F.log_softmax(z_s / t, 0))).sum()


TEMPS = torch.tensor([0.5, 1.0, 2.0, 4.0, 9.0])


@pytest.mark.parametrize(("name", "k"), [("kd", 1), ("avg", 3)])
def test_per_sample_temperatures_scale_each_samples_kl(name, k):
    loss, data = build(name, k, **({"feature": "none"} if name == "avg" else {})), batch(k)
    loss.objective.temperature_policy = GivenTemperatures(TEMPS)
    kd = terms_of(loss, data, 0)["kd"]
    expected = torch.stack([
        sum(kl_at(data.student.logits[i], t.logits[i], TEMPS[i]) for t in data.teachers) / k
        for i in range(B)
    ])  # fmt: skip
    torch.testing.assert_close(kd, expected, atol=1e-6, rtol=1e-6)


def test_per_sample_temperatures_in_dkd_match_dkd_at_each_t():
    loss, data = build("dkd", 2, options={"warmup_epochs": 0}), batch(2)
    loss.objective.temperature_policy = GivenTemperatures(TEMPS)
    kd = terms_of(loss, data, 0)["kd"]
    dkd = DecoupledKDLoss(DKDOptions(warmup_epochs=0))

    def one(i: int, teacher: ModelOutputs) -> torch.Tensor:  # sample i alone, at its own T
        rows = slice(i, i + 1)
        z_s, z_t, y = data.student.logits[rows], teacher.logits[rows], data.labels[rows]
        return dkd(z_s, z_t, y, float(TEMPS[i]), 0)[0]

    expected = torch.stack([sum(one(i, t) for t in data.teachers) / 2 for i in range(B)])
    torch.testing.assert_close(kd, expected, atol=1e-6, rtol=1e-6)


def test_the_policy_sees_the_teachers_mixed_by_the_methods_weights():
    loss, data = build("ebkd", 2), batch(2)
    loss.objective.temperature_policy = policy = GivenTemperatures(torch.full((B,), 3.0))
    loss(data, 0)
    weights = weights_of(loss, data, 0).logit  # EBKD's weights do not depend on T
    probs = torch.stack([t.logits.softmax(1) for t in data.teachers], 1)
    expected = (weights.unsqueeze(2) * probs).sum(1) / weights.sum(1, keepdim=True)
    torch.testing.assert_close(policy.seen, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "k"), [("kd", 1), ("avg", 3)])
def test_equal_weights_give_the_trial_passs_ensemble_without_it(name, k):
    loss, data = build(name, k), batch(k)
    assert loss.method.equal_logit_weights
    shortcut = loss.ensemble(data, 0)
    # this instance only: the trial pass through its weights
    loss.method.equal_logit_weights = False
    torch.testing.assert_close(shortcut, loss.ensemble(data, 0), atol=1e-7, rtol=0)


def test_recipe_syntax_and_errors():
    assert build("avg", 2).objective.temperature_policy.fixed_value == 4.0
    assert build("avg", 2, temperature=2).objective.temperature_policy.fixed_value == 2.0
    assert build("avg", 2, temperature={"policy": "rl"}).objective.temperature_policy.name == "rl"
    with pytest.raises(MtkdrlError, match=r"^method\.temperature\.policy: unknown policy 'hot'"):
        build("avg", 2, temperature={"policy": "hot"})
    with pytest.raises(MtkdrlError, match=r"^method\.temperature: expected a positive T"):
        build("avg", 2, temperature=-1)
    with pytest.raises(MtkdrlError, match=r"^method\.temperature: method 'aekd' needs one fixed T"):
        build("aekd", 2, temperature={"policy": "curriculum"})


def test_curriculum_starts_at_its_initial_t_and_reverses_the_gradient():
    policy = build_temperature_policy({"policy": "curriculum"}, TemperatureContext())
    options = policy.options
    assert reversal_scale(0, options) == 0.0 and reversal_scale(10, options) == -1.0
    assert reversal_scale(5, options) == pytest.approx(-0.5)
    for epoch in (5, 12):
        policy.tau.grad = None
        t = policy.choose(
            PolicyInput(torch.zeros(2, 3), None, torch.zeros(2, dtype=torch.long), epoch)
        )
        assert float(t.detach()) == pytest.approx(4.0)
        t.backward()
        s = torch.sigmoid(policy.tau.detach())
        plain = float(options.t_range * s * (1 - s))  # dT/dτ without the reversal
        assert float(policy.tau.grad) == pytest.approx(reversal_scale(epoch, options) * plain)


@pytest.mark.parametrize(
    ("method", "options", "temperature"),
    [
        ("avg", {}, {"policy": "rl", "warmup_epochs": 0, "rl_every": 1, "credit": "shared"}),
        ("dkd", {"warmup_epochs": 0}, {"policy": "curriculum", "ramp_epochs": 1}),
    ],
)
def test_real_run_resumes_to_the_same_weights_and_logs_temperatures(
    run_and_resumed, method, options, temperature
):
    """A short run on the shared data; stopped after 4 of 6 steps and resumed, it ends with the
    same student and the same policy (its networks, optimizers, sampling generator)."""
    summary, folder = run_and_resumed(method, options, temperature=temperature)
    epoch = read_epochs(folder)[-1]
    assert summary["global_steps"] == 6
    assert 0 < epoch["temperature_mean"] < 21 and math.isfinite(epoch["temperature_std"])
    if temperature["policy"] == "rl":
        # the first batch has no previous accuracy to be rewarded against
        assert epoch["temperature_updates"] == 5 and sum(epoch["temperature_histogram"]) == 6 * 16


REMIXING = {"policy": "rl", "warmup_epochs": 0, "rl_every": 1, "remix_every": 1}


def test_a_remixing_run_resumes_inside_its_remix_epoch(run_and_resumed):
    """RLKD with the official calibration (return model, critical states) and the entropy remix:
    epoch 0 records entropies and plans, epoch 1 blends 10 of the 96 samples (ranks 80–90 %)
    with teachers run live for them; stopped in epoch 1 and resumed, it ends the same."""
    _, folder = run_and_resumed("avg", epochs=2, stop_after=8, temperature=REMIXING)
    first, second = read_epochs(folder)
    assert first["remix_next_epoch"] and first["remixed_samples"] == 0
    assert second["remixed_samples"] == 10 and second["remix_next_epoch"]  # every epoch
    assert second["temperature_updates"] == 11  # cumulative; the very first batch has no reward


def test_two_processes_keep_one_agent(tiny_run, tmp_path, two_processes):
    """Under 2 processes, the actor, critic, return model and detector stay identical."""
    recipe = tiny_run(tmp_path / "run", "avg", epochs=2, eval_teachers=False)
    recipe["data"]["batch_size"] = 8
    recipe["method"]["temperature"] = REMIXING
    methods, _ = two_processes(recipe)
    prefix = "objective.temperature_policy."
    names = {k.split(".")[2] for k in methods[0] if k.startswith(prefix)}
    assert names == {"actor", "critic", "redistribution", "detector"}
    start = build_temperature_policy(REMIXING, TemperatureContext()).actor.log_std
    assert not torch.equal(methods[0][f"{prefix}actor.log_std"], start.detach())
