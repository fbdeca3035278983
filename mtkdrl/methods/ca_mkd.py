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

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MtkdrlError
from . import register_method
from ._weighting import confidence_weights
from .base import DistillBatch, Method, MethodContext, NoOptions, TeacherTerms, TeacherWeights

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
    default_feature = "map"
    moved_options: ClassVar[dict[str, str]] = {
        "features": "write method.feature=none for false, leave it out for true"
    }
    tracked_weights = ("logit", "feature")
    min_teachers = 2
    min_teachers_reason = "its confidence term divides by K - 1"

    def __init__(self, context: MethodContext, options: NoOptions) -> None:
        super().__init__(context, options)
        feature = context.objective.feature
        if feature.stage is None:
            return
        names, heads = context.teacher_names, context.teacher_heads
        missing = [name for name, head in zip(names, heads, strict=True) if head is None]
        if missing:
            raise MtkdrlError(
                f"teachers: method 'ca_mkd' weighs the feature term through each teacher's "
                f"classifier head, and {missing[0]!r} has none that takes its pooled embedding; "
                "set method.feature=none for logit weights only"
            )
        fits = zip(names, context.feature_channels, context.embedding_dims, strict=True)
        for k, (name, channels, width) in enumerate(fits):
            if channels != width:
                raise MtkdrlError(
                    f"method.feature: method 'ca_mkd' feeds the student's map, adapted for each "
                    f"teacher, to that teacher's classifier head, which takes a {width}-wide "
                    f"embedding; feature term {feature.describe()} gives {name!r} (teachers.{k}) "
                    f"maps of {channels} channels; use a term whose maps have the embedding's "
                    "width (a CNN's last stage, stage -1, for most) or method.feature=none"
                )

    def head_logits(self, batch: DistillBatch) -> list[Tensor]:
        """Teacher k's head on the spatial mean of the student's map adapted for teacher k."""
        logits = []
        for k, adapted in enumerate(batch.adapted):
            pooled = adapted.detach().float().mean(dim=(2, 3))
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
        if not batch.adapted:
            return TeacherWeights(logit=logit)
        feature_ce = teacher_cross_entropy(self.head_logits(batch), batch.labels)
        return TeacherWeights(logit=logit, feature=confidence_weights(feature_ce) / k)
