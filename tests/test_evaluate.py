"""`mtkdrl evaluate` reproduces the shared teachers' published val accuracies."""

import json

from mtkdrl.evaluate import data_config_from_arg, evaluate_model, main
from mtkdrl.recipe import ModelSpec

README_TOP1_RESNET20 = 81.22  # ../shared/data/README.md


# the shallowest on all 5,000 images (the registry's four teachers are re-measured by
# `mtkdrl zoo verify`, ResNet-20 in tests/hub/test_zoo_verify.py); all four on the val head in
# tests/models/test_cifar_teachers.py
def test_shared_teacher_accuracy_matches_readme(shared_data, teacher_file):
    data = data_config_from_arg(str(shared_data / "cifar10-jpeg" / "val.parquet"), "validation")
    spec = ModelSpec(name="resnet20_cifar", checkpoint=teacher_file(20))
    result = evaluate_model(spec, data)
    assert result["count"] == 5000
    assert abs(result["top1"] - README_TOP1_RESNET20) <= 0.05


def test_cli_prints_and_writes_json(shared_data, teacher_file, tmp_path, capsys):
    out = tmp_path / "eval.json"
    command = [
        "--model",
        "resnet20_cifar",
        "--checkpoint",
        teacher_file(20),
        "--data",
        str(shared_data / "cifar10-jpeg" / "val.parquet"),
        "--limit",
        "500",
        "--out",
        str(out),
    ]
    assert main(command) == 0
    assert "top-1" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["count"] == 500 and 70 < saved["top1"] < 95


def test_cli_error_on_wrong_checkpoint(shared_data, teacher_file, capsys):
    command = [
        "--model",
        "resnet32_cifar",
        "--checkpoint",
        teacher_file(20),
        "--data",
        str(shared_data / "cifar10-jpeg" / "val.parquet"),
    ]
    assert main(command) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and "does not fit model 'resnet32_cifar'" in stderr
