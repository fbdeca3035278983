"""Logit losses by name: `kl` (the default) and `dkd` against formulas written out here."""

import pytest
import torch

from mtkdrl.errors import MtkdrlError
from mtkdrl.logit_losses import (
    LOGIT_LOSSES,
    DecoupledKDLoss,
    DKDOptions,
    KLLoss,
    build_logit_loss,
)
from mtkdrl.losses import kl_per_sample
from mtkdrl.recipe import Recipe, apply_override

B, C = 6, 7


def logits(seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed student and teacher logits (B×C) and labels, the teacher sharper than the student."""
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, C, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(B, C, generator=g, dtype=torch.float64) * 4
    labels = torch.randint(0, C, (B,), generator=g)
    return student.to(dtype), teacher.to(dtype), labels


def reference_dkd(student, teacher, labels, temperatures, alpha, beta, factor) -> torch.Tensor:
    """§4.3 per sample, in float64: b = [p_y, 1 − p_y] and p̂ = softmax over the other classes
    (the label's column removed), TCKD and NCKD each T²·Σ p_t·log(p_t / p_s)."""
    out = []
    for i in range(student.shape[0]):
        t = float(temperatures[i])
        y = int(labels[i])
        p_s = torch.softmax(student[i].double() / t, dim=0)
        p_t = torch.softmax(teacher[i].double() / t, dim=0)
        b_s = torch.stack([p_s[y], 1 - p_s[y]])
        b_t = torch.stack([p_t[y], 1 - p_t[y]])
        tckd = (b_t * torch.log(b_t / b_s)).sum()
        others = [c for c in range(student.shape[1]) if c != y]
        q_s = torch.softmax(student[i, others].double() / t, dim=0)
        q_t = torch.softmax(teacher[i, others].double() / t, dim=0)
        nckd = (q_t * torch.log(q_t / q_s)).sum()
        out.append(t**2 * factor * (alpha * tckd + beta * nckd))
    return torch.stack(out)


def dkd(**options) -> DecoupledKDLoss:
    return DecoupledKDLoss(DKDOptions(**options))


@pytest.mark.parametrize(("epoch", "factor"), [(0, 0.0), (10, 0.5), (20, 1.0), (30, 1.0)])
def test_dkd_is_the_formula_with_its_warmup(epoch, factor):
    student, teacher, labels = logits(0)
    loss = dkd()(student, teacher, labels, 4.0, epoch)
    expected = reference_dkd(student, teacher, labels, [4.0] * B, 1.0, 8.0, factor)
    assert loss.shape == (B,)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    if factor:
        assert (loss > 0).all()


def test_dkd_weights_tckd_by_alpha_and_nckd_by_beta():
    """α ≠ β, so swapping the two parts fails; in fp32 as training runs it."""
    student, teacher, labels = logits(1)
    loss = dkd(alpha=0.5, beta=2.0, warmup_epochs=0)(student, teacher, labels, 2.0, 0)
    torch.testing.assert_close(
        loss, reference_dkd(student, teacher, labels, [2.0] * B, 0.5, 2.0, 1.0), atol=1e-6, rtol=0
    )
    s32, t32 = student.float(), teacher.float()
    loss32 = dkd(alpha=0.5, beta=2.0, warmup_epochs=0)(s32, t32, labels, 2.0, 0)
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), loss, rtol=1e-5, atol=1e-6)
    only_tckd = dkd(alpha=1.0, beta=0.0, warmup_epochs=0)(student, teacher, labels, 2.0, 0)
    only_nckd = dkd(alpha=0.0, beta=1.0, warmup_epochs=0)(student, teacher, labels, 2.0, 0)
    torch.testing.assert_close(0.5 * only_tckd + 2.0 * only_nckd, loss)
    assert not torch.allclose(only_tckd, only_nckd)


@pytest.mark.parametrize("shape", [(B,), (B, 1)])
def test_per_sample_temperatures_scale_each_sample_by_its_own_t_squared(shape):
    student, teacher, labels = logits(2)
    temperatures = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0, 0.5], dtype=torch.float64)
    loss = dkd()(student, teacher, labels, temperatures.reshape(shape), 10)
    assert loss.shape == (B,)  # never B×B
    expected = reference_dkd(student, teacher, labels, temperatures, 1.0, 8.0, 0.5)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-6)
    for i, t in enumerate(temperatures.tolist()):  # each row is that row's scalar-T loss
        alone = dkd()(student[i : i + 1], teacher[i : i + 1], labels[i : i + 1], t, 10)
        torch.testing.assert_close(loss[i : i + 1], alone, rtol=1e-12, atol=1e-12)


def test_the_label_adds_exactly_nothing_to_nckd():
    """With α = 0 only NCKD is left: moving both networks' label logits changes nothing at all."""
    student, teacher, labels = logits(3)
    nckd = dkd(alpha=0.0, beta=1.0, warmup_epochs=0)
    before = nckd(student, teacher, labels, 4.0, 0)
    rows = torch.arange(B)
    moved_s, moved_t = student.clone(), teacher.clone()
    moved_s[rows, labels] += 50.0
    moved_t[rows, labels] -= 30.0
    assert torch.equal(nckd(moved_s, moved_t, labels, 4.0, 0), before)
    assert (before > 0).all()
    full = dkd(warmup_epochs=0)
    assert not torch.allclose(
        full(moved_s, moved_t, labels, 4.0, 0), full(student, teacher, labels, 4.0, 0)
    )


