"""Rows of a comparison: `NAME[:key=value,…]` becomes the recipe overrides users would write."""

import pytest

from mtkdrl.compare.rows import feature_row, method_row, split_settings
from mtkdrl.errors import MtkdrlError


def test_a_method_row_resets_options_then_routes_each_key():
    row = method_row("mtkdrl:agent_update=reinforce,beta=50,teacher_cache.mode=off")
    assert row.label == "mtkdrl:agent_update=reinforce,beta=50,teacher_cache.mode=off"
    assert row.overrides == (
        "method.name=mtkdrl",
        "method.options={}",
        "method.options.agent_update=reinforce",
        "method.beta=50",
        "teacher_cache.mode=off",
    )


def test_commas_inside_brackets_stay_in_one_value():
    name, settings = split_settings("avg:temperature={policy: rl, rl_every: 3},alpha=2", "--x")
    assert name == "avg"
    assert settings == {"temperature": "{policy: rl, rl_every: 3}", "alpha": "2"}


def test_a_feature_row_is_a_term_with_settings_and_its_weight():
    assert feature_row("none").overrides == ("method.feature={kind: none}",)
    assert feature_row("hint:stage=2,beta=50").overrides == (
        "method.feature={kind: hint, stage: 2}",
        "method.beta=50",
    )


@pytest.mark.parametrize(
    ("make", "text", "named"),
    [(method_row, "avgg", "--methods: unknown method 'avgg'"),
     (feature_row, "hints:stage=2", "--features: unknown feature term 'hints'"),
     (method_row, "avg:beta", "--methods 'avg:beta': 'beta' must look like key=value")],
)  # fmt: skip
def test_a_bad_row_is_one_line_naming_the_flag(make, text, named):
    with pytest.raises(MtkdrlError) as caught:
        make(text)
    assert str(caught.value).startswith(named) and "\n" not in str(caught.value)
