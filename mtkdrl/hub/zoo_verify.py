"""`mtkdrl zoo verify`: re-measure registry students from their exported folders, as anyone can.

Each exported entry (the Hub layout: `model.safetensors`, `config.json`, in this repository) is
loaded the way a user loads it, through timm's `local-dir:`; a teacher, by its timm tag from the
Hugging Face cache or the Hub. Each is evaluated on the eval split its recipe names; a top-1 or
top-5 more than `tolerance` points from the registry's figure fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MtkdrlError
from ..evaluate import evaluate_model
from ..recipe import ModelSpec, Recipe
from .zoo import Entry, Registry
from .zoo_entries import TeacherEntry

TOLERANCE = 0.1  # points of top-1 / top-5
EXPORT_FILES = ("model.safetensors", "config.json")


@dataclass
class Verified:
    """One entry's recorded and re-measured figures."""

    name: str
    recorded: tuple[float, float | None]
    measured: tuple[float, float]
    count: int

    def off_by(self) -> float:
        """The larger gap, in points, between a recorded figure and its re-measurement."""
        pairs = zip(self.recorded, self.measured, strict=True)
        return max(abs(r - m) for r, m in pairs if r is not None)


def verify_entry(registry: Registry, entry: Entry) -> Verified:
    """Load `entry` as a user does and measure it on its recipe's eval split."""
    if entry.score is None:
        raise MtkdrlError(f"zoo verify: {entry.name!r} is {entry.status}: nothing to verify")
    data = Recipe.from_yaml(registry.resolve(entry.recipe), getattr(entry, "overrides", [])).data
    result = evaluate_model(ModelSpec(name=model_name(registry, entry), pretrained=True), data)
    return Verified(
        entry.name,
        (entry.score.top1, entry.score.top5),
        (result["top1"], result["top5"]),
        result["count"],
    )


def model_name(registry: Registry, entry: Entry) -> str:
    """What timm loads: a teacher's tag, or an exported student's folder as `local-dir:`."""
    if isinstance(entry, TeacherEntry):
        return entry.name
    folder = None if entry.export_dir is None else registry.resolve(entry.export_dir)
    if folder is None or not all((folder / f).is_file() for f in EXPORT_FILES):
        raise MtkdrlError(
            f"zoo verify: {entry.name!r} has no export at {entry.export_dir} "
            f"({' and '.join(EXPORT_FILES)}); export it with `mtkdrl zoo add`"
        )
    return f"local-dir:{folder}"


def verify(registry: Registry, names: list[str], tolerance: float = TOLERANCE) -> list[Verified]:
    """Verify the named entries (every student exported here when none is named); one error
    line listing each entry whose figures are off by more than `tolerance` points."""
    entries = [registry.get(n) for n in names] or [
        e for e in registry.students if e.export_dir is not None
    ]
    results = [verify_entry(registry, entry) for entry in entries]
    for result in results:
        print(f"{result.name}: {line(result)}")
    failed = [r for r in results if r.off_by() > tolerance]
    if failed:
        raise MtkdrlError(
            "zoo verify: "
            + "; ".join(f"{r.name} is off by {r.off_by():.2f} points ({line(r)})" for r in failed)
            + f"; the tolerance is {tolerance} points"
        )
    return results


def line(result: Verified) -> str:
    top1, top5 = result.recorded
    shown = f"top-1 {result.measured[0]:.2f} (recorded {top1:.2f})"
    if top5 is not None:
        shown += f", top-5 {result.measured[1]:.2f} (recorded {top5:.2f})"
    return f"{shown} on {result.count} images"
