"""Step time and peak memory of mtkdrl's steps against a bare PyTorch loop, side by side.

(a) `bare`: only the unavoidable work, written inline — M teacher forwards under no_grad, one
student forward/backward/SGD step on CE + α·mean_k KL_k + β·mean_k MSE_k (through the same
feature adapters); (b) mtkdrl's `avg` step; then every other shipped method through
`mtkdrl.step.train_step`. Every row is built by `mtkdrl.run.build_run(recipe, dry_run=True)`
(random weights, no data; the bare row uses that run's models with an optimizer of its own).
Time: every row is built in one process and stepped in turn, so drift on a shared machine falls
on all rows alike; the figure is the median step, and the mean is given beside it for methods
whose steps are not all alike (MMKD's meta step). Memory: the peak resident set of a fresh
process running one row alone. Ratios are to (a) and to (b), from this one run.

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
from collections.abc import Callable
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

# row -> (method name, method options, or options as a function of the batch size); `bare` is
# the inline loop
ROWS: dict[str, tuple[str, dict | Callable[[int], dict]]] = {
    "bare": ("avg", {}),
    "avg": ("avg", {}),
    "none": ("none", {}),
    "kd": ("kd", {}),
    "mtkdrl (official)": ("mtkdrl-official", {"warmup_epochs": 0}),
    "mtkdrl (reinforce)": ("mtkdrl-official", {"warmup_epochs": 0, "agent_update": "reinforce"}),
    "mtkdrl (our defaults)": ("mtkdrl", {"warmup_epochs": 0}),
    "ebkd": ("ebkd", {}),
    "aekd": ("aekd", {}),
    "ca_mkd": ("ca_mkd", {}),
    "dkd": ("dkd", {"warmup_epochs": 0}),
    "fitnet_mkd": ("fitnet_mkd", {}),
    "amtml": ("amtml", {}),
    # its feature-weight network is sized by the batch; a meta step every 5 steps
    "mmkd": ("mmkd", lambda batch: {"batch_size": batch, "buffer_size": 4 * batch}),
    "kd + rl (acting)": ("kd", {}),
    "kd + rl (learning)": ("kd", {}),
    "kd + curriculum": ("kd", {}),
    "avg + rl (learning)": ("avg", {}),
}
# rows with a temperature policy: its spec, and the row without it that the policy is timed against.
# RLKD acts on every batch after its warm-up but learns only in epochs e with (e + 1) % rl_every
# == 0 (one in 20): the rows are stepped at epoch 1, so rl_every 3 acts and 1 learns; the two
# bound its cost (the remix, every 20 epochs, reads 10 % of an epoch's samples once more)
TEMPERATURES: dict[str, tuple[dict, str]] = {
    "kd + rl (acting)": ({"policy": "rl", "warmup_epochs": 0, "rl_every": 3}, "kd"),
    "kd + rl (learning)": ({"policy": "rl", "warmup_epochs": 0, "rl_every": 1}, "kd"),
    "kd + curriculum": ({"policy": "curriculum"}, "kd"),
    "avg + rl (learning)": ({"policy": "rl", "warmup_epochs": 0, "rl_every": 1}, "avg"),
}


def recipe_dict(setup: str, row: str, batch_size: int, out: Path, precision: str = "no") -> dict:
    spec = SETUPS[setup]
    method, options = ROWS[row]
    options = options(batch_size) if callable(options) else options
    teachers = spec["teachers"][:1] if method == "kd" else spec["teachers"]
    return {
        "output_dir": str(out),
        "student": spec["student"],
        "teachers": teachers,
        "data": {"num_classes": spec["num_classes"], "batch_size": batch_size},
        "method": {
            "name": method,
            "options": options,
            **({"temperature": TEMPERATURES[row][0]} if row in TEMPERATURES else {}),
        },
        "optim": {"lr": 0.05, "schedule": "constant"},
        "train": {"mixed_precision": precision},
    }


def bare_step(run, optimizer, images, labels) -> None:
    """The inline reference: what any multi-teacher KD step must do, and nothing else."""
    method = run.recipe.method
    student = run.unwrapped_student()
    teachers = run.teachers
    with run.accelerator.autocast():  # the precision the mtkdrl rows step in
        with torch.no_grad():
            targets = []
            for teacher, adapt in zip(teachers.teachers, teachers.adapters, strict=True):
                final, maps = teacher.forward_intermediates(adapt(images), indices=1)
                targets.append((teacher.forward_head(final).float(), maps[-1].float()))
        final, maps = student.forward_intermediates(images, indices=1)
        logits = student.forward_head(final).float()
        adapted = [adapter(maps[-1]).float() for adapter in run.task.adapters]
    log_p = F.log_softmax(logits / method.temperature, dim=1)
    kd = sum(
        F.kl_div(
            log_p, F.log_softmax(t / method.temperature, 1), reduction="batchmean", log_target=True
        )
        for t, _ in targets
    ) * (method.temperature**2 / len(targets))
    feature = sum(
        F.mse_loss(mapped, target) for mapped, (_, target) in zip(adapted, targets, strict=True)
    ) / len(targets)
    loss = F.cross_entropy(logits, labels) + method.alpha * kd + method.beta * feature
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Row:
    """One row built and ready to step: a dry-run `Run` (or the bare loop on its models)."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        from mtkdrl import Recipe
        from mtkdrl.optim import build_optimizer
        from mtkdrl.run import build_run
        from mtkdrl.step import BatchProvider, train_step

        out = Path(args.work) / name.replace(" ", "_")
        recipe = Recipe.from_dict(
            recipe_dict(args.setup, name, args.batch_size, out, args.precision)
        )
        self.name, self.bare = name, name == "bare"
        self.run = build_run(recipe, dry_run=True)  # random weights, no data, already prepared
        self.run.task.set_epoch(1)  # epoch 1: past any warm-up, so the agent acts and learns
        self.provider = BatchProvider(None)  # dry run: no data for extra batches
        self.train_step = train_step
        if self.bare:  # an optimizer of its own over the same student and adapters
            params = [*self.run.student.parameters(), *self.run.task.adapters.parameters()]
            self.optimizer = build_optimizer(params, recipe.optim)
            self.run.student.train()
        channels, height, width = self.run.student_cfg["input_size"]
        generator, device = torch.Generator().manual_seed(0), self.run.accelerator.device
        images = torch.randn(args.batch_size, channels, height, width, generator=generator)
        labels = torch.randint(0, recipe.data.num_classes, (args.batch_size,), generator=generator)
        self.images, self.labels = images.to(device), labels.to(device)

    def step(self) -> float:
        started = time.perf_counter()
        if self.bare:
            bare_step(self.run, self.optimizer, self.images, self.labels)
        else:
            self.train_step(self.run, (self.images, self.labels, None), self.provider)
        if self.images.is_cuda:  # the GPU runs behind the host: wait for the step to finish
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def epoch_end(self) -> float:
        """The official agent replays its stored batches at each epoch's end: time that too."""
        started = time.perf_counter()
        if not self.bare:
            self.run.task.end_epoch(1)
        return time.perf_counter() - started


