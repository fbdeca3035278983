"""`DistillationTask`: a student, its teachers and a method as one module, in timm's task style.

`task(input, target)` returns a dict with `loss` (to back-propagate), `output` (the student's
logits) and the method's named terms (batch means), as `timm.task.LogitDistillationTask` does,
so any training loop can use an mtkdrl method:

    task = DistillationTask.from_models(student, [teacher_a, teacher_b], "avg")
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.05, momentum=0.9)
    result = task(images, labels)
    result["loss"].backward()
    optimizer.step()

Teachers receive the batch re-normalised (and resized) for their own preprocessing by the
pool's input adapters. The run's own step (`mtkdrl.step`) uses the two halves, `outputs` and
`losses`, to keep the batch for the method's hooks.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import extract_model_from_parallel
from torch import Tensor, nn
from torch.func import functional_call

from .losses import FeatureAdapters
from .methods import DistillBatch, Method, MethodContext, create_method
from .pool import (
    ModelOutputs,
    OutputsModel,
    TeacherPool,
    data_config_of,
    embedding_width,
    teacher_heads,
)
from .recipe import MethodConfig
from .teacher_cache import LiveTeachers
from .temperatures import base_temperature


class DistillationTask(nn.Module):
    """Outputs of every model for a batch, and the method's loss terms on them.

    `student` is an `OutputsModel` (maybe wrapped by Accelerate); `teachers` a teacher source
    (`LiveTeachers` or `CachedTeachers`), kept outside the module so teachers never reach the
    optimizer or a checkpoint; `adapters` the feature adapters (None without a feature loss).
    """

    def __init__(
        self,
        student: nn.Module,
        teachers,
        method: Method,
        adapters: nn.Module | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.student = student
        self.method = method
        self.adapters = adapters
        self.teachers = teachers
        self.channels_last = channels_last
        self.epoch = 0

    @classmethod
    def from_models(
        cls,
        student: nn.Module,
        teachers: list[nn.Module],
        method: str | MethodConfig = "avg",
        num_classes: int | None = None,
    ) -> DistillationTask:
        """A task over timm models built elsewhere, with live teachers and the method a name (or a
        recipe's `MethodConfig`) names; the teachers are frozen, the adapters sized by a probe."""
        config = MethodConfig(name=method) if isinstance(method, str) else method
        student_cfg = data_config_of(student)
        device = next(student.parameters()).device
        names = [
            getattr(t, "default_cfg", {}).get("architecture", type(t).__name__) for t in teachers
        ]
        pool = TeacherPool(teachers, names, student_cfg).to(device)
        probe = pool.check_inputs(student_cfg, device)
        classes = num_classes or student.num_classes
        context = method_context(config, pool, probe, classes, student=student)
        method_ = create_method(config, context).to(device)
        outputs = OutputsModel(student)
        adapters = None
        if method_.uses_teachers and method_.uses_features:
            probe = pool.check_inputs(student_cfg, device, method_.feature_stage)
            adapters = build_adapters(outputs, student_cfg, probe, method_).to(device)
        return cls(outputs, LiveTeachers(pool), method_, adapters)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the student's optimizer trains: the student and its feature adapters (a method's
        own networks, such as MTKD-RL's agent, have optimizers of their own)."""
        adapters = [] if self.adapters is None else list(self.adapters.parameters())
        return [*self.student.parameters(), *adapters]

    @property
    def feature_stage(self) -> int | None:
        """The `forward_intermediates` entry whose maps the method distils; None without a
        feature loss."""
        if self.method.uses_teachers and self.method.uses_features:
            return self.method.feature_stage
        return None

    def set_epoch(self, epoch: int) -> None:
        """The epoch the method sees (warm-ups) and the teacher cache replays."""
        self.epoch = epoch

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

    def named_trainable_parameters(self) -> dict[str, Tensor]:
        """The student's parameters by name, and the adapters' prefixed `adapters.`: the keys that
        `outputs(..., params)` reads."""
        named = dict(extract_model_from_parallel(self.student).named_parameters())
        if self.adapters is not None:
            adapters = extract_model_from_parallel(self.adapters)
            named.update({f"adapters.{k}": v for k, v in adapters.named_parameters()})
        return named

    def losses(self, batch: DistillBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The per-sample loss (B,) and the method's named per-sample terms."""
        terms = self.method(batch, self.epoch)
        values = iter(terms.values())
        sample_loss = next(values)
        for value in values:
            sample_loss = sample_loss + value
        return sample_loss, terms

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


def method_context(
    config: MethodConfig,
    teachers: TeacherPool,
    probe: list[ModelOutputs],
    num_classes: int,
    accelerator: Accelerator | None = None,
    weights_by_class: bool = False,
    student: nn.Module | None = None,
    num_samples: int = 0,
    random_access: bool = True,
) -> MethodContext:
    """What a method is told when it is built; with several processes, how to gather and reduce."""
    multi = accelerator is not None and accelerator.num_processes > 1
    return MethodContext(
        teacher_names=list(teachers.names),
        num_classes=num_classes,
        embedding_dims=[out.embedding.shape[1] for out in probe],
        temperature=base_temperature(config.temperature),
        alpha=config.alpha,
        beta=config.beta,
        teacher_heads=teacher_heads(teachers.teachers, probe),
        weights_by_class=weights_by_class,
        gather=accelerator.gather if multi else None,
        reduce=(lambda t: accelerator.reduce(t, reduction="mean")) if multi else None,
        process_index=0 if accelerator is None else accelerator.process_index,
        student_width=0 if student is None else embedding_width(student),
        num_samples=num_samples,
        random_access=random_access,
    )


def build_adapters(
    student: OutputsModel, student_cfg: dict, probe: list[ModelOutputs], method: Method
) -> FeatureAdapters:
    """One feature adapter per teacher, of the method's kind, sized by a probe of the student's map
    at the method's stage (`probe` holds the teachers' maps at that stage)."""
    channels, height, width = student_cfg["input_size"]
    device = next(student.parameters()).device
    student.eval()
    with torch.no_grad():
        zeros = torch.zeros(2, channels, height, width, device=device)
        student_map = student(zeros, method.feature_stage)[2]
    student.train()
    return FeatureAdapters.build(student_map, [out.features for out in probe], method.adapter_kind)


def _call_at(module: nn.Module, params: dict[str, Tensor], prefix: str, args: tuple):
    """`module(*args)` with its parameters taken from `params[prefix + name]` and its buffers
    cloned, so that running statistics (BN) are left as they were."""
    own = {name: params[prefix + name] for name, _ in module.named_parameters()}
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    return functional_call(module, {**own, **buffers}, args)
