"""Feature terms: `none`, `map` and `hint`, their settings, adapters and distances."""

import pytest
import torch

from mtkdrl.errors import MtkdrlError
from mtkdrl.features import build_feature_term
from mtkdrl.losses import ConvRegressor, FeatureAdapter


def maps(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 16, 16, 16, generator=g)
    teachers = [torch.randn(3, 32, 8, 8, generator=g), torch.randn(3, 64, 8, 8, generator=g)]
    return student, teachers


def test_the_recipe_term_wins_over_the_method_default():
    assert build_feature_term(None, "map").name == "map"
    assert build_feature_term("none", "map").stage is None
    hint = build_feature_term({"kind": "hint", "stage": 2}, "map")
    assert (hint.name, hint.stage, hint.adapter, hint.distance) == ("hint", 2, "convreg", "mse")


def test_map_defaults_are_todays_last_stage_map_term():
    term = build_feature_term("map", "none")
    assert (term.stage, term.adapter, term.distance) == (-1, "conv1x1", "mse")
    assert term.describe() == "map (stage -1)"
    amtml = build_feature_term(
        {"kind": "map", "adapter": "linear1x1", "distance": "normalised"}, "none"
    )
    assert amtml.describe() == "map (stage -1, adapter linear1x1, distance normalised)"


@pytest.mark.parametrize(
    ("kind", "adapter_type"), [("map", FeatureAdapter), ("hint", ConvRegressor)]
)
def test_each_term_builds_one_adapter_per_teacher_onto_its_map(kind, adapter_type):
    student, teachers = maps()
    adapters = build_feature_term(kind, "none").build_adapters(student, teachers)
    assert [type(a) for a in adapters] == [adapter_type, adapter_type]
    assert [a.shape for a in adapters(student)] == [t.shape for t in teachers]


def test_distances_are_per_sample_mse_or_normalised_squared_distance():
    g = torch.Generator().manual_seed(1)
    adapted = [torch.randn(4, 8, 2, 2, generator=g) for _ in range(2)]
    targets = [torch.randn(4, 8, 2, 2, generator=g) for _ in range(2)]
    mse = build_feature_term("map", "none").distances(adapted, targets)
    for got, a, t in zip(mse, adapted, targets, strict=True):
        torch.testing.assert_close(got, ((a - t) ** 2).mean(dim=(1, 2, 3)))
    spec = {"kind": "map", "distance": "normalised"}
    normalised = build_feature_term(spec, "none").distances(adapted, targets)
    for got, a, t in zip(normalised, adapted, targets, strict=True):
        a, t = a.flatten(1), t.flatten(1)
        expected = ((a / a.norm(dim=1, keepdim=True) - t / t.norm(dim=1, keepdim=True)) ** 2).sum(1)
        torch.testing.assert_close(got, expected)
        assert got.max() <= 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("fitnet", r"^method\.feature: unknown feature term 'fitnet'; available: hint, map, none$"),
        ({"kind": "hint", "adapter": "conv1x1"}, r"^method\.feature\.adapter: unknown setting"),
        ({"kind": "map", "adapter": "mlp"}, r"^recipe key 'method\.feature\.adapter' must be one"),
        ({"stage": 2}, r"^method\.feature: a mapping needs `kind`"),
    ],
)
def test_a_bad_term_is_one_line_naming_method_feature(spec, message):
    with pytest.raises(MtkdrlError, match=message):
        build_feature_term(spec, "none")
