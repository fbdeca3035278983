"""Why MTKD-RL's official warm-up collapses the student: the first epochs under controlled changes.

Each *variant* is the harness's `mtkdrl-official` row (bench/compare.py: its budget, the `shared4`
pool and that pool's teacher cache) with one thing changed, plus `avg` for reference. Every
(variant, seed) runs the first `--epochs` epochs of the 30-epoch cosine schedule in this
process, logging every step's loss terms and, from a hook before each optimizer step, the
gradient norms of the student and of the feature adapters; val top-1 after every epoch.
Finished (variant, seed) pairs are kept in `--work` and skipped when run again.

    python bench/collapse.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare

from mtkdrl.compare.command import run_dir
from mtkdrl.outputs import read_records
from mtkdrl.recipe import Recipe
from mtkdrl.run import build_run
from mtkdrl.train import train

OFFICIAL = ["method.name=mtkdrl", "method.options={}"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "avg": ("equal weights 1/K (reference)", ["method.name=avg", "method.options={}"]),
    "official": ("warm-up weights 1: KD and feature terms K times avg's", OFFICIAL),
    "official, beta=0": ("no feature term", [*OFFICIAL, "method.beta=0"]),
    "official, beta/K": ("feature term at avg's scale", [*OFFICIAL, "method.beta=1.25"]),
    "official, alpha/K": ("logit term at avg's scale", [*OFFICIAL, "method.alpha=0.25"]),
    "official, lr/K": ("the student's lr divided by K", [*OFFICIAL, "optim.lr=0.0125"]),
    "official, uniform warm-up": (
        "warm-up weights 1/K (both terms at avg's scale)",
        ["method.name=mtkdrl", "method.options={warmup_weight: uniform}"],
    ),
}


def grad_norm(parameters: list[torch.nn.Parameter]) -> float:
    grads = [p.grad for p in parameters if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0


def student_norms(out: Path) -> dict[str, float]:
    """Norms of a run's last student: its convolutions' (each followed by BN, so scale-free) and
    its classifier's. A conv weight k times larger learns as if at lr/k² (BN undoes its scale)."""
    weights = load_file(out / "student_last.safetensors")
    conv = torch.stack([w.norm() for w in weights.values() if w.dim() == 4])
    classifier = [w for w in weights.values() if w.dim() == 2]
    return {
        "conv_norm_mean": float(conv.mean()),
        "conv_norm_max": float(conv.max()),
        "classifier_norm": float(classifier[-1].norm()),
    }


