"""One full-data CIFAR-10 epoch (all 50,000 shared training images) with the data resident on the
accelerator: decoded once, augmented a batch at a time on the device (CIFAR's batched crop and
flip, the numbers of the per-image path), so the host does no per-image work. Rows, each one
epoch in this process: the student alone (CE only, an inline step) and `avg` with the four shared
teachers run live, through mtkdrl's `train_step`. Prints images/s and the ratio between them.

    python bench/gpu_epoch.py --batch-size 256 --precision auto
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mtkdrl import Recipe
from mtkdrl.data import sample_seed
from mtkdrl.run import build_run
from mtkdrl.step import BatchProvider, train_step

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "cifar10_resnet20_4teachers.yaml"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"])
    parser.add_argument("--subset", type=int, help="fewer training images (a quick try)")
    args = parser.parse_args()
    overrides = [
        f"data.batch_size={args.batch_size}",
        "data.num_workers=0",
        "data.cache_decoded=true",
        "teacher_cache.mode=off",
        "train.eval_teachers=false",
        f"train.mixed_precision={args.precision}",
        "output_dir=/tmp/mtkdrl_gpu_epoch",
        *([f"data.train_subset={args.subset}"] if args.subset else ["data.train_subset=null"]),
    ]
    run = build_run(Recipe.from_yaml(RECIPE, overrides), overwrite=True)
    device, dataset = run.accelerator.device, run.data.train_set
    started = time.perf_counter()
    padded = dataset.transform.stack(dataset.decoded).to(device)
    labels = torch.from_numpy(dataset.labels).to(device)
    print(
        f"{len(dataset)} images on {device} ({padded.numel() / 2**20:.0f} MB uint8) in "
        f"{time.perf_counter() - started:.1f} s; precision {run.precision.label} "
        f"({run.precision.reason}); batch {args.batch_size}"
    )
    provider = BatchProvider(None)

    def student_alone(images, targets):
        with run.accelerator.autocast():
            logits = run.task.run_student(images).logits
        loss = F.cross_entropy(logits.float(), targets)
        run.optimizer.zero_grad(set_to_none=True)
        run.accelerator.backward(loss)
        run.optimizer.step()

    def with_teachers(images, targets):
        train_step(run, (images, targets, None), provider)

    rates = {}
    for epoch, (row, step) in enumerate(
        [("student alone", student_alone), ("avg, 4 live teachers", with_teachers)]
    ):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(epoch))
        synchronize(device)
        started = time.perf_counter()
        for first in range(0, len(order) - args.batch_size + 1, args.batch_size):
            rows = order[first : first + args.batch_size]
            seeds = [sample_seed(run.recipe.seed, epoch, int(i)) for i in rows]
            images = dataset.transform.batch(padded, rows, seeds)
            step(images, labels[rows.to(device)])
        synchronize(device)
        seconds = time.perf_counter() - started
        rates[row] = len(order) // args.batch_size * args.batch_size / seconds
        print(f"{row}: {seconds:.1f} s, {rates[row]:.0f} images/s", flush=True)
    base = rates["student alone"]
    for row, rate in rates.items():
        print(f"| {row} | {rate:.0f} images/s | epoch {base / rate:.2f}x the student alone |")


if __name__ == "__main__":
    main()
