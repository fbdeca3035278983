"""What a cache entry holds: only what the run reads, its size said before filling, and a
compact cache that trains the same student as a full one where it is lossless."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtkdrl import Recipe, distill
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import TeacherCacheConfig
from mtkdrl.teacher_cache.wiring import layout_for

from ..methods.helpers import method_loss


def _probe(classes: int, width: int) -> list[ModelOutputs]:
    return [ModelOutputs(torch.zeros(2, classes), torch.zeros(2, width), torch.zeros(2, 8, 4, 4))]


@pytest.mark.parametrize(
    ("method", "options", "store", "embedding"),
    [
        ("avg", {}, "needed", 0),  # logits only: no embedding read
        ("ebkd", {}, "needed", 0),
        ("mtkdrl", {}, "needed", 2048),  # the agent's state reads it whole
        ("mtkdrl", {"state_embedding_dims": 256}, "needed", 256),
        ("avg", {}, "all", 2048),  # every output: any method can share the cache
    ],
)
def test_an_entry_holds_what_the_method_reads(method, options, store, embedding):
    loss = method_loss(method, 2, options=options)
    cfg = TeacherCacheConfig(store=store)
    layout = layout_for(cfg, 10, _probe(1000, 2048), None, loss.method.teacher_embedding_width)
    assert layout.embedding_dims == [embedding] and layout.feature_shapes is None
    assert layout.logit_codec == "uint8"  # 1000 classes
    logits = 1000 + 4 + 4  # 8-bit levels, low and step
    assert layout.teacher_entry_bytes() == [logits + 2 * embedding]  # float16 embedding
    assert layout.entry_bytes() == logits + 2 * embedding + 8  # and the entry's seed
    with_maps = layout_for(cfg, 10, _probe(10, 64), -1, loss.method.teacher_embedding_width)
    assert with_maps.logit_codec == "float32" and with_maps.feature_shapes == [[8, 4, 4]]


def _student(run: Path) -> dict:
    return load_file(str(run / "student_last.safetensors"))


@pytest.mark.parametrize("method", ["avg", "ebkd"])
def test_compact_cache_trains_the_student_of_the_full_cache(tmp_path, tiny_run, method, capsys):
    """With 10 classes the compact entry is the full one less the embedding these methods never
    read: the same student, bit for bit, and about a fifth of the bytes (CIFAR ResNets: 10
    logits against a 64-wide embedding)."""
    students, sizes = {}, {}
    for store in ("needed", "all"):
        raw = tiny_run(tmp_path / store, method, epochs=2, eval_teachers=False)
        raw["teacher_cache"] = {"views": 1, "store": store, "embedding_dtype": "float32"}
        summary = distill(Recipe.from_dict(raw))
        assert summary["teacher_cache_hits"] == 6  # epoch 1 replays view 0
        students[store] = _student(tmp_path / store)
        meta = json.loads((Path(summary["teacher_cache"]) / "meta.json").read_text())
        sizes[store] = meta["layout"]["embedding_dims"]
        printed = capsys.readouterr().out
        line = next(x for x in printed.splitlines() if x.startswith("teacher cache (new)"))
        assert "per sample and view" in line and "teachers.0: " in printed
    assert sizes == {"needed": [0, 0], "all": [64, 64]}
    for key, value in students["all"].items():
        assert torch.equal(students["needed"][key], value), key


def test_files_on_disk_are_the_printed_size(tmp_path, tiny_run, capsys):
    raw = tiny_run(tmp_path / "run", "mtkdrl", epochs=1, eval_teachers=False)
    raw["teacher_cache"] = {"views": 2}
    summary = distill(Recipe.from_dict(raw))
    folder = Path(summary["teacher_cache"])
    on_disk = sum(path.stat().st_size for path in folder.glob("*.bin"))
    meta = json.loads((folder / "meta.json").read_text())
    layout = meta["layout"]
    assert layout["embedding_dims"] == [64, 64] and layout["logit_codec"] == "float32"
    per_entry = on_disk / (2 * 96)
    # 2 teachers: 40 B logits + 128 B float16 embedding + a 64x8x8 float16 map; seed and crop
    assert per_entry == 2 * (40 + 128 + 64 * 8 * 8 * 2) + 8 + 6
    assert f"teacher cache (new): {on_disk / 2**20:.1f} MB" in capsys.readouterr().out
