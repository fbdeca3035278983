"""`WeightedLoss`: a weighting method on the shared objective, the loss of one batch of outputs.

It asks the objective's temperature policy for T (with the method's mix of the teachers where the
policy needs one), has the objective compute each teacher's terms, the method weight them, and
the objective sum them by name; it logs the weights for the epoch's figures and calls both parts'
hooks around the student's step. Models are not its business (`DistillationTask` runs them), so
any method meets any objective on any batch of outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .batch import DistillBatch, TeacherWeights
from .methods import Method, StudentAccess
from .objective import Objective
from .weight_log import WeightLog


class WeightedLoss(nn.Module):
    """Method and objective together; its state dict is their learned state (an agent, a
    temperature policy's networks), its `extra_state` their running state and the weight log."""

    def __init__(self, method: Method, objective: Objective, weight_log: WeightLog | None = None):
        super().__init__()
        self.method = method
        self.objective = objective
        self.weight_log = weight_log or WeightLog(method.context.num_teachers)

    def forward(self, batch: DistillBatch, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The per-sample loss (B,) and the named per-sample terms: the objective's terms weighted
        by the method (or the method's whole loss); the weights go to the epoch's log."""
        if self.method.replaces_loss:
            named, weights = self.method(batch, epoch)
        else:
            named, weights = self.weighted_terms(batch, epoch)
        self.weight_log.add(self.tracked(weights), batch.labels)
        values = iter(named.values())
        sample_loss = next(values)
        for value in values:
            sample_loss = sample_loss + value
        return sample_loss, named

    def tracked(self, weights: TeacherWeights) -> dict[str, Tensor]:
        """The method's tracked matrices, less the feature ones where there is no feature term
        (they would weight nothing)."""
        matrices = self.method.tracked_matrices(weights)
        if self.objective.feature_stage is not None:
            return matrices
        return {kind: m for kind, m in matrices.items() if not kind.startswith("feature")}

    def weighted_terms(
        self, batch: DistillBatch, epoch: int
    ) -> tuple[dict[str, Tensor], TeacherWeights]:
        """T from the objective's policy, the per-teacher terms at T, the method's weights for
        them, and their weighted sum by name."""
        objective = self.objective
        temperature: float | Tensor = objective.base_temperature
        if batch.teachers:
            temperature = objective.temperature(batch, epoch, lambda: self.ensemble(batch, epoch))
        terms = objective.terms(batch, epoch, temperature)
        weights = self.method.teacher_weights(batch, terms, epoch)
        return objective.combine(terms, weights), weights

    def ensemble(self, batch: DistillBatch, epoch: int) -> Tensor:
        """The teachers' softmax at T = 1 mixed by the method's logit weights (B×C), for a
        temperature policy's state: the weights come from a trial pass at the base T that
        leaves the method's running state as it was (none for `equal_logit_weights`)."""
        probs = torch.stack([t.logits.float().softmax(dim=1) for t in batch.teachers], dim=1)
        if self.method.equal_logit_weights:
            return probs.mean(dim=1)
        objective = self.objective
        with torch.no_grad(), self.look_ahead():
            terms = objective.terms(batch, epoch, objective.base_temperature)
            weights = self.method.teacher_weights(batch, terms, epoch).logit.detach().float()
        mixed = (weights.unsqueeze(2) * probs).sum(dim=1)
        return mixed / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)

    @contextlib.contextmanager
    def look_ahead(self) -> Iterator[None]:
        """Losses computed inside leave the method's running state and the weight log as they
        were: for trial and look-ahead losses."""
        sums = self.weight_log.sums
        with self.method.look_ahead():
            try:
                yield
            finally:
                self.weight_log.sums = sums

    # ------------------------------------------------------------ around a step
    def prepare_batch(
        self, images: Tensor, indices: Tensor, epoch: int, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """A training batch's images as the models should see them (the objective's policy may
        remix them), and the mask of the rows changed or None."""
        return self.objective.prepare_batch(images, indices, epoch, fetch)

    def before_step(self, access: StudentAccess) -> None:
        """After the backward pass, before the optimizer step: the method's hook (a meta step),
        then the objective's."""
        self.method.before_step(access)
        self.objective.before_step(access)

    def observe(self, batch: DistillBatch, sample_loss: Tensor, epoch: int) -> None:
        """After the optimizer step, with the step's per-sample loss (detached): the method's
        hook (an agent's reward), then the objective's (a temperature agent's)."""
        self.method.observe(batch, sample_loss, epoch)
        self.objective.observe(sample_loss, epoch)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Figures to log at an epoch's end: the method's, the temperature policy's, and the
        teachers' weights over the epoch."""
        return {
            **self.method.end_epoch(epoch),
            **self.objective.end_epoch(epoch),
            **self.weight_log.figures(),
        }

    def describe(self) -> list[str]:
        """Lines for the run's log: the objective (unless the method replaces the loss), and the
        method's own state if it says any."""
        lines = [self.method.describe()]
        if not self.method.replaces_loss:
            lines.insert(0, self.objective.describe())
        return [line for line in lines if line]

    # ---------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict[str, Any]:
        """Running state beyond parameters: tensors and plain values, never a pickle."""
        return {
            "method": self.method.extra_state(),
            "temperature": self.objective.extra_state(),
            "weight_sums": self.weight_log.state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.method.load_extra_state(state["method"])
        self.objective.load_extra_state(state["temperature"])
        self.weight_log.load_state(state["weight_sums"])
