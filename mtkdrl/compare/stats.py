"""Paired differences over seeds and their 95 % t-intervals: how sure a comparison is."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Student's t, two-sided 95 %, by degrees of freedom; beyond 30, 1.96 + 2.4/df (within 0.003)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip


def t975(degrees: int) -> float:
    """The 97.5 % quantile of Student's t with `degrees` degrees of freedom."""
    return T975[degrees - 1] if degrees <= len(T975) else 1.96 + 2.4 / degrees


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its 95 % t-interval (none from a single seed)."""

    mean: float
    low: float | None
    high: float | None
    seeds: int

    @classmethod
    def of(cls, values: list[float]) -> Interval:
        mean = statistics.mean(values)
        if len(values) < 2:
            return cls(mean, None, None, len(values))
        half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return cls(mean, mean - half, mean + half, len(values))

    @property
    def measured(self) -> bool:
        """Whether there is an interval at all (two seeds or more)."""
        return self.low is not None

    @property
    def includes_zero(self) -> bool:
        """A tie: an interval that reaches 0. One seed has no interval, so it is no tie either:
        it is not decided (`measured` is False)."""
        return self.measured and self.low <= 0 <= self.high

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f} (1 seed, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired(ours: dict[int, float], theirs: dict[int, float]) -> Interval | None:
    """`ours - theirs` seed by seed, over the seeds both have; None when they share none."""
    seeds = sorted(ours.keys() & theirs.keys())
    return Interval.of([ours[s] - theirs[s] for s in seeds]) if seeds else None