def child_time(args: argparse.Namespace) -> None:
    """Every row in this one process, stepped in turn (order rotating each step), so that drift
    on a shared machine falls on all rows alike; prints one JSON line of step times."""
    rows = [Row(name, args) for name in args.rows]
    for _ in range(args.warmup):
        for row in rows:
            row.step()
    times: dict[str, list[float]] = {row.name: [] for row in rows}
    for index in range(args.steps):
        shift = index % len(rows)
        for row in rows[shift:] + rows[:shift]:
            times[row.name].append(row.step())
    replay = {row.name: row.epoch_end() for row in rows}
    print(json.dumps({"times": times, "replay": replay}))


def child_memory(args: argparse.Namespace) -> None:
    """One row alone in this process: its peak resident set after warm-up and a few steps."""
    row = Row(args.row, args)
    for _ in range(args.warmup + args.memory_steps):
        row.step()
    row.epoch_end()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak": peak}))


def run_child(mode: str, args: argparse.Namespace, row: str | None = None) -> dict:
    command = [
        sys.executable, __file__, "--child", mode, "--setup", args.setup,
        "--batch-size", str(args.batch_size), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--memory-steps", str(args.memory_steps), "--work", str(args.work),
        "--precision", args.precision,
        "--rows", *([row] if row else args.rows),
    ]  # fmt: skip
    if row:
        command += ["--row", row]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{mode} {row or ''} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=sorted(SETUPS), default="cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=25, help="timed steps per row (25: 5 of MMKD's meta steps)"
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--memory-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--precision", default="no", choices=["no", "bf16", "auto"], help="for every row"
    )
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--work", default=f"/tmp/mtkdrl_step_overhead_{os.getpid()}")
    parser.add_argument("--child", choices=["time", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        (child_time if args.child == "time" else child_memory)(args)
        return
    timing = run_child("time", args)
    summary = {
        row: {
            "median_step_s": statistics.median(timing["times"][row]),
            "mean_step_s": statistics.mean(timing["times"][row]),
            "fastest_step_s": min(timing["times"][row]),
            "steps": len(timing["times"][row]),
            "epoch_end_replay_s": timing["replay"][row],
            "peak_rss_mb": run_child("memory", args, row)["peak"],
        }
        for row in args.rows
    }
    report = render(summary, args)
    print(report)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python", "bench/step_overhead.py", *sys.argv[1:]])
        args.markdown.write_text(f"`{command}`\n\n{report}\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": summary}
        args.json.write_text(json.dumps(record, indent=2))


def render(summary: dict, args: argparse.Namespace) -> str:
    from mtkdrl.temperatures.rl import RLOptions

    """The figures as a Markdown table with a line saying how they were measured."""
    lines = [
        f"setup {args.setup}, batch {args.batch_size}, {args.threads} threads, precision "
        f"{args.precision} (no: fp32); time: median "
        f"of {args.steps} steps per row, rows interleaved in one process (the mean too, for a "
        "method whose steps differ, e.g. MMKD's meta step every 5); memory: peak resident set "
        "of a process running that row alone",
        "",
        "| row | step (s) | vs bare | vs avg | mean step vs avg | vs the row without its "
        "temperature policy (median / fastest step) | peak RSS (MB) | vs bare | vs avg |",
        "|" + " --- |" * 9,
    ]
    bare, avg = summary.get("bare"), summary.get("avg")
    for row, s in summary.items():
        cells = [row, f"{s['median_step_s']:.4f}"]
        cells += [_ratio(s, bare, "median_step_s"), _ratio(s, avg, "median_step_s")]
        cells += [_ratio(s, avg, "mean_step_s")]
        base = summary.get(TEMPERATURES[row][1]) if row in TEMPERATURES else None
        cells += [
            "-"
            if base is None
            else f"{_ratio(s, base, 'median_step_s')} / {_ratio(s, base, 'fastest_step_s')}"
        ]
        cells += [f"{s['peak_rss_mb']:.0f}", _ratio(s, bare, "peak_rss_mb")]
        cells += [_ratio(s, avg, "peak_rss_mb")]
        lines.append("| " + " | ".join(cells) + " |")
    replays = {
        row: s["epoch_end_replay_s"] for row, s in summary.items() if s["epoch_end_replay_s"] > 0.01
    }
    if replays:
        lines += ["", "epoch-end agent replay (s, once per epoch): " + json.dumps(replays)]
    if {"kd", "kd + rl (acting)", "kd + rl (learning)"} <= summary.keys():
        acting = summary["kd + rl (acting)"]["median_step_s"]
        learning = summary["kd + rl (learning)"]["median_step_s"]
        every = RLOptions().rl_every  # the official interval
        mixed = ((every - 1) * acting + learning) / every / summary["kd"]["median_step_s"]
        lines += [
            "",
            f"kd + rl against kd after the warm-up, at the official schedule (acting {every - 1} "
            f"epochs, learning 1, of every {every}): {mixed:.3f}x",
        ]
    return "\n".join(lines)


def _ratio(row: dict, base: dict | None, key: str) -> str:
    return "-" if base is None else f"{row[key] / base[key]:.3f}x"


if __name__ == "__main__":
    main()
