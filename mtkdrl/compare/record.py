"""`results.json`: a comparison's record, one row per finished run, written atomically as each
run finishes, so a kill loses at most the run in progress and another sitting (or machine)
carries on from it. The record keeps the recipe it was made with and refuses another."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MtkdrlError
from ..recipe import Recipe
from ..recipe_diff import LOCATION_KEYS, differences

Key = tuple[str, str, int]  # (method row, feature row, seed)
PER_ROW_KEYS = ("method", "seed", *LOCATION_KEYS)  # what the comparison itself varies


def budget_of(recipe: Recipe) -> dict[str, Any]:
    """The recipe less what each row sets: everything that must be the same for every run, with
    local files by name and content, so the record holds no path and travels between machines."""
    data = recipe.to_dict()
    for dotted in PER_ROW_KEYS:
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node.pop(last)
    return without_paths(data, content_identity)


def without_paths(value: Any, identity: Callable[[Path], str]) -> Any:
    """`value` with each string that names a local file or folder replaced by `identity(path)`."""
    if isinstance(value, dict):
        return {key: without_paths(item, identity) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item, identity) for item in value]
    if isinstance(value, str) and "://" not in value and Path(value).expanduser().exists():
        return identity(Path(value).expanduser())
    return value


def content_identity(path: Path) -> str:
    """A local file as `name sha256:…` (its content, wherever it lies); a folder by name."""
    if path.is_dir():
        return f"{path.name}/"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{path.name} sha256:{digest.hexdigest()[:16]}"


class Record:
    """The rows of one comparison by (method, feature, seed), and the budget they share."""

    def __init__(self, path: Path, budget: dict[str, Any]) -> None:
        self.path, self.budget = path, budget
        self.rows: dict[Key, dict[str, Any]] = {}

    @classmethod
    def open(cls, path: Path, budget: dict[str, Any]) -> Record:
        """The record at `path` (empty when new); one line when it was made at another budget."""
        record = cls(path, budget)
        if not path.is_file():
            return record
        try:
            saved = json.loads(path.read_text())
            rows = saved["results"]
            old_budget = saved["recipe"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MtkdrlError(f"{path} is not a comparison record ({err}); move it away") from None
        changed = differences(old_budget, budget)
        if changed:
            raise MtkdrlError(
                f"{path} was made with another recipe ({'; '.join(changed)}); "
                "run the same recipe or pass another --out"
            )
        record.rows = {(r["method"], r["feature"], r["seed"]): r for r in rows}
        return record

    def add(self, row: dict[str, Any]) -> None:
        """Keep a finished run's row and write the record at once, atomically and durably."""
        self.rows[(row["method"], row["feature"], row["seed"])] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w") as handle:
            json.dump(
                {"recipe": self.budget, "results": list(self.rows.values())}, handle, indent=2
            )
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(self.path)

    def top1(self, method: str, feature: str) -> dict[int, float]:
        """A row's top-1 by seed."""
        return {s: r["top1"] for (m, f, s), r in self.rows.items() if (m, f) == (method, feature)}
