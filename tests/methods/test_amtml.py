"""`amtml`: per-sample weights μ = softmax_k((e ⊙ θ_k)·W) from the student's pooled feature, one
integrated soft target, normalised hints; θ and W learn on the student's loss."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import DistillBatch, StudentAccess
from mtkdrl.methods.amtml import InstanceWeights
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .helpers import build, terms_of

B, C, D, K = 5, 4, 6, 3


def amtml(width: int = D, feature=None, **options):
    config = MethodConfig(
        name="amtml", temperature=2.0, alpha=0.5, beta=3.0, options=options, feature=feature
    )
    return build(config, K, num_classes=C, feature_channels=[7] * K, student_width=width)


def batch(seed: int = 0) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)
    student = ModelOutputs(
        torch.randn(B, C, generator=g, requires_grad=True), torch.randn(B, D, generator=g)
    )
    teachers = [
        ModelOutputs(torch.randn(B, C, generator=g) * 2, torch.randn(B, 8), torch.randn(B, 7, 2, 2))
        for _ in range(K)
    ]
    adapted = [torch.randn(B, 7, 2, 2, generator=g, requires_grad=True) for _ in range(K)]
    return DistillBatch(torch.randint(0, C, (B,), generator=g), student, teachers, adapted)


def test_terms_match_the_formulas():
    loss, data = amtml(), batch()
    assert loss.method.replaces_loss
    terms = terms_of(loss, data, 0)
    _, weights = loss.method(data, 0)  # the whole-loss method gives the weights it applied
    theta, w = loss.method.weight_net.theta.detach(), loss.method.weight_net.w.detach()
    e = data.student.embedding
    scores = torch.stack([(e * theta[k]) @ w for k in range(K)], dim=1)
    mu = torch.exp(scores) / torch.exp(scores).sum(1, keepdim=True)
    target = sum(mu[:, k : k + 1] * F.softmax(data.teachers[k].logits / 2, 1) for k in range(K))
    log_s = F.log_softmax(data.student.logits / 2, 1)
    kd = 0.5 * 4 * (target * (target.log() - log_s)).sum(1)
    hints = [
        ((a.flatten(1) / a.flatten(1).norm(dim=1, keepdim=True))
         - (t.features.flatten(1) / t.features.flatten(1).norm(dim=1, keepdim=True)))
        .pow(2).sum(1)
        for a, t in zip(data.adapted, data.teachers, strict=True)
    ]  # fmt: skip
    torch.testing.assert_close(weights.logit, mu, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["kd"], kd, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["feature"], 3.0 * sum(hints) / K, atol=1e-6, rtol=0)
    assert all(0 <= h.max() <= 4 for h in hints)


def test_the_weights_learn_from_the_students_loss():
    loss, data = amtml(weight_lr=0.1), batch()
    weight_net = loss.method.weight_net
    before = weight_net.theta.detach().clone()
    sum(terms_of(loss, data, 0).values()).mean().backward()
    assert weight_net.theta.grad.abs().sum() > 0
    access = StudentAccess({}, 0.1, (None, None, None), None, None, None, None)
    loss.before_step(access)
    assert not torch.equal(before, weight_net.theta)
    assert weight_net.theta.grad is None  # cleared for the next step


def test_without_hints_there_is_no_feature_term():
    loss, data = amtml(feature="none"), batch()
    data.adapted = []
    assert loss.objective.feature_stage is None and set(terms_of(loss, data, 0)) == {"ce", "kd"}


def test_bad_options_and_an_unknown_width_are_one_line():
    with pytest.raises(MtkdrlError, match=r"^method\.options\.weight_lr: must be >= 0"):
        amtml(weight_lr=-1)
    with pytest.raises(MtkdrlError, match=r"^student: method 'amtml' needs the width"):
        amtml(width=0)
    with pytest.raises(MtkdrlError, match=r"^method\.logit_loss: method 'amtml' .* not 'dkd'"):
        build(MethodConfig(name="amtml", logit_loss="dkd"), 2, student_width=D)


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    assert all(torch.isfinite(torch.tensor(cnn_and_vit_dry_run("amtml"))))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """A short run on the shared data: interrupted and resumed, it ends with the same student, the
    same θ and W and the same Adam state; the tracked μ rows sum to 1."""
    summary, folder = run_and_resumed("amtml")
    assert summary["global_steps"] == 6
    epoch = read_epochs(folder)[-1]
    assert sum(epoch[f"w_logit_mean/{k}"] for k in range(2)) == pytest.approx(1.0, abs=1e-5)


def test_two_processes_keep_identical_weights(tiny_run, tmp_path, two_processes):
    recipe = tiny_run(tmp_path / "run", "amtml", epochs=1, eval_teachers=False)
    recipe["data"]["batch_size"] = 8
    methods, _ = two_processes(recipe)
    assert {"method.weight_net.theta", "method.weight_net.w"} <= methods[0].keys()
    start = InstanceWeights(2, 64).theta  # the run's θ moved from its seeded start
    assert not torch.allclose(methods[0]["method.weight_net.theta"], start)
