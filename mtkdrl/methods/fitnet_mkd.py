"""`fitnet_mkd` (FitNet-MKD): AVER on the logits plus equal-weight FitNets hints at the 2nd stage.

L = CE + α (1/K) Σ_k ℓ_k + β (1/K) Σ_k MSE(ConvReg_k(f_s), f_k), with f the maps of the second
stage (`hint_stage: -2`, the second of a CIFAR ResNet's three stages, as the official
`hint_layer = 2`) and ConvReg FitNets' regressor; the paper's β is 100 (`method.beta: 100`). The
official code turns the hint losses into a fresh tensor, so they carry no gradient and its
regressors never train; here they do. See docs/methods/fitnet_mkd.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights

FITNETS_CITATION = """@inproceedings{romero2015fitnets,
  title     = {FitNets: Hints for Thin Deep Nets},
  author    = {Romero, Adriana and Ballas, Nicolas and Kahou, Samira Ebrahimi and
               Chassang, Antoine and Gatta, Carlo and Bengio, Yoshua},
  booktitle = {International Conference on Learning Representations},
  year      = {2015}
}"""


@dataclass
class FitNetOptions:
    """`hint_stage`: the `forward_intermediates` entry hinted, for student and teachers (CIFAR
    zoo: 0 the stem, 1..n the stages; negative counts from the last)."""

    hint_stage: int = -2


@register_method
class FitNetMKD(Method):
    """Equal weights 1/K on every teacher's logits and on every teacher's hint."""

    name = "fitnet_mkd"
    description = "FitNet-MKD: AVER on the logits plus equal-weight FitNets hints at the 2nd stage"
    citation = FITNETS_CITATION
    Options = FitNetOptions

    @property
    def uses_features(self) -> bool:
        return True

    @property
    def feature_stage(self) -> int:
        return self.options.hint_stage

    @property
    def adapter_kind(self) -> str:
        return "convreg"

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        equal = terms.logit.new_full(terms.logit.shape, 1.0 / batch.num_teachers)
        return TeacherWeights(logit=equal, feature=equal)
