"""A recipe's `method:` section built into its parts: the objective, the weighting method and the
feature adapters, in a fixed order (so a seed always initialises them alike), with every pair
that cannot work together refused in one line before any compute."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor

from .features import build_feature_term
from .logit_losses import build_logit_loss
from .losses import FeatureAdapters
from .methods import Method, MethodContext, method_class, method_options
from .objective import Objective
from .pool import ModelOutputs, OutputsModel, TeacherPool, embedding_width, teacher_heads
from .recipe import MethodConfig
from .temperatures import TemperatureContext, base_temperature, build_temperature_policy
from .weight_log import WeightLog
from .weighted_loss import WeightedLoss


@dataclass
class RunFacts:
    """What the parts may know of the run beyond the models: the device (None: the student's),
    how to gather (concatenate) and reduce (average) a tensor over processes (None in one
    process) and this process's rank, the per-process batch, the training set's size (0 where
    unknown), whether its samples can be read by index, and whether weights are logged per
    class."""

    device: torch.device | None = None
    gather: Callable[[Tensor], Tensor] | None = None
    reduce: Callable[[Tensor], Tensor] | None = None
    process_index: int = 0
    batch_size: int = 0
    num_samples: int = 0
    random_access: bool = True
    weights_by_class: bool = False

    @classmethod
    def of(cls, accelerator: Accelerator, **facts: Any) -> RunFacts:
        """The facts of a run under `accelerator`, with the others given."""
        multi = accelerator.num_processes > 1
        return cls(
            device=accelerator.device,
            gather=accelerator.gather if multi else None,
            reduce=(lambda t: accelerator.reduce(t, reduction="mean")) if multi else None,
            process_index=accelerator.process_index,
            **facts,
        )


@dataclass
class DistillationParts:
    """The method on the objective, the feature adapters (None without a feature term), and
    the teachers' probe outputs at the feature term's stage (for the cache's layout)."""

    loss: WeightedLoss
    adapters: FeatureAdapters | None
    probe: list[ModelOutputs]


def build_objective(
    config: MethodConfig, cls: type[Method], options: object, facts: RunFacts
) -> Objective:
    """The shared loss the recipe describes, checked against what method `cls` needs."""
    base = base_temperature(config.temperature)
    # a number in the recipe is the fixed T the objective starts from
    spec = config.temperature if isinstance(config.temperature, Mapping) else base
    policy_context = TemperatureContext(
        facts.reduce, facts.process_index, facts.num_samples, facts.random_access
    )
    policy = build_temperature_policy(spec, policy_context)
    feature = build_feature_term(config.feature, cls.default_feature)
    cls.check_objective(policy, feature)
    logit_loss = cls.logit_loss_for(build_logit_loss(config.logit_loss), options)
    return Objective(logit_loss, config.alpha, config.beta, policy, feature, base)


def build_parts(
    config: MethodConfig,
    teachers: TeacherPool,
    student: OutputsModel,
    student_cfg: dict,
    num_classes: int,
    facts: RunFacts,
) -> DistillationParts:
    """Objective, method and adapters for a student and its teachers (on the run's device)."""
    cls = method_class(config.name)
    options = method_options(cls, config.options)
    device = facts.device or next(student.parameters()).device
    objective = build_objective(config, cls, options, facts)
    probe = teachers.check_inputs(student_cfg, device)
    stage = objective.feature_stage if cls.uses_teachers else None
    feature_probe = probe if stage is None else teachers.check_inputs(student_cfg, device, stage)
    context = MethodContext(
        teacher_names=list(teachers.names),
        num_classes=num_classes,
        embedding_dims=[out.embedding.shape[1] for out in probe],
        teacher_heads=teacher_heads(teachers.teachers, probe),
        objective=objective,
        feature_channels=[] if stage is None else [out.features.shape[1] for out in feature_probe],
        batch_size=facts.batch_size,
        student_width=embedding_width(student.model),
        gather=facts.gather,
        reduce=facts.reduce,
        process_index=facts.process_index,
    )
    method = cls(context, options).to(device)
    objective = objective.to(device)
    adapters = None
    if stage is not None:
        adapters = build_adapters(student, student_cfg, feature_probe, objective)
    classes = num_classes if facts.weights_by_class else 0
    weight_log = WeightLog(len(teachers), classes, facts.gather)
    return DistillationParts(WeightedLoss(method, objective, weight_log), adapters, feature_probe)


def build_adapters(
    student: OutputsModel, student_cfg: dict, probe: list[ModelOutputs], objective: Objective
) -> FeatureAdapters:
    """One adapter per teacher, of the feature term's kind, sized by a probe of the student's map
    at the term's stage (`probe` holds the teachers' maps at that stage)."""
    channels, height, width = student_cfg["input_size"]
    device = next(student.parameters()).device
    student.eval()
    with torch.no_grad():
        zeros = torch.zeros(2, channels, height, width, device=device)
        student_map = student(zeros, objective.feature_stage)[2]
    student.train()
    adapters = objective.feature.build_adapters(student_map, [out.features for out in probe])
    return adapters.to(device)
