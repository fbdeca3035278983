"""`ca_mkd`: CA-MKD (Zhang, Chen and Wang, ICASSP 2022), confidence-aware teacher weights.

A teacher that is confident and right on a sample (a low cross-entropy on its label) teaches it
more. Logit weights: w_k = (1 − softmax_k(CE(z_k, y))) / (K − 1), per sample. Feature weights:
the same formula on the cross-entropy of each teacher's own classifier head applied to the
student's map as adapted for that teacher, so a teacher weighs more where the student's
features, read by that teacher, already give the right class. The CA-MKD code divides both
weighted sums by B·K; the shared loss has no 1/K, so the weights here carry it. The confidence
term is shared with MTKD-RL's (`_weighting.py`). See docs/methods/ca_mkd.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MtkdrlError
from . import register_method
from ._weighting import confidence_weights
from .base import DistillBatch, Method, MethodContext, TeacherTerms, TeacherWeights

CA_MKD_CITATION = """@inproceedings{zhang2022confidence,
  title     = {Confidence-Aware Multi-Teacher Knowledge Distillation},
  author    = {Zhang, Hailin and Chen, Defang and Wang, Can},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing},
  pages     = {4498--4502},
  year      = {2022},
  doi       = {10.1109/ICASSP43922.2022.9747534},
  eprint    = {2201.00007},
  archivePrefix = {arXiv}
}"""


@dataclass
class CAMKDOptions:
    """CA-MKD settings (docs/methods/ca_mkd.md#options)."""

    features: bool = True  # the intermediate-feature term (the code's `--distill inter`)


def teacher_cross_entropy(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Each teacher's cross-entropy on the label at T = 1, per sample (B×K), detached."""
    return torch.stack(
        [F.cross_entropy(z.detach().float(), labels, reduction="none") for z in logits], dim=1
    )


@register_method
class ConfidenceAwareMKD(Method):
    """Per-sample confidence weights for the logit loss and, through each teacher's classifier
    head, for the feature loss."""

    name = "ca_mkd"
    description = (
        "CA-MKD (Zhang et al., ICASSP 2022): teachers weighted by their confidence on the label"
    )
    citation = CA_MKD_CITATION
    Options = CAMKDOptions
    tracked_weights = ("logit", "feature")
    min_teachers = 2
    min_teachers_reason = "its confidence term divides by K - 1"

    def __init__(self, context: MethodContext, options: CAMKDOptions) -> None:
        super().__init__(context, options)
        heads = zip(context.teacher_names, context.teacher_heads, strict=True)
        missing = [name for name, head in heads if head is None]
        if options.features and missing:
            raise MtkdrlError(
                f"teachers: method 'ca_mkd' weighs features through each teacher's classifier "
                f"head, and {missing[0]!r} has none that takes its pooled embedding; set "
                "method.options.features=false for logit weights only"
            )

    @property
    def uses_features(self) -> bool:
        return self.options.features

    def tracked_matrices(self, weights: TeacherWeights) -> dict[str, Tensor]:
        """The logit weights and, with `features`, the feature weights."""
        return {k: v for k, v in super().tracked_matrices(weights).items() if v is not None}

    def head_logits(self, batch: DistillBatch) -> list[Tensor]:
        """Teacher k's head on the spatial mean of the student's map adapted for teacher k."""
        logits = []
        for k, (adapted, teacher) in enumerate(zip(batch.adapted, batch.teachers, strict=True)):
            pooled = adapted.detach().float().mean(dim=(2, 3))
            if pooled.shape[1] != teacher.embedding.shape[1]:
                raise MtkdrlError(
                    f"teachers.{k}: method 'ca_mkd' feeds the adapted student map "
                    f"({pooled.shape[1]} channels) to the classifier head of "
                    f"{self.context.teacher_names[k]!r}, which takes its "
                    f"{teacher.embedding.shape[1]}-wide embedding (not its pooled last map); "
                    "set method.options.features=false for logit weights only"
                )
            head = self.context.head(k)
            weight = next(iter(head.parameters()), None)
            with torch.no_grad():
                logits.append(head(pooled if weight is None else pooled.to(weight.dtype)))
        return logits

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        k = batch.num_teachers
        logit_ce = teacher_cross_entropy([t.logits for t in batch.teachers], batch.labels)
        logit = confidence_weights(logit_ce) / k
        if not self.options.features:
            return TeacherWeights(logit=logit)
        feature_ce = teacher_cross_entropy(self.head_logits(batch), batch.labels)
        return TeacherWeights(logit=logit, feature=confidence_weights(feature_ce) / k)
