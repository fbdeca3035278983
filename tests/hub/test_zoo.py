"""`mtkdrl zoo`: the shipped registry, `zoo add` from a real run, `zoo list` and `zoo card`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtkdrl.errors import MtkdrlError
from mtkdrl.hub.names import check_repo_id
from mtkdrl.hub.zoo import NOT_TRAINED, TRAINED, Registry
from mtkdrl.hub.zoo_command import main
from mtkdrl.recipe import Recipe
from mtkdrl.recipe_diff import overrides_between

from .conftest import SHIPPED_REGISTRY as REGISTRY

NAME = "resnet20-cifar10-test"  # not in the shipped registry


def test_shipped_registry_is_consistent_with_its_recipes():
    registry = Registry.load(REGISTRY)
    assert registry.organisation == "mtkdrl" and registry.students
    for entry in registry.students:
        assert check_repo_id(registry.repo_id(entry.repo)).startswith("mtkdrl/mtkdrl-")
        if entry.status == NOT_TRAINED:
            assert entry.score is None and entry.run_dir is None and entry.export_dir is None
        recipe = Recipe.from_yaml(registry.resolve(entry.recipe), entry.overrides)
        assert recipe.student.name.split(".")[0] == entry.architecture
        assert [t.name for t in recipe.teachers] == entry.teachers
        assert recipe.method.name == entry.method


def test_zoo_list_prints_the_registry(capsys):
    assert main(["list", "--registry", str(REGISTRY)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["name", "repo", "id"]
    for entry in Registry.load(REGISTRY).students:
        (line,) = [row for row in out if row.startswith(entry.name + " ")]
        assert f"mtkdrl/{entry.repo}" in line and entry.status in line
        if entry.status == NOT_TRAINED:
            assert "—" in line
        else:  # a real student: its measured top-1 and top-5 are in the table
            assert f"{entry.score.top1:.2f}" in line and f"{entry.score.top5:.2f}" in line
    assert main(["list", "--registry", str(REGISTRY), "--org", "elsewhere"]) == 0
    assert "elsewhere/mtkdrl-" in capsys.readouterr().out


def test_zoo_add_records_the_run_and_card_regenerates(cifar_run, registry_copy, tmp_path, capsys):
    export_dir = tmp_path / "exports" / NAME
    args = ["--registry", str(registry_copy)]
    dataset = ["--dataset-id", "uoft-cs/cifar10", "--dataset-name", "CIFAR-10"]
    add = ["add", str(cifar_run), "--name", NAME, "--export-dir", str(export_dir)]
    code = main([*add, *args, *dataset])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((cifar_run / "summary.json").read_text())
    registry = Registry.load(registry_copy)
    entry = registry.get(NAME)
    assert entry.status == TRAINED and entry.score.top1 == summary["best_top1"]
    assert entry.teachers == ["resnet20_cifar", "resnet32_cifar"] and entry.method == "mtkdrl"
    assert registry.resolve(entry.export_dir).resolve() == export_dir.resolve()
    assert not Path(entry.run_dir).is_absolute()
    assert [e.name for e in registry.students][:2] == [
        "resnet18-imagenet1k-mtkdrl",
        "vit-tiny-imagenet1k-mtkdrl",
    ]
    assert registry_copy.read_text().startswith("# The students mtkdrl publishes")
    capsys.readouterr()
    assert main(["list", *args]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if row.startswith(NAME)]
    assert f"{summary['best_top1']:.2f}" in line and TRAINED in line and NOT_TRAINED not in line

    card = (export_dir / "README.md").read_text()
    (export_dir / "README.md").unlink()
    assert main(["card", NAME, *args]) == 0
    assert (export_dir / "README.md").read_text() == card
    assert main(["card", NAME, *args, "--org", "elsewhere"]) == 0
    assert f"hf-hub:elsewhere/mtkdrl-{NAME}" in (export_dir / "README.md").read_text()


def test_zoo_add_refuses_a_recipe_that_is_not_the_runs(cifar_run, registry_copy, tmp_path):
    recipe = yaml.safe_load((cifar_run / "recipe.yaml").read_text())
    recipe["teachers"] = recipe["teachers"][:1]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(recipe))
    args = ["add", str(cifar_run), "--name", NAME, "--registry", str(registry_copy)]
    args += ["--recipe", str(tmp_path / "other.yaml"), "--export-dir", str(tmp_path / "x")]
    assert main(args) == 2
    assert not (tmp_path / "x").exists()
    assert NAME not in registry_copy.read_text()


def test_zoo_add_records_the_overrides_that_reproduce_the_run(cifar_run, registry_copy, tmp_path):
    raw = yaml.safe_load((cifar_run / "recipe.yaml").read_text())
    raw["train"]["epochs"], raw["optim"]["lr"] = 30, 0.2
    raw["method"] = {"name": "avg"}
    raw["output_dir"] = "runs/elsewhere"
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(raw))
    args = ["add", str(cifar_run), "--name", NAME, "--registry", str(registry_copy)]
    args += ["--recipe", str(base), "--override", "optim.lr=0.05"]
    assert main([*args, "--export-dir", str(tmp_path / "export")]) == 0
    registry = Registry.load(registry_copy)
    entry = registry.get(NAME)
    assert entry.overrides[0] == "optim.lr=0.05"  # as given, then the ones worked out
    assert {"train.epochs=2", "method.name=mtkdrl"} <= set(entry.overrides)
    assert not any(item.startswith("output_dir=") for item in entry.overrides)
    rebuilt = Recipe.from_yaml(registry.resolve(entry.recipe), entry.overrides)
    assert overrides_between(rebuilt, Recipe.from_yaml(cifar_run / "recipe.yaml")) == []


def test_zoo_errors_name_the_entry_and_the_valid_ones(registry_copy, tmp_path, capsys):
    assert main(["card", "nope", "--registry", str(registry_copy)]) == 2
    err = capsys.readouterr().err
    names = ", ".join(entry.name for entry in Registry.load(REGISTRY).students)
    assert err == f"mtkdrl: error: NAME: unknown zoo entry 'nope'; the registry has: {names}\n"
    assert main(["card", "resnet18-imagenet1k-mtkdrl", "--registry", str(registry_copy)]) == 2
    assert "is not yet trained: it has no run to make a card from" in capsys.readouterr().err
    assert main(["list", "--registry", str(tmp_path / "none.yaml")]) == 2
    assert "no registry file at" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"students": [{"name": "x", "top1": 99.0}]}))
    with pytest.raises(MtkdrlError, match=r"students.0: unknown key 'top1'"):
        Registry.load(bad)
