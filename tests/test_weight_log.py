"""Per-epoch weight figures: means, spreads and per-class means against sums written out here."""

import torch

from mtkdrl.checkpoint import flatten_state, unflatten_state
from mtkdrl.weight_log import WeightSums

K, C = 3, 4


def batches():
    g = torch.Generator().manual_seed(0)
    for size in (5, 7):
        weights = torch.rand(size, K, generator=g)
        yield weights / weights.sum(1, keepdim=True), torch.randint(0, C - 1, (size,), generator=g)


def test_figures_are_the_epochs_means_spreads_and_per_class_means():
    sums = WeightSums(K, C)
    seen_w, seen_labels = [], []
    for weights, labels in batches():
        sums = sums.add({"logit": weights}, labels)
        seen_w.append(weights)
        seen_labels.append(labels)
    weights, labels = torch.cat(seen_w), torch.cat(seen_labels)
    figures = sums.figures()
    for k in range(K):
        assert abs(figures[f"w_logit_mean/{k}"] - weights[:, k].mean().item()) < 1e-6
        spread = weights[:, k].std(unbiased=False).item()
        assert abs(figures[f"w_logit_std/{k}"] - spread) < 1e-5
    by_class = figures["w_logit_by_class"]
    assert len(by_class) == C and all(len(row) == K for row in by_class)
    for c in range(C - 1):
        expected = weights[labels == c].mean(0)
        assert torch.allclose(torch.tensor(by_class[c]), expected, atol=1e-6)
    assert by_class[C - 1] == [None] * K  # no sample of the last class


def test_without_classes_there_are_no_per_class_figures():
    sums = WeightSums(K)
    for weights, labels in batches():
        sums = sums.add({"logit": weights}, labels)
    figures = sums.figures()
    assert "w_logit_mean/0" in figures and "w_logit_by_class" not in figures


def test_add_leaves_the_former_sums_unchanged():
    """A look-ahead restores the method's sums by reference, so `add` must not mutate them."""
    weights, labels = next(batches())
    first = WeightSums(K, C).add({"logit": weights}, labels)
    before = first.figures()
    first.add({"logit": weights}, labels)
    assert first.figures() == before


def test_sums_survive_the_checkpoint_format():
    sums = WeightSums(K, C)
    for weights, labels in batches():
        sums = sums.add({"logit": weights, "feature": weights.flip(1)}, labels)
    tensors, skeleton = flatten_state(sums.state())
    restored = WeightSums(K, C).with_state(unflatten_state(tensors, skeleton))
    assert restored.figures() == sums.figures()


def test_gather_sums_over_processes():
    """Two processes' sums are added before averaging, as if one process saw both batches."""
    (w1, l1), (w2, l2) = batches()
    one = WeightSums(K, C).add({"logit": w1}, l1)
    other = WeightSums(K, C).add({"logit": w2}, l2)
    both = WeightSums(K, C).add({"logit": w1}, l1).add({"logit": w2}, l2)

    def gather(tensor):  # what accelerator.gather gives: the rows of every process
        packed_other = torch.cat([other.counts, other.sums["logit"].flatten()]).unsqueeze(0)
        return torch.cat([tensor, packed_other])

    gathered, expected = one.figures(gather), both.figures()
    assert gathered.keys() == expected.keys()
    for key, value in expected.items():
        if key.endswith("by_class"):
            for got, want in zip(gathered[key], value, strict=True):
                assert [round(g, 5) if g is not None else g for g in got] == [
                    round(w, 5) if w is not None else w for w in want
                ]
        else:
            assert abs(gathered[key] - value) < 1e-6
