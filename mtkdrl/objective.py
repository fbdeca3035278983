"""The objective every method shares: L = CE + α Σ_k w_k·ℓ(z_s, z_k; T) + β Σ_k v_k·d_k.

It owns everything about the loss that is not the teachers' weights: the logit loss ℓ and α
(`method.logit_loss`, `method.alpha`), the temperature policy that sets T (`method.temperature`),
and the feature term d with β (`method.feature`, `method.beta`). A method gives w and v, per
sample and teacher, so any method's weights meet any term. See docs/objective.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .batch import DistillBatch, TeacherTerms, TeacherWeights
from .features import FeatureTerm
from .logit_losses import LogitLoss
from .losses import stack_teacher_terms
from .temperatures import PolicyInput, TemperaturePolicy


class Objective(nn.Module):
    """The shared loss: its per-teacher terms for a batch, and their weighted sum by name.

    `base_temperature` is the one T that code needing a number uses (a fixed policy's value, or
    a policy's starting T). The temperature policy is a submodule: its learned state is saved
    with the run.
    """

    def __init__(
        self,
        logit_loss: LogitLoss,
        alpha: float,
        beta: float,
        temperature_policy: TemperaturePolicy,
        feature: FeatureTerm,
        base_temperature: float,
    ) -> None:
        super().__init__()
        self.logit_loss = logit_loss
        self.alpha, self.beta = alpha, beta
        self.temperature_policy = temperature_policy
        self.feature = feature
        self.base_temperature = base_temperature

    @property
    def feature_stage(self) -> int | None:
        """The `forward_intermediates` entry the feature term reads (None: no feature term)."""
        return self.feature.stage

    def temperature(
        self, batch: DistillBatch, epoch: int, ensemble: Callable[[], Tensor]
    ) -> float | Tensor:
        """T for this batch's logit loss: a number, or one per sample (B or B×1) or per sample and
        teacher (B×K); `ensemble()` gives the teachers' mix at T = 1 for a policy that asks."""
        policy = self.temperature_policy
        mixed = ensemble() if policy.needs_ensemble else None
        return policy.choose(
            PolicyInput(batch.student.logits, mixed, batch.labels, epoch, batch.indices)
        )

    def terms(self, batch: DistillBatch, epoch: int, temperature: float | Tensor) -> TeacherTerms:
        """CE, the logit loss against every teacher at `temperature` and the feature term, per
        sample."""
        logits = batch.student.logits.float()
        ce = F.cross_entropy(logits, batch.labels, reduction="none")
        if not batch.teachers:
            return TeacherTerms(ce, logits.new_zeros(logits.shape[0], 0), None)
        columns = per_teacher(temperature, logits.shape[0], batch.num_teachers)
        logit = stack_teacher_terms(
            [
                self.logit_loss(logits, t.logits, batch.labels, column, epoch)
                for t, column in zip(batch.teachers, columns, strict=True)
            ]
        )
        feature = None
        if batch.adapted and self.feature_stage is not None:
            maps = [t.features for t in batch.teachers]
            feature = stack_teacher_terms(self.feature.distances(batch.adapted, maps))
        return TeacherTerms(ce, logit, feature)

    def combine(self, terms: TeacherTerms, weights: TeacherWeights) -> dict[str, Tensor]:
        """The loss per sample as named terms: `ce`, `kd` = α Σ_k w_k·ℓ_k and, with a feature term,
        `feature` = β Σ_k v_k·d_k (v = 1/K where the method gives none); their sum is the loss."""
        named = {"ce": terms.ce}
        if terms.logit.shape[1]:
            named["kd"] = self.alpha * (weights.logit * terms.logit).sum(dim=1)
        if terms.feature is not None:
            feature_weights = weights.feature
            if feature_weights is None:
                feature_weights = terms.feature.new_full(
                    terms.feature.shape, 1 / terms.feature.shape[1]
                )
            named["feature"] = self.beta * (feature_weights * terms.feature).sum(dim=1)
        return named

    # ------------------------------------------------- the temperature policy's hooks
    def prepare_batch(
        self, images: Tensor, indices: Tensor, epoch: int, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """The training batch as the models should see it (the policy's, e.g. a remix)."""
        return self.temperature_policy.prepare_batch(images, indices, epoch, fetch)

    def before_step(self, access: Any) -> None:
        self.temperature_policy.before_step(access)

    def observe(self, sample_loss: Tensor, epoch: int) -> None:
        self.temperature_policy.observe(sample_loss, epoch)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return self.temperature_policy.end_epoch(epoch)

    def extra_state(self) -> dict[str, Any]:
        return self.temperature_policy.extra_state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.temperature_policy.load_extra_state(state)

    def describe(self) -> str:
        """A line for the run's log: the logit loss, T and the feature term."""
        policy = self.temperature_policy
        temperature = policy.fixed_value if policy.fixed_value is not None else policy.name
        line = f"objective: CE + {self.alpha:g}·Σ w·{self.logit_loss.name}(T = {temperature})"
        if self.feature_stage is None:
            return line
        return f"{line} + {self.beta:g}·Σ v·{self.feature.describe()}"


def per_teacher(temperature: float | Tensor, batch_size: int, num_teachers: int) -> list:
    """Split a temperature into one per teacher: the number itself, or that teacher's B×1 column."""
    if not isinstance(temperature, Tensor):
        return [temperature] * num_teachers
    grid = temperature.reshape(-1, 1) if temperature.dim() == 1 else temperature
    grid = grid.expand(batch_size, num_teachers)
    return [grid[:, k : k + 1] for k in range(num_teachers)]
