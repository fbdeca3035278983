"""`aekd`: AE-KD (Du et al., NeurIPS 2020), teacher weights chosen in gradient space each batch.

Teachers that pull the student in different directions should not simply be averaged: AE-KD
weights them by the point of their convex hull closest to the origin, α* = argmin ‖Σ_k α_k g_k‖²
over Σ α = 1, 0 ≤ α_k ≤ C_tol, where g_k is the batch mean of the gradient of teacher k's KD term
with respect to the student logits. The loss is CE + α Σ_k α*_k·KL_k with α* a constant.

The official code gets each g_k from one extra backward pass per teacher and solves the QP with
sklearn's one-class SVM on the CPU. Here g_k comes in closed form (the T²-scaled KL's gradient is
T·(softmax(z_s/T) − softmax(z_k/T)) / B per sample), and the QP is solved exactly on the device:
one small linear (KKT) system per active set, all solved in one batched call, no host sync.
See docs/methods/aekd.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import MtkdrlError
from . import register_method
from .base import DistillBatch, Method, MethodContext, TeacherTerms, TeacherWeights

AEKD_CITATION = """@inproceedings{du2020agree,
  title     = {Agree to Disagree: Adaptive Ensemble Knowledge Distillation in Gradient Space},
  author    = {Du, Shangchen and You, Shan and Li, Xiaojie and Wu, Jianlong and Wang, Fei and
               Qian, Chen and Zhang, Changshui},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {33},
  year      = {2020}
}"""

ZERO, FREE, CAPPED = 0, 1, 2  # a weight's place in an active set: at 0, inside, at the cap
MAX_ACTIVE_SETS = 32768  # about 12 teachers at the default tolerance
SLACK = 1e-9  # feasibility slack of the solver's float64 candidates
RIDGE = 1e-10  # added to the trace-normalised Gram matrix: unique optimum, no singular system
NORM_FLOOR = 1e-12  # `normalise_gradients`: smallest gradient norm, relative to the largest


@dataclass
class AEKDOptions:
    """AE-KD settings (docs/methods/aekd.md#options)."""

    tolerance: float = 0.6
    normalise_gradients: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tolerance) and self.tolerance > 0):
            raise MtkdrlError(
                "method.options.tolerance: expected a positive number, the cap C_tol on each "
                f"teacher's weight (0.6 in the paper's code), got {self.tolerance}"
            )


