"""The training loop end to end on a small slice of the shared CIFAR-10 data and real teachers."""

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtkdrl import Recipe, build_run, distill, train
from mtkdrl.checkpoint import unflatten_state
from mtkdrl.cli import main as cli
from mtkdrl.errors import MtkdrlError
from mtkdrl.evaluate import evaluate_model
from mtkdrl.outputs import read_records
from mtkdrl.recipe import ModelSpec

PINNED = Path(__file__).with_name("pinned_student_hashes.json")


@pytest.fixture
def tiny_recipe(tiny_run):
    """A `Recipe` for a short real run: ResNet-20 student, 96 images in batches of 16."""

    def make(out: Path, method: str = "avg", **train) -> Recipe:
        return Recipe.from_dict(tiny_run(out, method, **train))

    return make


def test_avg_run_writes_student_metrics_and_summary(tmp_path, tiny_recipe):
    summary = distill(tiny_recipe(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("student_best.safetensors", "student_last.safetensors", "recipe.yaml"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "summary.json").read_text())
    recipe = Recipe.from_yaml(run / "recipe.yaml")
    spec = ModelSpec(name="resnet20_cifar", checkpoint=str(run / "student_last.safetensors"))
    again = evaluate_model(spec, recipe.data)  # the written student, evaluated on its own
    assert (saved["last_top1"], saved["last_top5"]) == (again["top1"], again["top5"])
    assert 0 <= saved["best_top1"] <= 100 and saved["global_steps"] == 12
    assert [t["name"] for t in saved["teachers"]] == ["resnet20_cifar", "resnet32_cifar"]
    assert all(t["top1"] > 50 for t in saved["teachers"])  # real pretrained teachers
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "ce", "kd", "feature"} <= set(lines[0])
    assert [x["epoch"] for x in lines if "val_top1" in x] == [0, 1]
    assert summary["last_top1"] == lines[-1]["val_top1"]  # the last epoch's evaluation
    assert (run / "checkpoints" / "latest").is_file()
    weights = load_file(str(run / "student_last.safetensors"))
    assert "linear.weight" in weights and weights["linear.weight"].shape == (10, 64)


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_recipe):
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    distill(recipe)
    with pytest.raises(MtkdrlError, match=r"--resume.*--overwrite"):
        distill(recipe)
    distill(recipe, overwrite=True)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a finished run without its checkpoints
    with pytest.raises(MtkdrlError, match=r"former run's recipe.yaml, .*student_best.*--overwrite"):
        distill(recipe)


def test_resuming_a_finished_run_evaluates_its_student_again(tmp_path, tiny_recipe):
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    first = distill(recipe)
    again = distill(recipe, resume=True)
    assert again["global_steps"] == first["global_steps"]
    assert (again["last_top1"], again["last_top5"]) == (first["last_top1"], first["last_top5"])


@pytest.mark.parametrize("method", ["avg", "mtkdrl"])
def test_resume_mid_epoch_equals_uninterrupted(tmp_path, method, tiny_recipe, same_students):
    """Stop after 4 of 12 steps (mid-epoch 0, checkpoint at step 4), resume: identical weights."""
    full = tiny_recipe(tmp_path / "full", method, checkpoint_every=2)
    distill(full)
    part = tiny_recipe(tmp_path / "part", method, checkpoint_every=2, stop_after_steps=4)
    assert distill(part)["stopped"]
    part.train.stop_after_steps = None
    distill(part, resume=True)
    same_students(tmp_path / "full", tmp_path / "part")
    if method == "mtkdrl":
        agents = [_agent_params(tmp_path / name) for name in ("full", "part")]
        assert agents[0].keys() == agents[1].keys() and agents[0]
        for key in agents[0]:
            assert torch.equal(agents[0][key], agents[1][key]), key


def _agent_params(run: Path) -> dict:
    """The agent's policy tensors in the run's latest checkpoint (safetensors + JSON)."""
    checkpoints = run / "checkpoints"
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    tensors = load_file(str(latest / "rank0.safetensors"))
    skeleton = json.loads((latest / "rank0.json").read_text())
    module = unflatten_state(tensors, skeleton)["method"]["module"]
    return {k: v for k, v in module.items() if k.startswith("method.agent.policy.")}


