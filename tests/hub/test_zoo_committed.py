"""The students committed in `zoo/`: every exported entry of the shipped registry has its files,
re-measures to its recorded figures with `mtkdrl zoo verify`, and loads through timm's `hf-hub:`
path from an offline Hugging Face cache holding exactly its folder, as a user downloads it."""

from __future__ import annotations

import pytest
import timm
import torch

from mtkdrl.hub.zoo import Registry
from mtkdrl.hub.zoo_command import main
from mtkdrl.hub.zoo_entries import EXPORTED, PUBLISHED

from .conftest import SHIPPED_REGISTRY
from .helpers import load_from_hub, populate_hub_cache

REGISTRY = Registry.load(SHIPPED_REGISTRY)
COMMITTED = [e for e in REGISTRY.students if e.status in (EXPORTED, PUBLISHED)]
HUB_FILES = {"model.safetensors", "config.json", "README.md"}


def test_the_registry_ships_exported_students_with_their_files():
    assert COMMITTED, f"no exported student in {SHIPPED_REGISTRY.name}: CI verifies one"
    for entry in COMMITTED:
        folder = REGISTRY.resolve(entry.export_dir)
        assert {p.name for p in folder.iterdir()} >= HUB_FILES, entry.name
        assert entry.score is not None and entry.schedule, entry.name


def test_zoo_verify_remeasures_a_committed_student(capsys):
    entry = COMMITTED[0]
    capsys.readouterr()
    assert main(["verify", entry.name]) == 0  # the shipped registry, the shared val split
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{entry.name}: top-1 {entry.score.top1:.2f} (recorded "), line


@pytest.mark.parametrize("name", [e.name for e in COMMITTED])
def test_a_committed_student_loads_by_its_hub_name_from_an_offline_cache(name, tmp_path):
    entry = REGISTRY.get(name)
    folder = REGISTRY.resolve(entry.export_dir)
    repo_id = REGISTRY.repo_id(entry.repo)
    populate_hub_cache(tmp_path / "hub", repo_id, folder)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = load_from_hub(tmp_path, repo_id, images, import_mtkdrl=True)
    local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    with torch.no_grad():
        expected = local(images)
    assert torch.allclose(loaded["logits"], expected, atol=1e-5)
    assert loaded["num_classes"] == 10 and loaded["label_names"][0] == "airplane"
    assert loaded["data_config"]["input_size"] == [3, 32, 32]
