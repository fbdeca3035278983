"""`python -m mtkdrl.evaluate` reproduces the shared teachers' published val accuracies."""

import json
import subprocess
import sys

import pytest

from mtkdrl.evaluate import data_config_from_arg, evaluate_model
from mtkdrl.recipe import ModelSpec

README_TOP1 = {20: 81.22, 32: 82.52, 44: 82.60, 56: 83.32}


# the shallowest and the deepest on all 5,000 images; all four on the val head in
# tests/models/test_cifar_teachers.py
@pytest.mark.parametrize("depth", [20, 56])
def test_shared_teacher_accuracy_matches_readme(shared_data, teacher_file, depth):
    data = data_config_from_arg(str(shared_data / "cifar10-jpeg" / "val.parquet"), "validation")
    spec = ModelSpec(name=f"resnet{depth}_cifar", checkpoint=teacher_file(depth))
    result = evaluate_model(spec, data)
    assert result["count"] == 5000
    assert abs(result["top1"] - README_TOP1[depth]) <= 0.05


def test_cli_prints_and_writes_json(shared_data, teacher_file, tmp_path):
    out = tmp_path / "eval.json"
    command = [
        sys.executable,
        "-m",
        "mtkdrl.evaluate",
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
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "top-1" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["count"] == 500 and 70 < saved["top1"] < 95


def test_cli_error_on_wrong_checkpoint(shared_data, teacher_file):
    command = [
        sys.executable,
        "-m",
        "mtkdrl.evaluate",
        "--model",
        "resnet32_cifar",
        "--checkpoint",
        teacher_file(20),
        "--data",
        str(shared_data / "cifar10-jpeg" / "val.parquet"),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not fit model 'resnet32_cifar'" in result.stderr
