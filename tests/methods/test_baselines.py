"""The `none`, `kd` and `avg` strategies and the registry."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import METHODS, DistillBatch
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .helpers import build, terms_of, weights_of

T, ALPHA, BETA = 4.0, 0.7, 5.0


def config(name: str, **keys) -> MethodConfig:
    return MethodConfig(name=name, temperature=T, alpha=ALPHA, beta=BETA, **keys)


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


def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """T²·KL(p_t ‖ p_s) per sample, written out."""
    p_t = torch.softmax(teacher / T, 1)
    return (p_t * (torch.log(p_t) - torch.log_softmax(student / T, 1))).sum(1) * T**2


def mse(adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((adapted - target) ** 2).mean(dim=(1, 2, 3))


def test_registry_lists_baselines():
    assert {"none", "kd", "avg"} <= set(METHODS)


def test_avg_is_equal_weights_with_features_by_default():
    loss = build(config("avg"), 4)
    data = batch(3, 4)
    w = weights_of(loss, data)
    torch.testing.assert_close(w.logit, torch.full((3, 4), 0.25))
    torch.testing.assert_close(w.feature, torch.full((3, 4), 0.25))
    assert loss.objective.feature_stage is not None
    terms = terms_of(loss, data, 0)
    assert set(terms) == {"ce", "kd", "feature"}
    s = data.student.logits
    torch.testing.assert_close(terms["ce"], F.cross_entropy(s, data.labels, reduction="none"))
    kd = sum(kl(s, t.logits) for t in data.teachers) / 4
    torch.testing.assert_close(terms["kd"], ALPHA * kd)
    feature = sum(mse(a, t.features) for a, t in zip(data.adapted, data.teachers, strict=True))
    torch.testing.assert_close(terms["feature"], BETA * feature / 4)


def test_avg_logits_only_feature_term():
    """`method.feature: none` (the removed `features: false`): no maps, no feature term, the same
    CE and KD as with the default term; avg's feature weights, the same 1/K whatever the
    objective, have no term to weight."""
    loss = build(config("avg", feature="none"), 2)
    assert loss.objective.feature_stage is None
    data = batch(2, 2, features=False)
    torch.testing.assert_close(weights_of(loss, data).logit, torch.full((2, 2), 0.5))
    terms = terms_of(loss, data, 0)
    assert set(terms) == {"ce", "kd"}
    s = data.student.logits
    torch.testing.assert_close(terms["ce"], F.cross_entropy(s, data.labels, reduction="none"))
    kd = sum(kl(s, t.logits) for t in data.teachers) / 2
    torch.testing.assert_close(terms["kd"], ALPHA * kd)


def test_kd_needs_exactly_one_teacher():
    loss = build(config("kd"), 1)
    data = batch(2, 1, features=False)
    torch.testing.assert_close(weights_of(loss, data).logit, torch.ones(2, 1))
    assert loss.objective.feature_stage is None
    terms = terms_of(loss, data, 0)
    assert set(terms) == {"ce", "kd"}
    torch.testing.assert_close(
        terms["kd"], ALPHA * kl(data.student.logits, data.teachers[0].logits)
    )
    with pytest.raises(MtkdrlError, match=r"teachers: method 'kd'.*lists 3"):
        build(config("kd"), 3)


def test_none_uses_no_teacher():
    loss = build(config("none"), 0)
    assert not loss.method.uses_teachers
    data = batch(2, 0, features=False)
    terms = terms_of(loss, data, 0)
    assert set(terms) == {"ce"}
    expected = F.cross_entropy(data.student.logits, data.labels, reduction="none")
    torch.testing.assert_close(terms["ce"], expected)


def test_unknown_method_option_and_feature_term():
    with pytest.raises(MtkdrlError, match=r"unknown method 'avr'.*avg"):
        build(config("avr"), 2)
    with pytest.raises(
        MtkdrlError, match=r"^method\.options\.feature: unknown setting of method 'avg' \(valid"
    ):
        build(config("avg", options={"feature": False}), 2)
    with pytest.raises(MtkdrlError, match=r"method\.feature: unknown feature term 'hints'.*map"):
        build(config("avg", feature="hints"), 2)
