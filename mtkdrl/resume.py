"""What of a run a checkpoint holds, and putting a run back where a checkpoint left it."""

from __future__ import annotations

from pathlib import Path

from accelerate.utils import extract_model_from_parallel

from .checkpoint import rng_state, set_rng_state
from .errors import MtkdrlError, first_line
from .run import Run
from .run_identity import check_identity


def save_checkpoint(run: Run) -> Path:
    """A checkpoint of the whole run, after the teacher cache's pages are on disk."""
    run.teacher_source.flush()
    adapters = run.task.adapters
    shared = {
        "student": run.unwrapped_student().state_dict(),
        "adapters": None
        if adapters is None
        else extract_model_from_parallel(adapters).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "loop": run.state.state_dict(),
        "log_length": run.outputs.log_length(),
        "identity": run.identity,
    }
    per_rank = {
        "method": {
            "module": run.task.loss.state_dict(),
            "extra": run.task.loss.extra_state(),
        },
        "rng": rng_state(),
    }
    return run.checkpoints.save(shared, per_rank)


def restore_checkpoint(run: Run, path: Path) -> None:
    """Put the run back where checkpoint `path` left it: weights, optimizer, schedule, loop
    counters, the method's state and this process's random generators, after checking that the
    recipe is the run's (`run_identity`); the metrics log is cut back to what the checkpoint had
    seen, and the resume is written to the run's history."""
    shared, per_rank = run.checkpoints.load(path)
    changes = check_identity(shared.get("identity"), run.identity, path)
    try:
        run.unwrapped_student().load_state_dict(shared["student"])
        if run.task.adapters is not None:
            extract_model_from_parallel(run.task.adapters).load_state_dict(shared["adapters"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise MtkdrlError(
            f"checkpoint {path}: its student does not fit this recipe's "
            f"(student.name {run.recipe.student.name!r}): {first_line(err)}; resume with the "
            "run's own recipe, or start afresh with --overwrite"
        ) from None
    try:
        run.optimizer.load_state_dict(shared["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise MtkdrlError(
            f"checkpoint {path}: its optimizer state does not fit this run's parameters "
            f"(optim.optimizer {run.recipe.optim.optimizer!r}): {first_line(err)}; resume with "
            "the run's own recipe, or start afresh with --overwrite"
        ) from None
    try:
        run.task.loss.load_state_dict(per_rank["method"]["module"])
        run.task.loss.load_extra_state(per_rank["method"]["extra"])
    except (KeyError, RuntimeError) as err:
        raise MtkdrlError(
            f"checkpoint {path}: the saved state of method {run.recipe.method.name!r} does not fit "
            f"this run's (saved by another mtkdrl version, or with other method options?): "
            f"{first_line(err)}; start afresh with --overwrite"
        ) from None
    run.scheduler.load_state_dict(shared["scheduler"])
    run.state.load_state_dict(shared["loop"])
    run.outputs.cut_log(shared["log_length"])  # last: a refused checkpoint changes no file
    run.outputs.record_resume(run.recipe.to_yaml(), run.state.global_step, changes)
    set_rng_state(per_rank["rng"])
