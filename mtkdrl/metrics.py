"""Top-1/top-5 accuracy of a classifier over a loader, gathered across processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn


def topk_correct(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """How many samples have their label among the top-k predictions, for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(labels.unsqueeze(1))
    return [hits[:, :k].any(dim=1).sum() for k in ks]


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
        top1, top5 = topk_correct(logits, labels)
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        count = torch.tensor(labels.numel(), device=device)
        totals += torch.stack([top1, top5, loss, count]).to(torch.float64)
    top1, top5, loss, count = totals.tolist()
    if count == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": 0.0, "count": 0}
    return {
        "top1": 100.0 * top1 / count,
        "top5": 100.0 * top5 / count,
        "loss": loss / count,
        "count": int(count),
    }
