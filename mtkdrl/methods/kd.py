"""`kd`: Hinton et al. (2015) distillation from one teacher: CE + alpha·T²·KL."""

from __future__ import annotations

from ..errors import MtkdrlError
from . import register_method
from .base import DistillBatch, MethodContext, NoOptions, TeacherWeights, WeightingStrategy


@register_method
class HintonKD(WeightingStrategy):
    """Weight 1 on the single teacher's logits; no feature loss."""

    name = "kd"

    def __init__(self, context: MethodContext, options: NoOptions) -> None:
        if context.num_teachers != 1:
            raise MtkdrlError(
                f"teachers: method 'kd' distils from exactly one teacher, the recipe lists "
                f"{context.num_teachers}; use method 'avg' or 'mtkdrl' for several"
            )
        super().__init__(context, options)

    def weights(self, batch: DistillBatch, epoch: int) -> TeacherWeights:
        return TeacherWeights(logit=batch.kl.new_ones(batch.kl.shape))
