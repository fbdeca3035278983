"""One training step against the formulas, and a method, a temperature policy and a logit loss
written here that together use every part of the interface."""

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from mtkdrl import Recipe, build_run, train
from mtkdrl.logit_losses import LOGIT_LOSSES, LogitLoss
from mtkdrl.methods import METHODS, DistillBatch, Method, MethodContext, TeacherWeights
from mtkdrl.outputs import read_epochs, read_records
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig
from mtkdrl.step import BatchProvider, train_step
from mtkdrl.temperatures import TEMPERATURE_POLICIES, PolicyInput, TemperaturePolicy

from .methods.helpers import build, terms_of


def tiny_recipe(
    tiny_run, tmp_path, method: str, objective: dict | None = None, **options
) -> Recipe:
    """A one-epoch recipe of `method` with `options`; `objective` sets more `method` keys (its
    temperature, logit loss)."""
    raw = tiny_run(tmp_path / "run", method, epochs=1, log_every=1, eval_teachers=False)
    raw["method"]["options"] = options
    raw["method"].update(objective or {})
    raw["teacher_cache"] = {"mode": "off"}
    return Recipe.from_dict(raw)


def first_batch(run):
    run.data.set_epoch(0)
    run.task.set_epoch(0)
    run.task.train()
    return next(iter(run.train_loader))


def expected_terms(run, images, labels):
    """CE, T²·KL and feature MSE per sample and teacher, from the formulas, on copies of the
    student and adapters (train mode, so the same batch statistics as the step's)."""
    temperature = run.recipe.method.temperature
    student = copy.deepcopy(run.unwrapped_student())
    adapters = copy.deepcopy(extract_model_from_parallel(run.task.adapters))
    with torch.no_grad():
        final, maps = student.forward_intermediates(images, indices=1, output_fmt="NCHW")
        logits = student.forward_head(final)
        ce = F.cross_entropy(logits, labels, reduction="none")
        kl, mse = [], []
        for teacher, adapter in zip(run.teachers.teachers, adapters, strict=True):
            t_final, t_maps = teacher.forward_intermediates(images, indices=1, output_fmt="NCHW")
            t_logits = teacher.forward_head(t_final)
            p_t = F.softmax(t_logits / temperature, dim=1)
            log_ratio = F.log_softmax(t_logits / temperature, 1) - F.log_softmax(
                logits / temperature, 1
            )
            kl.append((p_t * log_ratio).sum(1) * temperature**2)
            mse.append((adapter(maps[-1]) - t_maps[-1]).pow(2).mean(dim=(1, 2, 3)))
    return ce, torch.stack(kl, 1), torch.stack(mse, 1)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("avg", {}),
        ("mtkdrl-official", {"warmup_epochs": 0}),
        ("mtkdrl", {"warmup_epochs": 0}),
        ("mtkdrl", {"warmup_epochs": 0, "agent_update": "reinforce"}),
    ],
    ids=["avg", "mtkdrl-official", "mtkdrl", "mtkdrl-reinforce"],
)
def test_step_loss_is_ce_plus_weighted_kl_and_feature_terms(tmp_path, tiny_run, method, options):
    """loss = mean(CE + α Σ w·KL + β Σ v·MSE); MTKD-RL's agent is rewarded with minus that
    per-sample loss, at the weights it applied."""
    run = build_run(tiny_recipe(tiny_run, tmp_path, method, **options))
    images, labels, indices = first_batch(run)
    ce, kl, mse = expected_terms(run, images, labels)
    rewards, applied = [], []
    if method.startswith("mtkdrl"):
        observe = run.task.method.agent.observe

        def spy(state, logit_w, feature_w, reward, epoch):
            rewards.append(reward.clone())
            observe(state, logit_w, feature_w, reward, epoch)

        run.task.method.agent.observe = spy
    combine = run.task.objective.combine

    def applying(terms, weights):  # the weights the step's loss is combined with
        applied.append(weights)
        return combine(terms, weights)

    run.task.objective.combine = applying
    result = train_step(run, (images, labels, indices), BatchProvider(None))
    [weights] = applied
    if method == "avg":
        assert torch.equal(weights.logit, torch.full_like(kl, 0.5))
    alpha, beta = run.recipe.method.alpha, run.recipe.method.beta
    per_sample = ce + alpha * (weights.logit * kl).sum(1) + beta * (weights.feature * mse).sum(1)
    torch.testing.assert_close(result.loss, per_sample.mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.terms["ce"], ce.mean(), rtol=1e-6, atol=1e-6)
    kd = alpha * (weights.logit * kl).sum(1).mean()
    torch.testing.assert_close(result.terms["kd"], kd, rtol=1e-6, atol=1e-6)
    if method.startswith("mtkdrl"):
        assert len(rewards) == 1
        torch.testing.assert_close(rewards[0], -per_sample, rtol=1e-6, atol=1e-6)


