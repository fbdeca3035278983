"""`ebkd`: EBKD (Kwon et al., ICASSP 2020), per-sample teacher weights from prediction entropy.

A teacher that is sure of a sample (a low-entropy softmax) should teach it more than one that is
unsure. With H_k the entropy of teacher k's softmax at T = 1, the CA-MKD code that serves as the
reference baseline weights teacher k by w_k = 1 − H_k / Σ_j H_j (the weights sum to K − 1) and
divides the weighted KL sum by B·K. The shared loss has no 1/K of its own, so the weights here
carry it: w_k / K, and the batch mean of CE + α Σ_k (w_k / K)·KL_k is the official loss exactly.
The weights are for the logits; no labels are needed. See docs/methods/ebkd.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MtkdrlError
from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights

EBKD_CITATION = """@inproceedings{kwon2020adaptive,
  title     = {Adaptive Knowledge Distillation Based on Entropy},
  author    = {Kwon, Kisoo and Na, Hwidong and Lee, Hoshik and Kim, Nam Soo},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing},
  pages     = {7409--7413},
  year      = {2020},
  doi       = {10.1109/ICASSP40776.2020.9054698}
}"""


@dataclass
class EBKDOptions:
    """EBKD settings (docs/methods/ebkd.md#options)."""

    entropy_temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.entropy_temperature) and self.entropy_temperature > 0):
            raise MtkdrlError(
                "method.options.entropy_temperature: expected a positive number (the temperature "
                f"of the teacher softmax whose entropy sets the weights; 1 in the reference "
                f"code), got {self.entropy_temperature}"
            )


def softmax_entropy(logits: Tensor, temperature: float) -> Tensor:
    """H = −Σ_c p_c log p_c of softmax(logits / T), per sample (B,), in fp32; a class whose
    probability underflows to 0 adds 0 (the log comes from log_softmax, so never 0·log 0)."""
    log_p = F.log_softmax(logits.detach().float() / temperature, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def entropy_weights(teacher_logits: list[Tensor], temperature: float) -> Tensor:
    """EBKD's weights before the 1/K: w_k = 1 − H_k / Σ_j H_j per sample (B×K, rows sum to
    K − 1). Where every teacher's entropy is 0 (all one-hot) each share H_k / Σ_j H_j is taken
    as 1/K, the value it has whenever the entropies are equal, so w_k = 1 − 1/K."""
    entropy = torch.stack([softmax_entropy(z, temperature) for z in teacher_logits], dim=1)
    total = entropy.sum(dim=1, keepdim=True)
    share = entropy / total.clamp_min(torch.finfo(total.dtype).tiny)
    share = torch.where(total > 0, share, 1.0 / len(teacher_logits))
    return 1.0 - share


@register_method
class EntropyKD(Method):
    """Per-sample weights (1 − H_k / Σ_j H_j) / K from the teachers' entropies, for the logits (a
    feature term, if the recipe picks one, is weighted 1/K)."""

    name = "ebkd"
    description = "EBKD (Kwon et al., ICASSP 2020): sure (low-entropy) teachers weigh more"
    citation = EBKD_CITATION
    Options = EBKDOptions
    tracked_weights = ("logit",)
    min_teachers = 2
    min_teachers_reason = "one teacher's weight 1 − H/H is 0"

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        logits = [t.logits for t in batch.teachers]
        weights = entropy_weights(logits, self.options.entropy_temperature)
        return TeacherWeights(logit=weights / batch.num_teachers)
