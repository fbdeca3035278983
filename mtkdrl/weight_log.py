"""Per-epoch figures of a method's teacher weights: mean and spread per teacher, and (optionally)
the mean per class, which shows whether a method weights a teacher down where it is wrong. The
loop keeps them (`WeightLog`), so a method only says which matrices to track.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class WeightSums:
    """An epoch's sums of each tracked B×K weight matrix, kept on the device until `figures`.

    Per kind: Σw and Σw² per teacher and, when `num_classes` is set, Σw per (class, teacher),
    as one (2 + C)×K tensor; `counts` holds the sample count, then the count per class. `add`
    returns new sums, so a method's look-ahead can restore the old ones by reference.
    """

    num_teachers: int
    num_classes: int = 0  # 0: no per-class sums
    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: Tensor | None = None

    def add(self, matrices: dict[str, Tensor], labels: Tensor) -> WeightSums:
        """These sums plus one batch's weight matrices (B×K each) for samples with `labels`."""
        counts = torch.zeros(1 + self.num_classes, device=labels.device)
        counts[0] = labels.shape[0]
        if self.num_classes:
            counts[1:].index_add_(0, labels, torch.ones(labels.shape[0], device=labels.device))
        sums = dict(self.sums)
        for kind, matrix in matrices.items():
            matrix = matrix.detach().float()
            rows = [matrix.sum(0, keepdim=True), matrix.pow(2).sum(0, keepdim=True)]
            if self.num_classes:
                rows.append(matrix.new_zeros(self.num_classes, self.num_teachers))
                rows[-1].index_add_(0, labels, matrix)
            stats = torch.cat(rows, dim=0)
            sums[kind] = stats if kind not in sums else sums[kind].to(stats.device) + stats
        if self.counts is not None:
            counts = self.counts.to(counts.device) + counts
        return WeightSums(self.num_teachers, self.num_classes, sums, counts)

    def figures(
        self, gather: Callable[[Tensor], Tensor] | None = None
    ) -> dict[str, float | list[list[float | None]]]:
        """`w_<kind>_mean/<k>` and `w_<kind>_std/<k>` over every process's samples and, with
        classes, `w_<kind>_by_class`: C lists of K means (None for a class with no sample)."""
        if self.counts is None:
            return {}
        kinds, classes = list(self.sums), self.num_classes
        packed = torch.cat([self.counts, *(self.sums[k].flatten() for k in kinds)])
        if gather is not None:
            packed = gather(packed.unsqueeze(0)).sum(0)
        counts = packed[: 1 + classes]
        sums = packed[1 + classes :].reshape(len(kinds), 2 + classes, self.num_teachers)
        total = counts[0].clamp_min(1)
        figures: dict[str, float | list[list[float | None]]] = {}
        for kind, stats in zip(kinds, sums, strict=True):
            mean = stats[0] / total
            spread = (stats[1] / total - mean.pow(2)).clamp_min(0).sqrt()
            for k in range(self.num_teachers):
                figures[f"w_{kind}_mean/{k}"] = float(mean[k])
                figures[f"w_{kind}_std/{k}"] = float(spread[k])
            if classes:
                per_class = (stats[2:] / counts[1:].unsqueeze(1)).tolist()
                figures[f"w_{kind}_by_class"] = [
                    [None if math.isnan(w) else w for w in row] for row in per_class
                ]
        return figures

    def state(self) -> dict:
        """Tensors and plain values, for the run's checkpoint."""
        return {"sums": dict(self.sums), "counts": self.counts}

    def with_state(self, state: dict) -> WeightSums:
        return WeightSums(self.num_teachers, self.num_classes, dict(state["sums"]), state["counts"])


class WeightLog:
    """The epoch's `WeightSums`, added to every step and read (then reset) at the epoch's end.

    `gather` concatenates over processes (None in one), so the figures cover every sample.
    """

    def __init__(
        self,
        num_teachers: int,
        num_classes: int = 0,
        gather: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.num_teachers, self.num_classes, self.gather = num_teachers, num_classes, gather
        self.sums = WeightSums(num_teachers, num_classes)

    def add(self, matrices: dict[str, Tensor], labels: Tensor) -> None:
        """Add one batch's weight matrices (B×K each, by kind)."""
        if matrices:
            self.sums = self.sums.add(matrices, labels)

    def figures(self) -> dict[str, float | list]:
        """`w_<kind>_mean/<k>`, `w_<kind>_std/<k>` (and by class, if asked) over the epoch's
        samples on all processes; the next epoch starts from zero."""
        figures = self.sums.figures(self.gather)
        self.sums = WeightSums(self.num_teachers, self.num_classes)
        return figures

    def state(self) -> dict:
        return self.sums.state()

    def load_state(self, state: dict) -> None:
        self.sums = self.sums.with_state(state)
