"""`aekd`: per-batch weights α* = argmin ‖Σ_k α_k g_k‖² over Σα = 1, 0 ≤ α ≤ C_tol."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.losses import kl_per_sample
from mtkdrl.methods import METHODS, DistillBatch
from mtkdrl.methods.aekd import kl_logit_gradient
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig

from .helpers import build, terms_of, weights_of

T, ALPHA, C = 4.0, 0.9, 10


def aekd(k: int, reduce=None, **options):
    config = MethodConfig(name="aekd", temperature=T, alpha=ALPHA, beta=5.0, options=options)
    return build(config, k, num_classes=C, reduce=reduce)


def outputs(logits: torch.Tensor) -> ModelOutputs:
    b = logits.shape[0]
    return ModelOutputs(logits, torch.zeros(b, 8), torch.zeros(b, 8, 2, 2))


def batch(b: int, k: int, seed: int = 0, close: float | None = None) -> DistillBatch:
    """Random logits; with `close`, teacher 0 is the student plus noise of that size (a small
    gradient, which the min-norm point leans on until the cap stops it)."""
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(b, C, generator=g) * 2).requires_grad_()
    teachers = [torch.randn(b, C, generator=g) * 3 for _ in range(k)]
    if close is not None:
        teachers[0] = student.detach() + close * torch.randn(b, C, generator=g)
    labels = torch.randint(0, C, (b,), generator=g)
    return DistillBatch(labels, outputs(student), [outputs(t) for t in teachers], [])


def weights(loss, data: DistillBatch) -> torch.Tensor:
    return weights_of(loss, data, 0).logit


def spec_gradients(data: DistillBatch) -> torch.Tensor:
    """g_k = mean over b of T·(p^T(z_s) − p^T(z_k))[b] / B (K×C, float64)."""
    s = data.student.logits.detach().double()
    b = s.shape[0]
    return torch.stack(
        [
            (T * (torch.softmax(s / T, 1) - torch.softmax(t.logits.double() / T, 1)) / b).mean(0)
            for t in data.teachers
        ]
    )


def kkt_weights(grads: torch.Tensor, cap: float) -> torch.Tensor:
    """The QP's solution from its KKT conditions, by trying every split of the weights into
    lower-bound (0), upper-bound (cap) and free: stationarity 2(Gα)_i + ν = 0 on the free ones,
    feasibility, and multipliers of the right sign (2(Gα)_i + ν ≥ 0 at 0, ≤ 0 at the cap)."""
    gram = grads.double() @ grads.double().T
    k = gram.shape[0]
    for split in itertools.product("lfu", repeat=k):
        free = [i for i in range(k) if split[i] == "f"]
        upper = [i for i in range(k) if split[i] == "u"]
        alpha = torch.zeros(k, dtype=torch.float64)
        alpha[upper] = cap
        if free:
            system = torch.zeros(len(free) + 1, len(free) + 1, dtype=torch.float64)
            system[:-1, :-1] = 2 * gram[free][:, free]
            system[:-1, -1] = 1
            system[-1, :-1] = 1
            rhs = torch.zeros(len(free) + 1, dtype=torch.float64)
            rhs[:-1] = -2 * gram[free][:, upper].sum(dim=1) * cap
            rhs[-1] = 1 - cap * len(upper)
            solution = torch.linalg.solve(system, rhs)
            alpha[free] = solution[:-1]
            nus = [solution[-1]]
        else:
            if abs(cap * len(upper) - 1) > 1e-12:
                continue
            slope = 2 * gram @ alpha  # any ν between the bounds' slopes will do
            nus = [-slope[i] for i in range(k)]
        if alpha.min() < -1e-12 or alpha.max() > cap + 1e-12:
            continue
        for nu in nus:
            slope = 2 * gram @ alpha + nu
            lower = [i for i in range(k) if split[i] == "l"]
            if all(slope[i] >= -1e-12 for i in lower) and all(slope[i] <= 1e-12 for i in upper):
                return alpha
    raise AssertionError("no KKT point: the reference solver is wrong")


def check_rows(w: torch.Tensor, cap: float) -> None:
    """Every row the same, summing to 1, each weight in [0, cap]."""
    assert torch.equal(w, w[:1].expand_as(w)) and not w.requires_grad
    torch.testing.assert_close(w.sum(dim=1), torch.ones(w.shape[0]))
    assert w.min() >= 0 and w.max() <= cap + 1e-6


def test_closed_form_gradient_equals_autograd():
    data = batch(6, 2, seed=3)
    for temperature in (1.0, T):
        s = data.student.logits
        for t in data.teachers:
            loss = kl_per_sample(s, t.logits, temperature).mean()
            (expected,) = torch.autograd.grad(loss, s)
            torch.testing.assert_close(kl_logit_gradient(s, t.logits, temperature), expected)


@pytest.mark.parametrize(
    ("k", "tolerance", "close"),
    [
        (2, 1.0, None),  # plain min-norm
        (3, 1.0, 0.1),
        (3, 0.6, None),
        (3, 0.6, 0.05),  # the cap binds
        (4, 0.3, 0.05),  # three at most at the cap
        (5, 0.25, None),
    ],
)
def test_weights_solve_the_capped_min_norm_problem(k, tolerance, close):
    loss = aekd(k, tolerance=tolerance)
    at_cap = 0
    for seed in range(8):
        data = batch(8, k, seed=seed, close=close)
        w = weights(loss, data)
        check_rows(w, tolerance)
        expected = kkt_weights(spec_gradients(data), min(tolerance, 1.0))
        torch.testing.assert_close(w[0].double(), expected, rtol=0, atol=1e-6)
        at_cap += int(w.max() > tolerance - 1e-6)
    if close is not None and tolerance < 1:
        assert at_cap > 0  # the cases meant to test the cap do


def test_loss_is_ce_plus_alpha_times_the_weighted_batch_kl():
    data = batch(8, 3, seed=5)
    loss = aekd(3)
    terms = terms_of(loss, data, 0)
    assert set(terms) == {"ce", "kd"} and loss.objective.feature_stage is None
    s = data.student.logits
    alpha = kkt_weights(spec_gradients(data), 0.6).float()
    kl = torch.stack([kl_per_sample(s, t.logits, T).mean() for t in data.teachers])
    expected = F.cross_entropy(s, data.labels) + ALPHA * (alpha * kl).sum()
    torch.testing.assert_close((terms["ce"] + terms["kd"]).mean(), expected)


def test_a_tolerance_of_one_or_more_is_the_plain_min_norm_point():
    data = batch(8, 3, seed=6, close=0.05)
    w = weights(aekd(3, tolerance=2.5), data)
    torch.testing.assert_close(w, weights(aekd(3, tolerance=1.0), data))
    torch.testing.assert_close(
        w[0].double(), kkt_weights(spec_gradients(data), 1.0), atol=1e-6, rtol=0
    )
    assert w.max() > 0.6  # more than the default cap allows


def test_a_tolerance_below_one_over_k_gives_uniform_weights():
    loss = aekd(3, tolerance=0.2)
    w = weights(loss, batch(4, 3))
    torch.testing.assert_close(w, torch.full((4, 3), 1 / 3))
    assert "uniform weights 1/3" in loss.method.describe()
    assert aekd(3).method.describe() == ""


def test_normalised_gradients_rescale_the_unit_solution():
    """The official --svm_norm: solve for g_k/‖g_k‖, scale α_k by 1/‖g_k‖, renormalise."""
    data = batch(8, 3, seed=7, close=0.2)
    grads = spec_gradients(data)
    norms = grads.norm(dim=1)
    unit = kkt_weights(grads / norms[:, None], 0.6) / norms
    w = weights(aekd(3, normalise_gradients=True), data)
    torch.testing.assert_close(w[0].double(), unit / unit.sum(), atol=1e-6, rtol=0)
    assert not torch.allclose(w, weights(aekd(3), data), atol=1e-3)


def test_identical_teachers_share_their_weight_and_zero_gradients_give_uniform():
    data = batch(8, 3, seed=8)
    data.teachers[2] = data.teachers[1]  # a singular Gram matrix: the optimum is not unique
    w = weights(aekd(3, tolerance=1.0), data)
    check_rows(w, 1.0)
    torch.testing.assert_close(w[0, 1], w[0, 2], atol=1e-6, rtol=0)
    alpha = kkt_weights(spec_gradients(data)[:2], 1.0)  # merge the twins into one teacher
    torch.testing.assert_close(w[0, 1] + w[0, 2], alpha[1].float(), atol=1e-6, rtol=0)
    s = data.student.logits
    same = DistillBatch(data.labels, data.student, [outputs(s.detach().clone())] * 3, [])
    for normalise in (False, True):
        w = weights(aekd(3, normalise_gradients=normalise), same)
        torch.testing.assert_close(w, torch.full((8, 3), 1 / 3))


def test_processes_solve_with_the_global_batchs_gradients():
    """With `reduce` (the mean over processes), one process's half of a batch gets the weights of
    the whole batch."""
    data = batch(8, 3, seed=9)
    halves = [
        DistillBatch(
            data.labels[part],
            outputs(data.student.logits[part]),
            [outputs(t.logits[part]) for t in data.teachers],
            [],
        )
        for part in (slice(0, 4), slice(4, 8))
    ]
    other = spec_gradients(halves[1]).float()

    def reduce(grads: torch.Tensor) -> torch.Tensor:
        assert grads.shape == (3, C)
        return (grads + other) / 2

    w = weights(aekd(3, reduce=reduce), halves[0])
    torch.testing.assert_close(w[0], weights(aekd(3), data)[0], atol=1e-6, rtol=0)
    assert not torch.allclose(w[0], weights(aekd(3), halves[0])[0], atol=1e-3)


def test_bad_recipes_give_one_clear_line():
    assert "aekd" in METHODS
    method = aekd(2).method
    assert method.tracked_weights == ("logit",) and "\n" not in method.description
    assert method.citation.startswith("@inproceedings{du2020agree")
    with pytest.raises(MtkdrlError, match=r"^teachers: method 'aekd' needs at least 2 .*lists 1;"):
        aekd(1)
    with pytest.raises(MtkdrlError, match=r"^teachers: method 'aekd' .* for 16 teachers"):
        aekd(16)
    messages = {True: "of type float", float("inf"): "must be a finite number"}
    for value in (0.0, -1.0, float("inf"), True):
        message = messages.get(value, "expected a positive number")
        with pytest.raises(MtkdrlError, match=rf"method\.options\.tolerance.*{message}"):
            aekd(3, tolerance=value)
    with pytest.raises(MtkdrlError, match=r"method\.options\.svm_norm.*normalise_gradients"):
        aekd(3, svm_norm=True)


def test_dry_run_with_a_cnn_and_a_vit_teacher_in_bf16(cnn_and_vit_dry_run):
    losses = cnn_and_vit_dry_run("aekd", precision="bf16")
    assert all(torch.isfinite(torch.tensor(losses)))


def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed):
    """A short run on the shared data with the pretrained teachers logs weights in [0, 0.6] that
    sum to 1; stopped after 4 of its 6 steps (a checkpoint at step 4) and resumed, it ends with
    the same student, bit for bit."""
    summary, folder = run_and_resumed("aekd")
    assert summary["global_steps"] == 6 and 0 <= summary["last_top1"] <= 100
    epoch = read_epochs(folder)[-1]
    means = [epoch[f"w_logit_mean/{k}"] for k in range(2)]
    assert all(0.4 - 1e-6 <= m <= 0.6 + 1e-6 for m in means)  # K = 2: both in [1 − C, C]
    assert sum(means) == pytest.approx(1.0, abs=1e-5)
