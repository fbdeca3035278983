"""The model card: Hub front matter parsed back, results, lineage, recipe, usage and the plot."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import save_file

import mtkdrl
from mtkdrl.errors import MtkdrlError
from mtkdrl.hub import ExportConfig, ExportOptions, export_run
from mtkdrl.hub.card import TEMPLATE, CardContext, front_matter
from mtkdrl.hub.lineage import base_model, provenance
from mtkdrl.hub.run import Score, read_run
from mtkdrl.hub.sections import _lineage
from mtkdrl.recipe import MethodConfig, ModelSpec, Recipe

from .helpers import CIFAR_REPO

REPO_ROOT = Path(__file__).resolve().parents[2]


def split_card(text: str) -> tuple[dict, str]:
    """The YAML front matter (parsed) and the Markdown body of a README.md."""
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


def best_scores(run: Path) -> tuple[float, float]:
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = next(r for r in records if r.get("epoch") == summary["best_epoch"] and "val_top5" in r)
    return summary["best_top1"], best["val_top5"]


def fake_reference(run: Path, folder: Path, method: str, top1: float, **data) -> Path:
    """A finished run of the same recipe with another method, as far as the card reads it."""
    folder.mkdir()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["method"]["name"] = method
    recipe["data"].update(data)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    summary = {"method": method, "epochs": 2, "global_steps": 12, "best_top1": top1}
    (folder / "summary.json").write_text(json.dumps({**summary, "best_epoch": 1}))
    record = {"epoch": 1, "epoch_seconds": 1.0, "val_top1": top1, "val_top5": top1 + 40}
    (folder / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    weights = {"w": torch.zeros(1)}  # saved at the best epoch, as the summary says
    save_file(weights, str(folder / "student_best.safetensors"), metadata={"epoch": "1"})
    return folder


def test_front_matter_is_valid_and_carries_the_run_metrics(cifar_run, cifar_export):
    meta, _ = split_card((cifar_export / "README.md").read_text())
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert {"image-classification", "timm", "knowledge-distillation", "mtkdrl"} <= set(meta["tags"])
    assert meta["datasets"] == ["uoft-cs/cifar10"]
    assert "base_model" not in meta  # trained from scratch
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == CIFAR_REPO.split("/")[1]
    assert result["task"]["type"] == "image-classification"
    expected_dataset = {"name": "CIFAR-10", "type": "uoft-cs/cifar10", "split": "validation"}
    assert result["dataset"] == expected_dataset
    top1, top5 = best_scores(cifar_run)
    values = {m["name"]: m["value"] for m in result["metrics"]}
    assert values == {"Top-1 Accuracy": round(top1, 2), "Top-5 Accuracy": round(top5, 2)}
    card = ModelCard.load(cifar_export / "README.md")
    assert [r.metric_value for r in card.data.eval_results] == [round(top1, 2), round(top5, 2)]


def test_card_body_has_results_lineage_recipe_usage_and_plot(cifar_run, cifar_export):
    _, body = split_card((cifar_export / "README.md").read_text())
    teachers = json.loads((cifar_run / "teachers.json").read_text())
    for teacher in teachers:
        assert f"| `{teacher['name']}` | teacher | {teacher['top1']:.2f} |" in body
    assert f"**{best_scores(cifar_run)[0]:.2f}**" in body
    assert "akamaster/pytorch_resnet_cifar10" in body and "BSD-2-Clause" in body
    assert "`shared/data/teachers/cifar10_resnet32.safetensors`" in body
    assert "MTKD-RL" in body and 'options `{"warmup_epochs": 1}`' in body
    shown = yaml.safe_load(body.split("```yaml\n", 1)[1].split("\n```", 1)[0])
    recipe = yaml.safe_load((cifar_run / "recipe.yaml").read_text())
    assert shown["output_dir"] == "run" and shown["method"] == recipe["method"]
    files = {"train": "train.parquet", "validation": "validation.parquet"}
    assert shown["data"]["data_files"] == files
    names = [Path(t["checkpoint"]).name for t in recipe["teachers"]]
    assert [t["checkpoint"] for t in shown["teachers"]] == names
    local = [recipe["output_dir"], *recipe["data"]["data_files"].values()]
    local += [t["checkpoint"] for t in recipe["teachers"]]
    text = (cifar_export / "README.md").read_text()
    assert all(Path(path).is_absolute() for path in local)
    assert not any(str(Path(path).parent) in text for path in local)  # no local folder named
    assert "Accuracy on validation.parquet, split 'validation'" in body
    assert "train.parquet, split 'train', `cifar` augmentation" in body
    usage = body.split("## Usage", 1)[1]
    assert usage.index("import mtkdrl") < usage.index("import timm")
    assert f'timm.create_model("hf-hub:{CIFAR_REPO}", pretrained=True)' in usage
    assert f"mtkdrl {mtkdrl.__version__}" in body
    assert "Hardware (recorded by the run): CPU:" in body and "logical CPUs" in body
    assert "precision `fp32` (set by train.mixed_precision=no)" in body
    assert "### Learned teacher weights" in body
    assert "![learned teacher weights during distillation](teacher_weights.png)" in body
    assert "Per epoch: each teacher's logit-loss weight, each teacher's feature-loss" in body
    plot = cifar_export / "teacher_weights.png"
    assert plot.read_bytes() == (cifar_run / "teacher_weights.png").read_bytes()
    assert "@inproceedings{yang2025mtkdrl" in body


def test_card_carries_no_local_path_and_no_token(resnet18_run, tmp_path, monkeypatch):
    """A run whose recipe names data, teacher, student, cache and output paths in every form
    (absolute, `~`, relative, Windows, a `local-dir:` teacher): nothing an export writes (card,
    config) names the machine's folders, nor the Hub token."""
    token = "hf_" + "T0k3n" * 6
    monkeypatch.setenv("HF_TOKEN", token)
    run = tmp_path / "run"
    shutil.copytree(resnet18_run, run)
    home = Path.home()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["output_dir"] = str(run)
    recipe["student"]["checkpoint"] = str(tmp_path / "init" / "student.safetensors")
    recipe["teachers"] += [
        {"name": "resnet32_cifar", "checkpoint": str(home / "teachers" / "mine.safetensors")},
        {"name": f"local-dir:{home / 'models' / 'resnet20_mine'}"},
        {"name": "resnet44_cifar", "checkpoint": "C:\\Users\\someone\\win.safetensors"},
        {"name": "resnet56_cifar", "checkpoint": "../private/rel.safetensors"},
        {"name": "resnet8x4_cifar", "checkpoint": "~/private/tilde.safetensors"},
    ]
    recipe["data"]["data_dir"] = str(home / "datasets")
    recipe["teacher_cache"]["dir"] = str(home / ".cache" / "mtkdrl")
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert all(Path(p).is_absolute() for p in recipe["data"]["data_files"].values())
    export_run(ExportConfig(run, "org/student", tmp_path / "e"))
    written = {
        p.name: p.read_text() for p in (tmp_path / "e").iterdir() if p.suffix != ".safetensors"
    }
    assert {"README.md", "config.json"} <= set(written)
    local = [str(tmp_path.parents[1]), "/work", str(home), token, "someone", "private"]
    for name, text in written.items():
        found = [part for part in local if part in text]
        assert not found, f"{name} names {found}"
    shown = yaml.safe_load(written["README.md"].split("```yaml\n", 1)[1].split("\n```", 1)[0])
    assert shown["teachers"][1]["checkpoint"] == "mine.safetensors"
    assert shown["teachers"][2]["name"] == "local-dir:resnet20_mine"
    assert [t["checkpoint"] for t in shown["teachers"][3:]] == [
        "win.safetensors",
        "rel.safetensors",
        "tilde.safetensors",
    ]
    assert '"local-dir:resnet20_mine"' in written["config.json"]
    assert shown["data"]["data_files"]["validation"] == "validation.parquet"


