"""`ebkd`: per-sample weights (1 − H_k / Σ_j H_j) / K from the teachers' entropies at T = 1."""

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import METHODS, DistillBatch
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .helpers import build, terms_of, weights_of

T, ALPHA = 4.0, 0.7


def ebkd(k: int, **options):
    config = MethodConfig(name="ebkd", temperature=T, alpha=ALPHA, beta=5.0, options=options)
    return build(config, k)


def outputs(logits: torch.Tensor) -> ModelOutputs:
    b = logits.shape[0]
    return ModelOutputs(logits, torch.zeros(b, 8), torch.zeros(b, 8, 2, 2))


def batch(b: int, k: int, seed: int = 0) -> DistillBatch:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, 10, generator=g).requires_grad_()
    # teachers from sure to unsure: larger logits, lower entropy
    teachers = [torch.randn(b, 10, generator=g) * (4.0 / (1 + i)) for i in range(k)]
    labels = torch.randint(0, 10, (b,), generator=g)
    return DistillBatch(labels, outputs(student), [outputs(t) for t in teachers], [])


def weights(loss, data: DistillBatch) -> torch.Tensor:
    return weights_of(loss, data, 0).logit


def spec_weights(teacher_logits: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """w[b,k] = 1 − H_k[b] / Σ_j H_j[b], H = −Σ_c p log p of softmax(z / τ), in float64."""
    entropies = []
    for z in teacher_logits:
        p = torch.softmax(z.double() / temperature, dim=1)
        entropies.append(-(p * torch.log(p)).sum(dim=1))
    h = torch.stack(entropies, dim=1)
    return 1 - h / h.sum(dim=1, keepdim=True)


def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """T²·Σ_c p_t (log p_t − log p_s) per sample, written out."""
    p_t = torch.softmax(teacher / T, dim=1)
    return T**2 * (p_t * (torch.log(p_t) - torch.log_softmax(student / T, dim=1))).sum(dim=1)


def test_weights_are_the_entropy_formula_over_k():
    loss = ebkd(3)
    method = loss.method
    assert "ebkd" in METHODS and loss.objective.feature_stage is None
    assert method.tracked_weights == ("logit",) and "\n" not in method.description
    assert method.citation.startswith("@inproceedings{kwon2020adaptive")
    data = batch(6, 3)
    w = weights(loss, data)
    expected = spec_weights([t.logits for t in data.teachers]) / 3
    torch.testing.assert_close(w.double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(w.sum(dim=1), torch.full((6,), 2 / 3))  # (K − 1) / K
    assert not w.requires_grad
    sure_first = w[:, 0] > w[:, 2]  # the sharper teacher gets more on almost every sample
    assert sure_first.float().mean() > 0.8


def test_entropy_temperature_option():
    data = batch(4, 2, seed=1)
    w = weights(ebkd(2, entropy_temperature=3.0), data)
    expected = spec_weights([t.logits for t in data.teachers], temperature=3.0) / 2
    torch.testing.assert_close(w.double(), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(w, weights(ebkd(2), data))


def test_loss_equals_the_reference_codes_sum_over_b_and_k():
    """Batch mean of CE + α Σ_k w_k·KL_k = mean CE + α Σ_b Σ_k w·KL_k[b] / (B·K)."""
    b, k = 5, 3
    data = batch(b, k, seed=2)
    terms = terms_of(ebkd(k), data, 0)
    assert set(terms) == {"ce", "kd"}
    s = data.student.logits
    w = spec_weights([t.logits for t in data.teachers]).float()
    kls = torch.stack([kl(s, t.logits) for t in data.teachers], dim=1)
    ce = F.cross_entropy(s, data.labels)
    expected = ce + ALPHA * (w * kls).sum() / (b * k)
    torch.testing.assert_close((terms["ce"] + terms["kd"]).mean(), expected)


def test_one_hot_teachers_get_a_defined_weight():
    """Zero entropy everywhere: each share is 1/K, so w = (1 − 1/K)/K; one sure teacher beside an
    unsure one takes all of 1/K."""
    k = 3
    one_hot = 1000.0 * F.one_hot(torch.tensor([2, 7]), 10).float()
    soft = torch.randn(2, 10)
    teachers = [one_hot, one_hot.roll(1, dims=1), torch.cat([one_hot[:1], soft[1:]])]
    student = torch.randn(2, 10).requires_grad_()
    data = DistillBatch(torch.tensor([2, 7]), outputs(student), [outputs(t) for t in teachers], [])
    w = weights(ebkd(k), data)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0], torch.full((k,), (1 - 1 / k) / k))
    torch.testing.assert_close(w[1], torch.tensor([1.0, 1.0, 0.0]) / k)
    terms = terms_of(ebkd(k), data, 0)
    sum(terms.values()).mean().backward()
    assert torch.isfinite(student.grad).all()


def test_bad_recipes_give_one_clear_line():
    with pytest.raises(MtkdrlError, match=r"^teachers: method 'ebkd' needs at least 2 .*lists 1;"):
        ebkd(1)
    for value, message in (
        (0.0, "expected a positive number"),
        (float("nan"), "must be a finite number"),
        ("hot", "must be of type float"),
    ):
        with pytest.raises(MtkdrlError, match=rf"method\.options\.entropy_temperature.*{message}"):
            ebkd(2, entropy_temperature=value)
    with pytest.raises(
        MtkdrlError, match=r"method\.options\.temperature: unknown .*entropy_temperature"
    ):
        ebkd(2, temperature=1.0)


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    losses = cnn_and_vit_dry_run("ebkd", precision="no")
    assert all(torch.isfinite(torch.tensor(losses)))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """A short run on the shared data with the pretrained teachers logs weights that sum to
    (K − 1)/K; stopped after 4 of its 6 steps (a checkpoint at step 4) and resumed, it ends
    with the same student, bit for bit."""
    summary, folder = run_and_resumed("ebkd")
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100
    epoch = read_epochs(folder)[-1]
    means = [epoch[f"w_logit_mean/{k}"] for k in range(2)]
    assert all(0 < m < 0.5 for m in means) and sum(means) == pytest.approx(0.5, abs=1e-5)