# ------------------------------------------------- a method, a policy and a logit loss written here
@dataclass
class ProbeTemperatureOptions:
    scale: float = 3.0


class ProbeTemperatures(TemperaturePolicy):
    """T_i = 1 + scale × (the top-1 probability on sample i of the teachers' mix by the method's
    weights): a per-sample T from the ensemble the objective gives a policy that asks."""

    name = "test_probe_temperature"
    description = "a test policy: per-sample T from the teachers' weighted mix"
    Options = ProbeTemperatureOptions
    needs_ensemble = True

    def choose(self, seen: PolicyInput) -> torch.Tensor:
        return 1.0 + self.options.scale * seen.ensemble.max(1).values


class ProbeLogitLoss(LogitLoss):
    """T²·‖softmax(z_s/T) − softmax(z_t/T)‖², at one T or one per sample (B or B×1)."""

    name = "test_probe_squared"
    description = "a test logit loss: squared error of the softmaxes at T"

    def __call__(self, student_logits, teacher_logits, labels, temperature, epoch):
        t = torch.as_tensor(temperature, dtype=student_logits.dtype, device=student_logits.device)
        t = t.reshape(-1, 1)
        diff = F.softmax(student_logits / t, 1) - F.softmax(teacher_logits / t, 1)
        return diff.pow(2).sum(1) * t.reshape(-1) ** 2


class ProbeMethod(Method):
    """Weights through the teachers' heads, and a before-step hook that records what it was
    given: with the policy and the logit loss above, every part of the interface."""

    name = "test_probe"
    description = "a test method exercising every hook"
    tracked_weights = ("logit",)

    def __init__(self, context: MethodContext, options) -> None:
        super().__init__(context, options)
        self.hook_records: list[dict] = []
        self.watched: nn.Module | None = None  # the live student, set by a test to check its BN

    def teacher_weights(self, batch: DistillBatch, terms, epoch: int) -> TeacherWeights:
        """Softmax over teachers of how sure each teacher's head is on the student's embedding."""
        embedding = batch.student.embedding.detach()
        sure = torch.stack(
            [
                F.softmax(self.context.head(k)(embedding), 1).max(1).values
                for k in range(batch.num_teachers)
            ],
            1,
        )
        return TeacherWeights(logit=F.softmax(sure, 1))

    def before_step(self, access) -> None:
        before = {k: v.clone() for k, v in self.watched.named_buffers()}
        loss = access.loss(access.params).item()
        extra = access.next_batch()
        self.hook_records.append(
            {
                "lr": access.lr,
                "loss": loss,
                "buffers_kept": all(
                    torch.equal(v, before[k]) for k, v in self.watched.named_buffers()
                ),
                "extra_batch": tuple(extra[0].shape),
                "grads": all(p.grad is not None for p in access.params.values()),
            }
        )


PROBE_REGISTRIES = (
    (METHODS, ProbeMethod),
    (TEMPERATURE_POLICIES, ProbeTemperatures),
    (LOGIT_LOSSES, ProbeLogitLoss),
)


def probe_objective(scale: float | None = None) -> dict:
    """The `method` keys that pick the probe policy (its default scale, or `scale`) and loss."""
    policy = {"policy": ProbeTemperatures.name}
    if scale is not None:
        policy["scale"] = scale
    return {"temperature": policy, "logit_loss": ProbeLogitLoss.name}


