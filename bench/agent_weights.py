"""What MTKD-RL's agent learns on a pool with a confidently wrong teacher: the weight it gives it.

The wrong teacher (the last of `shared4+swapped` or `shared4+wrong44`) is confidently wrong on
four classes and right elsewhere. From the comparison's runs (bench/compare.py, which logs the
weights per class), this prints and plots per epoch, averaged over seeds, the logit weight each
MTKD-RL row gives that teacher on samples of those four classes and of the other six, and the
same for each source before mixing (agent head, confidence term, gap term) with its share of the
mix, so what each source contributes is share × source. `avg` gives every teacher 1/K.

    python bench/agent_weights.py --pool shared4+swapped --methods mtkdrl --feature none
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare

from mtkdrl import METHODS
from mtkdrl.compare.command import run_dir
from mtkdrl.outputs import read_epochs

WRONG_CLASSES = {
    "shared4+swapped": (0, 1, 8, 9),  # airplane <-> ship, automobile <-> truck (shared README)
    "shared4+wrong44": tuple(sorted(c for pair in compare.WRONG44_SWAPS for c in pair)),
}
SOURCES = ("agent", "confidence", "gap")


def mix_shares(run_dir: Path, epoch: dict) -> list[float]:
    """The logit mix of (agent, confidence, gap) the run used at this epoch."""
    if "mix_logit/agent" in epoch:  # dynamic: learned, logged per epoch
        return [epoch[f"mix_logit/{s}"] for s in SOURCES]
    method = yaml.safe_load((run_dir / "recipe.yaml").read_text())["method"]
    default = METHODS.lookup(method["name"], "method.name").Options().logit_mix  # mtkdrl: no gap
    mix = method["options"].get("logit_mix", default)
    return [m / sum(mix) for m in mix]


def split(
    by_class: list[list[float | None]], teacher: int, classes: tuple[int, ...]
) -> tuple[float, float]:
    """Mean weight of `teacher` over the classes it is wrong on and the others (class-balanced)."""
    wrong = [by_class[c][teacher] for c in classes]
    right = [row[teacher] for c, row in enumerate(by_class) if c not in classes]
    return statistics.mean(wrong), statistics.mean(right)


def run_curves(run_dir: Path, teacher: int, classes: tuple[int, ...]) -> list[dict]:
    """Per epoch: the applied weight and each source on wrong/right classes, and the shares."""
    curves = []
    for epoch in read_epochs(run_dir):
        if "w_logit_by_class" not in epoch:
            raise SystemExit(f"{run_dir} has no per-class weights: rerun it with bench/compare.py")
        applied = split(epoch["w_logit_by_class"], teacher, classes)
        row = {"epoch": epoch["epoch"], "applied": applied}
        for source in SOURCES:
            row[source] = split(epoch[f"w_logit_{source}_by_class"], teacher, classes)
        row["shares"] = mix_shares(run_dir, epoch)
        curves.append(row)
    return curves


def mean_curves(per_seed: list[list[dict]]) -> list[dict]:
    """Element-wise mean over seeds of `run_curves` outputs."""
    merged = []
    for rows in zip(*per_seed, strict=True):
        row = {"epoch": rows[0]["epoch"]}
        for key in ("applied", *SOURCES):
            row[key] = tuple(statistics.mean(r[key][i] for r in rows) for i in (0, 1))
        row["shares"] = [statistics.mean(r["shares"][i] for r in rows) for i in range(3)]
        merged.append(row)
    return merged


def table(curves: dict[str, list[dict]], pool: str, warmup: int) -> str:
    num_teachers = len(compare.POOLS[pool])
    lines = [
        f"`{pool}`: logit weight of the wrong teacher (teacher {num_teachers - 1}, wrong on "
        f"classes {', '.join(map(str, WRONG_CLASSES[pool]))}), mean over epochs "
        f"{warmup}–last and seeds, on its four wrong classes / the other six; `avg` gives "
        f"{1 / num_teachers:.2f} everywhere. A source's contribution is its share × its weight.",
        "",
        "| row | applied | agent head: share, weight | confidence: share, weight "
        "| gap: share, weight |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, rows in curves.items():
        after = rows[warmup:]

        def pair(key: str, rows: list[dict] = after) -> str:
            wrong = statistics.mean(r[key][0] for r in rows)
            right = statistics.mean(r[key][1] for r in rows)
            return f"{wrong:.3f} / {right:.3f}"

        cells = [pair("applied")]
        for index, source in enumerate(SOURCES):
            share = statistics.mean(r["shares"][index] for r in after)
            cells.append(f"{share:.2f}, {pair(source)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], num_teachers: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), squeeze=False)
    colours = {"applied": "black", "agent": "tab:blue", "confidence": "tab:green", "gap": "tab:red"}
    for axis, (method, rows) in zip(axes[0], curves.items(), strict=True):
        epochs = [r["epoch"] for r in rows]
        for key, colour in colours.items():
            axis.plot(epochs, [r[key][0] for r in rows], color=colour, label=f"{key}, wrong")
            axis.plot(
                epochs, [r[key][1] for r in rows], color=colour, ls="--", label=f"{key}, right"
            )
        axis.axhline(1 / num_teachers, color="grey", lw=0.8, ls=":")
        axis.set(title=method, xlabel="epoch", ylabel="weight of the wrong teacher", ylim=(0, 1))
        axis.title.set_fontsize(8)
    axes[0][0].legend(fontsize=6, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--pool", default="shared4+swapped", choices=list(WRONG_CLASSES))
    parser.add_argument("--methods", nargs="+", default=["mtkdrl"], help="MTKD-RL method rows")
    parser.add_argument("--feature", default="recipe", help="the feature row of the runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warmup", type=int, default=1, help="epochs left out of the means")
    parser.add_argument("--work", type=Path, default=compare.REPO.parent / "mtkdrl_compare")
    parser.add_argument(
        "--out", type=Path, default=compare.REPO / "docs" / "results" / "agent_weights"
    )
    args = parser.parse_args()
    num_teachers = len(compare.POOLS[args.pool])
    work = compare.pool_work(args.pool, args.work)
    curves = {}
    for method in args.methods:  # over the seeds of --seeds whose runs finished here
        seeds = [
            s
            for s in args.seeds
            if (run_dir(work, method, args.feature, s) / "summary.json").is_file()
        ]
        if seeds:
            dirs = [run_dir(work, method, args.feature, seed) for seed in seeds]
            runs = [run_curves(d, num_teachers - 1, WRONG_CLASSES[args.pool]) for d in dirs]
            curves[f"{method} (seeds {', '.join(map(str, seeds))})"] = mean_curves(runs)
    if not curves:
        raise SystemExit(f"no finished {args.pool} runs of {args.methods} under {work}")
    out = args.out / compare.slug(args.pool)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent_weights.json").write_text(json.dumps(curves, indent=2))
    command = shlex.join(["python", "bench/agent_weights.py", "--pool", args.pool, "--methods",
                          *args.methods, "--feature", args.feature,
                          "--seeds", *map(str, args.seeds)])  # fmt: skip
    markdown = table(curves, args.pool, args.warmup) + f"\n\n`{command}`\n"
    (out / "agent_weights.md").write_text(markdown)
    plot(curves, num_teachers, out / "agent_weights.png")
    print(markdown)


if __name__ == "__main__":
    main()
