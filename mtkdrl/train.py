"""`train(run)`: the distillation loop, and `distill(recipe)`, the Python API that runs it.

The same loop runs on one CPU, one GPU or many processes under `accelerate launch`/`torchrun`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import MtkdrlError
from .evaluation import evaluate_student, evaluate_teachers
from .finite_guard import FiniteGuard
from .out_of_memory import is_out_of_memory, out_of_memory_error
from .preflight import check_flags, check_free_space, check_output_dir, ensure_file_handles
from .recipe import Recipe
from .resume import restore_checkpoint, save_checkpoint
from .run import Run, build_run
from .run_identity import run_identity
from .signals import StopSignals
from .step import BatchProvider, StepResult, train_step
from .summary import write_summary
from .version import __version__

DRY_RUN_STEPS = 2
DRY_RUN_BATCH = 2


def train(run: Run) -> dict:
    """Train the run's student to `train.epochs` (from its checkpoint when resuming); returns the
    summary written to `summary.json`."""
    cfg, accelerator, state = run.recipe.train, run.accelerator, run.state
    try:
        start_or_resume(run)
        teacher_results = evaluate_teachers(run)
        print_plan(run)
        log, provider, started = StepLog(run), BatchProvider(run.train_loader), time.perf_counter()
        last_eval = None  # the last epoch's evaluation, for the summary
        with StopSignals(accelerator) as signals:
            while state.epoch < cfg.epochs:
                epoch, epoch_started = state.epoch, time.perf_counter()
                for batch in epoch_batches(run, epoch, log):
                    result = _step_or_explain(run, batch, provider)
                    log.add(result)
                    log.guard.add(state.global_step + 1, result.loss, result.terms)
                    state.batch_in_epoch += 1
                    if not accelerator.sync_gradients:
                        continue
                    state.global_step += 1
                    stopped = after_step(run, log, epoch, signals)
                    if stopped is not None:
                        return stopped
                log.check_weights()  # before the epoch's weights and checkpoint are written
                last_eval = end_epoch(run, epoch, time.perf_counter() - epoch_started)
        last_eval = last_eval or evaluate_student(run)  # a finished run, resumed
        return write_summary(run, teacher_results, last_eval, time.perf_counter() - started)
    finally:
        run.close()


def _step_or_explain(run: Run, batch, provider: BatchProvider) -> StepResult:
    """One training step; running out of memory ends the run with one line saying what to do."""
    try:
        return train_step(run, batch, provider)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        device = run.accelerator.device
        raise out_of_memory_error(run.recipe, run.state.global_step, device) from None


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def start_or_resume(run: Run) -> None:
    """Restore the newest checkpoint, or start the run's folder afresh."""
    run.identity = run_identity(run)
    if run.resume:
        latest = run.checkpoints.latest()
        restore_checkpoint(run, latest)
        run.accelerator.print(
            f"resumed from {latest} (epoch {run.state.epoch}, batch {run.state.batch_in_epoch})"
        )
    else:
        run.outputs.start(run.recipe.to_yaml())
    run.accelerator.wait_for_everyone()
    if run.recipe.train.trackers:
        run.accelerator.init_trackers(
            Path(run.recipe.output_dir).name, config=_flat_config(run.recipe.to_dict())
        )


def epoch_batches(run: Run, epoch: int, log: StepLog):
    """The epoch's batches from where the loop state says, with a progress bar; every process
    sees the epoch's shuffle and augmented view (the cache's, when it replays)."""
    run.data.set_epoch(epoch, run.teacher_source.view_of(epoch))
    run.task.set_epoch(epoch)
    run.task.train()
    loader, done = run.train_loader, run.state.batch_in_epoch
    if done:
        loader = run.accelerator.skip_first_batches(loader, done)
    with tqdm(
        total=run.batches_per_epoch,
        initial=done,
        desc=f"epoch {epoch}",
        disable=not run.accelerator.is_local_main_process,
    ) as progress:
        for batch in loader:
            if run.state.batch_in_epoch >= run.batches_per_epoch:
                break
            yield batch
            progress.update(1)
            progress.set_postfix(log.postfix, refresh=False)


