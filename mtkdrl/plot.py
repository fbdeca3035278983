"""`mtkdrl plot RUN_DIR`: a PNG of the teacher weights a method learned and accuracy by epoch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .errors import MtkdrlError, exit_code
from .outputs import read_epochs

WEIGHT_KINDS = (("logit", "logit-loss weight"), ("feature", "feature-loss weight"))


def teacher_names(run_dir: Path) -> list[str]:
    """The teachers' names, in the order of the recipe the run saved beside its outputs."""
    path = run_dir / "recipe.yaml"
    recipe = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return [t.get("name", f"teacher {i}") for i, t in enumerate(recipe.get("teachers") or [])]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw teacher weights (mean ± std over samples) and val top-1 per epoch; returns the PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkdrlError("mtkdrl plot needs matplotlib: pip install 'mtkdrl[plot]'") from None
    run_dir = Path(run_dir)
    epochs = read_epochs(run_dir)
    names = teacher_names(run_dir)
    kinds = [(k, label) for k, label in WEIGHT_KINDS if f"w_{k}_mean/0" in epochs[-1]]
    figure, axes = plt.subplots(
        1, len(kinds) + 1, figsize=(5 * (len(kinds) + 1), 3.6), squeeze=False
    )
    x = [r["epoch"] for r in epochs]
    for axis, (kind, label) in zip(axes[0], kinds, strict=False):
        index = 0
        while f"w_{kind}_mean/{index}" in epochs[-1]:
            mean = [r.get(f"w_{kind}_mean/{index}", float("nan")) for r in epochs]
            std = [r.get(f"w_{kind}_std/{index}", 0.0) for r in epochs]
            name = names[index] if index < len(names) else f"teacher {index}"
            axis.plot(x, mean, marker="o", label=name)
            axis.fill_between(
                x,
                [m - s for m, s in zip(mean, std, strict=True)],
                [m + s for m, s in zip(mean, std, strict=True)],
                alpha=0.15,
            )
            index += 1
        axis.set(title=f"{label} per teacher (mean ± std)", xlabel="epoch", ylabel="weight")
        axis.legend(fontsize=8)
    accuracy = axes[0][-1]
    evaluated = [r for r in epochs if "val_top1" in r]
    accuracy.plot(
        [r["epoch"] for r in evaluated], [r["val_top1"] for r in evaluated], marker="o", color="k"
    )
    accuracy.set(title="student val top-1", xlabel="epoch", ylabel="top-1 (%)")
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    target = Path(out) if out else run_dir / "teacher_weights.png"
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtkdrl plot", description=__doc__)
    parser.add_argument("run_dir", help="a run's output_dir")
    parser.add_argument("--out", help="PNG path (default RUN_DIR/teacher_weights.png)")
    args = parser.parse_args(argv)
    return exit_code(lambda: print(f"wrote {plot_run(args.run_dir, args.out)}"))


if __name__ == "__main__":
    sys.exit(main())
