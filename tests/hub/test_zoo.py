"""`mtkdrl zoo`: the shipped registry (students, their teachers by timm tag, status words that
mean one thing each), `zoo add` from a real run, `zoo list` and `zoo card`."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import yaml

from mtkdrl.errors import MtkdrlError
from mtkdrl.hub.names import check_repo_id
from mtkdrl.hub.sections import method_text
from mtkdrl.hub.zoo import Registry
from mtkdrl.hub.zoo_command import main
from mtkdrl.hub.zoo_entries import EXPORTED, PLANNED
from mtkdrl.recipe import Recipe
from mtkdrl.recipe_diff import overrides_between

from .conftest import SHIPPED_REGISTRY as REGISTRY

NAME = "resnet20-cifar10-test"  # not in the shipped registry


def test_shipped_registry_is_consistent_with_its_recipes():
    registry = Registry.load(REGISTRY)
    assert registry.organisation == "mtkdrl" and registry.students and registry.teachers
    for entry in registry.students:
        assert check_repo_id(registry.repo_id(entry.repo)).startswith("mtkdrl/mtkdrl-")
        if entry.status == PLANNED:
            assert entry.score is None and entry.run_dir is None and entry.export_dir is None
        recipe = Recipe.from_yaml(registry.resolve(entry.recipe), entry.overrides)
        assert recipe.student.name.split(".")[0] == entry.architecture
        assert recipe.method.name == entry.method
        used = method_text(entry.method).uses_teachers
        assert entry.teachers == ([t.name for t in recipe.teachers] if used else [])
        if entry.baseline is not None:
            assert registry.get(entry.baseline).method == "none"
    for teacher in registry.teachers:  # the tag, its Hub repository and its architecture agree
        cfg = timm.models.get_pretrained_cfg(teacher.name)
        assert cfg.hf_hub_id == registry.repo_id(teacher.repo)
        assert teacher.architecture == teacher.name.split(".")[0] and teacher.score.count == 5000
        assert cfg.license == teacher.license and cfg.origin_url == teacher.source
    cifar = [e for e in registry.students if e.architecture.endswith("_cifar")]
    assert {t for e in cifar for t in e.teachers} <= {t.name for t in registry.teachers}


def test_zoo_list_prints_students_then_teachers(capsys):
    assert main(["list", "--registry", str(REGISTRY)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["student", "repo", "id"]
    registry = Registry.load(REGISTRY)
    for entry in [*registry.students, *registry.teachers]:
        (line,) = [row for row in out if row.startswith(entry.name + " ")]
        assert f"mtkdrl/{entry.repo}" in line and line.endswith(entry.status)
        if entry.score is None:
            assert "—" in line
        else:  # measured: its top-1 and top-5 are in the table
            assert f"{entry.score.top1:.2f}  {entry.score.top5:.2f}" in line
    (teacher_header,) = [i for i, row in enumerate(out) if row.startswith("teacher ")]
    assert all(out.index(row) < teacher_header for row in out if row.startswith("resnet20-"))
    (line,) = [row for row in out if row.startswith("resnet20-cifar10-mtkdrl ")]
    assert "83.32 (resnet56_cifar)" in line  # its best teacher, measured on the same split
    schedule = registry.get("resnet20-cifar10-none").schedule
    assert any(row.endswith(f": {schedule}") and "resnet20-cifar10-none" in row for row in out)
    assert main(["list", "--registry", str(REGISTRY), "--org", "elsewhere"]) == 0
    assert "elsewhere/mtkdrl-" in capsys.readouterr().out


def test_the_published_zoo_table_is_generated_from_the_registry(capsys):
    """docs/results/zoo.md is `mtkdrl zoo list --markdown` output, never edited by hand."""
    assert main(["list", "--markdown"]) == 0
    table = capsys.readouterr().out
    assert "| resnet56_cifar.akamaster_cifar10 | mtkdrl/resnet56_cifar.akamaster_cifar10 |" in table
    assert (REGISTRY.parents[2] / "docs" / "results" / "zoo.md").read_text() == table


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
    assert entry.status == EXPORTED and entry.score.top1 == summary["best_top1"]
    assert entry.teachers == ["resnet20_cifar", "resnet32_cifar"] and entry.method == "mtkdrl"
    assert entry.schedule == f"2 epochs over {summary['train_images']} training images, " + (
        "batch 16, sgd lr 0.05 with a constant schedule"
    )
    assert registry.resolve(entry.export_dir).resolve() == export_dir.resolve()
    assert entry.run_dir is None  # the run lies outside the registry's project: no path of it
    assert [e.name for e in registry.students][:2] == [
        "resnet18-imagenet1k-mtkdrl",
        "vit-tiny-imagenet1k-mtkdrl",
    ]
    assert registry_copy.read_text().startswith("# The students mtkdrl publishes")
    capsys.readouterr()
    assert main(["list", *args]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if row.startswith(NAME + " ")]
    assert f"{summary['best_top1']:.2f}" in line and line.endswith(EXPORTED)

    card = (export_dir / "README.md").read_text()
    (export_dir / "README.md").unlink()
    assert main(["card", NAME, *args]) == 2
    assert "--run: zoo entry" in capsys.readouterr().err
    assert main(["card", NAME, *args, "--run", str(cifar_run)]) == 0
    assert (export_dir / "README.md").read_text() == card
    assert main(["card", NAME, *args, "--run", str(cifar_run), "--org", "elsewhere"]) == 0
    assert f"hf-hub:elsewhere/mtkdrl-{NAME}" in (export_dir / "README.md").read_text()


def test_a_run_inside_the_registrys_repository_is_recorded(cifar_run, registry_copy, capsys):
    """Only a run inside the registry's git work tree is recorded (relative), so `zoo card`
    finds it alone; a shipped registry never names a folder of the machine that trained it."""
    project = registry_copy.parents[2]
    (project / ".git").mkdir()
    run = project / "runs" / "inside"
    shutil.copytree(cifar_run, run)
    args = ["--registry", str(registry_copy)]
    assert main(["add", str(run), "--name", NAME, "--export-dir", str(project / "x"), *args]) == 0
    entry = Registry.load(registry_copy).get(NAME)
    assert entry.run_dir == "../../runs/inside"
    (project / "x" / "README.md").unlink()
    assert main(["card", NAME, *args]) == 0, capsys.readouterr().err
    assert (project / "x" / "README.md").is_file()


def test_zoo_card_refuses_a_run_of_another_entry(cifar_run, registry_copy, capsys):
    args = ["card", "resnet20-cifar10-none", "--registry", str(registry_copy)]
    assert main([*args, "--run", str(cifar_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("mtkdrl: error: --run: ") and "by mtkdrl, but 'resnet20-cifar10-none'" in err
    )
    assert len(err.splitlines()) == 1


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
    shipped = Registry.load(REGISTRY)
    names = ", ".join(entry.name for entry in [*shipped.students, *shipped.teachers])
    assert err == f"mtkdrl: error: NAME: unknown zoo entry 'nope'; the registry has: {names}\n"
    assert main(["card", "resnet18-imagenet1k-mtkdrl", "--registry", str(registry_copy)]) == 2
    assert "(planned) has no run and export to make a card from" in capsys.readouterr().err
    assert main(["list", "--registry", str(tmp_path / "none.yaml")]) == 2
    assert "no registry file at" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"students": [{"name": "x", "top1": 99.0}]}))
    with pytest.raises(MtkdrlError, match=r"students.0: unknown key 'top1'"):
        Registry.load(bad)


STUDENT = {
    "name": "s",
    "repo": "mtkdrl-s",
    "architecture": "resnet20_cifar",
    "dataset": "CIFAR-10",
    "method": "avg",
    "recipe": "r.yaml",
}
SCORE = {"top1": 60.0, "top5": 95.0, "split": "validation"}
BAD_ENTRIES = {
    "unknown status": (
        {"status": "not yet trained"},
        "students.0.status: 'not yet trained' must be one of planned, trained, exported, published",
    ),
    "planned with figures": ({"score": SCORE}, "students.0: a 'planned' entry has no score"),
    "trained without figures": ({"status": "trained"}, "a 'trained' entry needs its score"),
    "exported without a folder": (
        {"status": "exported", "score": SCORE},
        "students.0: an 'exported' entry needs its export_dir",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_status_words_and_fields_must_agree(case, tmp_path):
    fields, message = BAD_ENTRIES[case]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"students": [{**STUDENT, **fields}]}))
    with pytest.raises(MtkdrlError) as caught:
        Registry.load(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_baseline_of_another_schedule_is_refused(tmp_path):
    none = {**STUDENT, "name": "n", "method": "none", "schedule": "30 epochs over 2,000 images"}
    student = {**STUDENT, "schedule": "30 epochs over 50,000 images", "baseline": "n"}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"students": [none, student]}))
    with pytest.raises(MtkdrlError, match=r"s.baseline: 'n' is not a student of the same schedule"):
        Registry.load(path)
    none["schedule"] = student["schedule"]
    path.write_text(yaml.safe_dump({"students": [none, student]}))
    assert Registry.load(path).gain(Registry.load(path).get("s")) is None  # neither measured
    for entry, top1 in ((none, 58.5), (student, 61.25)):
        entry.update(status="trained", score={**SCORE, "top1": top1})
    path.write_text(yaml.safe_dump({"students": [none, student]}))
    registry = Registry.load(path)
    assert registry.gain(registry.get("s")) == pytest.approx(2.75)


def test_zoo_add_checks_the_baseline_before_writing_anything(cifar_run, registry_copy, tmp_path):
    args = ["add", str(cifar_run), "--registry", str(registry_copy)]
    planned = ["--baseline", "resnet20-cifar10-none"]  # the full-data schedule, not this run's
    assert main([*args, "--name", "b", "--export-dir", str(tmp_path / "b"), *planned]) == 2
    assert not (tmp_path / "b").exists() and "'b'" not in registry_copy.read_text()
    assert main([*args, "--name", "a", "--export-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--name", "b", "--export-dir", str(tmp_path / "b"), "--baseline", "a"]) == 0
    registry = Registry.load(registry_copy)
    assert registry.get("b").baseline == "a" and registry.gain(registry.get("b")) == 0.0
