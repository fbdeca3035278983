"""One registry serves every kind of recipe choice: names, specs and settings checked alike."""

from dataclasses import dataclass

import pytest

from mtkdrl.errors import MtkdrlError
from mtkdrl.features import FEATURE_TERMS
from mtkdrl.logit_losses import LOGIT_LOSSES
from mtkdrl.methods import METHODS
from mtkdrl.registry import Registry
from mtkdrl.temperatures import TEMPERATURE_POLICIES


@dataclass
class ToyOptions:
    size: int = 1


class Toy:
    name = "toy"
    description = "a toy choice"
    Options = ToyOptions


def toys() -> Registry:
    registry = Registry("toy", "section.toy", key="kind")
    registry.register(Toy)
    return registry


def test_every_kind_of_choice_is_one_registry():
    for registry in (METHODS, LOGIT_LOSSES, TEMPERATURE_POLICIES, FEATURE_TERMS):
        assert isinstance(registry, Registry)
    assert {"avg", "mtkdrl", "mmkd"} <= set(METHODS)
    assert {"kl", "dkd"} <= set(LOGIT_LOSSES)
    assert {"fixed", "curriculum", "rl"} <= set(TEMPERATURE_POLICIES)
    assert set(FEATURE_TERMS) == {"none", "map", "hint"}


def test_a_name_or_a_mapping_resolves_to_the_class_and_its_options():
    registry = toys()
    assert registry.resolve("toy") == (Toy, ToyOptions())
    assert registry.resolve({"kind": "toy", "size": 3}) == (Toy, ToyOptions(size=3))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tiy", r"^section\.toy: unknown toy 'tiy'; available: toy$"),
        ({"kind": "tiy"}, r"^section\.toy\.kind: unknown toy 'tiy'; available: toy$"),
        ({"size": 2}, r"^section\.toy: a mapping needs `kind` \(one of toy\), got keys size$"),
        (
            {"kind": "toy", "sise": 2},
            r"^section\.toy\.sise: unknown setting of toy 'toy' \(valid keys: kind, size\)$",
        ),
        ({"kind": "toy", "size": "big"}, r"^recipe key 'section\.toy\.size' must be of type int"),
        (3, r"^section\.toy: expected a toy name \(toy\) or a mapping \{kind: \.\.\."),
    ],
)
def test_bad_specs_are_one_line_naming_the_key(spec, message):
    with pytest.raises(MtkdrlError, match=message) as caught:
        toys().resolve(spec)
    assert "\n" not in str(caught.value)


def test_a_class_without_name_or_description_is_refused():
    class Nameless:
        name = ""
        description = "x"

    with pytest.raises(ValueError, match="Nameless needs a non-empty `name` and `description`"):
        toys().register(Nameless)
