"""`train.mixed_precision: auto`: bf16 where the device computes it natively, fp32 elsewhere.

The hardware is mocked only at the flag reader (`hardware.cpu_flags`, which reads
/proc/cpuinfo), so everything from the flags to the run's summary and card is the real code.
"""

import json

import pytest
import torch

from mtkdrl import Recipe, distill, hardware
from mtkdrl.precision import choose_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16"),
        ({"avx2", "amx_tile", "amx_bf16"}, "bf16"),
        ({"avx2", "avx512f", "avx512_vnni"}, "no"),  # AVX512 without its bf16 extension
        ({"avx2", "fma"}, "no"),
        (set(), "no"),  # flags unreadable (not Linux)
    ],
)
def test_auto_picks_bf16_only_where_the_cpu_computes_it(monkeypatch, flags, mode):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    chosen = choose_precision("auto", CPU)
    assert chosen.mode == mode
    assert chosen.reason.startswith("auto:")
    if mode == "bf16":
        assert all(flag in chosen.reason for flag in flags & {"avx512_bf16", "amx_bf16"})
    else:
        assert "neither AMX nor AVX512-BF16" in chosen.reason and chosen.label == "fp32"


@pytest.mark.parametrize("setting", ["no", "bf16", "fp16"])
def test_an_explicit_setting_is_kept_whatever_the_hardware(monkeypatch, setting):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512_bf16"})
    chosen = choose_precision(setting, CPU)
    assert chosen.mode == setting and chosen.reason == f"set by train.mixed_precision={setting}"


def test_auto_is_the_default():
    assert Recipe().train.mixed_precision == "auto"


@pytest.mark.parametrize(
    ("flags", "mode", "words"),
    [({"avx512_bf16"}, "bf16", "natively (avx512_bf16)"), ({"avx2"}, "no", "fp32, the CPU")],
)
def test_a_run_says_which_precision_auto_chose_and_why(
    monkeypatch, capsys, tmp_path, tiny_run, flags, mode, words
):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    raw = tiny_run(tmp_path / "run", epochs=1, max_steps_per_epoch=1, eval_teachers=False)
    raw["train"]["mixed_precision"] = "auto"
    raw["teacher_cache"] = {"mode": "off"}
    summary = distill(Recipe.from_dict(raw))
    assert summary["mixed_precision"] == mode and words in summary["precision_reason"]
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["precision_reason"] == summary["precision_reason"]
    label = "bf16" if mode == "bf16" else "fp32"
    assert f"precision {label} (auto: " in capsys.readouterr().out
