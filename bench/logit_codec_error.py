"""How far each teacher-cache logit codec moves the KD loss, side by side with its bytes per
entry: 1,000-class logits (a spread-out tail plus one peaked class, as in
tests/teacher_cache/test_logit_codecs.py), KL at T = 1 and T = 4, |codec - full| averaged
over the batch. Reads no data.

    python bench/logit_codec_error.py --topk 100 200 500
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mtkdrl.logit_losses import build_logit_loss
from mtkdrl.teacher_cache.logit_codecs import LOGIT_CODECS

CLASSES = 1000
SHAPES = [(1.0, 8.0), (2.0, 12.0), (3.0, 15.0)]  # (tail spread, peak) of the teacher's logits


def fixed_logits(seed: int, spread: float, peak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A student and a teacher: the teacher's tail ~ N(0, spread²) plus `peak` on one class."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, CLASSES, generator=generator) * spread
    teacher[torch.arange(64), torch.randint(0, CLASSES, (64,), generator=generator)] += peak
    student = 0.5 * teacher + spread * torch.randn(64, CLASSES, generator=generator)
    return student, teacher


def kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    labels = torch.zeros(len(student), dtype=torch.long)
    return float(build_logit_loss("kl")(student, teacher, labels, temperature, 0).mean())


def round_trip(codec: str, logits: torch.Tensor, topk: int) -> torch.Tensor:
    packed = LOGIT_CODECS[codec].pack(logits, topk)
    unpacked = {name: torch.from_numpy(array) for name, array in packed.items()}
    return LOGIT_CODECS[codec].unpack(unpacked, CLASSES, topk)


def entry_bytes(codec: str, topk: int) -> int:
    arrays = LOGIT_CODECS[codec].arrays(CLASSES, topk)
    return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in arrays.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topk", type=int, nargs="+", default=[100, 200, 500])
    args = parser.parse_args()
    rows = [("float32", 0), ("uint8", 0), *(("topk", k) for k in args.topk)]
    header = "codec        bytes  " + "  ".join(f"s{s:g}/p{p:g} T=1  T=4" for s, p in SHAPES)
    print(header)
    for codec, topk in rows:
        cells = []
        for seed, (spread, peak) in enumerate(SHAPES):
            student, teacher = fixed_logits(seed, spread, peak)
            rebuilt = round_trip(codec, teacher, topk)
            for temperature in (1.0, 4.0):
                full = kd(student, teacher, temperature)
                cells.append(f"{abs(kd(student, rebuilt, temperature) - full):.1e}")
        name = f"top-{topk}" if topk else codec
        pairs = ["  ".join(cells[i : i + 2]) for i in range(0, len(cells), 2)]
        print(f"{name:<10} {entry_bytes(codec, topk):>7}  " + "  ".join(f"{p:>15}" for p in pairs))


if __name__ == "__main__":
    main()