def after_step(run: Run, log: StepLog, epoch: int, signals: StopSignals) -> dict | None:
    """Logging and checkpoints on their cadence; a stop (`train.stop_after_steps`, or SIGTERM /
    SIGINT, which write a checkpoint first) returns what `train` returns, else None."""
    cfg, state, accelerator = run.recipe.train, run.state, run.accelerator
    if _every(state.global_step, cfg.log_every):
        log.guard.check()
        log.write(epoch)
    if _every(state.global_step, cfg.checkpoint_every):
        log.check_weights()  # never a checkpoint of a diverged student
        save_checkpoint(run)
    if signals.requested(state.global_step):
        if not _every(state.global_step, cfg.checkpoint_every):
            log.check_weights()
            save_checkpoint(run)
        name = signals.signal.name
        accelerator.print(
            f"stopped by {name} after step {state.global_step}: checkpoint written; continue with "
            "--resume"
        )
        return {"stopped": True, "global_step": state.global_step, "signal": name}
    if cfg.stop_after_steps and state.global_step >= cfg.stop_after_steps:
        accelerator.print(f"stopped after {state.global_step} steps (stop_after_steps)")
        return {"stopped": True, "global_step": state.global_step}
    return None


class StepLog:
    """Sums of each step's loss terms on the device, written every `train.log_every` steps."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.guard = FiniteGuard(run.recipe, run.accelerator)
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.postfix: dict[str, str] = {}  # the progress bar's figures, from the last write

    def add(self, result: StepResult) -> None:
        for name, value in {"loss": result.loss, **result.terms}.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.count += 1

    def check_weights(self) -> None:
        """Stop before saving a student whose loss or weights went non-finite."""
        task = self.run.task
        modules = [task.student, *([task.adapters] if task.adapters is not None else [])]
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        floating = [t for t in tensors if t.is_floating_point()]  # BN statistics too
        self.guard.check_weights(self.run.state.global_step, floating)

    def write(self, epoch: int) -> None:
        run = self.run
        record = {"step": run.state.global_step, "epoch": epoch}
        record.update(
            {name: value.item() / max(self.count, 1) for name, value in self.sums.items()}
        )
        record["lr"] = run.optimizer.param_groups[0]["lr"]
        self.postfix = {"loss": f"{record['loss']:.3f}", "lr": f"{record['lr']:.4g}"}
        record_metrics(run, record)
        self.sums, self.count = {}, 0


def record_metrics(run: Run, record: dict) -> None:
    """One line of `metrics.jsonl`, and the same scalars to the recipe's trackers."""
    run.outputs.append(record)
    if run.recipe.train.trackers:
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        run.accelerator.log(scalars, step=run.state.global_step)


def end_epoch(run: Run, epoch: int, seconds: float) -> dict[str, float] | None:
    """Close an epoch: the teacher cache's last samples, the method's figures, evaluation (every
    `train.eval_every` epochs and at the last), last/best student weights and a checkpoint.
    Returns the last epoch's evaluation (None for the others)."""
    state, train_cfg, accelerator = run.state, run.recipe.train, run.accelerator
    fill_dropped_views(run, epoch)
    method_figures = run.task.end_epoch(epoch)
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    record = {"epoch": epoch, "step": state.global_step, "epoch_seconds": seconds}
    improved, metrics = False, None
    if (epoch + 1) % train_cfg.eval_every == 0 or epoch + 1 == train_cfg.epochs:
        metrics = evaluate_student(run)
        improved = metrics["top1"] > state.best_top1
        if improved:
            state.best_top1, state.best_top5, state.best_epoch = (
                metrics["top1"],
                metrics["top5"],
                epoch,
            )
        record.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
        accelerator.print(
            f"epoch {epoch}: val top-1 {metrics['top1']:.2f} top-5 {metrics['top5']:.2f} "
            f"({seconds:.0f}s)"
        )
    record_metrics(run, {**record, **method_figures})
    accelerator.wait_for_everyone()
    run.outputs.write_student(run.unwrapped_student(), run.recipe.student.name, epoch, improved)
    save_checkpoint(run)
    return metrics if epoch + 1 == train_cfg.epochs else None


