"""What one row of a comparison trains: a method or a feature term, written on the command line
as `NAME[:key=value,…]`, turned into recipe overrides.

A method row's keys go to `method.<key>` for the objective's own fields (`alpha`, `beta`,
`temperature`, `logit_loss`), to the recipe path itself when dotted (`teacher_cache.mode=off`),
and to the method's options otherwise (`mtkdrl:agent_update=reinforce`). A feature row's keys
are the term's settings, except `beta`, the term's weight (`hint:stage=2,beta=50`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml

from ..errors import MtkdrlError
from ..features import FEATURE_TERMS
from ..methods import METHODS
from ..recipe import MethodConfig, parse_value

OBJECTIVE_FIELDS = {f.name for f in dataclasses.fields(MethodConfig)} - {"name", "options"}


@dataclass(frozen=True)
class Row:
    """A row's label, as written, and the recipe overrides that make it."""

    label: str
    overrides: tuple[str, ...]


def split_settings(text: str, where: str) -> tuple[str, dict[str, str]]:
    """`NAME:k=v,k2={a: 1, b: 2}` as (NAME, {k: v, …}); commas inside brackets stay."""
    name, _, rest = text.partition(":")
    settings: dict[str, str] = {}
    for item in _top_level_commas(rest) if rest else []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise MtkdrlError(f"{where} {text!r}: {item!r} must look like key=value")
        settings[key.strip()] = value.strip()
    return name.strip(), settings


def _top_level_commas(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:position])
            start = position + 1
    return [*items, text[start:]]


def method_row(text: str) -> Row:
    """A `--methods` entry: a registered method and its overrides, options reset first so a
    recipe written for another method does not leak its options into this one."""
    name, settings = split_settings(text, "--methods")
    METHODS.lookup(name, "--methods")
    overrides = [f"method.name={name}", "method.options={}"]
    for key, value in settings.items():
        if "." in key:
            overrides.append(f"{key}={value}")
        elif key in OBJECTIVE_FIELDS:
            overrides.append(f"method.{key}={value}")
        else:
            overrides.append(f"method.options.{key}={value}")
    return Row(text, tuple(overrides))


def feature_row(text: str) -> Row:
    """A `--features` entry: a feature term with its settings and, as `beta`, its weight."""
    kind, settings = split_settings(text, "--features")
    FEATURE_TERMS.lookup(kind, "--features")
    beta = settings.pop("beta", None)
    term = {"kind": kind, **{key: parse_value(value) for key, value in settings.items()}}
    flow = yaml.safe_dump(term, default_flow_style=True, width=10**9).strip()
    overrides = [f"method.feature={flow}", *([f"method.beta={beta}"] if beta else [])]
    return Row(text, tuple(overrides))


RECIPE_FEATURE = Row("recipe", ())  # no --features: the recipe's own term