def kl_logit_gradient(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """∂/∂z_s of the batch mean of `kl_per_sample` (T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))), in
    closed form: T·(softmax(z_s/T) − softmax(z_t/T)) / B for each sample (B×C)."""
    p_student = F.softmax(student_logits.detach().float() / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return temperature * (p_student - p_teacher) / student_logits.shape[0]


def count_active_sets(num_teachers: int, cap: float) -> int:
    """How many sets `active_sets` lists, without listing them."""
    return sum(
        math.comb(num_teachers, capped) * math.comb(num_teachers - capped, free)
        for capped in range(num_teachers + 1 if cap < 1 else 1)
        for free in range(num_teachers - capped + 1)
        if _can_hold_a_point(capped, free, cap)
    )


def active_sets(num_teachers: int, cap: float) -> Tensor:
    """Every assignment of the K weights to ZERO, FREE or CAPPED (S×K, int8) whose face of
    {Σ α = 1, 0 ≤ α ≤ cap} is not empty; with cap ≥ 1 the cap never binds, so no CAPPED."""
    places = (ZERO, FREE, CAPPED) if cap < 1 else (ZERO, FREE)
    rows = [
        row
        for row in itertools.product(places, repeat=num_teachers)
        if _can_hold_a_point(row.count(CAPPED), row.count(FREE), cap)
    ]
    return torch.tensor(rows, dtype=torch.int8)


def _can_hold_a_point(capped: int, free: int, cap: float) -> bool:
    """Whether m weights at the cap and f in [0, cap] can sum to 1: m·cap ≤ 1 ≤ (m + f)·cap."""
    cap = min(cap, 1.0)
    return capped * cap <= 1 + SLACK and (capped + free) * cap >= 1 - SLACK


def capped_min_norm(gram: Tensor, cap: float, sets: Tensor) -> Tensor:
    """α* = argmin αᵀGα over {Σ α = 1, 0 ≤ α ≤ cap} for a K×K Gram matrix (K,), in float64.

    On each active set (`active_sets`) the problem is an equality-constrained QP, whose KKT
    conditions are one linear system: G_i·α = λ for free i, α_i fixed (0 or cap) otherwise,
    Σ α = 1. All systems are solved in one batched call; α* is the feasible solution of least
    objective (the optimum's own active set is among them). G is scaled to unit trace (a zero G,
    all gradients zero, counts as the identity: uniform weights) plus a tiny ridge, which makes
    every system nonsingular and breaks ties between equally good weights towards the smallest
    ‖α‖ (two identical teachers share their weight).
    """
    k = gram.shape[0]
    gram = gram.double()
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    trace = gram.trace()
    gram = torch.where(trace > 0, gram / trace.clamp_min(torch.finfo(gram.dtype).tiny), eye)
    gram = gram + RIDGE * eye
    sets = sets.to(gram.device)
    free = sets == FREE
    any_free = free.any(dim=1)
    system = gram.new_zeros(sets.shape[0], k + 1, k + 1)
    system[:, :k, :k] = torch.where(free.unsqueeze(2), gram, eye)
    system[:, :k, k] = -free.to(gram.dtype)
    system[:, k, :k] = any_free.to(gram.dtype).unsqueeze(1)  # Σ α = 1 ...
    system[:, k, k] = (~any_free).to(gram.dtype)  # ... or, with no weight free, λ = 0
    rhs = torch.cat([(sets == CAPPED).to(gram.dtype) * cap, any_free.to(gram.dtype)[:, None]], 1)
    solution, _ = torch.linalg.solve_ex(system, rhs.unsqueeze(2))  # no error check, no sync
    alpha = solution[:, :k, 0]
    feasible = (
        (alpha >= -SLACK).all(dim=1)
        & (alpha <= cap + SLACK).all(dim=1)
        & ((alpha.sum(dim=1) - 1).abs() <= SLACK)
    )
    objective = torch.einsum("si,ij,sj->s", alpha, gram, alpha)
    best = torch.where(feasible, objective, torch.inf).argmin()
    alpha = alpha.index_select(0, best.view(1))[0].clamp(0, cap)
    return alpha / alpha.sum()


@register_method
class AdaptiveEnsembleKD(Method):
    """One weight vector per batch: the min-norm point of the teachers' capped gradient hull."""

    name = "aekd"
    description = (
        "AE-KD (Du et al., NeurIPS 2020): per-batch weights whose mix of the teachers' "
        "gradients has the least norm"
    )
    citation = AEKD_CITATION
    Options = AEKDOptions
    tracked_weights = ("logit",)
    min_teachers = 2
    min_teachers_reason = "it weighs their gradients against each other"
    needs_fixed_temperature = "its weights are the closed-form KL gradients at that T"
    fixed_logit_loss = "kl"
    fixed_logit_loss_reason = "weights by the closed-form gradients of T²·KL"

    def __init__(self, context: MethodContext, options: AEKDOptions) -> None:
        k = context.num_teachers
        cap = min(options.tolerance, 1.0)
        uniform = options.tolerance * k <= 1 + SLACK  # no other point fits under the cap
        count = 0 if uniform else count_active_sets(k, cap)
        if count > MAX_ACTIVE_SETS:
            raise MtkdrlError(
                f"teachers: method {self.name!r} solves its weights exactly over every active "
                f"set of its QP, {count} for {k} teachers at tolerance {options.tolerance}; at "
                f"most {MAX_ACTIVE_SETS} fit (about 12 teachers at the default 0.6)"
            )
        super().__init__(context, options)
        self.cap, self.uniform = cap, uniform
        sets = torch.zeros(0, k, dtype=torch.int8) if uniform else active_sets(k, cap)
        self.register_buffer("active_sets", sets, persistent=False)

    def describe(self) -> str:
        if not self.uniform:
            return ""
        k = self.context.num_teachers
        return (
            f"aekd: tolerance {self.options.tolerance} is at most 1/K = {1 / k:.4g}, so every "
            f"batch gets uniform weights 1/{k} (the official solver clamps nu the same way)"
        )

    def teacher_gradients(self, batch: DistillBatch) -> Tensor:
        """g_k, the batch mean of ∂(mean_b KL_k)/∂z_s (K×C), averaged over processes."""
        temperature = self.context.objective.base_temperature
        grads = torch.stack(
            [
                kl_logit_gradient(batch.student.logits, t.logits, temperature).mean(dim=0)
                for t in batch.teachers
            ]
        )
        return grads if self.context.reduce is None else self.context.reduce(grads)

    def solve(self, grads: Tensor) -> Tensor:
        """α* for teacher gradients K×C (K,); with `normalise_gradients`, for the unit
        gradients, then rescaled by 1/‖g_k‖ and renormalised."""
        grads = grads.double()
        if not self.options.normalise_gradients:
            return capped_min_norm(grads @ grads.T, self.cap, self.active_sets)
        norms = grads.norm(dim=1)
        norms = norms.clamp_min(norms.max() * NORM_FLOOR).clamp_min(torch.finfo(grads.dtype).tiny)
        unit = grads / norms.unsqueeze(1)
        alpha = capped_min_norm(unit @ unit.T, self.cap, self.active_sets)
        alpha = alpha * (norms.min() / norms)
        return alpha / alpha.sum()

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        size, k = terms.logit.shape
        if self.uniform:
            return TeacherWeights(logit=terms.logit.new_full((size, k), 1.0 / k))
        alpha = self.solve(self.teacher_gradients(batch))
        return TeacherWeights(logit=alpha.to(terms.logit.dtype).repeat(size, 1))