def test_saturated_and_half_precision_logits_stay_finite():
    """One-hot teachers (logits ±1000) and a saturated bf16 student: a finite loss in fp32 and
    finite gradients, where taking log of the binary probabilities would give −∞."""
    labels = torch.tensor([0, 3, 5, 6])
    teacher = 1000.0 * torch.nn.functional.one_hot(labels, C).float()
    teacher[1] = -1000.0 * torch.nn.functional.one_hot(labels[1], C).float()  # sure it is not y
    student = (teacher * 0.9).to(torch.bfloat16).requires_grad_()
    loss = dkd(warmup_epochs=0)(student, teacher.to(torch.bfloat16), labels, 1.0, 0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(student.grad.float()).all()


def test_kl_is_kl_per_sample_and_ignores_labels_and_epoch():
    student, teacher, labels = logits(4, torch.float32)
    kl = build_logit_loss("kl")
    assert isinstance(kl, KLLoss)
    for temperature in (4.0, torch.linspace(1.0, 5.0, B).reshape(B, 1)):
        expected = kl_per_sample(student, teacher, temperature)
        assert torch.equal(kl(student, teacher, labels, temperature, 0), expected)
        assert torch.equal(kl(student, teacher, labels.roll(1), temperature, 30), expected)
    p_t = torch.softmax(teacher / 4.0, dim=1)  # and written out
    written = 16.0 * (p_t * (torch.log(p_t) - torch.log_softmax(student / 4.0, dim=1))).sum(1)
    torch.testing.assert_close(kl(student, teacher, labels, 4.0, 0), written)


def test_specs_by_name_or_mapping():
    assert {"kl", "dkd"} <= set(LOGIT_LOSSES)
    assert all(cls.description and "\n" not in cls.description for cls in LOGIT_LOSSES.values())
    assert build_logit_loss("dkd").options == DKDOptions(1.0, 8.0, 20)
    built = build_logit_loss({"name": "dkd", "beta": 2, "warmup_epochs": 1})
    assert isinstance(built, DecoupledKDLoss)
    assert built.options == DKDOptions(alpha=1.0, beta=2.0, warmup_epochs=1)
    assert isinstance(built.options.beta, float)
    assert build_logit_loss(built) is built
    assert type(build_logit_loss({"name": "kl"})) is KLLoss
    assert dkd(warmup_epochs=0).warmup_factor(0) == 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kld", r"^method\.logit_loss: unknown logit loss 'kld'; available: dkd, kl$"),
        ({"name": 3}, r"^method\.logit_loss\.name: unknown logit loss 3; available: dkd, kl$"),
        ({"beta": 2}, r"^method\.logit_loss: a mapping needs `name` \(one of dkd, kl\)"),
        (
            {"name": "dkd", "gamma": 1},
            r"^method\.logit_loss\.gamma: unknown setting of logit loss 'dkd' "
            r"\(valid keys: name, alpha, beta, warmup_epochs\)$",
        ),
        ({"name": "kl", "beta": 2}, r"^method\.logit_loss\.beta: .*'kl' \(valid keys: name\)$"),
        ({"name": "dkd", "beta": "big"}, r"'method\.logit_loss\.beta' must be of type float"),
        ({"name": "dkd", "warmup_epochs": 2.5}, r"'method\.logit_loss\.warmup_epochs' .* int"),
        ({"name": "dkd", "alpha": -1}, r"^method\.logit_loss\.alpha: expected a non-negative"),
        ({"name": "dkd", "beta": float("nan")}, r"'method\.logit_loss\.beta' must be a finite"),
        ({"name": "dkd", "warmup_epochs": -1}, r"^method\.logit_loss\.warmup_epochs: expected"),
        (5, r"^method\.logit_loss: expected a logit loss name \(dkd, kl\) or a mapping"),
        (["dkd"], r"^method\.logit_loss: expected a logit loss name"),
    ],
)
def test_bad_specs_give_one_line_naming_the_key(spec, message):
    with pytest.raises(MtkdrlError, match=message) as caught:
        build_logit_loss(spec)
    assert "\n" not in str(caught.value)


def test_recipe_key_takes_a_name_or_a_mapping():
    assert Recipe.from_dict({}).method.logit_loss == "kl"
    raw = {"method": {"name": "avg", "logit_loss": {"name": "dkd", "beta": 2}}}
    assert Recipe.from_dict(raw).method.logit_loss == {"name": "dkd", "beta": 2}
    raw = {}
    apply_override(raw, "method.logit_loss=dkd")
    assert Recipe.from_dict(raw).method.logit_loss == "dkd"
    apply_override(raw, "method.logit_loss={name: dkd, warmup_epochs: 1}")
    assert Recipe.from_dict(raw).method.logit_loss == {"name": "dkd", "warmup_epochs": 1}
    with pytest.raises(MtkdrlError, match=r"'method\.logit_loss' must be of type str"):
        Recipe.from_dict({"method": {"logit_loss": 5}})
