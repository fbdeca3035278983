"""How two recipes differ: as the `a.b=value` overrides that turn one into the other, or as
`key: old -> new` lines for a message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from .recipe import Recipe

LOCATION_KEYS = ("output_dir", "teacher_cache.dir")  # where a run wrote, not what it ran


def overrides_between(source: Recipe, target: Recipe) -> list[str]:
    """The `a.b=value` overrides that turn `source` into `target` (the inverse of applying
    them), leaving out where the run wrote (`LOCATION_KEYS`)."""
    found: list[str] = []
    _collect_differences(source.to_dict(), target.to_dict(), "", found)
    return [item for item in found if item.split("=", 1)[0] not in LOCATION_KEYS]


def _collect_differences(ours: Any, theirs: Any, path: str, found: list[str]) -> None:
    same_shape = (
        isinstance(ours, dict) and isinstance(theirs, dict) and ours.keys() == theirs.keys()
    ) or (isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs))
    if same_shape:
        keys = ours.keys() if isinstance(ours, dict) else range(len(ours))
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            _collect_differences(ours[key], theirs[key], where, found)
    elif ours != theirs:
        text = yaml.safe_dump(theirs, default_flow_style=True, width=10**9)
        text = text.removesuffix("\n...\n").strip()  # a scalar document's end marker
        found.append(f"{path}={text}")


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """`key: old -> new` for each leaf where two recipes' data (or any nested values) differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(old.keys() | new.keys(), key=str):
            where = f"{path}.{key}" if path else str(key)
            found += differences(old.get(key), new.get(key), where)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        where = [f"{path}.{index}" if path else str(index) for index in range(len(old))]
        return [d for o, n, w in zip(old, new, where, strict=True) for d in differences(o, n, w)]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
