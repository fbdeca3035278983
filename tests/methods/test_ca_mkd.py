"""`ca_mkd`: confidence weights (1 − softmax_k(CE_k)) / (K − 1), over K, for logits and, through
each teacher's classifier head on the adapted student map, for features."""

import pytest
import torch
from torch import nn

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import DistillBatch
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .helpers import build, terms_of, weights_of

B, C, D, K = 6, 5, 4, 3


def heads(seed: int = 0) -> list[nn.Module]:
    torch.manual_seed(seed)
    return [nn.Linear(D, C) for _ in range(K)]


def ca_mkd(teacher_heads, dims: int = D, feature_channels: list[int] | None = None, **keys):
    config = MethodConfig(name="ca_mkd", temperature=4.0, alpha=1.0, beta=50.0, **keys)
    k = len(teacher_heads)
    return build(
        config, k, num_classes=C, dims=dims, heads=teacher_heads, feature_channels=feature_channels
    )


def batch(seed: int = 0) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C, (B,), generator=g)
    teachers = [
        ModelOutputs(
            torch.randn(B, C, generator=g) * 3,
            torch.rand(B, D, generator=g),
            torch.rand(B, D, 2, 2, generator=g),
        )
        for _ in range(K)
    ]
    student = ModelOutputs(torch.randn(B, C, generator=g), torch.rand(B, D))
    adapted = [torch.rand(B, D, 2, 2, generator=g) for _ in range(K)]
    return DistillBatch(labels, student, teachers, adapted)


def spec_confidence(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(1 − softmax_k(CE_k)) / (K − 1), CE_k = −log softmax(z_k)[y], written out per sample."""
    ce = torch.stack([-torch.log_softmax(z, 1)[torch.arange(B), labels] for z in logits], 1)
    return (1 - torch.exp(ce) / torch.exp(ce).sum(1, keepdim=True)) / (K - 1)


def test_logit_and_feature_weights_match_the_formulas():
    teacher_heads, data = heads(), batch()
    weights = weights_of(ca_mkd(teacher_heads), data)
    expected_logit = spec_confidence([t.logits for t in data.teachers], data.labels) / K
    head_logits = [h(a.mean(dim=(2, 3))) for h, a in zip(teacher_heads, data.adapted, strict=True)]
    expected_feature = spec_confidence(head_logits, data.labels) / K
    torch.testing.assert_close(weights.logit, expected_logit, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.feature, expected_feature.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(weights.logit.sum(1), torch.full((B,), 1 / K), atol=1e-6, rtol=0)
    assert not torch.allclose(weights.logit, weights.feature)


def test_the_confident_and_right_teacher_gets_more():
    data = batch()
    right = torch.nn.functional.one_hot(data.labels, C).float() * 8
    data.teachers[0] = ModelOutputs(right, data.teachers[0].embedding, data.teachers[0].features)
    data.adapted = []  # no feature term: no adapted maps
    logit = weights_of(ca_mkd(heads(), feature="none"), data).logit
    assert (logit[:, 0] > logit[:, 1:].max(dim=1).values).all()


def test_logit_only_needs_no_heads_and_no_features():
    loss = ca_mkd([None] * K, feature="none")
    data = batch()
    data.adapted = []
    weights = weights_of(loss, data)
    assert loss.objective.feature_stage is None and weights.feature is None
    assert set(terms_of(loss, data, 0)) == {"ce", "kd"}
    figures = loss.end_epoch(0)
    assert "w_logit_mean/0" in figures and "w_feature_mean/0" not in figures


def test_feature_weights_without_a_head_are_one_line():
    with pytest.raises(MtkdrlError, match=r"^teachers: method 'ca_mkd' .* 't1' has none .*"):
        ca_mkd([nn.Linear(D, C), None, nn.Linear(D, C)])


def test_a_head_that_takes_another_width_is_one_line():
    """MobileNetV2-like: a 1280-wide embedding behind a conv head, a 4-channel last map; refused
    when the method is built, before any compute."""
    wide = [nn.Linear(8, C) for _ in range(K)]
    with pytest.raises(
        MtkdrlError,
        match=r"^method\.feature: method 'ca_mkd' .*8-wide embedding.*\(teachers\.0\) maps of 4 ch",
    ):
        ca_mkd(wide, dims=8, feature_channels=[4] * K)


def test_one_teacher_is_refused():
    with pytest.raises(MtkdrlError, match=r"^teachers: method 'ca_mkd' needs at least 2"):
        ca_mkd([nn.Linear(D, C)])


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    assert all(torch.isfinite(torch.tensor(cnn_and_vit_dry_run("ca_mkd"))))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """A short run on the shared data with its pretrained teachers (their heads read the adapted
    student maps); stopped after 4 of 6 steps and resumed, it ends with the same student."""
    summary, folder = run_and_resumed("ca_mkd")
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100
    epoch = read_epochs(folder)[-1]
    for kind in ("logit", "feature"):
        means = [epoch[f"w_{kind}_mean/{k}"] for k in range(2)]
        assert sum(means) == pytest.approx(0.5, abs=1e-5)  # K = 2: rows sum to 1/K
