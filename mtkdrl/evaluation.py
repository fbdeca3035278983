"""Evaluation within a run: the student every `train.eval_every` epochs, the teachers once."""

from __future__ import annotations

from tqdm.auto import tqdm

from .metrics import evaluate_classifier
from .run import Run


def evaluate_student(run: Run) -> dict[str, float]:
    """Top-1/top-5 and mean CE of the student on the eval split, gathered over processes."""
    run.student.eval()
    return evaluate_classifier(
        lambda images: run.student(images, feature_stage=None)[0],
        run.eval_loader,
        run.accelerator.device,
        gather=run.accelerator.gather_for_metrics,
        autocast=run.accelerator.autocast,
    )


def evaluate_teachers(run: Run) -> list[dict]:
    """Each teacher's accuracy on the eval split, measured once per run and kept beside it."""
    known = run.outputs.teachers()
    if known is not None:
        return known
    results = []
    if run.recipe.train.eval_teachers:
        pool = run.teachers
        for name, teacher, adapter in zip(pool.names, pool.teachers, pool.adapters, strict=True):
            batches = tqdm(
                run.eval_loader,
                desc=f"teacher {name}",
                leave=False,
                disable=not run.accelerator.is_local_main_process,
            )
            metrics = evaluate_classifier(
                lambda x, t=teacher, a=adapter: t(a(x)),
                batches,
                run.accelerator.device,
                gather=run.accelerator.gather_for_metrics,
                autocast=run.accelerator.autocast,
            )
            results.append({"name": name, **metrics})
            run.accelerator.print(f"teacher {name}: val top-1 {metrics['top1']:.2f}")
    run.outputs.write_teachers(results)
    return results
