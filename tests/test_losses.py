"""Loss terms against their textbook definitions."""

import torch
import torch.nn.functional as F

from mtkdrl.losses import (
    FeatureAdapter,
    FeatureAdapters,
    feature_mse_per_sample,
    kl_divergence,
    kl_per_sample,
)


def test_kl_matches_torch_kldiv():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 10), torch.randn(6, 10)
    temperature = 4.0
    expected = (
        F.kl_div(
            F.log_softmax(student / temperature, 1),
            F.softmax(teacher / temperature, 1),
            reduction="none",
        ).sum(1)
        * temperature**2
    )
    torch.testing.assert_close(kl_per_sample(student, teacher, temperature), expected)
    torch.testing.assert_close(kl_divergence(student, teacher, temperature), expected.mean())


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(3, 5)
    assert torch.allclose(kl_per_sample(logits, logits, 2.0), torch.zeros(3), atol=1e-6)
    assert (kl_per_sample(logits, logits.flip(1), 2.0) > 0).all()


def test_feature_mse_is_a_per_sample_mean():
    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    expected = torch.stack([((a[i] - b[i]) ** 2).mean() for i in range(4)])
    torch.testing.assert_close(feature_mse_per_sample(a, b), expected)


def test_adapter_pools_down_and_interpolates_up():
    down = FeatureAdapter((8, 8, 8), (16, 4, 4))
    up = FeatureAdapter((8, 4, 4), (16, 8, 8))
    x = torch.randn(2, 8, 8, 8)
    assert down(x).shape == (2, 16, 4, 4)
    assert up(torch.randn(2, 8, 2, 2)).shape == (2, 16, 8, 8)
    assert (down(x) >= 0).all()


def test_adapters_each_read_the_student_map():
    """Unlike the official chained TransFeat, teacher 2's adapter sees the student's own map."""
    torch.manual_seed(0)
    adapters = FeatureAdapters.build(
        torch.zeros(1, 8, 4, 4), [torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 8, 8)]
    ).eval()
    x = torch.randn(2, 8, 8, 8)
    second = adapters(x)[1]
    torch.testing.assert_close(second, adapters[1](x))
