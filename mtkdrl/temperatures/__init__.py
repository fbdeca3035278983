"""Temperature policies: the T of every logit loss, one module per policy, chosen by the recipe.

`method.temperature: 4` (a number) keeps a fixed T; `method.temperature: {policy: rl, ...}`
names a policy and its settings. A policy sees each batch before the loss (the student's logits
and, if it asks, the teachers' mixed probabilities) and returns T, one number or one per sample,
and it may learn around the student's step. See docs/temperatures.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..errors import MtkdrlError
from ..recipe import build_dataclass
from .base import PolicyInput, TemperatureContext, TemperaturePolicy

WHERE = "method.temperature"
TEMPERATURE_POLICIES: dict[str, type[TemperaturePolicy]] = {}


def register_temperature_policy(cls: type[TemperaturePolicy]) -> type[TemperaturePolicy]:
    """Class decorator adding a policy to `TEMPERATURE_POLICIES` under `cls.name`."""
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` and `description`")
    TEMPERATURE_POLICIES[cls.name] = cls
    return cls


def build_temperature_policy(
    spec: float | Mapping[str, Any], context: TemperatureContext
) -> TemperaturePolicy:
    """The policy a recipe's `method.temperature` names: a number (a fixed T) or a mapping with
    `policy` and its settings; anything else is one line naming `method.temperature`."""
    available = ", ".join(sorted(TEMPERATURE_POLICIES))
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        name, settings = "fixed", {"value": float(spec)}
    elif isinstance(spec, Mapping):
        if "policy" not in spec:
            raise MtkdrlError(
                f"{WHERE}: a mapping needs `policy` (one of {available}), got keys "
                f"{', '.join(map(str, spec)) or 'none'}"
            )
        name, settings = spec["policy"], {k: v for k, v in spec.items() if k != "policy"}
    else:
        raise MtkdrlError(
            f"{WHERE}: expected a number (a fixed T) or a mapping {{policy: ..., <setting>: "
            f"value}} with policy one of {available}, got {spec!r}"
        )
    if not isinstance(name, str) or name not in TEMPERATURE_POLICIES:
        raise MtkdrlError(f"{WHERE}.policy: unknown policy {name!r}; available: {available}")
    cls = TEMPERATURE_POLICIES[name]
    valid = [f.name for f in fields(cls.Options)]
    for key in settings:
        if key not in valid:
            listed = ", ".join(["policy", *valid])
            raise MtkdrlError(f"{WHERE}.{key}: unknown setting of policy {name!r} ({listed})")
    return cls(build_dataclass(cls.Options, dict(settings), WHERE), context)


def base_temperature(spec: float | Mapping[str, Any]) -> float:
    """The fixed T a spec starts from: the number itself, or its `initial` setting (4 if unset),
    for code that needs one number (e.g. a weighting method's own softmax)."""
    if isinstance(spec, Mapping):
        return float(spec.get("value", spec.get("initial", 4.0)))
    return float(spec)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()

__all__ = [
    "TEMPERATURE_POLICIES",
    "PolicyInput",
    "TemperatureContext",
    "TemperaturePolicy",
    "base_temperature",
    "build_temperature_policy",
    "register_temperature_policy",
]
