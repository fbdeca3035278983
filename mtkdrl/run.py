"""`build_run(recipe) -> Run`: every part of a distillation run, built and prepared in one place.

The training loop, the dry run, `mtkdrl cache` and the benchmarks all start from a `Run`. Parts
are built in a fixed order (student, data, teachers, objective, method, adapters, optimizer),
which fixes what the seeded RNG gives each of them, so a recipe and seed always build the same run.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import ProjectConfiguration, parse_flag_from_env, set_seed
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.utils.data import DataLoader

from .assembly import RunFacts, build_parts
from .checkpoint import CHECKPOINT_DIR, Checkpoints, TrainingState
from .data import DataBundle, build_data, load_splits
from .errors import MtkdrlError
from .hardware import cpu_bf16_flags
from .methods import method_class
from .optim import build_optimizer, build_scheduler
from .outputs import RUN_FILES, RunOutputs
from .pool import (
    OutputsModel,
    TeacherPool,
    create_model,
    data_config_of,
)
from .precision import Precision, choose_precision
from .recipe import Recipe
from .run_lock import RunLock
from .task import DistillationTask
from .teacher_cache import CachedTeachers, LiveTeachers, open_for_run


@dataclass
class Run:
    """The parts of one run. `train_loader`/`eval_loader` are None in a dry run (no data)."""

    recipe: Recipe
    accelerator: Accelerator
    precision: Precision
    task: DistillationTask
    teachers: TeacherPool
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    data: DataBundle | None
    train_loader: DataLoader | None
    eval_loader: DataLoader | None
    student_cfg: dict
    num_classes: int
    batches_per_epoch: int
    outputs: RunOutputs
    checkpoints: Checkpoints
    resume: bool = False
    state: TrainingState = field(default_factory=TrainingState)
    lock: RunLock | None = None  # held on output_dir for the run's lifetime (none in a dry run)
    identity: dict = field(default_factory=dict)  # what the run is (`run_identity`), once started

    @property
    def student(self) -> nn.Module:
        """The student as prepared by Accelerate (an `OutputsModel`, maybe wrapped)."""
        return self.task.student

    @property
    def teacher_source(self) -> CachedTeachers | LiveTeachers:
        return self.task.teachers

    def unwrapped_student(self) -> nn.Module:
        """The bare timm student, as it is exported."""
        return self.accelerator.unwrap_model(self.task.student).model

    def close(self) -> None:
        """End the run's hold on its resources: the teacher cache, the trackers, the folder."""
        self.teacher_source.close()
        self.accelerator.end_training()
        if self.lock is not None:
            self.lock.release()


def make_accelerator(recipe: Recipe, dry_run: bool) -> tuple[Accelerator, Precision]:
    """An Accelerator for the recipe's precision (chosen for the device where `auto`),
    accumulation and trackers, checked against the number of processes that were launched."""
    train = recipe.train
    trackers = [] if dry_run else train.trackers
    # Accelerate keeps its settings in process-wide singletons; clear them so that several runs in
    # one Python process (a notebook, the tests) each get their own precision (Accelerate has no
    # public call for this).
    AcceleratorState._reset_state()
    GradientState._reset_state()
    # the device the Accelerator will pick (its state sets up the processes as it would)
    device = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device
    precision = choose_precision(train.mixed_precision, device)
    accelerator = Accelerator(
        mixed_precision=precision.mode,
        gradient_accumulation_steps=train.grad_accum_steps,
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=recipe.output_dir, total_limit=train.keep_checkpoints
        ),
    )
    expected = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != expected:
        raise MtkdrlError(
            f"{expected} processes were started but Accelerate sees {accelerator.num_processes}; "
            "on CPU launch with `accelerate launch --cpu` or set ACCELERATE_USE_CPU=true"
        )
    _warn_about_precision(accelerator)
    return accelerator, precision


def _warn_about_precision(accelerator: Accelerator) -> None:
    if accelerator.device.type != "cpu":
        return
    if accelerator.mixed_precision == "bf16" and not cpu_bf16_flags():
        warnings.warn(
            "train.mixed_precision=bf16 on a CPU without AMX or AVX512-BF16 is emulated and runs "
            "several times slower than fp32 here; use train.mixed_precision=auto (or no)",
            stacklevel=3,
        )
    if accelerator.mixed_precision == "fp16":
        warnings.warn(
            "train.mixed_precision=fp16 has no effect on CPU: running in fp32 "
            "(use bf16 for mixed precision on CPU)",
            stacklevel=3,
        )


