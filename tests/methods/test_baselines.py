"""The `none`, `kd` and `avg` strategies and the registry."""

import pytest
import torch

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import METHODS, DistillBatch, MethodContext, create_method
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig


def context(k: int) -> MethodContext:
    return MethodContext([f"t{i}" for i in range(k)], 10, [8] * k, 4.0, 1.0, 5.0)


def batch(b: int, k: int) -> DistillBatch:
    out = ModelOutputs(torch.randn(b, 10), torch.randn(b, 8), torch.randn(b, 8, 2, 2))
    return DistillBatch(
        torch.zeros(b, dtype=torch.long), out, [out] * k, [], torch.rand(b), torch.rand(b, k), None
    )


def test_registry_lists_baselines():
    assert {"none", "kd", "avg"} <= set(METHODS)


def test_avg_is_equal_weights_with_features_by_default():
    method = create_method(MethodConfig(name="avg"), context(4))
    weights = method.weights(batch(3, 4), epoch=0)
    torch.testing.assert_close(weights.logit, torch.full((3, 4), 0.25))
    torch.testing.assert_close(weights.feature, torch.full((3, 4), 0.25))
    assert method.uses_features


def test_avg_logits_only_option():
    method = create_method(MethodConfig(name="avg", options={"features": False}), context(2))
    assert not method.uses_features
    assert method.weights(batch(2, 2), 0).feature is None


def test_kd_needs_exactly_one_teacher():
    method = create_method(MethodConfig(name="kd"), context(1))
    torch.testing.assert_close(method.weights(batch(2, 1), 0).logit, torch.ones(2, 1))
    assert not method.uses_features
    with pytest.raises(MtkdrlError, match=r"teachers: method 'kd'.*lists 3"):
        create_method(MethodConfig(name="kd"), context(3))


def test_none_uses_no_teacher():
    method = create_method(MethodConfig(name="none"), context(0))
    assert not method.uses_teachers
    assert method.weights(batch(2, 0), 0).logit.shape == (2, 0)


def test_unknown_method_and_option():
    with pytest.raises(MtkdrlError, match=r"unknown method 'avr'.*avg"):
        create_method(MethodConfig(name="avr"), context(2))
    with pytest.raises(MtkdrlError, match=r"method\.options\.feature.*did you mean features"):
        create_method(MethodConfig(name="avg", options={"feature": True}), context(2))
