"""Weighting methods: one file per method, found and registered by name.

A new method is one new module in this package defining a `Method` subclass with
`@register_method`; it is imported automatically. See docs/methods/README.md.
"""

from __future__ import annotations

from ..batch import DistillBatch, TeacherTerms, TeacherWeights
from ..errors import MtkdrlError
from ..registry import Registry, import_submodules
from .base import Method, MethodContext, StudentAccess

METHODS = Registry("method", "method.name")
register_method = METHODS.register


def method_class(name: str) -> type[Method]:
    """The registered method called `name`, or an error listing the available ones."""
    return METHODS.lookup(name)


def method_options(cls: type[Method], options: dict) -> object:
    """`cls.Options` from a recipe's `method.options`, each key checked; an option that became a
    feature term is one line saying what to write instead."""
    for key in options:
        if key in cls.moved_options:
            raise MtkdrlError(
                f"method.options.{key}: method {cls.name!r} no longer has this option; the "
                f"feature term is `method.feature` now: {cls.moved_options[key]}"
            )
    return METHODS.options(cls, options, "method.options")


import_submodules(__name__, __path__)

__all__ = [
    "METHODS",
    "DistillBatch",
    "Method",
    "MethodContext",
    "StudentAccess",
    "TeacherTerms",
    "TeacherWeights",
    "method_class",
    "method_options",
    "register_method",
]
