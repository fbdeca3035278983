"""`avg` (AVER): every teacher weighted 1/K, for the logit and the feature loss.

With `features: true` (the default) this is MTKD-RL's equal-weight baseline,
CE + (1/K) Σ KL_k + β (1/K) Σ MSE_k; with `features: false` it is the logit-only AVER of the
CA-MKD code.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .base import DistillBatch, TeacherWeights, WeightingStrategy


@dataclass
class AverageOptions:
    features: bool = True


@register_method
class AverageTeachers(WeightingStrategy):
    """Equal weights over all teachers."""

    name = "avg"
    Options = AverageOptions

    @property
    def uses_features(self) -> bool:
        return self.options.features

    def weights(self, batch: DistillBatch, epoch: int) -> TeacherWeights:
        equal = batch.kl.new_full(batch.kl.shape, 1.0 / batch.num_teachers)
        return TeacherWeights(logit=equal, feature=equal if self.uses_features else None)
