"""`fitnet_mkd`: AVER on the logits plus equal-weight hints at the second stage, with ConvReg
regressors that receive gradients (the official code's hints carry none)."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.checkpoint import _read_pair
from mtkdrl.losses import ConvRegressor
from mtkdrl.methods import DistillBatch
from mtkdrl.pool import ModelOutputs, create_model, forward_outputs
from mtkdrl.recipe import MethodConfig, ModelSpec

from .helpers import build, terms_of

B, C, K = 4, 5, 2


def fitnet(feature_channels: list[int] | None = None, **keys):
    config = MethodConfig(name="fitnet_mkd", temperature=4.0, alpha=1.0, beta=100.0, **keys)
    return build(config, K, num_classes=C, feature_channels=feature_channels)


def test_loss_is_aver_kd_plus_equal_hints_through_convreg():
    torch.manual_seed(0)
    student_map = torch.randn(B, 6, 8, 8)
    teacher_maps = [torch.randn(B, 8, 4, 4), torch.randn(B, 12, 8, 8)]
    loss = fitnet(feature_channels=[8, 12])
    assert loss.objective.feature.adapter == "convreg"  # the hint term's regressors
    adapters = loss.objective.feature.build_adapters(student_map, teacher_maps)
    student = ModelOutputs(torch.randn(B, C, requires_grad=True), torch.randn(B, 6), student_map)
    teachers = [ModelOutputs(torch.randn(B, C) * 2, torch.randn(B, 8), m) for m in teacher_maps]
    labels = torch.randint(0, C, (B,))
    batch = DistillBatch(labels, student, teachers, adapters(student_map))
    terms = terms_of(loss, batch, 0)

    def kl(z_s, z_t):
        p_t = F.softmax(z_t / 4, 1)
        return 16 * (p_t * (p_t.log() - F.log_softmax(z_s / 4, 1))).sum(1)

    expected_kd = sum(kl(student.logits, t.logits) for t in teachers) / K
    hints = [
        ((a - t.features) ** 2).flatten(1).mean(1)
        for a, t in zip(batch.adapted, teachers, strict=True)
    ]
    torch.testing.assert_close(terms["kd"], expected_kd, atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["feature"], 100 * sum(hints) / K, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        terms["ce"], F.cross_entropy(student.logits, labels, reduction="none")
    )
    sum(terms.values()).mean().backward()
    for adapter in adapters:  # the hints train the regressors
        assert adapter.proj[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("student", "teacher", "conv"),
    [
        ((6, 8, 8), (8, 4, 4), "Conv2d(6, 8, kernel_size=(3, 3), stride=(2, 2)"),
        ((6, 4, 4), (8, 8, 8), "ConvTranspose2d(6, 8, kernel_size=(4, 4), stride=(2, 2)"),
        ((6, 8, 8), (8, 6, 6), "Conv2d(6, 8, kernel_size=(3, 3), stride=(1, 1))"),
        ((6, 8, 8), (8, 8, 8), "Conv2d(6, 8, kernel_size=(1, 1), stride=(1, 1))"),
        ((6, 2, 2), (8, 7, 7), "Conv2d(6, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"),
    ],
)
def test_convreg_picks_its_conv_by_the_spatial_ratio(student, teacher, conv):
    regressor = ConvRegressor(student, teacher)
    assert repr(regressor.proj[0]).startswith(conv)
    assert regressor(torch.randn(2, *student)).shape == (2, *teacher)


def test_the_hint_stage_is_the_second_of_three_in_a_cifar_resnet():
    model = create_model(ModelSpec(name="resnet20_cifar"), 10, "student")
    outputs = forward_outputs(model, torch.zeros(2, 3, 32, 32), fitnet().objective.feature_stage)
    assert outputs.features.shape == (2, 32, 16, 16)  # stage 2: 32 channels at 16x16


def test_another_hint_stage_is_a_feature_term():
    """The removed `hint_stage` option is `method.feature: {kind: hint, stage: S}`."""
    loss = fitnet(feature={"kind": "hint", "stage": 1})
    assert loss.objective.feature.name == "hint" and loss.objective.feature_stage == 1
    model = create_model(ModelSpec(name="resnet20_cifar"), 10, "student")
    outputs = forward_outputs(model, torch.zeros(2, 3, 32, 32), loss.objective.feature_stage)
    assert outputs.features.shape == (2, 16, 32, 32)  # stage 1: 16 channels at 32x32


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    assert all(torch.isfinite(torch.tensor(cnn_and_vit_dry_run("fitnet_mkd"))))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """A short run on the shared data; its regressors read the student's second-stage map (32
    channels, not the last stage's 64), and an interrupted run resumes to the same weights."""
    summary, folder = run_and_resumed("fitnet_mkd")
    assert summary["global_steps"] == 6
    latest = (folder / "checkpoints" / "latest").read_text().strip()
    adapters = _read_pair(folder / "checkpoints" / latest, "shared")["adapters"]
    weights = [v for k, v in adapters.items() if k.endswith("proj.0.weight")]
    assert len(weights) == 2 and all(w.shape[:2] == (32, 32) for w in weights)
