"""MTKD-RL's `reward: gain`: what each sample's weighted teacher terms do for the student's loss
on another training batch, to first order (docs/methods/mtkdrl.md#reward).

A step along −∇ℓ_i lowers the other batch's CE by about η⟨∇ℓ_i, g⟩, g that CE's gradient. For
teacher k's term d_ik the inner product is the derivative of d_ik along g, which two forward passes
of the current batch at θ ± ε·g/‖g‖ give for every sample and teacher at once (a central
difference): no per-sample gradients, and the live student, its BN statistics and its optimizer
are never touched (the passes are functional).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..batch import DistillBatch, TeacherTerms
from .base import StudentAccess

ADAPTER_PREFIX = "adapters."  # the feature adapters' parameters in StudentAccess.params


def held_out_direction(access: StudentAccess) -> dict[str, Tensor] | None:
    """The unit direction of the student's CE gradient on another training batch (the student's
    own parameters, not its adapters'); None where that gradient is zero."""
    images, labels, _ = access.next_batch()
    names = [name for name in access.params if not name.startswith(ADAPTER_PREFIX)]
    logits = access.forward(access.params, images).logits
    loss = F.cross_entropy(logits.float(), labels)
    grads = torch.autograd.grad(loss, [access.params[n] for n in names], allow_unused=True)
    found = {name: g.detach() for name, g in zip(names, grads, strict=True) if g is not None}
    norm = torch.sqrt(sum(g.float().pow(2).sum() for g in found.values()))
    if not found or float(norm) == 0.0:
        return None
    return {name: g / norm for name, g in found.items()}


def term_slopes(
    access: StudentAccess,
    direction: dict[str, Tensor],
    terms_at: Callable[[DistillBatch], TeacherTerms],
    teachers: list,
    step: float,
) -> TeacherTerms:
    """d_ik's derivative along `direction` for every sample and teacher, by central difference
    with parameter step `step` (the CE column is the student's own, also differentiated)."""
    images, labels, _ = access.batch

    def terms(sign: float) -> TeacherTerms:
        params = {
            name: p.detach() + sign * step * direction[name] if name in direction else p.detach()
            for name, p in access.params.items()
        }
        with torch.no_grad():
            return terms_at(access.outputs(params, images, labels, teachers))

    ahead, behind = terms(1.0), terms(-1.0)

    def slope(a: Tensor | None, b: Tensor | None) -> Tensor | None:
        return None if a is None else (a.float() - b.float()) / (2 * step)

    return TeacherTerms(
        slope(ahead.ce, behind.ce),
        slope(ahead.logit, behind.logit),
        slope(ahead.feature, behind.feature),
    )
