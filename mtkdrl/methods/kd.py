"""`kd`: Hinton et al. (2015) distillation from one teacher, CE + α·T²·KL.

See docs/methods/kd.md.
"""

from __future__ import annotations

from ..errors import MtkdrlError
from . import register_method
from .base import DistillBatch, Method, MethodContext, NoOptions, TeacherTerms, TeacherWeights

HINTON_CITATION = """@article{hinton2015distilling,
  title   = {Distilling the Knowledge in a Neural Network},
  author  = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal = {arXiv preprint arXiv:1503.02531},
  year    = {2015}
}"""


@register_method
class HintonKD(Method):
    """Weight 1 on the single teacher; no feature term by default."""

    name = "kd"
    description = "KD (Hinton et al. 2015): one teacher's softened logits, T²-scaled KL"
    citation = HINTON_CITATION
    equal_logit_weights = True

    def __init__(self, context: MethodContext, options: NoOptions) -> None:
        if context.num_teachers != 1:
            raise MtkdrlError(
                f"teachers: method 'kd' distils from exactly one teacher, the recipe lists "
                f"{context.num_teachers}; use method 'avg' or 'mtkdrl' for several"
            )
        super().__init__(context, options)

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        return TeacherWeights(logit=terms.logit.new_ones(terms.logit.shape))
