"""The interface every temperature policy implements, and what it is told when it is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass
class TemperatureContext:
    """What a policy may know about the run: processes (to keep learned state identical on every
    rank, `reduce` averages a tensor over them; None in one process), its rank, the training
    set's size (0 where unknown) and whether its samples can be read by index (not streamed)."""

    reduce: Callable[[Tensor], Tensor] | None = None
    process_index: int = 0
    num_samples: int = 0
    random_access: bool = True


@dataclass
class PolicyInput:
    """What a policy sees of a batch before its loss: the student's logits (with gradients:
    detach for states), the teachers' mixed probabilities at T = 1 (B×C, only when the policy
    `needs_ensemble`), the labels, the epoch and the samples' training-set indices (None for
    other data)."""

    student_logits: Tensor
    ensemble: Tensor | None
    labels: Tensor
    epoch: int
    indices: Tensor | None = None


@dataclass
class NoSettings:
    """A policy without settings of its own."""


class TemperaturePolicy(nn.Module):
    """Chooses T for a batch's logit loss, and may learn around the student's step.

    `choose` gets a `PolicyInput` and returns one T or one per sample (B); a T that carries
    gradients trains whatever it depends on through the student's loss.
    `prepare_batch` may alter a training batch's images before any model sees it. Trainable
    state lives in the module, running state in `extra_state()` (tensors and plain values).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoSettings
    needs_ensemble: ClassVar[bool] = False

    def __init__(self, options: Any, context: TemperatureContext) -> None:
        super().__init__()
        self.options = options
        self.context = context

    @property
    def fixed_value(self) -> float | None:
        """T when it never changes (methods whose own formulas need one number), else None."""
        return None

    def choose(self, seen: PolicyInput) -> float | Tensor:
        raise NotImplementedError

    def prepare_batch(
        self, images: Tensor, indices: Tensor, epoch: int, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """The training batch's images as the models should see them, and the mask of the rows
        changed (their teachers must run live, not from a cache) or None; `fetch(i)` reads
        training sample i's image. Unchanged by default."""
        return images, None

    def before_step(self, access: Any) -> None:
        """After the student's backward, before its optimizer step (`StudentAccess`)."""

    def observe(self, sample_loss: Tensor, epoch: int) -> None:
        """After the student's optimizer step, with the step's per-sample loss (detached)."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Figures to log at each epoch's end."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore `extra_state()`."""
