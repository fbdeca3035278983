"""RLKD's entropy remix: records, the ranking and pairing of the bands, the blend, its state."""

import math

import pytest
import torch

from mtkdrl.temperatures._remix import EntropyRemix


def logits_with_entropy(levels: torch.Tensor) -> torch.Tensor:
    """Two-class logits whose predictive entropy rises with `levels` (in [0, 1))."""
    return torch.stack([torch.zeros_like(levels), torch.log(levels.clamp_min(1e-6))], dim=1)


def test_bands_are_paired_by_rank_with_rho_falling_from_1_to_0_7():
    remix = EntropyRemix(20, reduce=None)
    levels = torch.linspace(0.9, 0.0, 20)  # sample 0 most uncertain, sample 19 least
    remix.record(torch.arange(20), logits_with_entropy(levels))
    remix.record(torch.arange(10), logits_with_entropy(levels[:10]))  # seen twice: n = 2
    remix.plan()
    # scores = mean entropy · (n/40)^0.03: the twice-seen samples 0–9 gain 2^0.03, order kept
    blended = (remix.partner >= 0).nonzero().flatten().tolist()
    assert blended == [16, 17]  # ranks 80–90 % of 20
    assert remix.partner[16] == 2 and remix.partner[17] == 3  # ranks 10–20 %
    torch.testing.assert_close(remix.rho[[16, 17]], torch.tensor([1.0, 0.7], dtype=torch.float64))
    p = levels[0] / (1 + levels[0])
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert float(remix.entropy_sums[0]) == pytest.approx(2 * float(entropy), rel=1e-6)


def test_blend_mixes_the_planned_rows_only_and_returns_their_mask():
    remix = EntropyRemix(20, reduce=None)
    remix.record(torch.arange(20), logits_with_entropy(torch.linspace(0.9, 0.0, 20)))
    remix.plan()
    images = torch.rand(4, 3, 2, 2)
    partner_image = torch.rand(3, 2, 2)
    indices = torch.tensor([5, 17, 0, 16])
    other = torch.zeros(3, 2, 2)
    out, changed = remix.blend(images, indices, lambda i: partner_image if i == 3 else other)
    assert changed.tolist() == [False, True, False, True]
    torch.testing.assert_close(out[1], 0.7 * images[1] + 0.3 * partner_image)
    torch.testing.assert_close(out[3], images[3])  # ρ = 1 at the band's top
    assert torch.equal(out[[0, 2]], images[[0, 2]])
    assert remix.take_count() == 2 and remix.take_count() == 0
    remix.clear()
    same, none = remix.blend(images, indices, lambda i: partner_image)
    assert same is images and none is None


def test_state_round_trips_and_unknown_sizes_grow():
    remix = EntropyRemix(0, reduce=None)  # built without a data set (the Python API)
    remix.record(torch.tensor([3, 7]), torch.randn(2, 5))
    assert len(remix.counts) == 8 and remix.counts[[3, 7]].tolist() == [1.0, 1.0]
    remix.plan()
    other = EntropyRemix(8, reduce=None)
    other.load_state(remix.state())
    for key, value in remix.state().items():
        assert torch.equal(value, other.state()[key]) if key != "blended" else value == 0, key
