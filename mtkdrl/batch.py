"""What one step's loss is computed from and made of: every model's outputs for a batch, the
per-teacher terms before weighting, and a method's weights for them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .pool import ModelOutputs


@dataclass
class DistillBatch:
    """One batch as a method sees it: labels and every model's outputs (nothing computed yet).

    `adapted[k]` is the student's map (at the feature term's stage) through teacher k's adapter,
    in fp32 (empty without a feature term). Student outputs carry gradients. `indices` are the
    samples' positions in the training set (None for other data).
    """

    labels: Tensor
    student: ModelOutputs
    teachers: list[ModelOutputs]
    adapted: list[Tensor]
    indices: Tensor | None = None

    @property
    def num_teachers(self) -> int:
        return len(self.teachers)


@dataclass
class TeacherTerms:
    """Per-sample terms before weighting: CE (B), logit loss per teacher (B×K), feature term per
    teacher (B×K, None without one). `logit` and `feature` carry gradients into the student;
    detach before deriving weights."""

    ce: Tensor
    logit: Tensor
    feature: Tensor | None


@dataclass
class TeacherWeights:
    """Per-sample, per-teacher weights (B×K) for the logit and the feature term; a method that
    leaves `feature` None weights the feature term equally (1/K)."""

    logit: Tensor
    feature: Tensor | None = None
