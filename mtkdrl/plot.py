"""`mtkdrl plot RUN_DIR`: a PNG of what a run learned by epoch: teacher weights, temperatures
(mean, spread, per-instance histogram) and accuracy."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from .errors import CommandParser, MtkdrlError, exit_code
from .outputs import PLOT_FILE, read_epochs, run_file

WEIGHT_KINDS = (("logit", "logit-loss weight"), ("feature", "feature-loss weight"))


def teacher_names(run_dir: Path) -> list[str]:
    """The teachers' names, in the order of the recipe the run saved beside its outputs."""
    path = run_file(run_dir, "recipe.yaml")
    recipe = yaml.safe_load(path.read_text()) if path else {}
    return [t.get("name", f"teacher {i}") for i, t in enumerate(recipe.get("teachers") or [])]


def draw_weights(axis, epochs: list[dict], kind: str, label: str, names: list[str]) -> None:
    """Each teacher's weight of one kind, mean ± std over samples, per epoch."""
    x = [r["epoch"] for r in epochs]
    index = 0
    while f"w_{kind}_mean/{index}" in epochs[-1]:
        mean = [r.get(f"w_{kind}_mean/{index}", float("nan")) for r in epochs]
        std = [r.get(f"w_{kind}_std/{index}", 0.0) for r in epochs]
        name = names[index] if index < len(names) else f"teacher {index}"
        axis.plot(x, mean, marker="o", label=name)
        low = [m - s for m, s in zip(mean, std, strict=True)]
        axis.fill_between(x, low, [m + s for m, s in zip(mean, std, strict=True)], alpha=0.15)
        index += 1
    axis.set(title=f"{label} per teacher (mean ± std)", xlabel="epoch", ylabel="weight")
    axis.legend(fontsize=8)


def draw_temperature(axis, epochs: list[dict]) -> None:
    """The temperature policy's T per epoch: mean ± std over the epoch's samples."""
    logged = [r for r in epochs if "temperature_mean" in r]
    x = [r["epoch"] for r in logged]
    mean = [r["temperature_mean"] for r in logged]
    std = [r.get("temperature_std", 0.0) for r in logged]
    axis.plot(x, mean, marker="o", color="tab:red")
    low = [m - s for m, s in zip(mean, std, strict=True)]
    axis.fill_between(x, low, [m + s for m, s in zip(mean, std, strict=True)], alpha=0.2)
    axis.set(title="temperature (mean ± std over samples)", xlabel="epoch", ylabel="T")


def draw_histogram(axis, epochs: list[dict], t_max: float) -> None:
    """Per-instance temperatures: one column per epoch, the share of samples in each T bin."""
    logged = [r for r in epochs if r.get("temperature_histogram")]
    counts = [[c / max(sum(r["temperature_histogram"]), 1) for c in r["temperature_histogram"]]
              for r in logged]  # fmt: skip
    columns = list(map(list, zip(*counts, strict=True)))  # bins × epochs
    first, last = logged[0]["epoch"], logged[-1]["epoch"]
    image = axis.imshow(
        columns, origin="lower", aspect="auto", cmap="viridis",
        extent=(first - 0.5, last + 0.5, 0, t_max),
    )  # fmt: skip
    axis.figure.colorbar(image, ax=axis, label="share of samples")
    axis.set(title="per-instance temperature", xlabel="epoch", ylabel="T")


def draw_accuracy(axis, epochs: list[dict]) -> None:
    evaluated = [r for r in epochs if "val_top1" in r]
    x, y = [r["epoch"] for r in evaluated], [r["val_top1"] for r in evaluated]
    axis.plot(x, y, marker="o", color="k")
    axis.set(title="student val top-1", xlabel="epoch", ylabel="top-1 (%)")


def temperature_range(run_dir: Path) -> float:
    """The upper end of the histogram's T axis: the recipe's `t_max` for `rl` (10 by default)."""
    path = run_file(run_dir, "recipe.yaml")
    recipe = yaml.safe_load(path.read_text()) if path else {}
    spec = (recipe.get("method") or {}).get("temperature")
    return float(spec.get("t_max", 10.0)) if isinstance(spec, dict) else 10.0


def panels_of(run_dir: Path, epochs: list[dict]) -> list[tuple[str, Callable]]:
    """What the run logged, as (what the panel shows, how to draw it): teacher weights where the
    method learns them, the temperature where a policy sets it, and val top-1 always."""
    names = teacher_names(run_dir)
    panels: list[tuple[str, Callable]] = [
        (
            f"each teacher's {label}",
            lambda axis, k=kind, t=label: draw_weights(axis, epochs, k, t, names),
        )
        for kind, label in WEIGHT_KINDS
        if f"w_{kind}_mean/0" in epochs[-1]
    ]
    if any("temperature_mean" in r for r in epochs):
        panels.append(("the temperature", lambda axis: draw_temperature(axis, epochs)))
    if any(r.get("temperature_histogram") for r in epochs):
        t_max = temperature_range(run_dir)
        panels.append(
            ("the per-instance temperatures", lambda axis: draw_histogram(axis, epochs, t_max))
        )
    panels.append(("the student's validation top-1", lambda axis: draw_accuracy(axis, epochs)))
    return panels


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw, for what the run logged: teacher weights (mean ± std over samples), the temperature
    and its per-instance histogram, and val top-1, per epoch; returns the PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkdrlError("mtkdrl plot needs matplotlib: pip install 'mtkdrl[plot]'") from None
    run_dir = Path(run_dir)
    if out is None:
        run_file(run_dir, PLOT_FILE)  # one line, not a write through a link planted there
    panels = panels_of(run_dir, read_epochs(run_dir))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, (_, draw) in zip(axes[0], panels, strict=True):
        draw(axis)
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    target = Path(out) if out else run_dir / PLOT_FILE
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="mtkdrl plot", description=__doc__)
    parser.add_argument("run_dir", help="a run's output_dir")
    parser.add_argument("--out", help=f"PNG path (default RUN_DIR/{PLOT_FILE})")
    args = parser.parse_args(argv)
    return exit_code(lambda: print(f"wrote {plot_run(args.run_dir, args.out)}"))


if __name__ == "__main__":
    sys.exit(main())