def fill_dropped_views(run: Run, epoch: int) -> None:
    """Give the teacher cache the samples `drop_last` kept out of this epoch (main process)."""
    accelerator = run.accelerator
    if accelerator.is_main_process and run.task.method.uses_teachers:
        with accelerator.autocast():
            run.teacher_source.fill_dropped(
                run.data.train_set,
                epoch,
                run.recipe.data.batch_size * accelerator.num_processes,
                run.task.feature_stage,
                accelerator.device,
            )
    accelerator.wait_for_everyone()


def print_plan(run: Run) -> None:
    recipe, accelerator = run.recipe, run.accelerator
    params = sum(p.numel() for p in run.unwrapped_student().parameters())
    accelerator.print(
        f"mtkdrl {__version__}: student {recipe.student.name} ({params / 1e6:.2f} M params), "
        f"{len(run.teachers)} teachers, method {recipe.method.name}, "
        f"{run.batches_per_epoch} batches/epoch x {recipe.train.epochs} epochs, "
        f"{accelerator.num_processes} process(es)"
    )
    accelerator.print(
        f"budget: {recipe.budget(run.data.train_size)} (train.epochs, data.train_subset, optim.*)"
    )
    accelerator.print(f"precision {run.precision.label} ({run.precision.reason})")
    for line in run.task.loss.describe():
        accelerator.print(line)


def dry_run_steps(run: Run) -> dict:
    """Two steps on random tensors of the student's input shape, with pretrained weights off; the
    batch is 2 samples, or the one size a method takes (MMKD's feature-weight network). A method
    that draws another training batch (MTKD-RL's `reward: gain`) gets random ones too."""
    recipe, device = run.recipe, run.accelerator.device
    batch_size = run.task.method.batch_size or min(recipe.data.batch_size, DRY_RUN_BATCH)
    channels, height, width = run.student_cfg["input_size"]
    generator = torch.Generator().manual_seed(recipe.seed)

    def random_batch() -> tuple[torch.Tensor, torch.Tensor, None]:
        """A batch of random tensors; also what a method that asks for another batch draws."""
        images = torch.randn(batch_size, channels, height, width, generator=generator)
        labels = torch.randint(0, run.num_classes, (batch_size,), generator=generator)
        return images.to(device), labels.to(device), None

    losses = [
        train_step(run, random_batch(), random_batch).loss.item() for _ in range(DRY_RUN_STEPS)
    ]
    if not all(math.isfinite(v) for v in losses):
        raise MtkdrlError(f"dry run produced a non-finite loss: {losses}")
    summary = {
        "dry_run": True,
        "student": recipe.student.name,
        "teachers": [t.name for t in recipe.teachers],
        "method": recipe.method.name,
        "input_size": list(run.student_cfg["input_size"]),
        "losses": losses,
    }
    run.accelerator.print(f"dry run ok: {summary}")
    return summary


def distill(
    recipe: Recipe | str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    overwrite: bool = False,
    dry_run: bool = False,
) -> dict:
    """Run a distillation from a `Recipe` or a recipe file; returns the run's summary."""
    check_flags(resume, overwrite)
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_yaml(recipe, overrides)
    elif overrides:
        raise MtkdrlError("overrides apply to recipe files; edit the Recipe object instead")
    if dry_run:
        return dry_run_steps(build_run(recipe, dry_run=True))
    check_output_dir(recipe.output_dir)
    ensure_file_handles(recipe.data.num_workers)
    run = build_run(recipe, resume=resume, overwrite=overwrite)
    extra = nn.ModuleList([run.task.loss, *([run.task.adapters] if run.task.adapters else [])])
    keep = recipe.train.keep_checkpoints
    try:
        check_free_space(recipe.output_dir, run.unwrapped_student(), extra, keep)
    except MtkdrlError:
        run.close()
        raise
    return train(run)


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