@pytest.fixture
def probe_method():
    for registry, cls in PROBE_REGISTRIES:
        registry.register(cls)
    yield ProbeMethod
    for registry, cls in PROBE_REGISTRIES:
        del registry[cls.name]


def hand_computed(batch: DistillBatch, heads: list[nn.Module], alpha: float, scale: float):
    """The probe's per-sample loss written out from the definitions of its method, policy and
    logit loss."""
    logits = batch.student.logits
    ce = F.cross_entropy(logits, batch.labels, reduction="none")
    sure = torch.stack([F.softmax(h(batch.student.embedding), 1).max(1).values for h in heads], 1)
    weights = F.softmax(sure, 1)
    probs = torch.stack([F.softmax(t.logits, 1) for t in batch.teachers], 1)
    mixed = (weights.unsqueeze(2) * probs).sum(1)  # the weights sum to 1 over teachers
    temperature = (1.0 + scale * mixed.max(1).values).unsqueeze(1)
    loss = ce.clone()
    for k, teacher in enumerate(batch.teachers):
        p_s = F.softmax(logits / temperature, 1)
        p_t = F.softmax(teacher.logits / temperature, 1)
        loss = (
            loss + alpha * weights[:, k] * (p_s - p_t).pow(2).sum(1) * temperature.squeeze(1) ** 2
        )
    return loss


def test_probe_method_loss_equals_the_hand_computed_one_on_fixed_inputs(probe_method):
    generator = torch.Generator().manual_seed(0)
    b, c, d, k = 6, 5, 8, 3

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    heads = [nn.Linear(d, c) for _ in range(k)]
    config = MethodConfig(name=ProbeMethod.name, alpha=0.7, **probe_objective(scale=2.0))
    loss = build(config, k, num_classes=c, dims=d, heads=heads)
    batch = DistillBatch(
        labels=torch.randint(0, c, (b,), generator=generator),
        student=ModelOutputs(randn(b, c), randn(b, d)),
        teachers=[ModelOutputs(randn(b, c), randn(b, d)) for _ in range(k)],
        adapted=[],
    )
    terms = terms_of(loss, batch, epoch=0)
    assert set(terms) == {"ce", "kd"}
    expected = hand_computed(batch, heads, alpha=0.7, scale=2.0)
    torch.testing.assert_close(terms["ce"] + terms["kd"], expected, rtol=1e-6, atol=1e-6)


def test_probe_method_runs_through_the_real_loop(tmp_path, tiny_run, probe_method):
    """Its hook sees the step's loss as a function of the student's parameters (the same value
    the loop logs), gradients, the learning rate and more batches, and never moves BN stats."""
    run = build_run(tiny_recipe(tiny_run, tmp_path, "test_probe", probe_objective()))
    assert isinstance(run.task.objective.temperature_policy, ProbeTemperatures)
    assert isinstance(run.task.objective.logit_loss, ProbeLogitLoss)
    assert all(head is not None for head in run.task.method.context.teacher_heads)
    run.task.method.watched = run.unwrapped_student()
    summary = train(run)
    steps = [r for r in read_records(tmp_path / "run") if "loss" in r]
    hooks = run.task.method.hook_records
    assert len(hooks) == len(steps) == summary["global_steps"] == 6
    for step, hook in zip(steps, hooks, strict=True):
        assert set(step) == {"step", "epoch", "loss", "lr", "ce", "kd"}
        assert step["loss"] == pytest.approx(step["ce"] + step["kd"], rel=1e-6)
        assert hook["loss"] == pytest.approx(step["loss"], rel=1e-5)
        assert hook["lr"] == pytest.approx(0.05)
        assert hook["buffers_kept"] and hook["grads"]
        assert hook["extra_batch"] == (16, 3, 32, 32)
    epoch = read_epochs(tmp_path / "run")[-1]
    assert 0 < epoch["w_logit_mean/0"] < 1 and epoch["w_logit_mean/0"] + epoch[
        "w_logit_mean/1"
    ] == pytest.approx(1)