def test_seeded_runs_are_reproducible_in_bf16(tmp_path, tiny_recipe):
    """Two steps, no teacher evaluation: bf16 is emulated (slow) on CPUs without AVX512-BF16."""
    runs = []
    for name in ("a", "b"):
        recipe = tiny_recipe(tmp_path / name, epochs=1, max_steps_per_epoch=2, eval_teachers=False)
        recipe.train.mixed_precision = "bf16"
        runs.append(distill(recipe))
    assert runs[0]["mixed_precision"] == "bf16"
    a = load_file(str(tmp_path / "a" / "student_last.safetensors"))
    b = load_file(str(tmp_path / "b" / "student_last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_channels_last_trains_like_the_default_layout(tmp_path, tiny_recipe):
    """NHWC student and teachers: the same losses up to float reordering over the first two
    steps (later ones, SGD amplifies the rounding chaotically), weights stay NHWC."""
    losses = {}
    for layout in (False, True):
        recipe = tiny_recipe(tmp_path / str(layout), epochs=1, stop_after_steps=2, log_every=1)
        recipe.train.channels_last = layout
        recipe.teacher_cache.mode = "off"
        run = build_run(recipe)
        assert train(run)["stopped"]
        losses[layout] = [record["loss"] for record in read_records(tmp_path / str(layout))]
        conv = run.teachers.teachers[0].conv1.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
    assert len(losses[True]) == 2
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)  # no update yet
    assert losses[True][1] == pytest.approx(losses[False][1], rel=1e-3)  # after one


def _pinned_recipe(tiny_run, out: Path, method: str, cache: str) -> Recipe:
    raw = tiny_run(out, method, eval_teachers=False)
    raw["method"]["options"] = {"agent_step": 2} if method == "mtkdrl-official" else {}
    # float32 embeddings: the layout the records were made with (lossless for these numbers)
    raw["teacher_cache"] = {"mode": cache, "views": 1, "embedding_dtype": "float32"}
    return Recipe.from_dict(raw)


def _weights_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize("method", ["avg", "mtkdrl-official"])
def test_students_match_the_pinned_runs(tmp_path, tiny_run, method, cache):
    """The same seeded runs as before the run/method redesign give the same students, byte for
    byte, at the thread count they were recorded with, on every machine kind (torch version and
    CPU capability) with a record; a kind without one fails, naming what to record."""
    pinned = json.loads(PINNED.read_text())
    kind = (torch.__version__, torch.backends.cpu.get_cpu_capability())
    records = [r for r in pinned["records"] if (r["torch"], r["cpu_capability"]) == kind]
    if not records:
        recorded = [(r["torch"], r["cpu_capability"]) for r in pinned["records"]]
        pytest.fail(f"{PINNED.name} has no record for {kind} (only {recorded}): record one")
    record, key = records[0], f"{method}, cache {cache}"
    threads = torch.get_num_threads()
    torch.set_num_threads(pinned["threads"])
    try:
        distill(_pinned_recipe(tiny_run, tmp_path / "run", method, cache))
    finally:
        torch.set_num_threads(threads)
    student = tmp_path / "run" / "student_last.safetensors"
    norms = {k: float(v.double().norm()) for k, v in sorted(load_file(str(student)).items())}
    for name, expected in record["norms"][key].items():
        assert norms[name] == pytest.approx(expected, rel=1e-4, abs=1e-6), name
    assert _weights_digest(student) == record["hashes"][key]


def test_resume_refuses_a_planted_pickle_without_opening_it(tmp_path, tiny_recipe, capsys):
    recipe = tiny_recipe(tmp_path / "run", epochs=1)
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    distill(recipe)
    checkpoints = tmp_path / "run" / "checkpoints"
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    marker = tmp_path / "pickle_ran"
    (latest / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Plant(marker)))
    capsys.readouterr()
    assert cli(["distill", str(path), "--resume"]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("mtkdrl: error:")]
    assert len(errors) == 1 and "custom_checkpoint_0.pkl" in errors[0], stderr
    assert "Traceback" not in stderr
    assert not marker.exists()
    pickle.loads((latest / "custom_checkpoint_0.pkl").read_bytes()).close()
    assert marker.exists()  # the planted file was live: loading it would have run code


class _Plant:
    """Pickles to a call of `open(target, "w")`: code that runs when the pickle is loaded."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))
