"""`dkd`: DKD (Zhao et al., CVPR 2022), decoupled knowledge distillation from one or more teachers.

KD's KL is split into the target class's binary part (TCKD) and the part over the other classes
(NCKD), weighted α and β on their own: CE + min(epoch/warm-up, 1)·(α·TCKD + β·NCKD), T²-scaled,
averaged (1/K each) over several teachers, with no feature term by default. Any other method gets
the same loss with `method.logit_loss: dkd`. See docs/methods/dkd.md.
"""

from __future__ import annotations

import dataclasses

from ..errors import MtkdrlError
from ..logit_losses import DecoupledKDLoss, DKDOptions, LogitLoss
from . import register_method
from .base import DistillBatch, Method, TeacherTerms, TeacherWeights

DKD_CITATION = """@inproceedings{zhao2022decoupled,
  title     = {Decoupled Knowledge Distillation},
  author    = {Zhao, Borui and Cui, Quan and Song, Renjie and Qiu, Yiyu and Liang, Jiajun},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {11953--11962},
  year      = {2022},
  doi       = {10.1109/CVPR52688.2022.01165}
}"""


@register_method
class DecoupledKD(Method):
    """DKD against every teacher, weighted 1/K; the settings are `method.options` (DKD's)."""

    name = "dkd"
    description = "DKD (Zhao et al., CVPR 2022): target and non-target KL weighted apart"
    citation = DKD_CITATION
    Options = DKDOptions
    fixed_logit_loss = "dkd"

    @classmethod
    def logit_loss_for(cls, named: LogitLoss, options: DKDOptions) -> LogitLoss:
        """DKD with `method.options`' settings; a recipe's other logit loss is one line."""
        if named.name not in ("kl", "dkd"):
            raise MtkdrlError(
                f"method.logit_loss: method 'dkd' always uses the DKD logit loss, the recipe "
                f"names {named.name!r}; drop method.logit_loss (or use another method with it)"
            )
        if named.name == "dkd" and named.options not in (DKDOptions(), options):
            given = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(named.options).items())
            raise MtkdrlError(
                f"method.logit_loss: method 'dkd' takes DKD's settings from method.options "
                f"(alpha, beta, warmup_epochs), not from method.logit_loss ({given}); "
                "move them to method.options and drop method.logit_loss"
            )
        return DecoupledKDLoss(options, where="method.options")

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        equal = terms.logit.new_full(terms.logit.shape, 1.0 / batch.num_teachers)
        return TeacherWeights(logit=equal)
