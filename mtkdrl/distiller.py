"""The Accelerate distillation loop (`Distiller`, `distill`) and its command line.

One step: the student and the frozen teachers see the same batch, the weighting strategy turns
the per-sample, per-teacher terms into weights, and the student (with its feature adapters)
minimises CE + alpha Σ_k w_k·KL_k + beta Σ_k w'_k·MSE_k. The same code runs on one CPU, one GPU
or many processes under `accelerate launch`/`torchrun`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import CheckpointManager, TrainingState, append_jsonl, save_weights_atomic
from .data import DataBundle, build_data
from .errors import MtkdrlError, exit_code
from .hardware import machine_info
from .losses import FeatureAdapters, feature_mse_per_sample, kl_per_sample, stack_teacher_terms
from .methods import (
    DistillBatch,
    MethodContext,
    TeacherWeights,
    WeightingStrategy,
    create_method,
    method_class,
)
from .metrics import evaluate_classifier
from .optim import build_optimizer, build_scheduler
from .pool import ModelOutputs, OutputsModel, TeacherPool, create_model, data_config_of
from .recipe import ModelSpec, Recipe
from .teacher_cache import open_for_run

DRY_RUN_STEPS = 2
DRY_RUN_BATCH = 2


@dataclass
class StepResult:
    """Detached figures of one training step, kept on the device until logged."""

    loss: Tensor
    ce: Tensor
    kd: Tensor
    feature: Tensor


class Distiller:
    """Builds a run from a recipe and trains the student; `run()` returns the run's summary."""

    def __init__(
        self, recipe: Recipe, resume: bool = False, overwrite: bool = False, dry_run: bool = False
    ) -> None:
        self.recipe = recipe
        self.resume = resume
        self.overwrite = overwrite
        self.dry_run = dry_run
        self.run_dir = Path(recipe.output_dir)
        self.state = TrainingState()
        self._final_eval: dict[str, float] | None = None  # the last epoch's, for the summary

    # ----------------------------------------------------------------- building
    def _make_accelerator(self) -> Accelerator:
        train = self.recipe.train
        kwargs = {}
        if train.mixed_precision is not None:
            kwargs["mixed_precision"] = train.mixed_precision
        trackers = train.trackers if not self.dry_run else []
        # Accelerate keeps its settings in process-wide singletons; clear them so that several
        # runs in one Python process (a notebook, the tests) each get their own precision.
        AcceleratorState._reset_state()
        GradientState._reset_state()
        accelerator = Accelerator(
            gradient_accumulation_steps=train.grad_accum_steps,
            log_with=trackers or None,
            project_dir=str(self.run_dir),
            **kwargs,
        )
        expected = int(os.environ.get("WORLD_SIZE", "1"))
        if accelerator.num_processes != expected:
            raise MtkdrlError(
                f"{expected} processes were started but Accelerate sees "
                f"{accelerator.num_processes}; "
                "on CPU launch with `accelerate launch --cpu` or set ACCELERATE_USE_CPU=true"
            )
        if (
            accelerator.mixed_precision == "bf16"
            and accelerator.device.type == "cpu"
            and not _cpu_has_native_bf16()
        ):
            warnings.warn(
                "train.mixed_precision=bf16 on a CPU without AMX or AVX512-BF16 is emulated and "
                "runs several times slower than fp32 here; use train.mixed_precision=no",
                stacklevel=2,
            )
        if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
            warnings.warn(
                "train.mixed_precision=fp16 has no effect on CPU: running in fp32 "
                "(use bf16 for mixed precision on CPU)",
                stacklevel=2,
            )
        return accelerator

    def _build(self) -> None:
        recipe, accelerator = self.recipe, self.accelerator
        pretrained = not self.dry_run
        if self.dry_run:
            if recipe.data.num_classes is None:
                raise MtkdrlError("data.num_classes must be set for --dry-run (no data is read)")
            self.num_classes = recipe.data.num_classes
            self.data: DataBundle | None = None
        self.student = OutputsModel(self._build_student(pretrained))
        self.student_cfg = data_config_of(self.student.model)
        if not self.dry_run:
            self.data = build_data(recipe.data, self.student_cfg, recipe.seed)
        teacher_specs = recipe.teachers if method_class(recipe.method.name).uses_teachers else []
        self.teachers = TeacherPool.from_specs(
            teacher_specs, self.num_classes, self.student_cfg, pretrained=pretrained
        ).to(accelerator.device)
        teacher_probe = self.teachers.check_inputs(self.student_cfg, accelerator.device)
        self.method = self._build_method(teacher_probe).to(accelerator.device)
        if self.method.uses_teachers and not recipe.teachers:
            raise MtkdrlError(f"teachers: method {recipe.method.name!r} needs at least one teacher")
        self.adapters = self._build_adapters(teacher_probe)
        params = list(self.student.parameters())
        if self.adapters is not None:
            params += list(self.adapters.parameters())
        self.optimizer = build_optimizer(params, recipe.optim)
        self.cached_teachers = None
        if not self.dry_run:
            with_features = self.method.uses_teachers and self.method.uses_features
            self.cached_teachers = open_for_run(
                recipe,
                self.data,
                self.teachers,
                teacher_probe,
                with_features,
                accelerator,
                self.student_cfg,
            )
        self._apply_speedups()

    def _apply_speedups(self) -> None:
        """`train.channels_last` and `train.compile`, for the student and the teachers alike."""
        train = self.recipe.train
        if train.channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teachers.to(self.accelerator.device, memory_format=torch.channels_last)
        if train.compile:
            self.student = torch.compile(self.student)
            self.teachers.compile()

    def _build_student(self, pretrained: bool) -> nn.Module:
        spec = self.recipe.student
        if not pretrained:
            spec = ModelSpec(name=spec.name, kwargs=spec.kwargs, mean=spec.mean, std=spec.std)
        if not self.dry_run:
            self.num_classes = self._dataset_classes(spec)
        return create_model(spec, self.num_classes, "student")

    def _dataset_classes(self, spec: ModelSpec) -> int:
        from .data import load_splits

        _, _, info = load_splits(self.recipe.data)
        declared = self.recipe.data.num_classes
        if declared is not None and declared != info.num_classes:
            raise MtkdrlError(
                f"data.num_classes is {declared} but the data set has {info.num_classes} classes"
            )
        return info.num_classes

    def _build_method(self, teacher_probe: list) -> WeightingStrategy:
        recipe = self.recipe
        multi = self.accelerator.num_processes > 1
        context = MethodContext(
            teacher_names=list(self.teachers.names),
            num_classes=self.num_classes,
            embedding_dims=[out.embedding.shape[1] for out in teacher_probe],
            temperature=recipe.method.temperature,
            alpha=recipe.method.alpha,
            beta=recipe.method.beta,
            gather=self.accelerator.gather if multi else None,
            reduce=(lambda t: self.accelerator.reduce(t, reduction="mean")) if multi else None,
            process_index=self.accelerator.process_index,
        )
        return create_method(recipe.method, context)

    def _build_adapters(self, teacher_probe: list) -> FeatureAdapters | None:
        if not (self.method.uses_teachers and self.method.uses_features):
            return None
        channels, height, width = self.student_cfg["input_size"]
        probe = torch.zeros(2, channels, height, width)
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            student_map = self.student(probe)[2]
        self.student.train(was_training)
        maps = [out.features for out in teacher_probe]
        return FeatureAdapters.build(student_map.shape[1], maps)

    # ------------------------------------------------------------------- a step
    def train_step(
        self, images: Tensor, labels: Tensor, indices: Tensor | None, epoch: int
    ) -> StepResult:
        """Forward, weights, loss, backward and (at accumulation boundaries) the optimizer step.

        `indices` (the samples' rows in the training split) address the teacher cache, if any.
        """
        accelerator, method = self.accelerator, self.method
        use_teachers = method.uses_teachers
        use_features = use_teachers and method.uses_features
        if self.recipe.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        models = [self.student] + ([self.adapters] if self.adapters is not None else [])
        with accelerator.accumulate(*models):
            with accelerator.autocast():
                # teachers first, before the student's saved activations hold memory: on CPU the
                # step took 1.36 s this way against 1.77 s the other way round (4 CIFAR teachers,
                # batch 128; the teachers' convolutions ran slower after the student's forward)
                teacher_outs = []
                if use_teachers and self.cached_teachers is not None:
                    teacher_outs = self.cached_teachers(images, indices, epoch, use_features)
                elif use_teachers:
                    teacher_outs = self.teachers(images, use_features)
                student_out = ModelOutputs(*self.student(images, use_features))
                adapted = self.adapters(student_out.features) if use_features else []
            batch = self._terms(labels, student_out, teacher_outs, adapted)
            weights = method.weights(batch, epoch)
            sample_loss, kd, feature = self._combine(batch, weights)
            loss = sample_loss.mean()
            accelerator.backward(loss)
            self.optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        method.observe(batch, weights, sample_loss.detach(), epoch)
        return StepResult(loss.detach(), batch.ce.detach().mean(), kd.detach(), feature.detach())

    def _terms(self, labels, student_out, teacher_outs, adapted) -> DistillBatch:
        temperature = self.recipe.method.temperature
        logits = student_out.logits.float()
        ce = F.cross_entropy(logits, labels, reduction="none")
        if teacher_outs:
            kl = stack_teacher_terms(
                [kl_per_sample(logits, t.logits, temperature) for t in teacher_outs]
            )
        else:
            kl = logits.new_zeros(logits.shape[0], 0)
        mse = None
        if adapted:
            mse = stack_teacher_terms(
                [
                    feature_mse_per_sample(a.float(), t.features)
                    for a, t in zip(adapted, teacher_outs, strict=True)
                ]
            )
        return DistillBatch(
            labels, student_out, teacher_outs, [a.float() for a in adapted], ce, kl, mse
        )

    def _combine(
        self, batch: DistillBatch, weights: TeacherWeights
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample loss CE + α Σ w·KL + β Σ w'·MSE, and the batch-mean KD and feature terms."""
        cfg = self.recipe.method
        kd = (weights.logit * batch.kl).sum(dim=1)
        sample_loss = batch.ce + cfg.alpha * kd
        feature = kd.new_zeros(())
        if batch.mse is not None and weights.feature is not None:
            feature_per_sample = (weights.feature * batch.mse).sum(dim=1)
            sample_loss = sample_loss + cfg.beta * feature_per_sample
            feature = feature_per_sample.mean()
        return sample_loss, kd.mean(), feature

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Train (or dry-run) the recipe; returns the summary written to `summary.json`."""
        self.build()
        if self.dry_run:
            return self._dry_run()
        return self._train()

    def build(self) -> None:
        """The accelerator, student, teachers, method, adapters, optimizer and (unless a dry run)
        the data, without training: what `run` starts with, and what a benchmark needs."""
        self._check_run_dir()
        self.accelerator = self._make_accelerator()
        set_seed(self.recipe.seed)
        self._build()

    def prepare_without_data(self) -> None:
        """Prepare student, optimizer and adapters for `train_step` on batches the caller makes
        (dry runs and benchmarks); the LR schedule spans one step."""
        self.scheduler = build_scheduler(self.optimizer, self.recipe.optim, 1, 1)
        self.student, self.optimizer = self.accelerator.prepare(self.student, self.optimizer)
        if self.adapters is not None:
            self.adapters = self.accelerator.prepare(self.adapters)
        self.student.train()

    def _check_run_dir(self) -> None:
        has_checkpoints = (self.run_dir / "checkpoints" / "latest").is_file()
        if self.dry_run:
            return
        if self.resume and not has_checkpoints:
            raise MtkdrlError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        if has_checkpoints and not (self.resume or self.overwrite):
            raise MtkdrlError(
                f"output_dir {self.run_dir} already holds a run: pass --resume to continue it, "
                "--overwrite to start again, or choose another output_dir"
            )

    def _dry_run(self) -> dict:
        """Two steps on random tensors of the right shape, with pretrained weights off."""
        batch_size = min(self.recipe.data.batch_size, DRY_RUN_BATCH)
        channels, height, width = self.student_cfg["input_size"]
        self.prepare_without_data()
        losses = []
        generator = torch.Generator().manual_seed(self.recipe.seed)
        for _ in range(DRY_RUN_STEPS):
            images = torch.randn(batch_size, channels, height, width, generator=generator)
            labels = torch.randint(0, self.num_classes, (batch_size,), generator=generator)
            device = self.accelerator.device
            result = self.train_step(images.to(device), labels.to(device), None, epoch=0)
            losses.append(result.loss.item())
        if not all(math.isfinite(v) for v in losses):
            raise MtkdrlError(f"dry run produced a non-finite loss: {losses}")
        summary = {
            "dry_run": True,
            "student": self.recipe.student.name,
            "teachers": [t.name for t in self.recipe.teachers],
            "method": self.recipe.method.name,
            "input_size": list(self.student_cfg["input_size"]),
            "losses": losses,
        }
        self.accelerator.print(f"dry run ok: {json.dumps(summary)}")
        return summary

    def _prepare_for_training(self) -> None:
        accelerator, recipe = self.accelerator, self.recipe
        objects = [self.student, self.optimizer, self.data.train_loader, self.data.eval_loader]
        self.student, self.optimizer, self.train_loader, self.eval_loader = accelerator.prepare(
            *objects
        )
        if self.adapters is not None:
            self.adapters = accelerator.prepare(self.adapters)
        accum = recipe.train.grad_accum_steps
        batches = len(self.train_loader)
        if recipe.train.max_steps_per_epoch is not None:
            batches = min(batches, recipe.train.max_steps_per_epoch * accum)
        self.batches_per_epoch = batches
        steps_per_epoch = math.ceil(batches / accum)
        self.scheduler = build_scheduler(
            self.optimizer, recipe.optim, steps_per_epoch, recipe.train.epochs
        )
        accelerator.register_for_checkpointing(self.scheduler, self.state, self.method)
        self.checkpoints = CheckpointManager(
            accelerator, self.run_dir, recipe.train.keep_checkpoints
        )

    def _start_or_resume(self) -> None:
        accelerator = self.accelerator
        if self.resume:
            latest = self.checkpoints.latest()
            accelerator.load_state(str(latest))
            accelerator.print(
                f"resumed from {latest} "
                f"(epoch {self.state.epoch}, batch {self.state.batch_in_epoch})"
            )
            return
        if accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in ("metrics.jsonl", "summary.json"):
                (self.run_dir / stale).unlink(missing_ok=True)
            (self.run_dir / "recipe.yaml").write_text(self.recipe.to_yaml())
        accelerator.wait_for_everyone()

    def _train(self) -> dict:
        accelerator, recipe = self.accelerator, self.recipe
        self._prepare_for_training()
        self._start_or_resume()
        if recipe.train.trackers:
            accelerator.init_trackers(self.run_dir.name, config=_flat_config(recipe.to_dict()))
        teacher_results = self._teacher_results()
        self._print_plan()
        started = time.perf_counter()
        try:
            while self.state.epoch < recipe.train.epochs:
                epoch = self.state.epoch
                epoch_started = time.perf_counter()
                if not self._train_epoch(epoch):
                    accelerator.print(
                        f"stopped after {self.state.global_step} steps (train.stop_after_steps)"
                    )
                    return {"stopped": True, "global_step": self.state.global_step}
                self._end_epoch(epoch, time.perf_counter() - epoch_started)
            return self._summary(teacher_results, time.perf_counter() - started)
        finally:
            if self.cached_teachers is not None:
                self.cached_teachers.cache.close()
            accelerator.end_training()

    def _train_epoch(self, epoch: int) -> bool:
        """One epoch from where the state says; False if `stop_after_steps` ended the run."""
        accelerator, train = self.accelerator, self.recipe.train
        view = self.cached_teachers.cache.view_of(epoch) if self.cached_teachers else None
        self.data.set_epoch(epoch, view)
        self.student.train()
        if self.adapters is not None:
            self.adapters.train()
        loader = self.train_loader
        if self.state.batch_in_epoch:
            loader = accelerator.skip_first_batches(loader, self.state.batch_in_epoch)
        progress = tqdm(
            total=self.batches_per_epoch,
            initial=self.state.batch_in_epoch,
            desc=f"epoch {epoch}",
            disable=not accelerator.is_local_main_process,
        )
        running = torch.zeros(5, device=accelerator.device)
        for images, labels, indices in loader:
            if self.state.batch_in_epoch >= self.batches_per_epoch:
                break
            result = self.train_step(images, labels, indices, epoch)
            running += torch.stack(
                [
                    result.loss,
                    result.ce,
                    result.kd,
                    result.feature,
                    torch.ones(()).to(running.device),
                ]
            )
            self.state.batch_in_epoch += 1
            progress.update(1)
            if not accelerator.sync_gradients:
                continue
            self.state.global_step += 1
            if self.state.global_step % train.log_every == 0:
                self._log_steps(running, epoch, progress)
                running.zero_()
            if train.checkpoint_every and self.state.global_step % train.checkpoint_every == 0:
                self._save_checkpoint()
            if train.stop_after_steps and self.state.global_step >= train.stop_after_steps:
                progress.close()
                return False
        progress.close()
        self._fill_dropped_views(epoch)
        return True

    def _fill_dropped_views(self, epoch: int) -> None:
        """Give the teacher cache the samples `drop_last` kept out of this epoch (main process)."""
        if self.cached_teachers is None or not self.method.uses_teachers:
            return
        if self.accelerator.is_main_process:
            with self.accelerator.autocast():
                self.cached_teachers.fill_dropped(
                    self.data.train_set,
                    epoch,
                    self.recipe.data.batch_size * self.accelerator.num_processes,
                    self.method.uses_features,
                    self.accelerator.device,
                )
        self.accelerator.wait_for_everyone()

    def _log_steps(self, running: Tensor, epoch: int, progress: tqdm) -> None:
        loss, ce, kd, feature, count = running.tolist()
        count = max(count, 1.0)
        record = {
            "step": self.state.global_step,
            "epoch": epoch,
            "loss": loss / count,
            "ce": ce / count,
            "kd": kd / count,
            "feature": feature / count,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.4g}")
        self._record(record, step=self.state.global_step)

    def _record(self, record: dict, step: int) -> None:
        if self.accelerator.is_main_process:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
        if self.recipe.train.trackers:
            scalars = {k: v for k, v in record.items() if isinstance(v, (int, float))}
            self.accelerator.log(scalars, step=step)

    def _end_epoch(self, epoch: int, seconds: float) -> None:
        """Close an epoch: the method's figures, evaluation (every `train.eval_every` epochs and
        at the last), last/best student weights and a checkpoint."""
        accelerator, train = self.accelerator, self.recipe.train
        method_stats = self.method.end_epoch(epoch)
        self.state.epoch = epoch + 1
        self.state.batch_in_epoch = 0
        record = {"epoch": epoch, "step": self.state.global_step, "epoch_seconds": seconds}
        improved = False
        if (epoch + 1) % train.eval_every == 0 or epoch + 1 == train.epochs:
            metrics = self._evaluate_student()
            if epoch + 1 == train.epochs:
                self._final_eval = metrics
            improved = metrics["top1"] > self.state.best_top1
            if improved:
                self.state.best_top1, self.state.best_epoch = metrics["top1"], epoch
                self.state.best_top5 = metrics["top5"]
            record.update(
                val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"]
            )
            accelerator.print(
                f"epoch {epoch}: val top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f} "
                f"({seconds:.0f}s)"
            )
        self._record({**record, **method_stats}, step=self.state.global_step)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            student = accelerator.unwrap_model(self.student).model
            meta = {"architecture": self.recipe.student.name, "epoch": str(epoch)}
            save_weights_atomic(student, self.run_dir / "student_last.safetensors", meta)
            if improved:
                save_weights_atomic(student, self.run_dir / "student_best.safetensors", meta)
        self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        """A checkpoint of the loop, after the teacher cache's pages are on disk."""
        if self.cached_teachers is not None:
            self.cached_teachers.cache.flush()
        self.checkpoints.save(self.state.global_step)

    def _evaluate_student(self) -> dict[str, float]:
        self.student.eval()
        return evaluate_classifier(
            lambda images: self.student(images, with_features=False)[0],
            self.eval_loader,
            self.accelerator.device,
            gather=self.accelerator.gather_for_metrics,
            autocast=self.accelerator.autocast,
        )

    def _teacher_results(self) -> list[dict]:
        """Each teacher's accuracy on the eval split, measured once per run and kept beside it."""
        path = self.run_dir / "teachers.json"
        if path.is_file():
            return json.loads(path.read_text())
        results = []
        if self.recipe.train.eval_teachers:
            for name, teacher, adapter in zip(
                self.teachers.names, self.teachers, self.teachers.adapters, strict=True
            ):
                metrics = evaluate_classifier(
                    lambda x, t=teacher, a=adapter: t(a(x)),
                    self.eval_loader,
                    self.accelerator.device,
                    gather=self.accelerator.gather_for_metrics,
                    autocast=self.accelerator.autocast,
                )
                results.append({"name": name, **metrics})
                self.accelerator.print(f"teacher {name}: val top-1 {metrics['top1']:.2f}")
        if self.accelerator.is_main_process:
            path.write_text(json.dumps(results, indent=2))
        return results

    def _print_plan(self) -> None:
        student = self.accelerator.unwrap_model(self.student).model
        params = sum(p.numel() for p in student.parameters())
        self.accelerator.print(
            f"mtkdrl {__version__}: student {self.recipe.student.name} "
            f"({params / 1e6:.2f} M params), "
            f"{len(self.teachers)} teachers, method {self.recipe.method.name}, "
            f"{self.batches_per_epoch} batches/epoch x {self.recipe.train.epochs} epochs, "
            f"precision {self.accelerator.mixed_precision}, "
            f"{self.accelerator.num_processes} process(es)"
        )
        if self.method.describe():
            self.accelerator.print(self.method.describe())

    def _summary(self, teacher_results: list[dict], seconds: float) -> dict:
        # the last epoch was just evaluated, unless this session resumed a finished run
        last = self._final_eval or self._evaluate_student()
        summary = {
            "mtkdrl_version": __version__,
            "student": self.recipe.student.name,
            "teachers": teacher_results,
            "method": self.recipe.method.name,
            "epochs": self.recipe.train.epochs,
            "seed": self.recipe.seed,
            "last_top1": last["top1"],
            "last_top5": last["top5"],
            "best_top1": self.state.best_top1,
            "best_top5": self.state.best_top5,
            "best_epoch": self.state.best_epoch,
            "global_steps": self.state.global_step,
            "train_seconds_this_session": seconds,
            "num_processes": self.accelerator.num_processes,
            "mixed_precision": self.accelerator.mixed_precision,
            "hardware": machine_info(),
            **self._cache_figures(),
            **_peak_memory(self.accelerator.device),
        }
        if self.accelerator.is_main_process:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        self.accelerator.print(
            f"done: last top-1 {last['top1']:.2f}, best top-1 {self.state.best_top1:.2f} "
            f"(epoch {self.state.best_epoch}); outputs in {self.run_dir}"
        )
        return summary

    def _cache_figures(self) -> dict:
        if self.cached_teachers is None:
            return {"teacher_cache": None}
        cache = self.cached_teachers.cache
        return {
            "teacher_cache": str(cache.folder),
            "teacher_cache_hits": cache.hits,
            "teacher_cache_misses": cache.misses,
        }


