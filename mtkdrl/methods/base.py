"""The one small interface every weighting method implements, and what it is told.

A method says how much the student learns from each teacher: per-sample, per-teacher weights for
the shared objective's logit and feature terms (`teacher_weights`), or, where a method truly
replaces the loss, the whole loss (`replaces_loss` and `forward`). Everything else about the loss
(the logit loss, T, the feature term, α and β) is the objective's (`mtkdrl.objective`). A method
may learn around the student's step through its hooks: `before_step`, `observe`, `end_epoch`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from ..batch import DistillBatch, TeacherTerms, TeacherWeights
from ..errors import MtkdrlError
from ..pool import ModelOutputs

if TYPE_CHECKING:
    from ..features import FeatureTerm
    from ..logit_losses import LogitLoss
    from ..objective import Objective
    from ..temperatures import TemperaturePolicy


@dataclass
class MethodContext:
    """What a method may know about the run when it is built.

    `teacher_heads[k]` is teacher k's frozen classifier, mapping a B×d embedding to its logits
    (None where the head does not take pooled embeddings, e.g. a head over tokens).
    `feature_channels[k]` is the channel count of teacher k's map at the feature term's stage
    (empty without a feature term). `objective` is the run's shared loss (α, β, T, the feature
    term). `gather` concatenates a tensor over processes (global-batch statistics) and `reduce`
    averages it (gradients of state that must stay identical on every rank); both are None in a
    single process. `batch_size` is the per-process batch and `student_width` the width of the
    student's pooled embedding (0 where unknown).
    """

    teacher_names: list[str]
    num_classes: int
    embedding_dims: list[int]
    teacher_heads: list[nn.Module | None]
    objective: Objective
    feature_channels: list[int] = field(default_factory=list)
    batch_size: int = 0
    student_width: int = 0
    gather: Callable[[Tensor], Tensor] | None = None
    reduce: Callable[[Tensor], Tensor] | None = None
    process_index: int = 0

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_names)

    def head(self, index: int) -> nn.Module:
        """Teacher `index`'s classifier head, or an error naming the teacher."""
        head = self.teacher_heads[index]
        if head is None:
            raise ValueError(
                f"teacher {self.teacher_names[index]!r} has no classifier head that takes its "
                "pooled embedding (e.g. a head over tokens); pick a method that does not need it"
            )
        return head


@dataclass
class StudentAccess:
    """What `before_step` may use: the student as a function of its parameters, and more data.

    `params` are the live trainable parameters by name (the student's, and its feature adapters'
    under `adapters.`); `forward(params, images)` runs the student functionally
    (`torch.func.functional_call`) on copies of its buffers, so a look-ahead step never moves BN
    statistics; `loss(params, batch)` is the run's mean loss on `batch` (the current one when
    None) with the student at `params`; `next_batch()` draws another training batch
    (images, labels, indices); `outputs(params, images, labels, teacher_outputs)` is the batch a
    method sees for those images, the student and its adapters at `params`, the teachers' outputs
    given (e.g. stored with the images). `momentum`, `weight_decay`, `nesterov` and
    `momentum_buffers` (by parameter name, where the optimizer holds one) describe the student's
    optimizer, for a look-ahead that imitates its next steps (zeros for one without them).
    """

    params: dict[str, Tensor]
    lr: float
    batch: tuple[Tensor, Tensor, Tensor | None]
    forward: Callable[[dict[str, Tensor], Tensor], ModelOutputs]
    loss: Callable[[dict[str, Tensor], tuple | None], Tensor]
    next_batch: Callable[[], tuple[Tensor, Tensor, Tensor | None]]
    outputs: Callable[[dict[str, Tensor], Tensor, Tensor, list[ModelOutputs]], DistillBatch]
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    momentum_buffers: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class NoOptions:
    """A method without options of its own."""


