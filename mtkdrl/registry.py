"""One registry for every kind of recipe choice: methods, logit losses, temperature policies and
feature terms each map a name to a class, parse the recipe's spec and validate its settings the
same way, so a new kind of choice is one `Registry(...)` line, not a fourth copy of this code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from .errors import MtkdrlError
from .recipe import build_dataclass

T = TypeVar("T", bound=type)


class Registry(dict[str, type]):
    """Classes by their `name`, each with a one-line `description` and an `Options` dataclass.

    `kind` is what a class is ("method"), `where` the recipe key that names one
    ("method.logit_loss"), and `key` the entry of a mapping spec that holds the name
    (`{name: dkd, beta: 2}`); the spec's other entries are the class's settings.
    """

    def __init__(self, kind: str, where: str, key: str = "name") -> None:
        super().__init__()
        self.kind, self.where, self.key = kind, where, key

    def register(self, cls: T) -> T:
        """Class decorator adding `cls` under `cls.name`."""
        if not cls.name or not cls.description:
            raise ValueError(f"{cls.__name__} needs a non-empty `name` and `description`")
        self[cls.name] = cls
        return cls

    def available(self) -> str:
        return ", ".join(sorted(self))

    def lookup(self, name: Any, where: str | None = None) -> type:
        """The class called `name`, or one line naming the recipe key and the valid names."""
        if not isinstance(name, str) or name not in self:
            raise MtkdrlError(
                f"{where or self.where}: unknown {self.kind} {name!r}; available: "
                f"{self.available()}"
            )
        return self[name]

    def parse(self, spec: Any) -> tuple[str, dict[str, Any]]:
        """A spec as (name, settings): a name alone, or a mapping with `key` and the settings."""
        if isinstance(spec, str):
            return spec, {}
        if isinstance(spec, Mapping):
            if self.key not in spec:
                raise MtkdrlError(
                    f"{self.where}: a mapping needs `{self.key}` (one of {self.available()}), "
                    f"got keys {', '.join(map(str, spec)) or 'none'}"
                )
            return spec[self.key], {k: v for k, v in spec.items() if k != self.key}
        raise MtkdrlError(
            f"{self.where}: expected a {self.kind} name ({self.available()}) or a mapping "
            f"{{{self.key}: ..., <setting>: value}}, got {spec!r} ({type(spec).__name__})"
        )

    def options(self, cls: type, settings: Mapping[str, Any], where: str | None = None) -> Any:
        """`cls.Options` from a spec's settings; an unknown one is a line listing the valid."""
        where = where or self.where
        valid = [f.name for f in fields(cls.Options)]
        for key in settings:
            if key not in valid:
                listed = ", ".join([self.key, *valid]) if where == self.where else ", ".join(valid)
                raise MtkdrlError(
                    f"{where}.{key}: unknown setting of {self.kind} {cls.name!r} "
                    f"(valid keys: {listed})"
                )
        return build_dataclass(cls.Options, dict(settings), where)

    def resolve(self, spec: Any) -> tuple[type, Any]:
        """The class a spec names and its validated options."""
        name, settings = self.parse(spec)
        where = f"{self.where}.{self.key}" if isinstance(spec, Mapping) else self.where
        cls = self.lookup(name, where)
        return cls, self.options(cls, settings)


def import_submodules(package: str, path: Iterable[str], skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of a package except `skip` and `_private` ones: each registers its
    classes as it is imported, so adding a file is all it takes to add a choice."""
    for module in pkgutil.iter_modules(path):
        if module.name not in skip and not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