def _peak_memory(device: torch.device) -> dict[str, float]:
    """Peak memory of this process: accelerator memory on CUDA, resident set size on CPU."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    try:
        import resource  # POSIX only; Linux reports ru_maxrss in KiB
    except ImportError:
        return {}
    return {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16)."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def _flat_config(data: dict, prefix: str = "") -> dict:
    """Recipe as flat scalar hyperparameters, which trackers such as tensorboard accept."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_config(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def distill(
    recipe: Recipe | str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
) -> dict:
    """Run a distillation from a `Recipe` or a recipe file; returns the run's summary."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_yaml(recipe, overrides)
    elif overrides:
        raise MtkdrlError("overrides apply to recipe files; edit the Recipe object instead")
    return Distiller(recipe, resume=resume, overwrite=overwrite, dry_run=dry_run).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtkdrl distill", description="Distil a student from one or more teachers."
    )
    parser.add_argument("recipe", help="recipe YAML file (see recipes/)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.epochs=2")
    parser.add_argument("--resume", action="store_true", help="continue the run in output_dir")
    parser.add_argument("--overwrite", action="store_true", help="start again in output_dir")
    parser.add_argument(
        "--dry-run", action="store_true", help="build everything and run two steps on random inputs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_code(
        lambda: distill(args.recipe, args.overrides, args.resume, args.overwrite, args.dry_run)
    )


if __name__ == "__main__":
    sys.exit(main())