class Method(nn.Module, abc.ABC):
    """A weighting method: the teachers' per-sample weights for one batch.

    Subclasses set `name`, `description` (one line, for cards and tables), `citation` (BibTeX,
    empty for none) and optionally an `Options` dataclass (validated from `method.options`),
    `default_feature` (the feature term a recipe without `method.feature` gets), `min_teachers`
    (a smaller pool gets one line saying `min_teachers_reason`) and `tracked_weights` (which of
    `TeacherWeights`' fields the run logs per teacher and epoch; `tracked_matrices` may add
    more). Trainable state lives in the module (saved as safetensors), running state in
    `extra_state()` (tensors and plain values only: saved as safetensors plus JSON, never as a
    pickle).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    uses_teachers: ClassVar[bool] = True
    default_feature: ClassVar[str | Mapping[str, Any]] = "none"
    tracked_weights: ClassVar[tuple[str, ...]] = ()
    min_teachers: ClassVar[int] = 0
    min_teachers_reason: ClassVar[str] = ""  # why, for the one line a smaller pool gets
    fixed_logit_loss: ClassVar[str] = ""  # the logit loss it always uses ("": the recipe's)
    fixed_logit_loss_reason: ClassVar[str] = ""  # why, for the one line another gets
    needs_fixed_temperature: ClassVar[str] = ""  # why, where a temperature policy cannot apply
    # logit weights equal over the teachers whatever the batch: a policy's ensemble is then their
    # plain mean, with no trial pass
    equal_logit_weights: ClassVar[bool] = False
    replaces_loss: ClassVar[bool] = False  # `forward` gives the whole loss, not weights
    # options that became feature terms: option -> what to write instead, for a one-line hint
    moved_options: ClassVar[dict[str, str]] = {}

    def __init__(self, context: MethodContext, options: Any) -> None:
        if context.num_teachers < self.min_teachers:
            raise MtkdrlError(
                f"teachers: method {self.name!r} needs at least {self.min_teachers} teachers "
                f"({self.min_teachers_reason}), the recipe lists {context.num_teachers}; "
                "use 'kd' for one"
            )
        super().__init__()
        self.context = context
        self.options = options

    # ------------------------------------------------- checks before anything is built
    @classmethod
    def logit_loss_for(cls, named: LogitLoss, options: Any) -> LogitLoss:
        """The logit loss this method distils with: the recipe's `method.logit_loss`, unless the
        method always uses its own (`fixed_logit_loss`), when another is one line."""
        if cls.fixed_logit_loss and named.name != cls.fixed_logit_loss:
            raise MtkdrlError(
                f"method.logit_loss: method {cls.name!r} {cls.fixed_logit_loss_reason}, so it "
                f"takes only {cls.fixed_logit_loss!r}, not {named.name!r}"
            )
        return named

    @classmethod
    def check_objective(cls, policy: TemperaturePolicy, feature: FeatureTerm) -> None:
        """One line where the recipe's temperature policy or feature term cannot serve this
        method, before any compute."""
        if cls.needs_fixed_temperature and policy.fixed_value is None:
            raise MtkdrlError(
                f"method.temperature: method {cls.name!r} needs one fixed T "
                f"({cls.needs_fixed_temperature}); give a number, not policy {policy.name!r}"
            )
        if not cls.uses_teachers and feature.stage is not None:
            raise MtkdrlError(
                f"method.feature: method {cls.name!r} runs no teacher, so feature term "
                f"{feature.name!r} has nothing to compare with; drop method.feature"
            )

    def describe(self) -> str:
        """A line for the run's log about the method's own state (empty if nothing to say)."""
        return ""

    def teacher_embedding_width(self, width: int) -> int:
        """How much of a `width`-wide teacher embedding this method reads (0: none of it), so a
        teacher cache stores only that."""
        return 0

    @property
    def batch_size(self) -> int | None:
        """The one per-process batch size this method takes (None: any), e.g. for a dry run."""
        return None

    # ------------------------------------------------------------------ the weights
    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        """The weights for this batch (B×K) given its unweighted terms; detach what you read."""
        raise TypeError(f"method {self.name!r} defines neither teacher_weights nor forward")

    def forward(self, batch: DistillBatch, epoch: int) -> tuple[dict[str, Tensor], TeacherWeights]:
        """For `replaces_loss` methods: named per-sample loss terms (B each; their sum is the
        sample's loss) and the weights applied, for the logs."""
        raise TypeError(f"method {self.name!r} does not replace the loss; use teacher_weights")

    def tracked_matrices(self, weights: TeacherWeights) -> dict[str, Tensor]:
        """The B×K matrices logged per teacher and epoch, by kind: the tracked weights'."""
        matrices = {kind: getattr(weights, kind) for kind in self.tracked_weights}
        return {kind: matrix for kind, matrix in matrices.items() if matrix is not None}

    # ------------------------------------------------------------- around a step
    @contextlib.contextmanager
    def look_ahead(self) -> Iterator[None]:
        """Forward passes inside leave the method's running state (pending agent state, a step's
        batch) as it was: for trial losses."""
        saved = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        try:
            yield
        finally:
            vars(self).update(saved)

    def before_step(self, access: StudentAccess) -> None:
        """Called after the backward pass, before the student's optimizer step (a meta step)."""

    def observe(self, batch: DistillBatch, sample_loss: Tensor, epoch: int) -> None:
        """Called after the student's optimizer step with the step's per-sample loss (detached)."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Called at each epoch's end; returns figures of its own to log."""
        return {}

    # ---------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict[str, Any]:
        """Running state beyond parameters and buffers: tensors, numbers, strings, lists, dicts."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore `extra_state()`."""