def test_timm_student_card_needs_no_mtkdrl(resnet18_run, tiny_cifar, tmp_path):
    export_run(ExportConfig(resnet18_run, "org/student", tmp_path / "e"))
    meta, body = split_card((tmp_path / "e" / "README.md").read_text())
    assert "import mtkdrl" not in body and "pip install timm" in body
    assert "cross-entropy only" in body and "teacher_weights.png" not in body
    assert "trained by mtkdrl 0.1.0 with no distillation" in body and "evaluated only" in body
    assert "distilled from teachers whose weights" not in body
    assert "datasets" not in meta  # no Hub data set id was given for these local files
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert dataset["type"] == dataset["name"] == Path(tiny_cifar["validation"]).parent.name
    assert dataset["split"] == "validation"


@pytest.mark.parametrize(
    ("method", "shown"),
    [
        (MethodConfig(name="avg"), "1·Σ w·KL(T = 4) + 5·Σ v·MSE"),
        (MethodConfig(name="ebkd", logit_loss="dkd"), "1·Σ w·dkd(T = 4) + "),
        (
            MethodConfig(name="avg", logit_loss={"name": "dkd", "beta": 2}),
            "Σ w·dkd(T = 4, beta = 2)",
        ),
        (MethodConfig(name="dkd", temperature=1.0), "Σ w·dkd(T = 1) + "),
    ],
)
def test_lineage_names_the_recipes_logit_loss(method, shown):
    recipe = Recipe(method=method)
    lineage = _lineage(SimpleNamespace(run=SimpleNamespace(recipe=recipe), dataset="CIFAR-10"))
    assert shown in lineage
    assert "KL(" in shown or "KL(" not in lineage  # no KL named for another logit loss


