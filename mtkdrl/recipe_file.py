"""Reading a recipe: a file, or a packaged recipe's name; UTF-8 YAML, a non-empty mapping without a
key given twice, of a size a recipe can have (a YAML alias bomb is refused before anything expands
it), on top of the packaged recipe its `base` key names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from . import recipes
from .errors import MtkdrlError, first_line, shown

MAX_RECIPE_VALUES = 100_000  # far above any real recipe; a YAML alias bomb expands beyond it


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise MtkdrlError(
                    f"recipe {self.name} line {mark.line + 1}: key {str(key)[:80]!r} is given "
                    "twice; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def locate_recipe(given: str | Path) -> Path:
    """The recipe file `given` names: a file, else the packaged recipe of that name."""
    path = Path(given)
    if path.is_file():
        return path
    packaged = recipes.packaged_recipe(str(given))
    if packaged is not None:
        return packaged
    raise MtkdrlError(
        f"recipe file not found: {given}; or name a packaged recipe: "
        f"{', '.join(recipes.names())} (mtkdrl recipes)"
    )


def read_recipe(path: Path) -> dict[str, Any]:
    """A recipe file's data on top of the packaged recipe its `base` key names, if it has one:
    mappings merge key by key, anything else (a list of teachers, a number) replaces the base's."""
    raw = read_recipe_file(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str):
        raise MtkdrlError(
            f"recipe {path}: base must name a packaged recipe ({', '.join(recipes.names())}), "
            f"got {shown(base)}"
        )
    return merged(read_recipe_file(recipes.require(base, f"recipe {path}: base")), raw)


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it, mapping into mapping."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def read_recipe_file(path: Path) -> dict[str, Any]:
    """A recipe file's data: UTF-8 YAML, a non-empty mapping without repeated keys, of a size a
    recipe can have."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise MtkdrlError(
            f"recipe {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or first_line(err)
        raise MtkdrlError(f"recipe {path} is not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    if raw is None:
        raise MtkdrlError(f"recipe {path} is empty; a recipe names at least a student and its data")
    if not isinstance(raw, dict):
        raise MtkdrlError(f"recipe {path} must be a mapping of keys, not {type(raw).__name__}")
    if _count_values(raw, MAX_RECIPE_VALUES) > MAX_RECIPE_VALUES:
        raise MtkdrlError(
            f"recipe {path} expands to more than {MAX_RECIPE_VALUES:,} values (YAML aliases "
            "repeated within each other?); write the recipe out plainly"
        )
    return raw


def _count_values(value: Any, limit: int) -> int:
    """How many values `value` holds, counting shared (aliased) parts each time they appear,
    stopping once past `limit`."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count
