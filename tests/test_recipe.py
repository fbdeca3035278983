"""Recipe loading: strict keys with nearest suggestions, types, and `a.b=value` overrides."""

from pathlib import Path

import pytest

from mtkdrl.errors import MtkdrlError
from mtkdrl.recipe import Recipe, apply_override
from mtkdrl.temperatures import TemperatureContext, build_temperature_policy

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_and_nesting(tmp_path):
    recipe = Recipe.from_yaml(write(tmp_path, "student: {name: resnet20_cifar}\noptim: {lr: 1}\n"))
    assert recipe.student.name == "resnet20_cifar"
    assert recipe.optim.lr == 1.0 and isinstance(recipe.optim.lr, float)
    assert recipe.method.temperature == 4.0


def test_unknown_key_names_path_and_nearest(tmp_path):
    with pytest.raises(MtkdrlError) as err:
        Recipe.from_yaml(write(tmp_path, "optim: {learning_rate: 0.1, lr: 0.1}\n"))
    assert "optim.learning_rate" in str(err.value)
    with pytest.raises(MtkdrlError, match=r"'train\.epoch'.*did you mean epochs"):
        Recipe.from_yaml(write(tmp_path, "train: {epoch: 3}\n"))


def test_unknown_key_in_list_item(tmp_path):
    with pytest.raises(MtkdrlError, match=r"teachers\.1\.nmae.*did you mean name"):
        Recipe.from_yaml(write(tmp_path, "teachers: [{name: a}, {nmae: b}]\n"))


def test_mistyped_values(tmp_path):
    with pytest.raises(MtkdrlError, match=r"train\.epochs.*int"):
        Recipe.from_yaml(write(tmp_path, "train: {epochs: many}\n"))
    with pytest.raises(MtkdrlError, match=r"train\.mixed_precision.*'bf16'"):
        Recipe.from_yaml(write(tmp_path, "train: {mixed_precision: half}\n"))
    with pytest.raises(MtkdrlError, match=r"train\.epochs"):
        Recipe.from_yaml(write(tmp_path, "train: {epochs: true}\n"))


def test_exponent_without_dot_is_a_float(tmp_path):
    """YAML 1.1 reads `5e-4` as a string; a float field takes it as the number it means."""
    assert (
        Recipe.from_yaml(write(tmp_path, "optim: {weight_decay: 5e-4}\n")).optim.weight_decay
        == 5e-4
    )
    with pytest.raises(MtkdrlError, match=r"optim\.weight_decay.*float"):
        Recipe.from_yaml(write(tmp_path, "optim: {weight_decay: tiny}\n"))


@pytest.mark.parametrize(
    ("section", "key", "word"),
    [
        ("train", "mixed_precision", "no"),
        ("teacher_cache", "mode", "off"),
        ("teacher_cache", "mode", "on"),
    ],
)
def test_bare_yaml_booleans_mean_their_words(tmp_path, section, key, word):
    """YAML 1.1 reads `no`/`off`/`on` as booleans; where a key takes those words, they mean them."""
    written = Recipe.from_yaml(write(tmp_path, f"{section}: {{{key}: {word}}}\n"))
    overridden = Recipe.from_yaml(write(tmp_path, "seed: 1\n"), [f"{section}.{key}={word}"])
    for recipe in (written, overridden):
        assert getattr(getattr(recipe, section), key) == word


def test_cache_settings_are_checked(tmp_path):
    with pytest.raises(MtkdrlError, match=r"teacher_cache.views must be at least 1"):
        Recipe.from_yaml(write(tmp_path, "seed: 1\n"), ["teacher_cache.views=0"])
    with pytest.raises(MtkdrlError, match=r"'teacher_cache.mode' must be one of"):
        Recipe.from_yaml(write(tmp_path, "seed: 1\n"), ["teacher_cache.mode=sometimes"])


def test_overrides(tmp_path):
    path = write(tmp_path, "teachers: [{name: a}, {name: b}]\n")
    recipe = Recipe.from_yaml(
        path, ["train.epochs=3", "optim.milestones=[1, 2]", "teachers.1.name=c", "seed=7"]
    )
    assert recipe.train.epochs == 3
    assert recipe.optim.milestones == [1, 2]
    assert [t.name for t in recipe.teachers] == ["a", "c"]
    assert recipe.seed == 7


def test_bad_overrides():
    with pytest.raises(MtkdrlError, match=r"key.path=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(MtkdrlError, match=r"index below 1"):
        apply_override({"teachers": [{"name": "a"}]}, "teachers.3.name=x")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(MtkdrlError, match=r"recipe file not found"):
        Recipe.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(MtkdrlError, match=r"not valid YAML"):
        Recipe.from_yaml(write(tmp_path, "a: [1,\n"))


def test_round_trip(tmp_path):
    recipe = Recipe.from_yaml(write(tmp_path, "student: {name: x}\nteachers: [{name: t}]\n"))
    again = Recipe.from_yaml(write(tmp_path, recipe.to_yaml()))
    assert again == recipe


def test_paths_resolve_relative_to_recipe(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    recipe = Recipe.from_yaml(write(tmp_path, "teachers: [{name: t, checkpoint: w.safetensors}]\n"))
    assert recipe.teachers[0].checkpoint == str((tmp_path / "w.safetensors").resolve())


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    recipe = Recipe.from_yaml(path)
    assert recipe.student.name


DISTILLING = [p for p in sorted(RECIPES.glob("*.yaml")) if "temperature:" in p.read_text()]


@pytest.mark.parametrize("path", DISTILLING, ids=lambda p: p.name)
def test_shipped_recipes_show_rlkd_with_the_remix_of_their_data(tmp_path, path):
    """Each recipe's commented `rl` line, switched on, validates and builds RLKD with the entropy
    remix on for CIFAR, off for ImageNet, as the official configs."""
    text = path.read_text()
    switched = text.replace("  # temperature: {policy: rl", "  temperature: {policy: rl", 1)
    assert switched != text, f"{path.name} shows no `rl` temperature line"
    lines = [line for line in switched.splitlines() if not line.startswith("  temperature: 4")]
    lines = [line for line in lines if not line.startswith("  temperature: 1")]
    (tmp_path / path.name).write_text("\n".join(lines))
    spec = Recipe.from_yaml(tmp_path / path.name).method.temperature
    policy = build_temperature_policy(spec, TemperatureContext())
    assert (policy.remix is None) == path.name.startswith("imagenet")
