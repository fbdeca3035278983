"""One training step as a function of the run's parts and a batch.

x        = task.prepare_batch(x)    (the objective's, e.g. RLKD's entropy remix)
outputs  = teachers(x) (live or cached), student(x), adapters(student map)
terms    = task.losses(outputs)     ce, kd = α Σ_k w_k·ℓ_k, feature = β Σ_k v_k·d_k
loss     = mean over samples of Σ terms
backward; task.before_step(student access) (e.g. MMKD's meta step); optimizer step;
LR schedule; zero grads
task.observe(outputs, per-sample loss)  (e.g. MTKD-RL's reward = −per-sample loss, RLKD's PPO
update)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch import Tensor
from torch.utils.data import DataLoader

from .methods import StudentAccess
from .run import Run


@dataclass
class StepResult:
    """Detached figures of one step, kept on the device until logged: the loss and each term."""

    loss: Tensor
    terms: dict[str, Tensor]


class BatchProvider:
    """More training batches on demand, for methods whose hook needs data beyond the step's own
    (an iterator over the training loader of its own, started at first use and restarted when
    it ends)."""

    def __init__(self, loader: DataLoader | None) -> None:
        self.loader = loader
        self.iterator: Iterator | None = None

    def __call__(self) -> tuple[Tensor, Tensor, Tensor | None]:
        if self.loader is None:
            raise RuntimeError("no training data to draw extra batches from (a dry run)")
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


def student_access(run: Run, batch: tuple, provider: Callable[[], tuple]) -> StudentAccess:
    """What a method's `before_step` may use for this batch."""
    task, accelerator = run.task, run.accelerator

    def loss(params: dict[str, Tensor], other: tuple | None = None) -> Tensor:
        images, labels, indices = other if other is not None else batch
        with accelerator.autocast():
            outputs = task.outputs(images, labels, indices, params)
        with task.look_ahead():
            return task.losses(outputs)[0].mean()

    def outputs(params: dict[str, Tensor], images: Tensor, labels: Tensor, teachers: list):
        with accelerator.autocast():
            return task.outputs(images, labels, params=params, teacher_outputs=teachers)

    params = task.named_trainable_parameters()
    group = run.optimizer.param_groups[0]
    state = getattr(run.optimizer, "optimizer", run.optimizer).state
    buffers = {
        name: state[p]["momentum_buffer"]
        for name, p in params.items()
        if state.get(p, {}).get("momentum_buffer") is not None
    }
    return StudentAccess(
        params=params,
        lr=group["lr"],
        batch=batch,
        forward=lambda params, images: task.run_student(images, params),
        loss=loss,
        next_batch=provider,
        outputs=outputs,
        momentum=group.get("momentum", 0.0),
        weight_decay=group.get("weight_decay", 0.0),
        nesterov=group.get("nesterov", False),
        momentum_buffers=buffers,
    )


def train_step(run: Run, batch: tuple, provider: Callable[[], tuple]) -> StepResult:
    """Forward, loss, backward and (at accumulation boundaries) the optimizer step."""
    task, accelerator = run.task, run.accelerator
    images, labels, indices = batch
    live_rows = None
    if indices is not None:  # a training batch: the objective may remix it
        images, live_rows = task.prepare_batch(images, indices, lambda i: run.data.train_set[i][0])
    models = [task.student] + ([task.adapters] if task.adapters is not None else [])
    with accelerator.accumulate(*models):
        with accelerator.autocast():
            outputs = task.outputs(images, labels, indices, live_rows=live_rows)
        sample_loss, terms = task.losses(outputs)
        loss = sample_loss.mean()
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            task.before_step(student_access(run, batch, provider))
        run.optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            run.scheduler.step_update(num_updates=run.state.global_step + 1)
        run.optimizer.zero_grad(set_to_none=True)
    task.observe(outputs, sample_loss.detach())
    return StepResult(loss.detach(), {name: value.detach().mean() for name, value in terms.items()})