def check_run_dir(recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """Refuse to start over an existing run (a fresh start removes its files) unless told to
    resume or overwrite it."""
    run_dir = Path(recipe.output_dir)
    root = run_dir / CHECKPOINT_DIR
    has_checkpoints = (root / "latest").is_file()
    if resume:
        for path in (root, *(run_dir / name for name in RUN_FILES)):
            if path.is_symlink():  # a run folder from someone else must not reach outside it
                raise MtkdrlError(
                    f"--resume: {path} is a symlink; a run folder's files must be its own: "
                    "remove the link, or start afresh with --overwrite"
                )
    if resume and not has_checkpoints:
        raise MtkdrlError(f"--resume: no checkpoint in {root}")
    if resume or overwrite:
        return
    if has_checkpoints:
        raise MtkdrlError(
            f"output_dir {recipe.output_dir} already holds a run: pass --resume to continue it, "
            "--overwrite to start again, or choose another output_dir"
        )
    left = [name for name in RUN_FILES if (run_dir / name).is_file()]
    if left:
        raise MtkdrlError(
            f"output_dir {recipe.output_dir} holds a former run's {', '.join(left)} and no "
            "checkpoint to resume: pass --overwrite to start again (it removes them), or choose "
            "another output_dir"
        )


def build_run(
    recipe: Recipe, resume: bool = False, overwrite: bool = False, dry_run: bool = False
) -> Run:
    """Every part of the run the recipe describes, prepared for training on this process.

    A dry run builds no data and no pretrained weights (shapes only); its schedule spans one step.
    """
    if not dry_run:
        check_run_dir(recipe, resume, overwrite)
    accelerator, precision = make_accelerator(recipe, dry_run)
    lock = None if dry_run else RunLock.acquire(accelerator, Path(recipe.output_dir))
    try:
        return _build_parts_of_run(recipe, accelerator, precision, lock, resume, dry_run)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build_parts_of_run(
    recipe: Recipe,
    accelerator: Accelerator,
    precision: Precision,
    lock: RunLock | None,
    resume: bool,
    dry_run: bool,
) -> Run:
    set_seed(recipe.seed)
    device = accelerator.device
    num_classes, splits = _classes_and_splits(recipe, dry_run)
    spec = recipe.student if not dry_run else recipe.student.without_weights()
    student = OutputsModel(create_model(spec, num_classes, "student"))
    student_cfg = data_config_of(student.model)
    data = None if dry_run else build_data(recipe.data, student_cfg, recipe.seed, splits)
    uses_teachers = method_class(recipe.method.name).uses_teachers
    teachers = TeacherPool.from_specs(
        recipe.teachers if uses_teachers else [], num_classes, student_cfg, pretrained=not dry_run
    ).to(device)
    if uses_teachers and not recipe.teachers:
        raise MtkdrlError(f"teachers: method {recipe.method.name!r} needs at least one teacher")
    facts = RunFacts.of(
        accelerator,
        batch_size=recipe.data.batch_size,
        num_samples=0 if data is None else data.train_size,
        random_access=data is None or data.sampler is not None,
        weights_by_class=recipe.train.log_weights_by_class,
    )
    parts = build_parts(recipe.method, teachers, student, student_cfg, num_classes, facts)
    adapters = parts.adapters
    feature_stage = parts.loss.objective.feature_stage if uses_teachers else None
    params = [*student.parameters(), *(adapters.parameters() if adapters is not None else [])]
    optimizer = build_optimizer(params, recipe.optim)
    source = LiveTeachers(teachers)
    if not dry_run:
        source = open_for_run(
            recipe,
            data,
            teachers,
            parts.probe,
            feature_stage,
            accelerator,
            student_cfg,
            parts.loss.method.teacher_embedding_width,
        )
    if recipe.train.channels_last:
        student.to(memory_format=torch.channels_last)
        teachers.to(device, memory_format=torch.channels_last)
    if recipe.train.compile:
        student = torch.compile(student)
        teachers.compile()
    train_loader = eval_loader = None
    if dry_run:
        student, optimizer = accelerator.prepare(student, optimizer)
    else:
        student, optimizer, train_loader, eval_loader = accelerator.prepare(
            student, optimizer, data.train_loader, data.eval_loader
        )
    if adapters is not None:
        adapters = accelerator.prepare(adapters)
    student.train()
    batches, steps = _epoch_length(recipe, train_loader)
    scheduler = build_scheduler(optimizer, recipe.optim, steps, recipe.train.epochs)
    run_dir = Path(recipe.output_dir)
    task = DistillationTask(student, source, parts.loss, adapters, recipe.train.channels_last)
    return Run(
        recipe=recipe,
        accelerator=accelerator,
        precision=precision,
        task=task,
        teachers=teachers,
        optimizer=optimizer,
        scheduler=scheduler,
        data=data,
        train_loader=train_loader,
        eval_loader=eval_loader,
        student_cfg=student_cfg,
        num_classes=num_classes,
        batches_per_epoch=batches,
        outputs=RunOutputs(run_dir, accelerator.is_main_process),
        checkpoints=Checkpoints(accelerator, run_dir),
        resume=resume,
        lock=lock,
    )


def _classes_and_splits(recipe: Recipe, dry_run: bool) -> tuple[int, tuple | None]:
    """The data set's class count and its opened splits (read once per run), checked against
    `data.num_classes`; a dry run reads no data and needs `data.num_classes`."""
    declared = recipe.data.num_classes
    if dry_run:
        if declared is None:
            raise MtkdrlError("data.num_classes must be set for --dry-run (no data is read)")
        return declared, None
    splits = load_splits(recipe.data)
    found = splits[2].num_classes
    if declared is not None and declared != found:
        raise MtkdrlError(f"data.num_classes is {declared} but the data set has {found} classes")
    return found, splits


def _epoch_length(recipe: Recipe, train_loader: DataLoader | None) -> tuple[int, int]:
    """Batches per epoch (capped by `train.max_steps_per_epoch`) and optimizer steps per epoch."""
    if train_loader is None:
        return 1, 1
    accum = recipe.train.grad_accum_steps
    batches = len(train_loader)
    if recipe.train.max_steps_per_epoch is not None:
        batches = min(batches, recipe.train.max_steps_per_epoch * accum)
    return batches, math.ceil(batches / accum)
