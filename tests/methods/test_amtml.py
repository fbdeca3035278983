"""`amtml`: per-sample weights μ = softmax_k((e ⊙ θ_k)·W) from the student's pooled feature, one
integrated soft target, normalised hints; θ and W learn on the student's loss."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import DistillBatch, MethodContext, StudentAccess, create_method
from mtkdrl.methods.amtml import InstanceWeights
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

B, C, D, K = 5, 4, 6, 3


def amtml(width: int = D, **options):
    ctx = MethodContext(
        [f"t{k}" for k in range(K)], C, [8] * K, 2.0, 0.5, 3.0, [None] * K, student_width=width
    )
    return create_method(MethodConfig(name="amtml", options=options), ctx)


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
    method, data = amtml(), batch()
    terms = method(data, 0)
    theta, w = method.weight_net.theta.detach(), method.weight_net.w.detach()
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
    torch.testing.assert_close(method.last_weights.logit, mu, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["kd"], kd, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["feature"], 3.0 * sum(hints) / K, atol=1e-6, rtol=0)
    assert all(0 <= h.max() <= 4 for h in hints)


def test_the_weights_learn_from_the_students_loss():
    method, data = amtml(weight_lr=0.1), batch()
    before = method.weight_net.theta.detach().clone()
    sum(method(data, 0).values()).mean().backward()
    assert method.weight_net.theta.grad.abs().sum() > 0
    access = StudentAccess({}, 0.1, (None, None, None), None, None, None, None)
    method.before_step(access)
    assert not torch.equal(before, method.weight_net.theta)
    assert method.weight_net.theta.grad is None  # cleared for the next step


def test_without_hints_there_is_no_feature_term():
    method, data = amtml(hints=False), batch()
    data.adapted = []
    assert not method.uses_features and set(method(data, 0)) == {"ce", "kd"}


def test_bad_options_and_an_unknown_width_are_one_line():
    with pytest.raises(MtkdrlError, match=r"^method\.options\.weight_lr: must be >= 0"):
        amtml(weight_lr=-1)
    with pytest.raises(MtkdrlError, match=r"^student: method 'amtml' needs the width"):
        amtml(width=0)
    ctx = MethodContext(["a", "b"], C, [8, 8], 4.0, 1.0, 1.0, [None] * 2, student_width=D)
    with pytest.raises(MtkdrlError, match=r"^method\.logit_loss: 'amtml' .* not 'dkd'"):
        create_method(MethodConfig(name="amtml", logit_loss="dkd"), ctx)


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
    assert {"weight_net.theta", "weight_net.w"} <= methods[0].keys()
    start = InstanceWeights(2, 64).theta  # the run's θ moved from its seeded start
    assert not torch.allclose(methods[0]["weight_net.theta"], start)
