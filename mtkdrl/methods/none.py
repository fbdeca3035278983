"""`none`: the student alone, trained with cross-entropy only (the no-KD reference).

See docs/methods/none.md.
"""

from __future__ import annotations

from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights


@register_method
class NoDistillation(Method):
    """No teacher is run, so the objective is the student's CE alone."""

    name = "none"
    description = "no distillation: the student trained alone with cross-entropy"
    uses_teachers = False

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        return TeacherWeights(logit=terms.logit.new_ones(terms.logit.shape))
