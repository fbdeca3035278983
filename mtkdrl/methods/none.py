"""`none`: the student alone, trained with cross-entropy only (the no-KD reference).

See docs/methods/none.md.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from . import register_method
from .base import DistillBatch, Method


@register_method
class NoDistillation(Method):
    """No teacher is run; the loss is the student's CE."""

    name = "none"
    description = "no distillation: the student trained alone with cross-entropy"
    uses_teachers = False

    def forward(self, batch: DistillBatch, epoch: int) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(batch.student.logits.float(), batch.labels, reduction="none")}