def test_references_enter_the_results_table(cifar_run, tmp_path):
    none = fake_reference(cifar_run, tmp_path / "none_run", "none", 31.25)
    avg = fake_reference(cifar_run, tmp_path / "avg_run", "avg", 28.125)
    options = ExportOptions(references={"no-KD": none, "AVER": avg})
    config = ExportConfig(cifar_run, CIFAR_REPO, tmp_path / "e", options)
    export_run(config)
    body = (tmp_path / "e" / "README.md").read_text()
    assert "(run `none_run`) | reference no-KD: no distillation" in body
    assert "| 31.25 | 71.25 | 2 epochs, 12 steps |" in body
    assert "(run `avg_run`) | reference AVER: AVER" in body and "| 28.12 |" in body
    elsewhere = fake_reference(cifar_run, tmp_path / "other", "none", 50.0, eval_subset=10)
    config.options.references, config.out = {"none": elsewhere}, tmp_path / "e2"
    with pytest.raises(MtkdrlError, match=r"--reference none=.*evaluated on .*first 10 images"):
        export_run(config)


def test_teacher_sources_and_licences(tmp_path):
    tv = provenance(ModelSpec("resnet50.tv_in1k", pretrained=True))
    assert tv.license == "bsd-3-clause" and "timm/resnet50.tv_in1k" in tv.source
    assert provenance(ModelSpec("hf-hub:someone/teacher", pretrained=True)).license == "unknown"
    bare = tmp_path / "mine.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    assert provenance(ModelSpec("resnet20_cifar", checkpoint=str(bare))).license == "unknown"
    shared = tmp_path / "shared" / "data" / "teachers" / "cifar10_resnet20.safetensors"
    shared.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(shared))
    origin = provenance(ModelSpec("resnet20_cifar", checkpoint=str(shared)))
    assert origin.license == "BSD-2-Clause" and "akamaster/pytorch_resnet_cifar10" in origin.source
    tag = provenance(ModelSpec("resnet20_cifar.akamaster_cifar10", pretrained=True))
    credit = (
        "[akamaster/pytorch_resnet_cifar10](https://github.com/akamaster/pytorch_resnet_cifar10)"
    )
    assert tag.license == "bsd-2-clause" and credit in tag.source  # the packaged recipes' teachers


def test_fine_tuned_student_names_its_base_model(cifar_run):
    assert base_model(ModelSpec("resnet18.a1_in1k", pretrained=True)) == "timm/resnet18.a1_in1k"
    assert base_model(ModelSpec("hf-hub:org/model@v2", pretrained=True)) == "org/model"
    assert base_model(ModelSpec("resnet18")) is None
    run = read_run(cifar_run)
    run.recipe = Recipe.from_dict({"student": {"name": "resnet18.a1_in1k", "pretrained": True}})
    context = CardContext(CIFAR_REPO, run, Score(50.0, 90.0, "validation"), "best", "resnet18", 1)
    assert front_matter(context).base_model == "timm/resnet18.a1_in1k"


def test_custom_template_and_its_errors(resnet18_run, tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ title }} costs $0\n\n{{ results }}\n")
    options = ExportOptions(template=template)
    export_run(ExportConfig(resnet18_run, "org/student", tmp_path / "e", options))
    meta, body = split_card((tmp_path / "e" / "README.md").read_text())
    assert meta["library_name"] == "timm" and body.startswith("# student costs $0\n")
    template.write_text("{{ card_data }} {{ unknown }}")
    with pytest.raises(
        MtkdrlError, match=r"bad placeholder 'unknown'; valid: \{\{ card_data \}\}, \{\{ title"
    ):
        export_run(ExportConfig(resnet18_run, "org/student", tmp_path / "f", options))
    template.write_text("{{ card_data }} {% if citation %}")
    with pytest.raises(MtkdrlError, match=r"bad Jinja syntax at line 1: .*; valid: \{\{ card_data"):
        export_run(ExportConfig(resnet18_run, "org/student", tmp_path / "f", options))
    with pytest.raises(MtkdrlError, match=r"--template: no such file"):
        options.template = tmp_path / "no"
        export_run(ExportConfig(resnet18_run, "o/s", tmp_path / "g", options))
    assert not (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def test_hub_cards_template_is_the_packaged_one():
    """`hub_cards/model_card.md` is a link to the template the package ships (a copy could drift
    from what `pip install mtkdrl` renders), and the package data declares that template."""
    linked = REPO_ROOT / "hub_cards" / "model_card.md"
    packaged = Path(str(TEMPLATE))
    assert linked.is_symlink() and linked.resolve() == packaged.resolve()
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    declared = re.search(r'^"mtkdrl\.hub" = \[(.*)\]$', pyproject, re.MULTILINE)
    assert declared, "pyproject.toml declares no package data for mtkdrl.hub"
    patterns = [item.strip().strip('"') for item in declared.group(1).split(",")]
    package = Path(mtkdrl.__file__).parent / "hub"
    assert any(packaged.relative_to(package).match(pattern) for pattern in patterns)
