"""How two recipes differ: the overrides that turn one into the other, and `key: old -> new`."""

from pathlib import Path

from mtkdrl.recipe import Recipe
from mtkdrl.recipe_diff import differences, overrides_between

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_overrides_between_turn_one_recipe_into_the_other():
    path = RECIPES / "cifar10_mtkdrl.yaml"
    given = [
        "method.name=none",
        "method.options={}",
        "data.train_subset=2000",
        "optim.weight_decay=5e-4",
        "optim.milestones=[3, 6]",
        "train.checkpoint_every=null",
        "train.mixed_precision=bf16",
        "teachers.1.name=resnet110_cifar",
        "output_dir=elsewhere",
        "teacher_cache.dir=/tmp/shared_cache",
    ]
    source, target = Recipe.from_yaml(path), Recipe.from_yaml(path, given)
    found = overrides_between(source, target)
    # every change but where the run wrote, each once
    assert sorted(item.split("=", 1)[0] for item in found) == sorted(
        item.split("=", 1)[0] for item in given[:-2]
    )
    rebuilt = Recipe.from_yaml(path, found)
    assert overrides_between(rebuilt, target) == []
    assert rebuilt.output_dir == source.output_dir  # location keys are left alone
    assert rebuilt.optim.weight_decay == 5e-4 and rebuilt.train.mixed_precision == "bf16"
    assert overrides_between(target, target) == []


def test_differences_name_each_changed_leaf_with_old_and_new():
    old = {"optim": {"lr": 0.05}, "teachers": [{"name": "a"}, {"name": "b"}], "seed": 0}
    new = {"optim": {"lr": 0.1}, "teachers": [{"name": "a"}, {"name": "c"}], "seed": 0}
    assert differences(old, new) == ["optim.lr: 0.05 -> 0.1", "teachers.1.name: 'b' -> 'c'"]
    assert differences(old, old) == []
