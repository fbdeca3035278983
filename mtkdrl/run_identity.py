"""What a run is, kept in every checkpoint and checked on `--resume`: its recipe, its teachers'
weights and its training data. A resume may change only what leaves the result as it is
(`RESUMABLE_KEYS`: extending `train.epochs`, logging and checkpoint cadence, workers, where the run
writes); each such change is written to the run folder's `history.jsonl`. Anything else is
refused in one line listing each changed key with its old and new value.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MtkdrlError
from .recipe_diff import differences

if TYPE_CHECKING:
    from .run import Run

RESUMABLE_KEYS = (
    "output_dir",
    "teacher_cache.dir",
    "data.num_workers",
    "data.eval_batch_size",
    "train.epochs",
    "train.log_every",
    "train.log_weights_by_class",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.trackers",
    "train.eval_every",
    "train.eval_teachers",
    "train.stop_after_steps",
    "train.channels_last",
    "train.compile",
)


def run_identity(run: Run) -> dict[str, Any]:
    """The run's recipe (teachers by the hash of their weights, not by where their files lie),
    and what its training data was."""
    recipe = run.recipe.to_dict()
    for teacher in recipe["teachers"]:
        teacher.pop("checkpoint")
    data = run.data
    return {
        "recipe": recipe,
        "teacher_weights": [digest[:16] for digest in run.teachers.fingerprints()],
        "train_data": None
        if data is None
        else {"fingerprint": data.train_set.fingerprint, "samples": data.train_size},
    }


def check_identity(saved: dict[str, Any] | None, current: dict[str, Any], where: Path) -> list[str]:
    """The changes a resume may make (`key: old -> new`); one line if any other change is made."""
    if saved is None:
        raise MtkdrlError(
            f"checkpoint {where} was written by an earlier mtkdrl, which did not record what the "
            "run was, so a resume cannot be checked; start afresh with --overwrite"
        )
    changed = differences(saved, current)
    refused = [item for item in changed if not _resumable(item)]
    if refused:
        raise MtkdrlError(
            f"--resume: this recipe is not the one the run in {where.parent.parent} was started "
            f"with ({'; '.join(refused)}); resume with the run's own recipe.yaml, or start afresh "
            "with --overwrite"
        )
    return changed


def _resumable(change: str) -> bool:
    key = change.split(": ", 1)[0].removeprefix("recipe.")
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_KEYS)
