"""The cache's logit codecs: float32 exact, uint8 within 1e-3 of the KD loss, top-k exact in
what it keeps (the top k probabilities and the others' mass at T = 1)."""

import pytest
import torch

from mtkdrl.logit_losses import build_logit_loss
from mtkdrl.teacher_cache.logit_codecs import LOGIT_CODECS, choose_codec

CLASSES = 1000


def _fixed_inputs(seed: int, spread: float, peak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-sized logits: a teacher with a spread-out tail and one peaked class per sample,
    and a student that half agrees with it."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, CLASSES, generator=generator) * spread
    teacher[torch.arange(64), torch.randint(0, CLASSES, (64,), generator=generator)] += peak
    student = 0.5 * teacher + spread * torch.randn(64, CLASSES, generator=generator)
    return student, teacher


def _round_trip(name: str, logits: torch.Tensor, topk: int = 100) -> torch.Tensor:
    codec = LOGIT_CODECS[name]
    packed = codec.pack(logits, topk)
    shapes = codec.arrays(CLASSES, topk)
    for key, array in packed.items():  # what the cache's files hold, row by row
        assert array.shape[1:] == shapes[key][0] and array.dtype == shapes[key][1], key
    return codec.unpack({k: torch.from_numpy(v) for k, v in packed.items()}, CLASSES, topk)


def _kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    labels = torch.zeros(len(student), dtype=torch.long)
    return float(build_logit_loss("kl")(student, teacher, labels, temperature, 0).mean())


def test_float32_gives_back_every_logit_exactly():
    _, teacher = _fixed_inputs(0, 2.0, 12.0)
    assert torch.equal(_round_trip("float32", teacher), teacher)


@pytest.mark.parametrize(("spread", "peak"), [(1.0, 8.0), (2.0, 12.0), (3.0, 15.0)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_uint8_moves_the_kd_loss_by_less_than_1e_3(spread, peak, temperature):
    student, teacher = _fixed_inputs(1, spread, peak)
    full = _kd(student, teacher, temperature)
    quantised = _kd(student, _round_trip("uint8", teacher), temperature)
    assert full > 0.5 and abs(quantised - full) < 1e-3, (full, quantised)
    step = (teacher.max(1).values - teacher.min(1).values) / 255
    error = (_round_trip("uint8", teacher) - teacher).abs()
    assert (error <= step.unsqueeze(1) / 2 + 1e-5).all()  # half a level at most


def test_topk_keeps_its_k_probabilities_and_the_others_mass_at_t1():
    _, teacher = _fixed_inputs(2, 2.0, 12.0)
    rebuilt = _round_trip("topk", teacher, topk=100)
    p, q = teacher.softmax(1), rebuilt.softmax(1)
    top = teacher.topk(100, dim=1).indices
    torch.testing.assert_close(q.gather(1, top), p.gather(1, top), rtol=1e-5, atol=1e-7)
    rest = p.scatter(1, top, 0).sum(1)  # the others' mass, summed (not 1 - a sum)
    torch.testing.assert_close(q.scatter(1, top, 0).sum(1), rest, rtol=1e-4, atol=1e-7)
    others = rebuilt.scatter(1, top, float("nan"))
    assert (others.nan_to_num(0).amax(1) == others.nan_to_num(-1e9).amax(1)).all()


def test_topk_loses_the_tail_that_uint8_keeps():
    """Why `auto` picks uint8 for many classes: at T = 4 the tail that top-k spreads evenly
    carries much of the loss (measured here, not assumed)."""
    student, teacher = _fixed_inputs(1, 2.0, 12.0)
    full = _kd(student, teacher, 4.0)
    topk_error = abs(_kd(student, _round_trip("topk", teacher), 4.0) - full)
    uint8_error = abs(_kd(student, _round_trip("uint8", teacher), 4.0) - full)
    assert topk_error > 0.01 > 1e-3 > uint8_error


@pytest.mark.parametrize(
    ("setting", "classes", "chosen"),
    [("auto", 10, "float32"), ("auto", 100, "float32"), ("auto", 1000, "uint8"),
     ("topk", 1000, "topk"), ("topk", 100, "float32"), ("float32", 1000, "float32")],
)  # fmt: skip
def test_auto_keeps_small_class_counts_whole(setting, classes, chosen):
    assert choose_codec(setting, classes, topk=100) == chosen
