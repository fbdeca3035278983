"""The `none`, `kd` and `avg` strategies and the registry."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import METHODS, DistillBatch, MethodContext, create_method
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

T, ALPHA, BETA = 4.0, 0.7, 5.0


def context(k: int) -> MethodContext:
    return MethodContext([f"t{i}" for i in range(k)], 10, [8] * k, T, ALPHA, BETA, [None] * k)


def batch(b: int, k: int, features: bool = True, seed: int = 0) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)

    def outputs() -> ModelOutputs:
        return ModelOutputs(
            torch.randn(b, 10, generator=g) * 2,
            torch.randn(b, 8, generator=g),
            torch.randn(b, 8, 2, 2, generator=g),
        )

    adapted = [torch.randn(b, 8, 2, 2, generator=g) for _ in range(k)] if features else []
    labels = torch.randint(0, 10, (b,), generator=g)
    return DistillBatch(labels, outputs(), [outputs() for _ in range(k)], adapted)


def weights(method, distill_batch: DistillBatch, epoch: int = 0):
    return method.teacher_weights(distill_batch, method.teacher_terms(distill_batch, epoch), epoch)


def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """T²·KL(p_t ‖ p_s) per sample, written out."""
    p_t = torch.softmax(teacher / T, 1)
    return (p_t * (torch.log(p_t) - torch.log_softmax(student / T, 1))).sum(1) * T**2


def mse(adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((adapted - target) ** 2).mean(dim=(1, 2, 3))


def test_registry_lists_baselines():
    assert {"none", "kd", "avg"} <= set(METHODS)


def test_avg_is_equal_weights_with_features_by_default():
    method = create_method(MethodConfig(name="avg"), context(4))
    data = batch(3, 4)
    w = weights(method, data)
    torch.testing.assert_close(w.logit, torch.full((3, 4), 0.25))
    torch.testing.assert_close(w.feature, torch.full((3, 4), 0.25))
    assert method.uses_features
    terms = method(data, 0)
    assert set(terms) == {"ce", "kd", "feature"}
    s = data.student.logits
    torch.testing.assert_close(terms["ce"], F.cross_entropy(s, data.labels, reduction="none"))
    kd = sum(kl(s, t.logits) for t in data.teachers) / 4
    torch.testing.assert_close(terms["kd"], ALPHA * kd)
    feature = sum(mse(a, t.features) for a, t in zip(data.adapted, data.teachers, strict=True))
    torch.testing.assert_close(terms["feature"], BETA * feature / 4)


def test_avg_logits_only_option():
    method = create_method(MethodConfig(name="avg", options={"features": False}), context(2))
    assert not method.uses_features
    data = batch(2, 2, features=False)
    assert weights(method, data).feature is None
    assert set(method(data, 0)) == {"ce", "kd"}


def test_kd_needs_exactly_one_teacher():
    method = create_method(MethodConfig(name="kd"), context(1))
    data = batch(2, 1, features=False)
    torch.testing.assert_close(weights(method, data).logit, torch.ones(2, 1))
    assert not method.uses_features
    terms = method(data, 0)
    assert set(terms) == {"ce", "kd"}
    torch.testing.assert_close(
        terms["kd"], ALPHA * kl(data.student.logits, data.teachers[0].logits)
    )
    with pytest.raises(MtkdrlError, match=r"teachers: method 'kd'.*lists 3"):
        create_method(MethodConfig(name="kd"), context(3))


def test_none_uses_no_teacher():
    method = create_method(MethodConfig(name="none"), context(0))
    assert not method.uses_teachers
    data = batch(2, 0, features=False)
    terms = method(data, 0)
    assert set(terms) == {"ce"}
    expected = F.cross_entropy(data.student.logits, data.labels, reduction="none")
    torch.testing.assert_close(terms["ce"], expected)


def test_unknown_method_and_option():
    with pytest.raises(MtkdrlError, match=r"unknown method 'avr'.*avg"):
        create_method(MethodConfig(name="avr"), context(2))
    with pytest.raises(MtkdrlError, match=r"method\.options\.feature.*did you mean features"):
        create_method(MethodConfig(name="avg", options={"feature": True}), context(2))
