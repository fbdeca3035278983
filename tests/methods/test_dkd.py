"""`dkd`: DKD against every teacher, 1/K each; and `method.logit_loss: dkd` with another method."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.logit_losses import LOGIT_LOSSES, KLLoss
from mtkdrl.methods import METHODS, DistillBatch
from mtkdrl.outputs import read_records
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig, Recipe

from .helpers import build, terms_of, weights_of

T, ALPHA, C = 4.0, 0.7, 10


def method_loss(name: str = "dkd", k: int = 2, logit_loss="kl", feature=None, **options):
    config = MethodConfig(
        name=name,
        temperature=T,
        alpha=ALPHA,
        beta=5.0,
        options=options,
        logit_loss=logit_loss,
        feature=feature,
    )
    return build(config, k, num_classes=C)


def outputs(logits: torch.Tensor) -> ModelOutputs:
    b = logits.shape[0]
    return ModelOutputs(logits, torch.zeros(b, 8), torch.zeros(b, 8, 2, 2))


def batch(b: int, k: int, seed: int = 0, features: bool = False) -> DistillBatch:
    """Random outputs; with `features`, adapted student maps, as a run with a feature term has."""
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(b, C, generator=g) * 2).requires_grad_()
    teachers = [torch.randn(b, C, generator=g) * (3 + i) for i in range(k)]
    labels = torch.randint(0, C, (b,), generator=g)
    adapted = [torch.randn(b, 8, 2, 2, generator=g) for _ in range(k)] if features else []
    return DistillBatch(labels, outputs(student), [outputs(t) for t in teachers], adapted)


def spec_dkd(student, teacher, labels, alpha: float, beta: float) -> torch.Tensor:
    """T²·(α·KL(b_t ‖ b_s) + β·KL(p̂_t ‖ p̂_s)) per sample in float64, b = [p_y, 1 − p_y], p̂ the
    softmax over the classes ≠ y (renormalised probabilities of the full softmax)."""
    p_s = torch.softmax(student.detach().double() / T, dim=1)
    p_t = torch.softmax(teacher.double() / T, dim=1)
    y = F.one_hot(labels, C).bool()
    gt_s, gt_t = p_s[y], p_t[y]
    tckd = gt_t * torch.log(gt_t / gt_s) + (1 - gt_t) * torch.log((1 - gt_t) / (1 - gt_s))
    q_s = p_s[~y].reshape(-1, C - 1) / (1 - gt_s).unsqueeze(1)
    q_t = p_t[~y].reshape(-1, C - 1) / (1 - gt_t).unsqueeze(1)
    nckd = (q_t * torch.log(q_t / q_s)).sum(dim=1)
    return T**2 * (alpha * tckd + beta * nckd)


def spec_kl(student, teacher) -> torch.Tensor:
    p_t = torch.softmax(teacher / T, dim=1)
    return T**2 * (p_t * (torch.log(p_t) - torch.log_softmax(student / T, dim=1))).sum(dim=1)


def test_loss_is_ce_plus_the_dkd_formula_averaged_over_two_teachers():
    loss = method_loss(beta=2, warmup_epochs=20)
    assert "dkd" in METHODS and loss.objective.feature_stage is None
    assert "\n" not in loss.method.description
    assert loss.method.citation.startswith("@inproceedings{zhao2022decoupled")
    data = batch(5, 2)
    terms = terms_of(loss, data, 10)  # half way through the warm-up
    assert set(terms) == {"ce", "kd"}
    s = data.student.logits
    parts = [spec_dkd(s, t.logits, data.labels, 1.0, 2.0) for t in data.teachers]
    expected_kd = ALPHA * 0.5 * 0.5 * (parts[0] + parts[1])
    torch.testing.assert_close(terms["kd"].double(), expected_kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(s, data.labels, reduction="none"))
    w = weights_of(loss, data, 10)
    torch.testing.assert_close(w.logit, torch.full((5, 2), 0.5))
    assert w.feature is None
    # epoch 0: no distillation yet
    assert torch.equal(terms_of(loss, data, 0)["kd"], torch.zeros(5))
    sum(terms_of(loss, data, 25).values()).mean().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_one_teacher_gets_weight_one():
    loss = method_loss(k=1, warmup_epochs=0)
    data = batch(4, 1, seed=1)
    expected = ALPHA * spec_dkd(data.student.logits, data.teachers[0].logits, data.labels, 1, 8)
    kd = terms_of(loss, data, 0)["kd"]
    torch.testing.assert_close(kd.double(), expected, rtol=1e-5, atol=1e-6)


def test_logit_loss_dkd_turns_avgs_kd_term_into_dkds():
    data = batch(6, 2, seed=2, features=True)
    logits_only = DistillBatch(data.labels, data.student, data.teachers, [])
    s, teachers = data.student.logits, [t.logits for t in data.teachers]
    plain = method_loss("avg", feature="none")
    assert isinstance(plain.objective.logit_loss, KLLoss)
    expected_kl = ALPHA * 0.5 * sum(spec_kl(s, t) for t in teachers)
    torch.testing.assert_close(terms_of(plain, logits_only, 3)["kd"], expected_kl)
    spec = {"name": "dkd", "beta": 2, "warmup_epochs": 0}
    with_dkd = method_loss("avg", logit_loss=spec, feature="none")
    terms = terms_of(with_dkd, logits_only, 3)
    expected = ALPHA * 0.5 * sum(spec_dkd(s, t, data.labels, 1.0, 2.0) for t in teachers)
    torch.testing.assert_close(terms["kd"].double(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(terms["kd"], terms_of(plain, logits_only, 3)["kd"])
    # the features stay as they were: only ℓ changed
    with_features = terms_of(method_loss("avg", logit_loss="dkd"), data, 30)
    torch.testing.assert_close(
        with_features["feature"], terms_of(method_loss("avg"), data, 30)["feature"]
    )
    # the recipe key reaches the objective through the same `build_objective` the run calls
    recipe = Recipe.from_dict({"method": {"name": "ebkd", "logit_loss": "dkd"}})
    loss = build(recipe.method, 2)
    assert loss.objective.logit_loss.name == "dkd"
    assert loss.objective.logit_loss.options.beta == 8.0


def test_dkd_takes_its_settings_from_options_and_refuses_other_logit_losses(monkeypatch):
    data = batch(4, 2, seed=3)
    by_options = terms_of(method_loss(beta=2, warmup_epochs=0), data, 0)["kd"]
    named = method_loss(logit_loss="dkd", beta=2, warmup_epochs=0)
    assert torch.equal(terms_of(named, data, 0)["kd"], by_options)
    same = {"name": "dkd", "beta": 2, "warmup_epochs": 0}
    with_same = method_loss(logit_loss=same, beta=2, warmup_epochs=0)
    assert torch.equal(terms_of(with_same, data, 0)["kd"], by_options)
    with pytest.raises(MtkdrlError, match=r"^method\.logit_loss: method 'dkd' takes DKD's set"):
        method_loss(logit_loss={"name": "dkd", "beta": 2})
    monkeypatch.setitem(LOGIT_LOSSES, "probe", type("Probe", (KLLoss,), {"name": "probe"}))
    with pytest.raises(
        MtkdrlError, match=r"^method\.logit_loss: method 'dkd' always uses the DKD .* 'probe';"
    ):
        method_loss(logit_loss="probe")
    assert method_loss("avg", logit_loss="probe").objective.logit_loss.name == "probe"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": -2}, r"^method\.options\.beta: expected a non-negative number"),
        ({"warmup_epochs": -1}, r"^method\.options\.warmup_epochs: expected"),
        ({"alpha": "x"}, r"'method\.options\.alpha' must be of type float"),
        (
            {"temperature": 2},
            r"^method\.options\.temperature: unknown .*\(valid keys: alpha, beta, warmup_epochs\)",
        ),
    ],
)
def test_bad_options_give_one_line(options, message):
    with pytest.raises(MtkdrlError, match=message):
        method_loss(**options)


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    losses = cnn_and_vit_dry_run("dkd", {"warmup_epochs": 0})
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """Without a warm-up the pretrained teachers' DKD term is in every logged step; stopped after
    4 of 6 steps and resumed, the run ends with the same student, bit for bit."""
    summary, folder = run_and_resumed("dkd", {"warmup_epochs": 0, "beta": 2})
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100
    steps = [r for r in read_records(folder) if "kd" in r]
    assert steps and all(r["kd"] > 0 and "feature" not in r for r in steps)
