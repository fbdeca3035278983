"""`fitnet_mkd` (FitNet-MKD): `avg` with FitNets' hints at the second stage, a preset.

L = CE + α (1/K) Σ_k ℓ_k + β (1/K) Σ_k MSE(ConvReg_k(f_s), f_k), with f the maps of the second
stage (the `hint` feature term at stage -2, the second of a CIFAR ResNet's three stages, as the
official `hint_layer = 2`); the paper's β is 100 (`method.beta: 100`). The official code turns
the hint losses into a fresh tensor, so they carry no gradient and its regressors never train;
here they do. The same run is `method: {name: avg, feature: {kind: hint, stage: -2}}`. See
docs/methods/fitnet_mkd.md.
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import register_method
from .avg import AverageTeachers

FITNETS_CITATION = """@inproceedings{romero2015fitnets,
  title     = {FitNets: Hints for Thin Deep Nets},
  author    = {Romero, Adriana and Ballas, Nicolas and Kahou, Samira Ebrahimi and
               Chassang, Antoine and Gatta, Carlo and Bengio, Yoshua},
  booktitle = {International Conference on Learning Representations},
  year      = {2015}
}"""


@register_method
class FitNetMKD(AverageTeachers):
    """Equal weights 1/K on every teacher's logits and hints: `avg` with the `hint` term."""

    name = "fitnet_mkd"
    description = "FitNet-MKD: AVER on the logits plus equal-weight FitNets hints at the 2nd stage"
    citation = FITNETS_CITATION
    default_feature: ClassVar[dict[str, Any]] = {"kind": "hint", "stage": -2}
    moved_options: ClassVar[dict[str, str]] = {
        "hint_stage": "write method.feature={kind: hint, stage: S}"
    }
