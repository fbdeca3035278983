"""The packaged recipes: listed and printed by `mtkdrl recipes`, usable by name, free of local
paths, and the base that a recipe file's `base:` key lays its changes over."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtkdrl.errors import MtkdrlError
from mtkdrl.recipe import Recipe
from mtkdrl.recipes import PACKAGED_DIR, main, names

REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_every_packaged_recipe_builds_and_names_no_local_path():
    assert {"quickstart", "cifar10_mtkdrl", "imagenet_resnet18", "imagenet_vit"} <= set(names())
    for name in names():
        recipe = Recipe.from_yaml(name)
        assert recipe.data.name not in ("parquet", "imagefolder"), name  # a Hub data set
        assert recipe.data.data_files is None and recipe.data.data_dir is None, name
        models = [recipe.student, *recipe.teachers]
        assert all(spec.checkpoint is None for spec in models), name
        assert all(spec.pretrained for spec in recipe.teachers), name  # tags anyone can load
        assert "base" not in yaml.safe_load((PACKAGED_DIR / f"{name}.yaml").read_text()), name


def test_recipes_lists_one_line_each_and_prints_one(capsys):
    assert main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each has its description
    assert main(["quickstart"]) == 0
    assert capsys.readouterr().out == (PACKAGED_DIR / "quickstart.yaml").read_text()
    assert main(["quickstrat"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mtkdrl: error: recipe: no packaged recipe 'quickstrat'")
    assert "quickstart" in error and error.count("\n") == 1


def test_a_file_wins_over_a_packaged_name_and_a_missing_one_lists_the_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("student: {name: resnet8x4_cifar}\nmethod: {name: none}\n")
    assert Recipe.from_yaml("quickstart").student.name == "resnet8x4_cifar"
    with pytest.raises(MtkdrlError, match=r"recipe file not found: nope; or name a packaged "):
        Recipe.from_yaml("nope")


def test_base_merges_mappings_and_replaces_lists(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "base: quickstart\ndata: {batch_size: 8}\nteachers: [{name: resnet20_cifar}]\nseed: 3\n"
    )
    mine, base = Recipe.from_yaml(path), Recipe.from_yaml("quickstart")
    assert mine.data.batch_size == 8 and mine.seed == 3
    assert mine.data.name == base.data.name and mine.data.train_subset == base.data.train_subset
    assert [t.name for t in mine.teachers] == ["resnet20_cifar"]
    assert mine.optim == base.optim and mine.method == base.method


def test_repository_quickstart_is_the_packaged_one_on_local_files():
    local, packaged = (
        Recipe.from_yaml(REPO_RECIPES / "quickstart.yaml"),
        Recipe.from_yaml("quickstart"),
    )
    assert local.data.name == "parquet" and all(t.checkpoint for t in local.teachers)
    assert [t.name.split(".")[0] for t in local.teachers] == [
        t.name.split(".")[0] for t in packaged.teachers
    ]
    for section in ("student", "method", "optim", "train", "teacher_cache", "seed", "output_dir"):
        assert getattr(local, section) == getattr(packaged, section), section


@pytest.mark.parametrize("base", ["nope", 3])
def test_a_bad_base_is_one_line_naming_the_packaged_recipes(tmp_path, base):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"base": base, "seed": 1}))
    with pytest.raises(MtkdrlError, match=r"base.*quickstart") as caught:
        Recipe.from_yaml(path)
    assert "\n" not in str(caught.value)
