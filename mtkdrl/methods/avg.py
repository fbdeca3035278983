"""`avg` (AVER): every teacher weighted 1/K, for the logit and the feature term.

With its default feature term (`map`) this is MTKD-RL's equal-weight baseline,
CE + (1/K) Σ KL_k + β (1/K) Σ MSE_k; with `method.feature: none` it is the logit-only AVER of
the CA-MKD code, and with `hint` FitNet-MKD (the `fitnet_mkd` preset). See docs/methods/avg.md.
"""

from __future__ import annotations

from typing import ClassVar

from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights


@register_method
class AverageTeachers(Method):
    """Equal weights over all teachers."""

    name = "avg"
    description = "AVER: every teacher weighted 1/K, for the logit and the feature term"
    default_feature = "map"
    moved_options: ClassVar[dict[str, str]] = {
        "features": "write method.feature=none for false, leave it out for true"
    }
    equal_logit_weights = True

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        equal = terms.logit.new_full(terms.logit.shape, 1.0 / batch.num_teachers)
        return TeacherWeights(logit=equal, feature=equal)