def run_variant(name: str, seed: int, epochs: int, work: Path) -> dict:
    """The first `epochs` epochs of one variant at one seed, at the harness's budget."""
    out = work / "collapse" / compare.slug(name) / f"seed{seed}"
    result_file = out / "collapse.json"
    if result_file.is_file():
        return {**json.loads(result_file.read_text()), **student_norms(out)}
    overrides = [
        *compare.pool_overrides("shared4", work),
        f"teacher_cache.dir={compare.pool_work('shared4', work) / 'cache'}",
        "teacher_cache.store=all",  # the comparison's own cache
        *VARIANTS[name][1],
        f"seed={seed}",
        "train.eval_every=1",
        "train.log_every=1",
        f"train.stop_after_steps={epochs * (compare.SUBSET // compare.BATCH_SIZE) + 1}",
        f"output_dir={out}",
    ]
    run = build_run(Recipe.from_yaml(compare.RECIPE, overrides), resume=False, overwrite=True)
    student = list(run.unwrapped_student().parameters())
    adapters = list(run.task.adapters.parameters()) if run.task.adapters is not None else []
    norms: list[tuple[float, float]] = []
    optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
    optimizer.register_step_pre_hook(
        lambda *_: norms.append((grad_norm(student), grad_norm(adapters)))
    )
    train(run)
    records = read_records(out)
    steps = [r for r in records if "epoch_seconds" not in r]
    evaluated = [r for r in records if "val_top1" in r]
    per_epoch = []
    for epoch in range(epochs):
        rows = [(r, n) for r, n in zip(steps, norms, strict=False) if r["epoch"] == epoch]
        per_epoch.append(
            {
                "epoch": epoch,
                "val_top1": evaluated[epoch]["val_top1"],
                **{
                    term: statistics.mean(r[term] for r, _ in rows)
                    for term in ("ce", "kd", "feature")
                    if term in rows[0][0]
                },
                "student_grad_norm": statistics.median(n[0] for _, n in rows),
                "adapter_grad_norm": statistics.median(n[1] for _, n in rows),
                "first_steps_student_grad_norm": [round(n[0], 3) for _, n in rows[:5]],
            }
        )
    result = {"variant": name, "seed": seed, "epochs": per_epoch, **student_norms(out)}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def table(results: list[dict], epochs: int) -> str:
    lines = [
        "| variant | what changes | ce, kd, feature (epoch 0) | student / adapter grad norm "
        "(epoch 0 median) | largest student grad norm, first 5 steps | "
        "conv / classifier weight norm at the end | "
        + " | ".join(f"val top-1 after epoch {e}" for e in range(epochs))
        + " |",
        "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in range(epochs)) + " |",
    ]
    for name, (what, _) in VARIANTS.items():
        runs = [r for r in results if r["variant"] == name]
        if not runs:
            continue
        first = [r["epochs"][0] for r in runs]

        def mean(key: str, rows: list[dict] = first) -> str:
            values = [row[key] for row in rows if key in row]
            return f"{statistics.mean(values):.2f}" if values else "-"

        accuracy = [
            " / ".join(f"{r['epochs'][e]['val_top1']:.1f}" for r in runs) for e in range(epochs)
        ]
        lines.append(
            f"| {name} | {what} | {mean('ce')}, {mean('kd')}, {mean('feature')} | "
            f"{mean('student_grad_norm')} / {mean('adapter_grad_norm')} | "
            + " / ".join(
                f"{max(r['epochs'][0]['first_steps_student_grad_norm']):.0f}" for r in runs
            )
            + f" | {mean('conv_norm_mean', runs)} / {mean('classifier_norm', runs)} | "
            + " | ".join(accuracy)
            + " |"
        )
    return "\n".join(lines)


def full_run_table(work: Path, seeds: list[int]) -> str:
    """The same norms for the comparison's full 30-epoch `shared4` runs, where they exist."""
    lines = [
        "| comparison row (30 epochs) | conv weight norm, mean (max) | classifier norm | top-1 |",
        "| --- | --- | --- | --- |",
    ]
    for method in ("avg", "mtkdrl-official", "mtkdrl:warmup_weight=uniform"):
        for seed in seeds:
            out = run_dir(compare.pool_work("shared4", work), method, "recipe", seed)
            if not (out / "summary.json").is_file():
                continue
            norms = student_norms(out)
            top1 = json.loads((out / "summary.json").read_text())["last_top1"]
            lines.append(
                f"| {method}, seed {seed} | {norms['conv_norm_mean']:.1f} "
                f"({norms['conv_norm_max']:.1f}) | {norms['classifier_norm']:.2f} | {top1:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the schedule to run")
    parser.add_argument("--work", type=Path, default=compare.REPO.parent / "mtkdrl_compare")
    parser.add_argument("--out", default=str(compare.REPO / "docs" / "results" / "collapse"))
    args = parser.parse_args()
    os.environ.update(compare.OFFLINE)
    results = [run_variant(v, s, args.epochs, args.work) for s in args.seeds for v in args.variants]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "collapse.json").write_text(json.dumps(results, indent=2))
    markdown = (
        "Per seed (" + ", ".join(map(str, args.seeds)) + "), val top-1 on the 5,000 val images; "
        "loss terms are epoch-0 means over steps and seeds. `python bench/collapse.py`\n\n"
        + table(results, args.epochs)
        + "\n\n"
        + full_run_table(args.work, args.seeds)
        + "\n"
    )
    (out / "collapse.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
