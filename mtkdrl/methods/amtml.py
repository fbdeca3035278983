"""`amtml` (AMTML-KD, Liu, Zhang and Wang, Neurocomputing 2020): learned per-sample teacher weights
from the student's pooled feature, one integrated soft target, and normalised hints.

With e the student's pooled embedding (B×C_s, detached), learnable θ (K×C_s) and W (C_s), the
weights are μ = softmax_k((e ⊙ θ_k)·W). The logit term distils from the integrated soft target,
α·T²·KL(Σ_k μ_k softmax(z_k/T) ‖ softmax(z_s/T)), so the method replaces the shared logit term;
the feature term is the objective's, averaged over teachers: by default AMTML's hints,
β (1/K) Σ_k ‖n(A_k f_s) − n(f_k)‖², with A_k a bias-free 1×1 conv and n the L2 normalisation of
a sample's whole map, so each hint lies in [0, 4]. θ and W learn from the student's own loss
(their gradient reaches them through μ) with an optimizer of their own. See
docs/methods/amtml.md for what follows the official code and what is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MtkdrlError
from . import register_method
from .base import DistillBatch, Method, MethodContext, StudentAccess, TeacherWeights

AMTML_CITATION = """@article{liu2020adaptive,
  title   = {Adaptive multi-teacher multi-level knowledge distillation},
  author  = {Liu, Yuang and Zhang, Wei and Wang, Jun},
  journal = {Neurocomputing},
  volume  = {415},
  pages   = {106--113},
  year    = {2020},
  doi     = {10.1016/j.neucom.2020.07.048}
}"""


@dataclass
class AMTMLOptions:
    """AMTML-KD settings (docs/methods/amtml.md#options)."""

    weight_lr: float = 1e-3  # Adam on θ and W
    weight_decay: float = 0.2  # Adam's λ: a (λ/2)‖·‖² penalty, the notebook's 0.1·(‖W‖² + ‖θ‖²)

    def __post_init__(self) -> None:
        for key in ("weight_lr", "weight_decay"):
            if getattr(self, key) < 0:
                raise MtkdrlError(f"method.options.{key}: must be >= 0, got {getattr(self, key)}")


class InstanceWeights(nn.Module):
    """μ = softmax_k((e ⊙ θ_k)·W) for a batch of pooled student features e (B×C_s)."""

    def __init__(self, num_teachers: int, width: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)  # the official randn init, seed 1
        self.theta = nn.Parameter(torch.randn(num_teachers, width, generator=generator))
        self.w = nn.Parameter(torch.randn(width, generator=generator))

    def forward(self, embedding: Tensor) -> Tensor:
        scores = torch.einsum("bc,kc,c->bk", embedding, self.theta, self.w)
        return scores.softmax(dim=1)


def integrated_kl(
    student_logits: Tensor, teacher_logits: list[Tensor], weights: Tensor, temperature: float
) -> Tensor:
    """T²·KL(Σ_k μ_k p^T(z_k) ‖ p^T(z_s)) per sample (B,)."""
    probs = torch.stack([(z / temperature).softmax(dim=1) for z in teacher_logits], dim=1)
    target = (weights.unsqueeze(2) * probs).sum(dim=1)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    kl = (target * (target.clamp_min(1e-12).log() - log_student)).sum(dim=1)
    return kl * temperature**2


@register_method
class AMTML(Method):
    """Per-sample weights from the student's feature, trained on the student's loss."""

    name = "amtml"
    description = (
        "AMTML-KD: per-sample teacher weights learned from the student's pooled feature, one "
        "integrated soft target, L2-normalised hints"
    )
    citation = AMTML_CITATION
    Options = AMTMLOptions
    tracked_weights = ("logit",)
    min_teachers = 2
    min_teachers_reason = "it learns a mix of teachers"
    needs_fixed_temperature = "its integrated soft target is built at that T"
    fixed_logit_loss = "kl"
    fixed_logit_loss_reason = (
        "distils with T²·KL from its weighted mix of the teachers' soft targets"
    )
    default_feature: ClassVar[dict[str, Any]] = {
        "kind": "map",
        "adapter": "linear1x1",
        "distance": "normalised",
    }
    replaces_loss = True
    moved_options: ClassVar[dict[str, str]] = {
        "hints": "write method.feature=none for false, leave it out for true"
    }

    def __init__(self, context: MethodContext, options: AMTMLOptions) -> None:
        super().__init__(context, options)
        if context.student_width <= 0:
            raise MtkdrlError("student: method 'amtml' needs the width of its pooled embedding")
        self.weight_net = InstanceWeights(context.num_teachers, context.student_width)
        self.optimizer = torch.optim.Adam(
            self.weight_net.parameters(), lr=options.weight_lr, weight_decay=options.weight_decay
        )

    def forward(self, batch: DistillBatch, epoch: int) -> tuple[dict[str, Tensor], TeacherWeights]:
        """CE, α·KL from the integrated target and β·(the feature term's mean over teachers)."""
        objective = self.context.objective
        logits = batch.student.logits.float()
        weights = self.weight_net(batch.student.embedding.detach().float())
        temperature = objective.base_temperature
        kd = integrated_kl(logits, [t.logits for t in batch.teachers], weights, temperature)
        terms = {
            "ce": F.cross_entropy(logits, batch.labels, reduction="none"),
            "kd": objective.alpha * kd,
        }
        if batch.adapted:
            maps = [t.features for t in batch.teachers]
            distances = objective.feature.distances(batch.adapted, maps)
            terms["feature"] = objective.beta * torch.stack(distances, dim=1).mean(dim=1)
        return terms, TeacherWeights(logit=weights.detach())

    def before_step(self, access: StudentAccess) -> None:
        """One step of θ and W on the gradient the student's backward left them (averaged over
        processes, so every rank keeps the same weights)."""
        if self.context.reduce is not None:
            for param in self.weight_net.parameters():
                if param.grad is not None:
                    param.grad = self.context.reduce(param.grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
