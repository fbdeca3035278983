"""Distillation methods: one file per method, found and registered by name.

A new method is one new module in this package defining a `Method` subclass with
`@register_method`; it is imported automatically. See docs/methods/README.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping

from ..errors import MtkdrlError
from ..logit_losses import build_logit_loss
from ..recipe import MethodConfig, build_dataclass
from ..temperatures import TemperatureContext, build_temperature_policy
from .base import (
    DistillBatch,
    Method,
    MethodContext,
    StudentAccess,
    TeacherTerms,
    TeacherWeights,
)

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under `cls.name`."""
    if not cls.name or not cls.description:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` and `description`")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The registered method called `name`, or an error listing the available ones."""
    if name not in METHODS:
        raise MtkdrlError(
            f"method.name: unknown method {name!r}; available: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def create_method(config: MethodConfig, context: MethodContext) -> Method:
    """Build the method a recipe names, validating its `method.options` and `method.logit_loss`
    (which the method finds, built, as `context.logit_loss`)."""
    cls = method_class(config.name)
    options = build_dataclass(cls.Options, config.options, "method.options")
    logit_loss = build_logit_loss(config.logit_loss)
    # a number in the recipe is already the context's fixed T (`method_context` put it there)
    spec = config.temperature if isinstance(config.temperature, Mapping) else context.temperature
    policy = build_temperature_policy(
        spec,
        TemperatureContext(
            context.reduce, context.process_index, context.num_samples, context.random_access
        ),
    )
    built = dataclasses.replace(context, logit_loss=logit_loss, temperature_policy=policy)
    return cls(built, options)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()

__all__ = [
    "METHODS",
    "DistillBatch",
    "Method",
    "MethodContext",
    "StudentAccess",
    "TeacherTerms",
    "TeacherWeights",
    "create_method",
    "method_class",
    "register_method",
]
