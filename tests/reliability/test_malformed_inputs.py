"""Malformed input, tried as a new user would: each case must end with one line naming the
culprit and what would be valid, a non-zero exit, no traceback and no half-written file.

Every case builds its inputs under `tmp_path` from a short real recipe (the shared CIFAR-10
slices, two shared teachers) and runs the `mtkdrl` command in this process. Recipe, weight,
checkpoint, cache and output-folder errors are found before training; an undecodable image in a
split decoded lazily (`data.cache_decoded: false`) is found when first read, mid-epoch.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mtkdrl.cli import main

PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar: a data error found mid-epoch comes after it
Case = Callable[[Path, dict, pytest.MonkeyPatch], tuple[list[str], str]]
CASES: dict[str, Case] = {}


def case(name: str):
    def add(build: Case) -> Case:
        CASES[name] = build
        return build

    return add


def write_recipe(tmp: Path, raw: dict, name: str = "recipe.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def distill(tmp: Path, raw: dict, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["distill", write_recipe(tmp, raw), *overrides, *flags]


def edited_parquet(source: str, tmp: Path, name: str, edit) -> str:
    """A copy of a parquet split with `edit(table) -> table` applied."""
    target = tmp / name
    pq.write_table(edit(pq.read_table(source)), target)
    return str(target)


def replace_column(table: pa.Table, column: str, values: list) -> pa.Table:
    field = table.schema.field(column)
    index = table.schema.get_field_index(column)
    return table.set_column(index, field, pa.array(values, type=field.type))


# ------------------------------------------------------------------------------------- recipe
@case("unknown key")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epoch=2"), "train.epoch"


@case("wrong type")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epochs=many"), "train.epochs"


@case("bad enum")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.schedule=weekly"), "optim.schedule"


@case("negative epochs")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epochs=-1"), "train.epochs"


@case("zero batch size")
def _(tmp, raw, patch):
    return distill(tmp, raw, "data.batch_size=0"), "data.batch_size"


@case("negative learning rate")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.lr=-0.1"), "optim.lr"


@case("bad mixed precision")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.mixed_precision=fp8x"), "train.mixed_precision"


@case("missing teacher weights")
def _(tmp, raw, patch):
    raw["teachers"][0]["checkpoint"] = str(tmp / "nowhere.safetensors")
    return distill(tmp, raw), "nowhere.safetensors"


@case("unknown timm name")
def _(tmp, raw, patch):
    raw["student"]["name"] = "resnet21_cifar"
    return distill(tmp, raw), "resnet21_cifar"


@case("unknown teacher kwarg")
def _(tmp, raw, patch):
    raw["teachers"][1]["kwargs"] = {"depthh": 3}
    return distill(tmp, raw), "resnet32_cifar"


@case("class-count mismatch")
def _(tmp, raw, patch):
    raw["data"]["num_classes"] = 100  # the teachers' files have 10-class heads
    return distill(tmp, raw), "num_classes"


@case("incompatible input sizes")
def _(tmp, raw, patch):
    raw["teachers"][1] = {"name": "inception_v3"}  # shrinks 32x32 inputs below its kernels
    return distill(tmp, raw), "teacher 'inception_v3' cannot take the student's 32x32 inputs"


@case("option of another method")
def _(tmp, raw, patch):
    raw["method"]["options"] = {"agent_lr": 0.1}
    return distill(tmp, raw), "agent_lr"


@case("unknown method")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.name=mtkd-rl"), "mtkd-rl"


@case("unknown temperature policy")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.temperature={policy: annealed}"), "annealed"


@case("bad override syntax")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epochs"), "train.epochs"


@case("recipe file missing")
def _(tmp, raw, patch):
    return ["distill", str(tmp / "absent.yaml")], "absent.yaml"


@case("recipe not yaml")
def _(tmp, raw, patch):
    path = tmp / "broken.yaml"
    path.write_text("student: {name: resnet20_cifar\nteachers: [")
    return ["distill", str(path)], "broken.yaml"


@case("recipe not a mapping")
def _(tmp, raw, patch):
    path = tmp / "list.yaml"
    path.write_text("- one\n- two\n")
    return ["distill", str(path)], "list.yaml"


@case("teacherless kd")
def _(tmp, raw, patch):
    raw["teachers"] = []
    return distill(tmp, raw, "method.name=kd"), "teachers"


@case("nan learning rate")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.lr=nan"), "recipe key 'optim.lr' must be a finite number"


@case("nan logit weight")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.alpha=.nan"), "'method.alpha' must be a finite number"


@case("infinite temperature")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.temperature=.inf"), "'method.temperature' must be a finite"


@case("nan method option")
def _(tmp, raw, patch):
    overrides = ("method.name=mtkdrl", "method.options.concentration=.nan")
    return distill(tmp, raw, *overrides), "concentration' must be a finite number"


@case("zero steps per epoch")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.max_steps_per_epoch=0"), "train.max_steps_per_epoch"


@case("zero checkpoint cadence")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.checkpoint_every=0"), "train.checkpoint_every"


@case("diverging learning rate")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.lr=1e12"), "went non-finite (NaN or infinite)"


# ------------------------------------------------------------------- recipe, second round
@case("yaml anchor bomb")
def _(tmp, raw, patch):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nseed: *a8\n")  # 10**9 values once expanded
    return ["distill", str(path)], "bomb.yaml"


@case("recipe is empty")
def _(tmp, raw, patch):
    (tmp / "empty.yaml").write_text("")
    return ["distill", str(tmp / "empty.yaml")], "empty.yaml"


@case("recipe is a scalar")
def _(tmp, raw, patch):
    (tmp / "scalar.yaml").write_text("42\n")
    return ["distill", str(tmp / "scalar.yaml")], "scalar.yaml"


@case("recipe is not utf-8")
def _(tmp, raw, patch):
    (tmp / "latin.yaml").write_bytes(b"student: {name: r\xe9snet}\n")
    return ["distill", str(tmp / "latin.yaml")], "latin.yaml"


@case("recipe with a duplicate key")
def _(tmp, raw, patch):
    (tmp / "dup.yaml").write_text("seed: 1\nseed: 2\nstudent: {name: resnet20_cifar}\n")
    return ["distill", str(tmp / "dup.yaml")], "seed"


@case("recipe is a folder")
def _(tmp, raw, patch):
    (tmp / "folder.yaml").mkdir()
    return ["distill", str(tmp / "folder.yaml")], "folder.yaml"


@case("seed is a string")
def _(tmp, raw, patch):
    return distill(tmp, raw, "seed=abc"), "seed"


@case("seed is negative")
def _(tmp, raw, patch):
    return distill(tmp, raw, "seed=-1"), "seed"


@case("seed beyond 64 bits")
def _(tmp, raw, patch):
    return distill(tmp, raw, f"seed={2**70}"), "seed"


@case("epochs is a float")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epochs=1.5"), "train.epochs"


@case("epochs is a boolean")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.epochs=true"), "train.epochs"


@case("zero temperature")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.temperature=0"), "method.temperature"


@case("negative logit weight")
def _(tmp, raw, patch):
    return distill(tmp, raw, "method.alpha=-1"), "method.alpha"


@case("teachers is a string")
def _(tmp, raw, patch):
    raw["teachers"] = "resnet20_cifar"
    return distill(tmp, raw), "teachers"


@case("teacher without a name")
def _(tmp, raw, patch):
    raw["teachers"][0] = {"checkpoint": raw["teachers"][0]["checkpoint"]}
    return distill(tmp, raw), "teachers"


@case("student section is a list")
def _(tmp, raw, patch):
    raw["student"] = ["resnet20_cifar"]
    return distill(tmp, raw), "student"


@case("empty output_dir")
def _(tmp, raw, patch):
    raw["output_dir"] = ""
    return distill(tmp, raw), "output_dir"


@case("output_dir with a NUL byte")
def _(tmp, raw, patch):
    raw["output_dir"] = str(tmp / "bad\x00name")
    return distill(tmp, raw), "output_dir"


@case("grad accumulation zero")
def _(tmp, raw, patch):
    return distill(tmp, raw, "train.grad_accum_steps=0"), "train.grad_accum_steps"


@case("teacher cache views zero")
def _(tmp, raw, patch):
    return distill(tmp, raw, "teacher_cache.views=0"), "teacher_cache.views"


@case("override of a list index out of range")
def _(tmp, raw, patch):
    return distill(tmp, raw, "teachers.5.name=resnet20_cifar"), "teachers.5"


@case("momentum one")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.momentum=1"), "optim.momentum"


@case("unknown optimizer")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.optimizer=sgdd"), "sgdd"


@case("milestones beyond the epochs")
def _(tmp, raw, patch):
    return distill(tmp, raw, "optim.milestones=[0, -3]"), "optim.milestones"


@case("batch larger than memory")
def _(tmp, raw, patch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB")

    patch.setattr(importlib.import_module("mtkdrl.train"), "train_step", out_of_memory)
    return distill(tmp, raw), "out of cpu memory at the first training step with data.batch_size=16"


# --------------------------------------------------------------------- data, second round
@case("labels stored as class names")
def _(tmp, raw, patch):
    classes = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def names(table):
        labels = [classes[v] for v in table.column("label").to_pylist()]
        index = table.schema.get_field_index("label")
        return table.set_column(index, "label", pa.array(labels))

    for split in ("train", "validation"):
        raw["data"]["data_files"][split] = edited_parquet(
            raw["data"]["data_files"][split], tmp, f"{split}_names.parquet", names
        )
    return distill(tmp, raw), "data.label_column: column 'label' holds string values"


@case("labels stored as floats")
def _(tmp, raw, patch):
    def floats(table):
        labels = [float(v) + 0.5 for v in table.column("label").to_pylist()]
        index = table.schema.get_field_index("label")
        return table.set_column(index, "label", pa.array(labels))

    raw["data"]["data_files"]["train"] = edited_parquet(
        raw["data"]["data_files"]["train"], tmp, "floats.parquet", floats
    )
    return distill(tmp, raw), "column 'label' holds float64 values"


@case("missing image cell")
def _(tmp, raw, patch):
    def hole(table):
        cells = table.column("img").to_pylist()
        cells[3] = None
        return replace_column(table, "img", cells)

    raw["data"]["data_files"]["train"] = edited_parquet(
        raw["data"]["data_files"]["train"], tmp, "hole.parquet", hole
    )
    return distill(tmp, raw), "row 3"


@case("a one-pixel image")
def _(tmp, raw, patch):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")

    def tiny(table):
        cells = table.column("img").to_pylist()
        cells[2] = {"bytes": buffer.getvalue(), "path": None}
        return replace_column(table, "img", cells)

    raw["data"]["data_files"]["train"] = edited_parquet(
        raw["data"]["data_files"]["train"], tmp, "tiny.parquet", tiny
    )
    return distill(tmp, raw), "data.train_transform=cifar expects 32x32 images, got 1x1"


@case("data file that is not parquet")
def _(tmp, raw, patch):
    (tmp / "text.parquet").write_text("id,label\n1,2\n")
    raw["data"]["data_files"]["train"] = str(tmp / "text.parquet")
    return distill(tmp, raw), "text.parquet"


@case("data file given as a folder")
def _(tmp, raw, patch):
    (tmp / "adir.parquet").mkdir()
    raw["data"]["data_files"]["train"] = str(tmp / "adir.parquet")
    return distill(tmp, raw), "adir.parquet"


@case("image folder without images")
def _(tmp, raw, patch):
    (tmp / "images" / "train" / "cat").mkdir(parents=True)
    raw["data"] = {"name": "imagefolder", "data_dir": str(tmp / "images"), "num_workers": 0}
    return distill(tmp, raw), "holds no image files"


# --------------------------------------------------------------------------------------- data
@case("missing data file")
def _(tmp, raw, patch):
    raw["data"]["data_files"]["train"] = str(tmp / "gone.parquet")
    return distill(tmp, raw), "gone.parquet"


@case("empty split")
def _(tmp, raw, patch):
    empty = edited_parquet(raw["data"]["data_files"]["train"], tmp, "e.parquet", lambda t: t[:0])
    raw["data"]["data_files"]["train"] = empty
    return distill(tmp, raw), "e.parquet"


@case("corrupt image bytes")
def _(tmp, raw, patch):
    def corrupt(table):
        cells = table.column("img").to_pylist()
        cells[5] = {"bytes": b"\xff\xd8 not a jpeg", "path": None}
        return replace_column(table, "img", cells)

    raw["data"]["data_files"]["train"] = edited_parquet(
        raw["data"]["data_files"]["train"], tmp, "c.parquet", corrupt
    )
    return distill(tmp, raw), "row 5"


@case("wrong label column")
def _(tmp, raw, patch):
    raw["data"]["label_column"] = "fine_label"
    return distill(tmp, raw), "fine_label"


@case("wrong image column")
def _(tmp, raw, patch):
    raw["data"]["image_column"] = "image"
    return distill(tmp, raw), "image"


@case("labels out of range")
def _(tmp, raw, patch):
    def shift(table):
        labels = [int(v) for v in table.column("label").to_pylist()]
        labels[7] = 12
        return table.set_column(
            table.schema.get_field_index("label"), "label", pa.array(labels, pa.int64())
        )

    raw["data"]["data_files"]["train"] = edited_parquet(
        raw["data"]["data_files"]["train"], tmp, "l.parquet", shift
    )
    raw["data"]["num_classes"] = 10
    return distill(tmp, raw), "label"


@case("unknown data source")
def _(tmp, raw, patch):
    return distill(tmp, raw, "data.name=parqet"), "parqet"


@case("missing eval split")
def _(tmp, raw, patch):
    del raw["data"]["data_files"]["validation"]
    return distill(tmp, raw), "validation"


# -------------------------------------------------------------------------------- checkpoints
@case("truncated teacher safetensors")
def _(tmp, raw, patch):
    source = Path(raw["teachers"][0]["checkpoint"]).read_bytes()
    (tmp / "cut.safetensors").write_bytes(source[: len(source) // 2])
    raw["teachers"][0]["checkpoint"] = str(tmp / "cut.safetensors")
    return distill(tmp, raw), "cut.safetensors"


@case("teacher weights with wrong keys")
def _(tmp, raw, patch):
    from safetensors.torch import load_file, save_file

    state = load_file(raw["teachers"][0]["checkpoint"])
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp / "keys.safetensors"))
    raw["teachers"][0]["checkpoint"] = str(tmp / "keys.safetensors")
    return distill(tmp, raw), "keys.safetensors"


@case("teacher weights with wrong shapes")
def _(tmp, raw, patch):
    raw["teachers"][0]["name"] = "resnet8x4_cifar"  # its file is a resnet20's
    return distill(tmp, raw), "resnet8x4_cifar"


@case("pickle weights")
def _(tmp, raw, patch):
    (tmp / "teacher.pth").write_bytes(pickle.dumps({"conv1.weight": [0.0]}))
    raw["teachers"][0]["checkpoint"] = str(tmp / "teacher.pth")
    return distill(tmp, raw), "teacher.pth"


@case("resume without a checkpoint")
def _(tmp, raw, patch):
    return distill(tmp, raw, flags=("--resume",)), "--resume"


@case("resume and overwrite together")
def _(tmp, raw, patch):
    return distill(tmp, raw, flags=("--resume", "--overwrite")), "--overwrite"


# --------------------------------------------------------------------------- output directory
@case("read-only output directory")
def _(tmp, raw, patch):
    raw["output_dir"] = "/proc/mtkdrl_run"  # read-only even for root
    return distill(tmp, raw), "output_dir: cannot write into /proc/mtkdrl_run"


@case("output directory is a file")
def _(tmp, raw, patch):
    (tmp / "taken").write_text("not a folder")
    raw["output_dir"] = str(tmp / "taken")
    return distill(tmp, raw), "taken"


@case("disk full")
def _(tmp, raw, patch):
    real = shutil.disk_usage
    patch.setattr("mtkdrl.preflight.shutil.disk_usage", lambda p: real(p)._replace(free=200_000))
    return distill(tmp, raw, "teacher_cache.mode=off"), "has 195.3 KB free"


@case("too few file handles")
def _(tmp, raw, patch):
    patch.setattr("mtkdrl.preflight.resource.getrlimit", lambda kind: (32, 32))
    return distill(tmp, raw, "data.num_workers=2"), "may open only 32 files"


# --------------------------------------------------------------------------- earlier runs
def finished_part(tmp: Path, raw: dict) -> Path:
    """A run stopped after 2 steps, with its checkpoint and a filled teacher-cache entry."""
    raw["train"]["checkpoint_every"] = 2
    assert main(distill(tmp, raw, "train.stop_after_steps=2")) == 0
    return Path(raw["output_dir"])


def latest_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


@case("truncated checkpoint")
def _(tmp, raw, patch):
    shared = latest_checkpoint(finished_part(tmp, raw)) / "shared.safetensors"
    shared.write_bytes(shared.read_bytes()[:1000])
    return distill(tmp, raw, flags=("--resume",)), "shared.safetensors"


@case("checkpoint with a missing file")
def _(tmp, raw, patch):
    (latest_checkpoint(finished_part(tmp, raw)) / "rank0.json").unlink()
    return distill(tmp, raw, flags=("--resume",)), "rank0.json"


@case("latest names a missing checkpoint")
def _(tmp, raw, patch):
    run = finished_part(tmp, raw)
    (run / "checkpoints" / "latest").write_text("checkpoint_9")
    return distill(tmp, raw, flags=("--resume",)), "checkpoint_9"


@case("checkpoint of another recipe")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    return distill(tmp, raw, "student.name=resnet32_cifar", flags=("--resume",)), "student"


@case("truncated teacher cache")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    logits = next((tmp / "run" / "teacher_cache").rglob("t0.logits.bin"))
    logits.write_bytes(logits.read_bytes()[:100])
    return distill(tmp, raw, flags=("--overwrite",)), "t0.logits.bin"


@case("teacher cache of other teachers")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    meta = next((tmp / "run" / "teacher_cache").rglob("meta.json"))
    meta.write_text(meta.read_text().replace('"key": "', '"key": "0'))
    return distill(tmp, raw, flags=("--overwrite",)), "holds a different cache"


# ------------------------------------------------------------ earlier runs, second round
@case("resume with another method")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    return distill(tmp, raw, "method.name=ca_mkd", flags=("--resume",)), "'avg' -> 'ca_mkd'"


@case("resume with another learning rate")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    return distill(tmp, raw, "optim.lr=0.2", flags=("--resume",)), "recipe.optim.lr: 0.05 -> 0.2"


@case("resume with another teacher file")
def _(tmp, raw, patch):
    finished_part(tmp, raw)
    raw["teachers"][0]["checkpoint"] = raw["teachers"][1]["checkpoint"]
    raw["teachers"][0]["name"] = raw["teachers"][1]["name"]
    return distill(tmp, raw, flags=("--resume",)), "teacher_weights.0"


@case("latest pointer is empty")
def _(tmp, raw, patch):
    (finished_part(tmp, raw) / "checkpoints" / "latest").write_text("")
    return distill(tmp, raw, flags=("--resume",)), "latest names ''"


@case("latest pointer is binary")
def _(tmp, raw, patch):
    (finished_part(tmp, raw) / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00\x01")
    return distill(tmp, raw, flags=("--resume",)), "not a checkpoint folder"


@case("checkpoint json edited by hand")
def _(tmp, raw, patch):
    (latest_checkpoint(finished_part(tmp, raw)) / "shared.json").write_text('{"__dict__": ')
    return distill(tmp, raw, flags=("--resume",)), "shared.json is not valid JSON"


@case("metrics log edited by hand")
def _(tmp, raw, patch):
    run = finished_part(tmp, raw)
    with open(run / "metrics.jsonl", "a") as log:
        log.write("not json\n")
    return ["plot", str(run)], "line"


def finished_run(tmp: Path, raw: dict) -> Path:
    """A run that finished its one epoch."""
    assert main(distill(tmp, raw)) == 0
    return Path(raw["output_dir"])


@case("export of a run whose summary is not json")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    (run / "summary.json").write_text("{not json")
    return ["export", str(run), "--repo-id", "org/x", "--out", str(tmp / "e")], "summary.json"


@case("export of a run whose teachers.json is not json")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    (run / "teachers.json").write_text("[{")
    return ["export", str(run), "--repo-id", "org/x", "--out", str(tmp / "e")], "teachers.json"


@case("export of a run whose recipe was edited")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    (run / "recipe.yaml").write_text("student: [\n")
    return ["export", str(run), "--repo-id", "org/x", "--out", str(tmp / "e")], "recipe.yaml"


@case("export of truncated weights")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    weights = run / "student_best.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    argv = ["export", str(run), "--repo-id", "org/x", "--out", str(tmp / "e")]
    return argv, "student_best.safetensors"


@case("export with an unknown weights choice")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    return ["export", str(run), "--repo-id", "org/x", "--weights", "worst"], "worst"


@case("export over a user's folder")
def _(tmp, raw, patch):
    run = finished_run(tmp, raw)
    (tmp / "project").mkdir()
    (tmp / "project" / "config.json").write_text("{}")
    argv = ["export", str(run), "--repo-id", "org/x", "--out", str(tmp / "project"), "--overwrite"]
    return argv, "is not a folder `mtkdrl export` wrote"


@case("evaluate with a zero batch size")
def _(tmp, raw, patch):
    data = raw["data"]["data_files"]["validation"]
    argv = ["evaluate", "--model", "resnet20_cifar", "--data", data, "--batch-size", "0"]
    return argv, "batch"


@case("evaluate a missing data file")
def _(tmp, raw, patch):
    argv = ["evaluate", "--model", "resnet20_cifar", "--data", str(tmp / "no.parquet")]
    return argv, "no.parquet"


@case("compare without methods")
def _(tmp, raw, patch):
    recipe = write_recipe(tmp, raw)
    return ["compare", recipe, "--methods", "--work", str(tmp / "w")], "--methods"


@case("compare an unknown method")
def _(tmp, raw, patch):
    recipe = write_recipe(tmp, raw)
    return ["compare", recipe, "--methods", "avgg", "--work", str(tmp / "w")], "avgg"


@case("compare a malformed method row")
def _(tmp, raw, patch):
    recipe = write_recipe(tmp, raw)
    return ["compare", recipe, "--methods", "avg:alpha", "--work", str(tmp / "w")], "key=value"


@case("compare with no seeds")
def _(tmp, raw, patch):
    recipe = write_recipe(tmp, raw)
    argv = ["compare", recipe, "--methods", "avg", "--seeds", "--work", str(tmp / "w")]
    return argv, "--seeds"


@case("zoo card of an unknown student")
def _(tmp, raw, patch):
    return ["zoo", "card", "mtkdrl-nonexistent"], "mtkdrl-nonexistent"


@case("cache of a recipe with a missing teacher")
def _(tmp, raw, patch):
    raw["teachers"][0]["checkpoint"] = str(tmp / "absent_teacher.safetensors")
    return ["cache", write_recipe(tmp, raw)], "absent_teacher.safetensors"


# -------------------------------------------------------------------------------------- hub
def export_folder(tmp: Path) -> Path:
    folder = tmp / "export"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"{}")
    return folder


@case("push without a token")
def _(tmp, raw, patch):
    folder = export_folder(tmp)
    return ["push", str(folder), "--repo-id", "someone/mtkdrl-resnet20"], "no Hugging Face token"


@case("push with the Hub unreachable")
def _(tmp, raw, patch):
    patch.setenv("HF_TOKEN", "hf_notarealtoken0123456789")
    folder = export_folder(tmp)
    return ["push", str(folder), "--repo-id", "someone/mtkdrl-resnet20"], "someone/mtkdrl-resnet20"


@case("push a folder that is not an export")
def _(tmp, raw, patch):
    (tmp / "empty").mkdir()
    return ["push", str(tmp / "empty"), "--repo-id", "someone/x"], "is not an export"


@case("push to an invalid repo id")
def _(tmp, raw, patch):
    folder = export_folder(tmp)
    return ["push", str(folder), "--repo-id", "not a repo id!"], "not a repo id!"


@case("evaluate an unknown model")
def _(tmp, raw, patch):
    data = raw["data"]["data_files"]["validation"]
    return ["evaluate", "--model", "resnet21_cifar", "--data", data], "resnet21_cifar"


@case("plot a folder without metrics")
def _(tmp, raw, patch):
    return ["plot", str(tmp)], "metrics.jsonl"


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_is_one_clear_line(name, tmp_path, tiny_run, capsys, monkeypatch):
    """The case's command exits non-zero with one `mtkdrl: error:` line naming the culprit, and
    writes no weight file, no temporary file and no staged checkpoint."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    datasets.disable_progress_bars()  # its bars are not ours to count
    raw = copy.deepcopy(tiny_run(tmp_path / "run", "avg", epochs=1, eval_teachers=False))
    raw["teacher_cache"] = {"dir": str(tmp_path / "run" / "teacher_cache")}
    argv, culprit = CASES[name](tmp_path, raw, monkeypatch)
    capsys.readouterr()
    before = set(tmp_path.rglob("*"))
    code = main(argv)
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.strip() and not PROGRESS.search(line)]
    assert code != 0, f"{name}: exit 0"
    assert len(err) == 1 and err[0].startswith("mtkdrl: error: "), err
    assert culprit in err[0], err[0]
    assert "hf_notarealtoken" not in err[0]
    written = set(tmp_path.rglob("*")) - before
    # the teacher cache reserves its files whole at creation and counts an entry only once its
    # seed is written last, so its files are never half-written entries
    written = {p for p in written if "teacher_cache" not in p.parts}
    half = [p for p in written if p.suffix in (".safetensors", ".tmp", ".partial", ".bin")]
    assert not half, half
