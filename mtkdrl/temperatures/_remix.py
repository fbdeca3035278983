"""RLKD's entropy remix ("efficient exploration"): every few epochs, the training samples the
student finds easiest are blended, for one epoch, with samples it finds hard.

Each step records the student's predictive entropy (T = 1) of its samples. Before a remix epoch
the samples are scored by mean entropy · (n/40)^0.03 (n: how many times each was seen) and
ranked, highest first; the sample at rank 80 % + j is paired with the one at rank 10 % + j, and
during that epoch its image becomes ρ_j·(its own) + (1 − ρ_j)·(its partner's), ρ falling linearly
from 1.0 to 0.7 along the band, its label unchanged. See docs/temperatures.md#data-remix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

BANDS = ((0.8, 0.9), (0.1, 0.2))  # the blended samples' ranks, their partners' ranks
RHO_START, RHO_END = 1.0, 0.7


class EntropyRemix:
    """Per-sample entropy records and, for a remix epoch, each blended sample's partner and ρ.

    `reduce` (None in one process) averages a tensor over processes, so the ranking, like the
    records it comes from, is the same on every rank.
    """

    def __init__(self, num_samples: int, reduce: Callable[[Tensor], Tensor] | None) -> None:
        self.reduce = reduce
        self.entropy_sums = torch.zeros(num_samples, dtype=torch.float64)
        self.counts = torch.zeros(num_samples, dtype=torch.float64)
        self.partner = torch.full((num_samples,), -1, dtype=torch.long)  # -1: not blended
        self.rho = torch.ones(num_samples, dtype=torch.float64)
        self.blended = 0  # samples blended since the last `take_count`

    def record(self, indices: Tensor, student_logits: Tensor) -> None:
        """Add the entropy of each sample's prediction to its record."""
        log_p = student_logits.detach().float().log_softmax(dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1).double().cpu()
        rows = indices.cpu().long()
        if len(rows) and int(rows.max()) >= len(self.counts):  # size unknown when built
            self._grow(int(rows.max()) + 1)
        self.entropy_sums.index_add_(0, rows, entropy)
        self.counts.index_add_(0, rows, torch.ones_like(entropy))

    def _grow(self, size: int) -> None:
        extra = size - len(self.counts)
        self.entropy_sums = torch.cat([self.entropy_sums, self.entropy_sums.new_zeros(extra)])
        self.counts = torch.cat([self.counts, self.counts.new_zeros(extra)])
        self.partner = torch.cat([self.partner, self.partner.new_full((extra,), -1)])
        self.rho = torch.cat([self.rho, self.rho.new_ones(extra)])

    def plan(self) -> None:
        """Rank the samples seen so far and pair the 80–90 % band with the 10–20 % band."""
        sums, counts = self.entropy_sums, self.counts
        if self.reduce is not None:  # means over ranks: their ratio, and the ranking, are exact
            sums, counts = self.reduce(sums), self.reduce(counts)
        seen = counts.nonzero().flatten()
        n = counts[seen]
        scores = sums[seen] / n * (n / 40).pow(0.03)
        ranked = seen[scores.argsort(descending=True, stable=True)]
        (lo, hi), (partner_lo, _) = BANDS
        start, stop, partner_start = (int(f * len(ranked)) for f in (lo, hi, partner_lo))
        blended = ranked[start:stop]
        partners = ranked[partner_start : partner_start + len(blended)]
        self.clear()
        self.partner[blended] = partners
        steps = max(len(blended) - 1, 1)
        self.rho[blended] = (
            RHO_START
            - (RHO_START - RHO_END) * torch.arange(len(blended), dtype=torch.float64) / steps
        )

    def clear(self) -> None:
        """No sample blended (the epochs between remixes)."""
        self.partner.fill_(-1)
        self.rho.fill_(1.0)

    def blend(
        self, images: Tensor, indices: Tensor, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """The batch with its planned samples blended (`fetch(i)` gives sample i's image) and the
        mask of the rows that changed; the batch itself and None when none did."""
        rows = indices.cpu().long()
        partners = self.partner[rows]
        changed = partners >= 0
        if not changed.any():
            return images, None
        where = changed.nonzero().flatten()
        others = torch.stack([fetch(int(partners[r])) for r in where]).to(images)
        rho = self.rho[rows[where]].to(images).view(-1, *[1] * (images.dim() - 1))
        self.blended += len(where)
        images = images.clone()
        images[where.to(images.device)] = rho * images[where.to(images.device)] + (1 - rho) * others
        return images, changed.to(images.device)

    def take_count(self) -> int:
        """How many samples were blended since the last call (this process's)."""
        count, self.blended = self.blended, 0
        return count

    def state(self) -> dict[str, Any]:
        return {
            "blended": self.blended,
            "entropy_sums": self.entropy_sums,
            "counts": self.counts,
            "partner": self.partner,
            "rho": self.rho,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.blended = state["blended"]
        for key in ("entropy_sums", "counts", "partner", "rho"):
            getattr(self, key).copy_(state[key])
