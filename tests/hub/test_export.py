"""`mtkdrl export`: the timm Hub layout, loaded back through timm's `hf-hub:` path offline."""

from __future__ import annotations

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from mtkdrl.errors import MtkdrlError
from mtkdrl.hub import ExportConfig, ExportOptions, export_run
from mtkdrl.hub.export import main

from .helpers import (
    CIFAR_MEAN,
    CIFAR_REPO,
    CIFAR_STD,
    RESNET18_REPO,
    load_from_hub,
    populate_hub_cache,
    tree_digest,
)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]


def trained_student(name: str, weights, **kwargs) -> torch.nn.Module:
    """The student as training left it: the architecture with the run's weights, strictly."""
    model = timm.create_model(name, num_classes=10, **kwargs)
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


def as_lists(config: dict) -> dict:
    return json.loads(json.dumps(config))


def test_cifar_student_loads_through_the_hub_cache_after_import_mtkdrl(
    cifar_run, cifar_export, tmp_path
):
    populate_hub_cache(tmp_path / "hub", CIFAR_REPO, cifar_export)
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loaded = load_from_hub(tmp_path, CIFAR_REPO, images, import_mtkdrl=True)
    assert "Unknown model" in loaded["without_mtkdrl"]  # the card's `import mtkdrl` is needed
    assert loaded["source"] == "hf-hub" and loaded["num_classes"] == 10
    student = trained_student("resnet20_cifar", cifar_run / "student_best.safetensors")
    with torch.no_grad():
        expected = student(images)
    assert (loaded["logits"] - expected).abs().max().item() <= 1e-6
    assert loaded["data_config"] == as_lists(timm.data.resolve_model_data_config(student))
    assert loaded["data_config"]["input_size"] == [3, 32, 32]
    assert loaded["data_config"]["crop_pct"] == 1.0
    assert loaded["label_names"][:5] == CIFAR10_NAMES


def test_timm_student_loads_through_the_hub_cache_without_mtkdrl(resnet18_run, tmp_path):
    export = tmp_path / "export"
    export_run(ExportConfig(resnet18_run, RESNET18_REPO, export))
    populate_hub_cache(tmp_path / "hub", RESNET18_REPO, export)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loaded = load_from_hub(tmp_path, RESNET18_REPO, images, import_mtkdrl=False)
    assert loaded["mtkdrl_imported"] is False
    overlay = {"mean": tuple(CIFAR_MEAN), "std": tuple(CIFAR_STD)}
    student = trained_student(
        "resnet18", resnet18_run / "student_best.safetensors", pretrained_cfg_overlay=overlay
    )
    with torch.no_grad():
        expected = student(images)
    assert (loaded["logits"] - expected).abs().max().item() <= 1e-6
    trained_config = as_lists(timm.data.resolve_model_data_config(student))
    assert loaded["data_config"] == trained_config
    assert loaded["data_config"]["mean"] == CIFAR_MEAN and loaded["data_config"]["std"] == CIFAR_STD


def test_config_json_describes_our_weights_not_the_default_tag(resnet18_run, tmp_path):
    options = ExportOptions(license="mit")
    export_run(ExportConfig(resnet18_run, RESNET18_REPO, tmp_path / "export", options))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architecture"] == "resnet18"
    assert config["num_classes"] == 10 and config["num_features"] == 512
    assert config["model_args"]["num_classes"] == 10
    assert config["label_names"][:5] == CIFAR10_NAMES
    pretrained_cfg = config["pretrained_cfg"]
    assert {"input_size", "mean", "std", "crop_pct", "interpolation"} <= set(pretrained_cfg)
    # resnet18's default tag (a1_in1k) would otherwise leak its paper, origin and test size
    for inherited in ("tag", "paper_ids", "origin_url", "test_input_size", "test_crop_pct"):
        assert inherited not in pretrained_cfg
    assert pretrained_cfg["license"] == "mit"
    assert config["mtkdrl"]["method"] == "none"
    assert config["mtkdrl"]["teachers"] == ["resnet20_cifar"]
    assert config["mtkdrl"]["accuracy"] == {"top1": 12.5, "top5": 51.5625, "split": "validation"}
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        ".mtkdrl-export",
        "README.md",
        "config.json",
        "model.safetensors",
    ]


def test_export_reads_the_run_only_and_measures_what_it_recorded(cifar_run, tmp_path):
    before = tree_digest(cifar_run)
    options = ExportOptions(measure=True)
    export = export_run(ExportConfig(cifar_run, CIFAR_REPO, tmp_path / "out", options))
    assert tree_digest(cifar_run) == before
    summary = json.loads((cifar_run / "summary.json").read_text())
    assert export.score.top1 == pytest.approx(summary["best_top1"], abs=1e-9)
    assert export.score.count == 64 and "measured" in export.score.source
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert weights.keys() == load_file(str(cifar_run / "student_best.safetensors")).keys()


def test_last_weights_on_request(cifar_run, tmp_path):
    options = ExportOptions(weights="last")
    export = export_run(ExportConfig(cifar_run, CIFAR_REPO, tmp_path / "out", options))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    last = load_file(str(cifar_run / "student_last.safetensors"))
    assert all(torch.equal(exported[k], last[k]) for k in last)
    summary = json.loads((cifar_run / "summary.json").read_text())
    assert export.score.top1 == summary["last_top1"]


def test_bad_input_gives_one_line_naming_the_fault(cifar_run, tmp_path, capsys):
    no_weights = tmp_path / "no_weights"
    shutil.copytree(cifar_run, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    cases = [
        ([str(no_weights), "--repo-id", CIFAR_REPO], "has no student_best.safetensors"),
        ([str(cifar_run), "--repo-id", "no-org"], "'no-org' must name an organisation"),
        ([str(cifar_run), "--repo-id", "a/b/c"], "'a/b/c' is not a valid Hub repo id"),
        ([str(tmp_path / "nope"), "--repo-id", CIFAR_REPO], "no such directory"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mtkdrl: error: ") and err.count("\n") == 1, err
        assert message in err
    assert not (tmp_path / "out").exists()


def test_export_refuses_the_run_dir_and_unknown_folders(cifar_run, tmp_path):
    with pytest.raises(MtkdrlError, match="overlaps the run directory"):
        export_run(ExportConfig(cifar_run, CIFAR_REPO, cifar_run / "export"))
    with pytest.raises(MtkdrlError, match="overlaps the run directory"):
        export_run(
            ExportConfig(cifar_run, CIFAR_REPO, cifar_run.parent, ExportOptions(overwrite=True))
        )
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    (tmp_path / "precious" / "config.json").write_text("{}")  # a user's project, not an export
    with pytest.raises(MtkdrlError, match="already exists; pass --overwrite"):
        export_run(ExportConfig(cifar_run, CIFAR_REPO, tmp_path / "precious"))
    with pytest.raises(MtkdrlError, match="is not a folder `mtkdrl export` wrote"):
        replace = ExportOptions(overwrite=True)
        export_run(ExportConfig(cifar_run, CIFAR_REPO, tmp_path / "precious", replace))
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_export_refuses_a_diverged_student(cifar_run, tmp_path, capsys):
    diverged = tmp_path / "diverged"
    shutil.copytree(cifar_run, diverged)
    weights = load_file(str(diverged / "student_best.safetensors"))
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, str(diverged / "student_best.safetensors"))
    assert main([str(diverged), "--repo-id", CIFAR_REPO, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "student_best.safetensors" in err, err
    assert f"{weights[first].numel():,} of " in err and "NaN or infinite" in err
    assert not (tmp_path / "out").exists()
