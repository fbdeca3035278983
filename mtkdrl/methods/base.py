"""The one small interface every distillation method implements, and what it is given.

A method sees one batch as raw outputs (`DistillBatch`) and returns named per-sample loss terms
that the loop sums, logs and back-propagates. The default `forward` is the multi-teacher loss of
docs/methods/README.md, CE + α Σ_k w_k·ℓ(z_s, z_k; T) + β Σ_k v_k·MSE_k, so a weighting method
only says how it weights (`teacher_weights`); ℓ is the recipe's `method.logit_loss`
(`context.logit_loss`), and a method may also replace it (`logit_loss`), choose the temperatures
(`temperature`), or replace `forward` whole.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MtkdrlError
from ..logit_losses import KLLoss, LogitLoss
from ..losses import (
    feature_mse_per_sample,
    stack_teacher_terms,
    weighted_distillation_terms,
)
from ..pool import ModelOutputs
from ..temperatures import PolicyInput, TemperatureContext, TemperaturePolicy
from ..temperatures.fixed import FixedOptions, FixedTemperature
from ._tracking import WeightSums


@dataclass
class DistillBatch:
    """One batch as a method sees it: labels and every model's outputs (nothing computed yet).

    `adapted[k]` is the student's map (at the method's `feature_stage`) through teacher k's
    feature adapter, in fp32 (empty when the method uses no feature loss). Student outputs carry
    gradients. `indices` are the samples' positions in the training set (None for other data).
    """

    labels: Tensor
    student: ModelOutputs
    teachers: list[ModelOutputs]
    adapted: list[Tensor]
    indices: Tensor | None = None

    @property
    def num_teachers(self) -> int:
        return len(self.teachers)


@dataclass
class TeacherTerms:
    """Per-sample terms before weighting: CE (B), logit loss per teacher (B×K), feature MSE (B×K).

    `logit` and `feature` carry gradients into the student; detach before deriving weights.
    """

    ce: Tensor
    logit: Tensor
    feature: Tensor | None


@dataclass
class TeacherWeights:
    """Per-sample, per-teacher weights (B×K) for the logit and, if used, the feature loss."""

    logit: Tensor
    feature: Tensor | None = None


@dataclass
class MethodContext:
    """What a method may know about the run when it is built.

    `teacher_heads[k]` is teacher k's frozen classifier, mapping a B×d embedding to its logits
    (None where the head does not take pooled embeddings, e.g. a token head).
    `weights_by_class` asks for the tracked weights' per-class means each epoch. `gather`
    concatenates a tensor over processes (for global-batch statistics) and `reduce` averages it
    (for gradients of state that must stay identical on every rank); both are None in a single
    process. `logit_loss` is the recipe's `method.logit_loss`, built (T²·KL unless it says else).
    `student_width` is the width of the student's pooled embedding (0 where unknown).
    `temperature_policy` is the recipe's `method.temperature` built (a fixed T when None), and
    `temperature` the number it starts from. `num_samples` is the training set's size (0 where
    unknown) and `random_access` whether one of its samples can be read by index (not streamed).
    """

    teacher_names: list[str]
    num_classes: int
    embedding_dims: list[int]
    temperature: float
    alpha: float
    beta: float
    teacher_heads: list[nn.Module | None]
    weights_by_class: bool = False
    gather: Callable[[Tensor], Tensor] | None = None
    reduce: Callable[[Tensor], Tensor] | None = None
    process_index: int = 0
    logit_loss: LogitLoss = field(default_factory=KLLoss)
    student_width: int = 0
    temperature_policy: TemperaturePolicy | None = None
    num_samples: int = 0
    random_access: bool = True

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
    statistics; `loss(params, batch)` is the method's mean loss on `batch` (the current one
    when None) with the student at `params`; `next_batch()` draws another training batch
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
    """A distillation method: per-sample loss terms from one batch of outputs.

    Subclasses set `name`, `description` (one line, for cards and tables), `citation` (BibTeX,
    empty for none) and optionally an `Options` dataclass (validated from `method.options`),
    `min_teachers` (a smaller pool gets one line saying `min_teachers_reason`) and
    `tracked_weights` (which of `TeacherWeights`' fields to log per teacher and epoch; a method
    may log more matrices through `tracked_matrices`). Trainable state lives in the module
    (saved as safetensors), running state in `extra_state()` (tensors and plain values only: the
    run saves it as safetensors plus JSON, never as a pickle).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    uses_teachers: ClassVar[bool] = True
    tracked_weights: ClassVar[tuple[str, ...]] = ()
    min_teachers: ClassVar[int] = 0
    min_teachers_reason: ClassVar[str] = ""  # why, for the one line a smaller pool gets
    fixed_logit_loss: ClassVar[str] = ""  # the logit loss it always uses ("": the recipe's)
    needs_fixed_temperature: ClassVar[str] = ""  # why, where a temperature policy cannot apply
    # logit weights equal over the teachers whatever the batch: a policy's ensemble is then their
    # plain mean, with no trial pass
    equal_logit_weights: ClassVar[bool] = False

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
        policy = context.temperature_policy
        self.temperature_policy = policy or FixedTemperature(
            FixedOptions(context.temperature), TemperatureContext()
        )
        if self.needs_fixed_temperature and self.temperature_policy.fixed_value is None:
            raise MtkdrlError(
                f"method.temperature: method {self.name!r} needs one fixed T "
                f"({self.needs_fixed_temperature}); give a number, not policy "
                f"{self.temperature_policy.name!r}"
            )
        self.last_weights: TeacherWeights | None = None
        self.weight_sums = self.fresh_weight_sums()

    @property
    def uses_features(self) -> bool:
        """Whether the run needs feature maps, adapters and the feature loss."""
        return False

    @property
    def feature_stage(self) -> int:
        """Which entry of timm's `forward_intermediates` the feature loss reads, for student and
        teachers alike (-1: the last stage's map)."""
        return -1

    @property
    def adapter_kind(self) -> str:
        """The student-to-teacher adapter (a key of `losses.ADAPTERS`): 1×1 conv, BN, ReLU."""
        return "conv1x1"

    def describe(self) -> str:
        """A line for the run's log about the method's own state (empty if nothing to say)."""
        return ""

    # ------------------------------------------------------------------ the loss
    def temperature(self, batch: DistillBatch, epoch: int) -> float | Tensor:
        """T for the logit loss: a number, a per-sample tensor (B or B×1), or one per sample and
        teacher (B×K)."""
        policy = self.temperature_policy
        ensemble = self.ensemble_probabilities(batch, epoch) if policy.needs_ensemble else None
        seen = PolicyInput(batch.student.logits, ensemble, batch.labels, epoch, batch.indices)
        return policy.choose(seen)

    def ensemble_probabilities(self, batch: DistillBatch, epoch: int) -> Tensor:
        """The teachers' softmax at T = 1 mixed by this method's logit weights (B×C), for a
        temperature policy's state: the weights come from a trial pass at the fixed T that leaves
        the method's running state as it was (none for `equal_logit_weights`)."""
        probs = torch.stack([t.logits.float().softmax(dim=1) for t in batch.teachers], dim=1)
        if self.equal_logit_weights:
            return probs.mean(dim=1)
        with torch.no_grad(), self.look_ahead():
            terms = self.terms_at(batch, epoch, self.context.temperature)
            weights = self.teacher_weights(batch, terms, epoch).logit.detach().float()
        mixed = (weights.unsqueeze(2) * probs).sum(dim=1)
        return mixed / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def logit_loss(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        labels: Tensor,
        temperature: float | Tensor,
        epoch: int,
    ) -> Tensor:
        """Per-sample logit loss (B,) against one teacher: the recipe's `method.logit_loss`
        (T²·KL by default); `temperature` is a number or this teacher's B×1 column."""
        return self.context.logit_loss(student_logits, teacher_logits, labels, temperature, epoch)

    def teacher_terms(self, batch: DistillBatch, epoch: int) -> TeacherTerms:
        """CE, the logit loss against every teacher and the feature MSE, per sample."""
        logits = batch.student.logits.float()
        ce = F.cross_entropy(logits, batch.labels, reduction="none")
        if not batch.teachers:
            return TeacherTerms(ce, logits.new_zeros(logits.shape[0], 0), None)
        return self.terms_at(batch, epoch, self.temperature(batch, epoch))

    def terms_at(
        self, batch: DistillBatch, epoch: int, temperature: float | Tensor
    ) -> TeacherTerms:
        """`teacher_terms` at a given temperature."""
        logits = batch.student.logits.float()
        ce = F.cross_entropy(logits, batch.labels, reduction="none")
        columns = _per_teacher(temperature, logits.shape[0], batch.num_teachers)
        logit = stack_teacher_terms(
            [
                self.logit_loss(logits, t.logits, batch.labels, column, epoch)
                for t, column in zip(batch.teachers, columns, strict=True)
            ]
        )
        feature = None
        if batch.adapted:
            feature = stack_teacher_terms(
                [
                    feature_mse_per_sample(adapted, t.features)
                    for adapted, t in zip(batch.adapted, batch.teachers, strict=True)
                ]
            )
        return TeacherTerms(ce, logit, feature)

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        """The weights for this batch (B×K); the loop detaches nothing for you."""
        raise NotImplementedError(f"method {self.name!r} defines neither weights nor forward")

    def forward(self, batch: DistillBatch, epoch: int) -> dict[str, Tensor]:
        """Named per-sample loss terms (B,); their sum is the sample's loss."""
        terms = self.teacher_terms(batch, epoch)
        weights = self.teacher_weights(batch, terms, epoch)
        self.last_weights = weights
        self.track(weights, batch.labels)
        return weighted_distillation_terms(
            terms.ce,
            terms.logit,
            terms.feature,
            weights.logit,
            weights.feature,
            self.context.alpha,
            self.context.beta,
        )

    # ------------------------------------------------------------- around a step
    @contextlib.contextmanager
    def look_ahead(self) -> Iterator[None]:
        """Forward passes inside leave the method's running state (last weights, tracked figures,
        pending agent state) as it was: for a hook's trial losses."""
        saved = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        try:
            yield
        finally:
            vars(self).update(saved)

    def before_step(self, access: StudentAccess) -> None:
        """Called after the backward pass, before the student's optimizer step (a meta step)."""

    def observe(self, batch: DistillBatch, sample_loss: Tensor, epoch: int) -> None:
        """Called after the student's optimizer step with the step's per-sample loss (detached)."""

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """Called at each epoch's end; returns figures to log (the tracked weights' by default)."""
        return self.weight_figures()

    # ------------------------------------------------------------ tracked weights
    def fresh_weight_sums(self) -> WeightSums:
        classes = self.context.num_classes if self.context.weights_by_class else 0
        return WeightSums(self.context.num_teachers, classes)

    def tracked_matrices(self, weights: TeacherWeights) -> dict[str, Tensor]:
        """The B×K matrices logged per teacher and epoch, by kind: the tracked weights'."""
        return {kind: getattr(weights, kind) for kind in self.tracked_weights}

    def track(self, weights: TeacherWeights, labels: Tensor) -> None:
        """Add this batch's tracked matrices to the epoch's sums."""
        if self.tracked_weights:
            self.weight_sums = self.weight_sums.add(self.tracked_matrices(weights), labels)

    def weight_figures(self) -> dict[str, float | list]:
        """`w_<kind>_mean/<k>`, `w_<kind>_std/<k>` (and by class, if asked) over the epoch's
        samples on all processes; the next epoch starts from zero."""
        figures = self.weight_sums.figures(self.context.gather)
        self.weight_sums = self.fresh_weight_sums()
        return figures

    # ---------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict[str, Any]:
        """Running state beyond parameters and buffers: tensors, numbers, strings, lists, dicts."""
        return {
            "weight_sums": self.weight_sums.state(),
            "temperature": self.temperature_policy.extra_state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.weight_sums = self.weight_sums.with_state(state["weight_sums"])
        self.temperature_policy.load_extra_state(state["temperature"])


def _per_teacher(temperature: float | Tensor, batch_size: int, num_teachers: int) -> list:
    """Split a temperature into one per teacher: the number itself, or that teacher's B×1 column."""
    if not isinstance(temperature, Tensor):
        return [temperature] * num_teachers
    grid = temperature.reshape(-1, 1) if temperature.dim() == 1 else temperature
    grid = grid.expand(batch_size, num_teachers)
    return [grid[:, k : k + 1] for k in range(num_teachers)]
