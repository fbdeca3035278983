"""Step time and peak memory of mtkdrl's steps against a bare PyTorch loop, side by side.

(a) `bare`: only the unavoidable work, written inline — M teacher forwards under no_grad, one
student forward/backward/SGD step on CE + α·mean_k KL_k + β·mean_k MSE_k (through the same
feature adapters); (b) mtkdrl's `avg` step; then every other shipped method through
`Distiller.train_step`. Each (row, round) runs in a fresh process, rounds alternate the rows so
that drift on a shared machine spreads over all of them; time is the median step over every
round's timed steps, memory the process's peak resident set (and its growth during the steps).
Ratios are to (a) and to (b), from this one run.

    python bench/step_overhead.py --setup cifar10 --batch-size 128
    python bench/step_overhead.py --setup timm224 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "teachers"

SETUPS: dict[str, dict] = {
    "cifar10": {
        "student": {"name": "resnet20_cifar"},
        "teachers": [
            {
                "name": f"resnet{d}_cifar",
                "checkpoint": str(SHARED / f"cifar10_resnet{d}.safetensors"),
            }
            for d in (20, 32, 44, 56)
        ],
        "num_classes": 10,
    },
    "timm224": {
        "student": {"name": "resnet18"},
        "teachers": [
            {"name": "resnet50"},
            {"name": "convnext_tiny"},
            {"name": "vit_small_patch16_224"},
        ],
        "num_classes": 1000,
    },
}

# row -> (method name, method options); `bare` is the inline loop
ROWS: dict[str, tuple[str, dict]] = {
    "bare": ("avg", {}),
    "avg": ("avg", {}),
    "none": ("none", {}),
    "kd": ("kd", {}),
    "mtkdrl (official)": ("mtkdrl", {"warmup_epochs": 0}),
    "mtkdrl (reinforce)": ("mtkdrl", {"warmup_epochs": 0, "agent_update": "reinforce"}),
}


def recipe_dict(setup: str, row: str, batch_size: int, out: Path) -> dict:
    spec = SETUPS[setup]
    method, options = ROWS[row]
    teachers = spec["teachers"][:1] if method == "kd" else spec["teachers"]
    return {
        "output_dir": str(out),
        "student": spec["student"],
        "teachers": teachers,
        "data": {"num_classes": spec["num_classes"], "batch_size": batch_size},
        "method": {"name": method, "options": options},
        "optim": {"lr": 0.05, "schedule": "constant"},
        "train": {"mixed_precision": "no"},
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bare_step(distiller, optimizer, images, labels) -> None:
    """The inline reference: what any multi-teacher KD step must do, and nothing else."""
    method = distiller.recipe.method
    student = distiller.student.model
    teachers = distiller.teachers
    with torch.no_grad():
        targets = []
        for teacher, adapt in zip(teachers.teachers, teachers.adapters, strict=True):
            final, maps = teacher.forward_intermediates(adapt(images), indices=1)
            targets.append((teacher.forward_head(final), maps[-1]))
    final, maps = student.forward_intermediates(images, indices=1)
    logits = student.forward_head(final)
    log_p = F.log_softmax(logits / method.temperature, dim=1)
    kd = sum(
        F.kl_div(
            log_p, F.log_softmax(t / method.temperature, 1), reduction="batchmean", log_target=True
        )
        for t, _ in targets
    ) * (method.temperature**2 / len(targets))
    feature = sum(
        F.mse_loss(adapter(maps[-1]), target)
        for adapter, (_, target) in zip(distiller.adapters, targets, strict=True)
    ) / len(targets)
    loss = F.cross_entropy(logits, labels) + method.alpha * kd + method.beta * feature
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def child(args: argparse.Namespace) -> None:
    """One row, one round: build, warm up, time `--steps` steps; print a JSON line."""
    from mtkdrl import Recipe
    from mtkdrl.distiller import Distiller
    from mtkdrl.optim import build_optimizer

    torch.set_num_threads(args.threads)
    recipe = Recipe.from_dict(recipe_dict(args.setup, args.row, args.batch_size, Path(args.out)))
    distiller = Distiller(recipe, dry_run=True)
    distiller.build()
    bare = args.row == "bare"
    if bare:
        params = [*distiller.student.parameters(), *distiller.adapters.parameters()]
        optimizer = build_optimizer(params, recipe.optim)
        distiller.student.train()
    else:
        distiller.prepare_without_data()
    channels, height, width = distiller.student_cfg["input_size"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, channels, height, width, generator=generator)
    labels = torch.randint(0, recipe.data.num_classes, (args.batch_size,), generator=generator)
    epoch = 1  # past any warm-up: the agent acts and learns

    def step() -> None:
        if bare:
            bare_step(distiller, optimizer, images, labels)
        else:
            distiller.train_step(images, labels, None, epoch)

    for _ in range(args.warmup):
        step()
    before = rss_mb()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    replay = 0.0
    if not bare:  # the official agent replays its stored batches at each epoch's end
        started = time.perf_counter()
        distiller.method.end_epoch(epoch)
        replay = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "rss_before": before, "peak": peak, "replay": replay}))


def run_row(row: str, args: argparse.Namespace, work: Path) -> dict:
    command = [
        sys.executable, __file__, "--child", "--setup", args.setup, "--row", row,
        "--batch-size", str(args.batch_size), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--out", str(work / row.replace(" ", "_")),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=sorted(SETUPS), default="cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path("/tmp") / f"mtkdrl_step_overhead_{os.getpid()}"
    results: dict[str, dict] = {
        row: {"times": [], "peaks": [], "growth": [], "replay": []} for row in args.rows
    }
    for _ in range(args.rounds):
        for row in args.rows:
            figures = run_row(row, args, work)
            results[row]["times"] += figures["times"]
            results[row]["peaks"].append(figures["peak"])
            results[row]["growth"].append(figures["peak"] - figures["rss_before"])
            results[row]["replay"].append(figures["replay"])
    summary = {
        row: {
            "median_step_s": statistics.median(r["times"]),
            "steps": len(r["times"]),
            "peak_rss_mb": max(r["peaks"]),
            "step_growth_mb": max(r["growth"]),
            "epoch_end_replay_s": max(r["replay"]),
        }
        for row, r in results.items()
    }
    print(
        f"setup {args.setup}, batch {args.batch_size}, {args.threads} threads, fp32, "
        f"{args.rounds} rounds x {args.steps} timed steps per row (median)"
    )
    header = (
        "| row | step (s) | vs bare | vs avg | peak RSS (MB) | vs bare | vs avg "
        "| RSS growth in steps (MB) | vs bare | vs avg |"
    )
    print(header + "\n|" + " --- |" * 10)
    bare, avg = summary.get("bare"), summary.get("avg")
    for row, s in summary.items():
        cells = [row, f"{s['median_step_s']:.4f}"]
        for key in ("median_step_s",):
            cells += [_ratio(s, bare, key), _ratio(s, avg, key)]
        cells += [
            f"{s['peak_rss_mb']:.0f}",
            _ratio(s, bare, "peak_rss_mb"),
            _ratio(s, avg, "peak_rss_mb"),
        ]
        cells += [
            f"{s['step_growth_mb']:.0f}",
            _ratio(s, bare, "step_growth_mb"),
            _ratio(s, avg, "step_growth_mb"),
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": summary}, indent=2)
        )


def _ratio(row: dict, base: dict | None, key: str) -> str:
    return "-" if base is None else f"{row[key] / base[key]:.3f}x"


if __name__ == "__main__":
    main()
