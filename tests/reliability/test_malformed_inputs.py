"""Malformed input, tried as a new user would: each case must end with one line naming the
culprit and what would be valid, a non-zero exit, no traceback and no half-written file.

Every case builds its inputs under `tmp_path` from a short real recipe (the shared CIFAR-10
slices, two shared teachers) and runs the `mtkdrl` command in this process. Recipe, weight,
checkpoint, cache and output-folder errors are found before training; an undecodable image in a
split decoded lazily (`data.cache_decoded: false`) is found when first read, mid-epoch.
"""

from __future__ import annotations

import copy
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
