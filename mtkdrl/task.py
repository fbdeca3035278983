"""`DistillationTask`: a student, its teachers, a weighting method and the shared objective as one
timm `TrainingTask`, so any training loop can use an mtkdrl method:

    task = DistillationTask.from_models(student, [teacher_a, teacher_b], "mtkdrl")
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.05, momentum=0.9)
    result = task(images, labels)
    result["loss"].backward()
    optimizer.step()

`task(input, target)` returns `loss` (to back-propagate), `output` (the student's logits) and the
named terms' batch means, as timm's tasks do. The task is the loop's only handle on the method and
the objective (through its `WeightedLoss`, which composes them, sets the temperature, calls both
parts' hooks and logs the teachers' weights). Teachers receive the batch re-normalised (and
resized) for their own preprocessing by the pool's input adapters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from timm.task import TrainingTask
from torch import Tensor, nn
from torch.func import functional_call

from .assembly import RunFacts, build_parts
from .batch import DistillBatch
from .methods import Method, StudentAccess
from .objective import Objective
from .pool import ModelOutputs, OutputsModel, TeacherPool, data_config_of
from .recipe import MethodConfig
from .teacher_cache import LiveTeachers
from .weighted_loss import WeightedLoss


class DistillationTask(TrainingTask):
    """Outputs of every model for a batch, and the objective's terms weighted by the method.

    `student` is an `OutputsModel` (maybe wrapped by Accelerate); `teachers` a teacher source
    (`LiveTeachers` or `CachedTeachers`), kept outside the module so teachers never reach the
    optimizer or a checkpoint; `adapters` the feature adapters (None without a feature term).
    """

    def __init__(
        self,
        student: nn.Module,
        teachers,
        loss: WeightedLoss,
        adapters: nn.Module | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__(device=next(student.parameters()).device, verbose=False)
        self.student = student
        self.loss = loss
        self.adapters = adapters
        self.teachers = teachers
        self.channels_last = channels_last
        self.epoch = 0
        self._named_parameters: dict[str, Tensor] | None = None  # found once, at first use

    @classmethod
    def from_models(
        cls,
        student: nn.Module,
        teachers: list[nn.Module],
        method: str | MethodConfig | None = None,
        num_classes: int | None = None,
    ) -> DistillationTask:
        """A task over timm models built elsewhere, with live teachers and the method a name (or a
        recipe's `MethodConfig`) names (the default method without one); the teachers are frozen,
        the adapters sized by a probe."""
        config = MethodConfig(name=method) if isinstance(method, str) else method or MethodConfig()
        student_cfg = data_config_of(student)
        device = next(student.parameters()).device
        names = [
            getattr(t, "default_cfg", {}).get("architecture", type(t).__name__) for t in teachers
        ]
        pool = TeacherPool(teachers, names, student_cfg).to(device)
        outputs = OutputsModel(student)
        classes = num_classes or student.num_classes
        parts = build_parts(config, pool, outputs, student_cfg, classes, RunFacts())
        return cls(outputs, LiveTeachers(pool), parts.loss, parts.adapters)

    # ------------------------------------------------------------ timm's task interface
    def get_trainable_module(self, ema: bool = False) -> nn.Module:
        """The student (as its run prepared it); its adapters train with it."""
        return self.student

    def get_eval_model(self, module: nn.Module | None = None, ema: bool = False) -> nn.Module:
        """The bare timm student: what is evaluated and exported."""
        return extract_model_from_parallel(self.student).model

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the student's optimizer trains: the student and its feature adapters (a method's
        own networks, such as MTKD-RL's agent, have optimizers of their own)."""
        adapters = [] if self.adapters is None else list(self.adapters.parameters())
        return [*self.student.parameters(), *adapters]

    def named_trainable_parameters(self) -> dict[str, Tensor]:
        """The student's parameters by name, and the adapters' prefixed `adapters.`: the keys that
        `outputs(..., params)` reads. Walked once (every step asks), then handed out as a copy."""
        if self._named_parameters is None:
            named = dict(extract_model_from_parallel(self.student).named_parameters())
            if self.adapters is not None:
                adapters = extract_model_from_parallel(self.adapters)
                named.update({f"adapters.{k}": v for k, v in adapters.named_parameters()})
            self._named_parameters = named
        return dict(self._named_parameters)

    @property
    def feature_stage(self) -> int | None:
        """The `forward_intermediates` entry the feature term reads; None without one."""
        return self.objective.feature_stage if self.method.uses_teachers else None

    def set_epoch(self, epoch: int) -> None:
        """The epoch the method sees (warm-ups) and the teacher cache replays."""
        self.epoch = epoch

    # ------------------------------------------------------------------ outputs
    def outputs(
        self,
        images: Tensor,
        labels: Tensor,
        indices: Tensor | None = None,
        params: dict[str, Tensor] | None = None,
        teacher_outputs: list[ModelOutputs] | None = None,
        live_rows: Tensor | None = None,
    ) -> DistillBatch:
        """Teachers first (before the student's saved activations hold memory), then the student
        and its adapted feature maps; with `params`, the student runs at those parameters on
        copies of its buffers (`torch.func.functional_call`); `teacher_outputs`, when given, stand
        in for the teachers; `live_rows` marks rows whose images differ from the stored sample's
        (their teachers run live)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        teacher_outs = teacher_outputs or []
        if self.method.uses_teachers and teacher_outputs is None:
            teacher_outs = self.teachers(
                images, indices, self.epoch, self.feature_stage, live_rows=live_rows
            )
        student_out = self.run_student(images, params)
        adapted = self.run_adapters(student_out.features, params)
        return DistillBatch(labels, student_out, teacher_outs, adapted, indices)

    def run_student(self, images: Tensor, params: dict[str, Tensor] | None = None) -> ModelOutputs:
        """The student's outputs, at its own parameters or (functionally) at `params`."""
        if params is None:
            return ModelOutputs(*self.student(images, self.feature_stage))
        module = extract_model_from_parallel(self.student)
        return ModelOutputs(*_call_at(module, params, "", (images, self.feature_stage)))

    def run_adapters(
        self, student_map: Tensor | None, params: dict[str, Tensor] | None = None
    ) -> list[Tensor]:
        """The student's map through each teacher's adapter (fp32), at the adapters' own
        parameters or at the `adapters.`-prefixed entries of `params`; empty without adapters."""
        if self.feature_stage is None:
            return []
        if params is None:
            adapted = self.adapters(student_map)
        else:
            module = extract_model_from_parallel(self.adapters)
            adapted = _call_at(module, params, "adapters.", (student_map,))
        return [a.float() for a in adapted]

    # ------------------------------------------------------------------ the loss
    @property
    def method(self) -> Method:
        return self.loss.method

    @property
    def objective(self) -> Objective:
        return self.loss.objective

    def losses(self, batch: DistillBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The per-sample loss (B,) and the named per-sample terms, at the task's epoch."""
        return self.loss(batch, self.epoch)

    def look_ahead(self) -> contextlib.AbstractContextManager[None]:
        """Losses computed inside leave the method's running state and the weight log as they
        were: for trial and look-ahead losses."""
        return self.loss.look_ahead()

    def forward(
        self, input: Tensor, target: Tensor, indices: Tensor | None = None
    ) -> dict[str, Tensor]:
        """timm's task convention: `loss`, `output`, and each named term's batch mean."""
        batch = self.outputs(input, target, indices)
        sample_loss, terms = self.losses(batch)
        return {
            "loss": sample_loss.mean(),
            "output": batch.student.logits,
            **{name: value.mean() for name, value in terms.items()},
        }

    # ------------------------------------------------------------ around a step
    def prepare_batch(
        self, images: Tensor, indices: Tensor, fetch: Callable[[int], Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """A training batch's images as the models should see them, and the rows changed."""
        return self.loss.prepare_batch(images, indices, self.epoch, fetch)

    def before_step(self, access: StudentAccess) -> None:
        """After the backward pass, before the optimizer step."""
        self.loss.before_step(access)

    def observe(self, batch: DistillBatch, sample_loss: Tensor) -> None:
        """After the optimizer step, with the step's per-sample loss (detached)."""
        self.loss.observe(batch, sample_loss, self.epoch)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Figures to log at an epoch's end."""
        return self.loss.end_epoch(epoch)


def _call_at(module: nn.Module, params: dict[str, Tensor], prefix: str, args: tuple):
    """`module(*args)` with its parameters taken from `params[prefix + name]` and its buffers
    cloned, so that running statistics (BN) are left as they were."""
    own = {name: params[prefix + name] for name, _ in module.named_parameters()}
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    return functional_call(module, {**own, **buffers}, args)
