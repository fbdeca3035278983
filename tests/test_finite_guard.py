"""The finite-loss guard: a NaN or infinite term stops the run with one line naming the step, the
term and the recipe values that feed it, and no checkpoint or weight file of the diverged student
is written."""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from mtkdrl import MtkdrlError, Recipe, distill
from mtkdrl.finite_guard import FiniteGuard


def terms(ce: float, kd: float, feature: float) -> dict[str, torch.Tensor]:
    return {"ce": torch.tensor(ce), "kd": torch.tensor(kd), "feature": torch.tensor(feature)}


def test_the_first_non_finite_step_and_its_term_are_named(tiny_run, tmp_path):
    recipe = Recipe.from_dict(tiny_run(tmp_path / "run"))
    guard = FiniteGuard(recipe, Accelerator(cpu=True))
    guard.every_step = False  # as on an accelerator: read only at `check`
    guard.add(1, torch.tensor(3.0), terms(1.0, 1.5, 0.5))
    guard.check()  # all finite: nothing to say
    guard.add(2, torch.tensor(float("nan")), terms(1.0, float("nan"), 0.5))
    guard.add(3, torch.tensor(float("inf")), terms(float("inf"), float("nan"), 0.5))
    with pytest.raises(MtkdrlError) as caught:
        guard.check()
    assert str(caught.value) == (
        "step 2: the term kd went non-finite (NaN or infinite) and the run stopped; look at "
        "method.alpha = 1, method.temperature = 4, optim.lr = 0.05; the checkpoints written "
        "before it are kept"
    )


def test_on_a_cpu_every_step_is_checked_at_once(tiny_run, tmp_path):
    recipe = Recipe.from_dict(tiny_run(tmp_path / "run"))
    guard = FiniteGuard(recipe, Accelerator(cpu=True))
    with pytest.raises(MtkdrlError, match="step 7: the terms ce, feature went non-finite"):
        guard.add(7, torch.tensor(float("nan")), terms(float("nan"), 1.0, float("-inf")))


def test_a_diverging_run_stops_before_saving_the_diverged_student(tiny_run, tmp_path):
    out = tmp_path / "run"
    raw = tiny_run(out, checkpoint_every=1, keep_checkpoints=10)
    raw["optim"]["lr"] = 1e12
    with pytest.raises(
        MtkdrlError, match=r"^step (\d+): the (terms?|student's weights) .* optim.lr = 1e\+12"
    ) as err:
        distill(Recipe.from_dict(raw))
    step = int(str(err.value).split(":")[0].removeprefix("step "))
    assert not list(out.glob("student_*.safetensors")) and not (out / "summary.json").exists()
    saved = sorted(out.glob("checkpoints/checkpoint_*"))
    assert len(saved) == step - 1  # one per step before the first non-finite one
    for folder in saved:
        state = load_file(str(folder / "shared.safetensors"))
        assert all(t.isfinite().all() for t in state.values() if t.is_floating_point())
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logged if "loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)  # nothing non-finite was logged
