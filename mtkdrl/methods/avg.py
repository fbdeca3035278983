"""`avg` (AVER): every teacher weighted 1/K, for the logit and the feature loss.

With `features: true` (the default) this is MTKD-RL's equal-weight baseline,
CE + (1/K) Σ KL_k + β (1/K) Σ MSE_k; with `features: false` it is the logit-only AVER of the
CA-MKD code. See docs/methods/avg.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights


@dataclass
class AverageOptions:
    features: bool = True


@register_method
class AverageTeachers(Method):
    """Equal weights over all teachers."""

    name = "avg"
    description = "AVER: every teacher weighted 1/K, for the logit and the feature loss"
    Options = AverageOptions
    equal_logit_weights = True

    @property
    def uses_features(self) -> bool:
        return self.options.features

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        equal = terms.logit.new_full(terms.logit.shape, 1.0 / batch.num_teachers)
        return TeacherWeights(logit=equal, feature=equal if self.uses_features else None)
