"""`none`: the student alone, trained with cross-entropy only (the no-KD reference)."""

from __future__ import annotations

from . import register_method
from .base import DistillBatch, TeacherWeights, WeightingStrategy


@register_method
class NoDistillation(WeightingStrategy):
    """No teacher is run; the loss is the student's CE."""

    name = "none"
    uses_teachers = False

    def weights(self, batch: DistillBatch, epoch: int) -> TeacherWeights:
        return TeacherWeights(logit=batch.kl.new_zeros(batch.kl.shape))
