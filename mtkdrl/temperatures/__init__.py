"""Temperature policies: the T of every logit loss, one module per policy, chosen by the recipe.

`method.temperature: 4` (a number) keeps a fixed T; `method.temperature: {policy: rl, ...}`
names a policy and its settings. A policy sees each batch before the loss (the student's logits
and, if it asks, the teachers' mixed probabilities) and returns T, one number or one per sample,
and it may learn around the student's step. See docs/temperatures.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import MtkdrlError
from ..registry import Registry, import_submodules
from .base import PolicyInput, TemperatureContext, TemperaturePolicy

WHERE = "method.temperature"
TEMPERATURE_POLICIES = Registry("policy", WHERE, key="policy")
register_temperature_policy = TEMPERATURE_POLICIES.register


def build_temperature_policy(
    spec: float | Mapping[str, Any], context: TemperatureContext
) -> TemperaturePolicy:
    """The policy a recipe's `method.temperature` names: a number (a fixed T) or a mapping with
    `policy` and its settings; anything else is one line naming `method.temperature`."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        spec = {"policy": "fixed", "value": float(spec)}
    elif not isinstance(spec, Mapping):
        raise MtkdrlError(
            f"{WHERE}: expected a number (a fixed T) or a mapping {{policy: ..., <setting>: "
            f"value}} with policy one of {TEMPERATURE_POLICIES.available()}, got {spec!r}"
        )
    cls, options = TEMPERATURE_POLICIES.resolve(spec)
    return cls(options, context)


def base_temperature(spec: float | Mapping[str, Any]) -> float:
    """The fixed T a spec starts from: the number itself, or its `initial` setting (4 if unset),
    for code that needs one number (e.g. a weighting method's own softmax)."""
    if isinstance(spec, Mapping):
        return float(spec.get("value", spec.get("initial", 4.0)))
    return float(spec)


import_submodules(__name__, __path__)

__all__ = [
    "TEMPERATURE_POLICIES",
    "PolicyInput",
    "TemperatureContext",
    "TemperaturePolicy",
    "base_temperature",
    "build_temperature_policy",
    "register_temperature_policy",
]
