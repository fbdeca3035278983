"""The shared objective: per-teacher terms at T, and their weighted sum by name."""

import torch
import torch.nn.functional as F

from mtkdrl.batch import DistillBatch, TeacherWeights
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .methods.helpers import build

B, C, K = 5, 6, 3


def batch(seed: int = 0) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)

    def outputs() -> ModelOutputs:
        return ModelOutputs(
            torch.randn(B, C, generator=g), torch.randn(B, 4, generator=g), torch.randn(B, 4, 2, 2)
        )

    adapted = [torch.randn(B, 4, 2, 2, generator=g) for _ in range(K)]
    labels = torch.randint(0, C, (B,), generator=g)
    return DistillBatch(labels, outputs(), [outputs() for _ in range(K)], adapted)


def objective(**config):
    return build(MethodConfig(name="avg", **config), K, num_classes=C, dims=4).objective


def test_terms_are_ce_the_logit_loss_per_teacher_and_the_feature_distance_per_teacher():
    data = batch()
    terms = objective(feature="map").terms(data, 0, 2.0)
    s = data.student.logits
    torch.testing.assert_close(terms.ce, F.cross_entropy(s, data.labels, reduction="none"))
    for k, teacher in enumerate(data.teachers):
        p_t = F.softmax(teacher.logits / 2, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / 2, 1))).sum(1) * 4
        torch.testing.assert_close(terms.logit[:, k], kl)
        mse = ((data.adapted[k] - teacher.features) ** 2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(terms.feature[:, k], mse)


def test_combine_weights_each_term_and_gives_equal_feature_weights_where_a_method_gives_none():
    data = batch(1)
    loss = objective(alpha=0.5, beta=3.0, feature="map")
    terms = loss.terms(data, 0, 4.0)
    w = torch.rand(B, K, generator=torch.Generator().manual_seed(2))
    named = loss.combine(terms, TeacherWeights(logit=w))
    torch.testing.assert_close(named["kd"], 0.5 * (w * terms.logit).sum(1))
    torch.testing.assert_close(named["feature"], 3.0 * terms.feature.mean(1))
    v = torch.rand(B, K)
    weighted = loss.combine(terms, TeacherWeights(logit=w, feature=v))
    torch.testing.assert_close(weighted["feature"], 3.0 * (v * terms.feature).sum(1))


def test_without_a_feature_term_there_is_no_feature_term():
    data = batch(2)
    loss = objective(feature="none")
    terms = loss.terms(data, 0, 4.0)
    assert terms.feature is None
    named = loss.combine(terms, TeacherWeights(logit=torch.ones(B, K)))
    assert set(named) == {"ce", "kd"}
