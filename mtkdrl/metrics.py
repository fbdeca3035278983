"""Top-1/top-5 accuracy of a classifier over a loader, gathered across processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from timm.utils import accuracy
from torch import Tensor, nn


def _correct_counts(logits: Tensor, labels: Tensor) -> Tensor:
    """How many samples have their label in the top 1 and the top 5 (top C when C < 5).

    timm's `accuracy` gives per-batch percentages; they become exact integer counts again, so the
    totals over batches (and processes) stay exact.
    """
    count = labels.numel()
    top1, top5 = accuracy(logits, labels, topk=(1, min(5, logits.shape[1])))
    return torch.stack([top1, top5]).double().mul(count / 100.0).round()


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module | Callable[[Tensor], Tensor],
    batches: Iterable,
    device: torch.device,
    gather: Callable[[Tensor], Tensor] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Accuracy (in percent) and mean CE of `model` over `(images, labels, ...)` batches."""
    if isinstance(model, nn.Module):
        model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    for images, labels, *_ in batches:
        images, labels = images.to(device), labels.to(device)
        with autocast():
            logits = model(images)
        logits = logits.float()
        if gather is not None:
            logits, labels = gather((logits, labels))
        if labels.numel() == 0:
            continue
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        count = torch.tensor(labels.numel(), device=device)
        extra = torch.stack([loss, count]).to(torch.float64)
        totals += torch.cat([_correct_counts(logits, labels), extra])
    top1, top5, loss, count = totals.tolist()
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": 0.0, "count": 0}
    return {
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count,
        "loss": loss / count,
        "count": int(count),
    }
