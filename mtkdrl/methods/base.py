"""The one small interface every weighting strategy implements, and what it is given."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ..pool import ModelOutputs


@dataclass
class DistillBatch:
    """One batch as a strategy sees it: outputs and the per-sample, per-teacher loss terms.

    `kl` and `mse` carry gradients into the student; a strategy that derives weights from them
    must detach. `adapted[k]` is the student's map through teacher k's adapter (empty when the
    run has no feature loss), `mse` is then None.
    """

    labels: Tensor
    student: ModelOutputs
    teachers: list[ModelOutputs]
    adapted: list[Tensor]
    ce: Tensor
    kl: Tensor
    mse: Tensor | None

    @property
    def num_teachers(self) -> int:
        return len(self.teachers)


@dataclass
class TeacherWeights:
    """Per-sample, per-teacher weights (B×K) for the logit loss and, if used, the feature loss."""

    logit: Tensor
    feature: Tensor | None = None


@dataclass
class MethodContext:
    """What a strategy may know about the run when it is built.

    `gather` concatenates a tensor over processes (for global-batch statistics) and `reduce`
    averages it (for gradients of state that must stay identical on every rank); both are None
    in a single process.
    """

    teacher_names: list[str]
    num_classes: int
    embedding_dims: list[int]
    temperature: float
    alpha: float
    beta: float
    gather: Callable[[Tensor], Tensor] | None = None
    reduce: Callable[[Tensor], Tensor] | None = None
    process_index: int = 0

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_names)


@dataclass
class NoOptions:
    """A strategy without options of its own."""


class WeightingStrategy(nn.Module, abc.ABC):
    """Decides, per sample and per teacher, how much the student learns from each teacher.

    Subclasses set `name`, optionally an `Options` dataclass (validated from `method.options`),
    and implement `weights`. `observe` sees the step's losses after the optimizer step, and any
    trainable state lives in the module itself, so it is checkpointed with the run.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    uses_teachers: ClassVar[bool] = True

    def __init__(self, context: MethodContext, options: Any) -> None:
        super().__init__()
        self.context = context
        self.options = options

    @property
    def uses_features(self) -> bool:
        """Whether the run needs feature maps, adapters and the feature loss."""
        return False

    def describe(self) -> str:
        """A line for the run's log about the strategy's own state (empty if nothing to say)."""
        return ""

    @abc.abstractmethod
    def weights(self, batch: DistillBatch, epoch: int) -> TeacherWeights:
        """The weights for this batch; the distiller detaches nothing for you."""

    def observe(
        self, batch: DistillBatch, weights: TeacherWeights, sample_loss: Tensor, epoch: int
    ) -> None:
        """Called after the student's optimizer step with the step's per-sample loss."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called at the end of each epoch; returns figures to log (e.g. mean weights)."""
        return {}
