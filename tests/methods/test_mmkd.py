"""`mmkd`: meta-weight networks for logit and feature weights, a hard buffer, and a meta-gradient
through differentiable look-ahead SGD steps that leaves the live student untouched."""

import pytest
import timm
import torch
import torch.nn.functional as F

from mtkdrl.errors import MtkdrlError
from mtkdrl.methods import DistillBatch, StudentAccess
from mtkdrl.methods.mmkd import HardBuffer, SGDSettings, meta_loss, sgd_step
from mtkdrl.outputs import read_epochs
from mtkdrl.pool import ModelOutputs
from mtkdrl.recipe import MethodConfig
from mtkdrl.task import DistillationTask

from .helpers import build

B, C, K, D = 4, 3, 2, 5


def mmkd(**options):
    """MMKD on its default feature term (bottleneck maps), T = 4, α = 1, β = 2."""
    options = {"batch_size": B, **options}
    config = MethodConfig(name="mmkd", temperature=4.0, alpha=1.0, beta=2.0, options=options)
    return build(config, K, num_classes=C, dims=D).method


def test_weight_networks_follow_the_specification():
    method = mmkd()
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(B, C, generator=g) for _ in range(K + 1)]
    maps = [torch.randn(B, 2, 3, 3, generator=g) for _ in range(K + 1)]
    layers = [m for m in method.logit_net.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(9, 4), (4, 2)]
    expected = method.logit_net.net(torch.cat(logits, 1)).softmax(1)
    torch.testing.assert_close(method.logit_net(logits[:K], logits[K]), expected)
    grams = torch.cat([m.reshape(B, -1) @ m.reshape(B, -1).T for m in maps], 1)  # B x B(K+1)
    layers = [m for m in method.feature_net.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(12, 6), (6, 2)]
    weights = method.feature_net(maps[:K], maps[K])
    torch.testing.assert_close(weights, method.feature_net.net(grams).softmax(1))
    torch.testing.assert_close(weights.sum(1), torch.ones(B))


def test_a_batch_of_another_size_is_one_line():
    method = mmkd()
    maps = [torch.randn(B + 1, 2, 1, 1) for _ in range(K + 1)]
    with pytest.raises(MtkdrlError, match=r"^method\.options\.batch_size: .* takes batches of 4"):
        method.feature_net(maps[:K], maps[K])
    with pytest.raises(MtkdrlError, match=r"^method\.options\.buffer_size: 6 is not a multiple"):
        mmkd(buffer_size=6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_differentiable_sgd_step_equals_torch_sgd(nesterov):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(5, 3)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov
    )
    params = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}
    buffers = {}
    settings = SGDSettings(0.1, 0.9, 0.01, nesterov)
    for _ in range(2):  # the second step uses the momentum buffers of the first
        optimizer.zero_grad()
        model(x).pow(2).sum().backward()
        optimizer.step()
        loss = torch.func.functional_call(model, params, (x,)).pow(2).sum()
        params, buffers = sgd_step(params, loss, buffers, settings)
    for name, value in model.named_parameters():
        torch.testing.assert_close(params[name], value, atol=1e-6, rtol=0)
        torch.testing.assert_close(buffers[name], optimizer.state[value]["momentum_buffer"])


def tiny_problem():
    """A linear student with a linear map and adapter, two fixed teachers, in float64."""
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(B, 6, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 1])
    params = {
        "w": torch.randn(C, 6, generator=g, dtype=torch.float64),
        "f": torch.randn(2, 6, generator=g, dtype=torch.float64),
        "adapters.a": torch.randn(2, 2, generator=g, dtype=torch.float64),
    }
    params = {k: v.requires_grad_() for k, v in params.items()}
    teachers = [
        ModelOutputs(
            torch.randn(B, C, generator=g, dtype=torch.float64) * 2,
            torch.randn(B, D, dtype=torch.float64),
            torch.randn(B, 2, 1, 1, generator=g, dtype=torch.float64),
        )
        for _ in range(K)
    ]

    mix = torch.randn(2, C, generator=g, dtype=torch.float64)

    def batch_at(p):  # the logits read the map too, so the feature term moves them
        hidden = x @ p["f"].T
        features = hidden.reshape(B, 2, 1, 1)
        adapted = (hidden @ p["adapters.a"]).reshape(B, 2, 1, 1)
        student = ModelOutputs(x @ p["w"].T + hidden @ mix, x[:, :D], features)
        return DistillBatch(labels, student, teachers, [adapted, adapted * 0.5])

    return params, batch_at, labels


@pytest.mark.parametrize("steps", [("match", "match", "ce"), ("match",)])
def test_meta_gradient_matches_finite_differences(steps):
    method = mmkd().double()
    params, batch_at, labels = tiny_problem()
    losses = {
        "match": lambda p: method.match_loss(batch_at(p), 0),
        "ce": lambda p: F.cross_entropy(batch_at(p).student.logits, labels),
    }
    settings = SGDSettings(lr=0.5, momentum=0.9, weight_decay=1e-3, nesterov=True)
    buffers = {k: torch.full_like(v, 0.1) for k, v in params.items()}
    meta = method.meta_parameters()
    grads = torch.autograd.grad(meta_loss(params, buffers, settings, steps, losses), meta)
    g = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in meta]
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction, strict=True))

    def shifted(eps: float) -> float:
        with torch.no_grad():
            for p, d in zip(meta, direction, strict=True):
                p.add_(eps * d)
        value = meta_loss(params, buffers, settings, steps, losses).item()
        with torch.no_grad():
            for p, d in zip(meta, direction, strict=True):
                p.sub_(eps * d)
        return value

    eps = 1e-6
    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    assert abs(analytic.item()) > 1e-6  # the weights matter to the meta objective
    assert abs(analytic.item() - numeric) <= 1e-4 * abs(numeric)


def test_hard_buffer_fills_with_batches_then_keeps_misclassified_samples():
    buffer = HardBuffer(4, torch.Generator().manual_seed(0))
    for start in (0, 2):
        rows = torch.arange(start, start + 2).float()
        buffer.add({"x": rows}, torch.ones(2, dtype=torch.bool))
    assert buffer.filled == 4 and buffer.items["x"].tolist() == [0, 1, 2, 3]
    buffer.add({"x": torch.tensor([10.0, 11.0, 12.0])}, torch.tensor([False, True, False]))
    assert sorted(buffer.items["x"].tolist()) == sorted([11.0, *[v for v in range(4)][:3]]) or (
        11.0 in buffer.items["x"].tolist() and 10.0 not in buffer.items["x"].tolist()
    )
    sample = buffer.sample(3)["x"]
    assert len(set(sample.tolist())) == 3 and set(sample.tolist()) <= set(
        buffer.items["x"].tolist()
    )


def test_meta_update_leaves_the_live_student_its_bn_statistics_and_momentum_untouched():
    torch.manual_seed(0)
    student = timm.create_model("resnet8x4_cifar", num_classes=10)
    teachers = [timm.create_model("resnet8x4_cifar", num_classes=10).eval() for _ in range(2)]
    config = MethodConfig(
        name="mmkd", options={"batch_size": 4, "meta_every": 1, "hard_buffer": False}
    )
    task = DistillationTask.from_models(student, teachers, config)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    sample_loss, _ = task.losses(task.outputs(images, labels))
    sample_loss.mean().backward()
    before = {
        k: v.clone() for k, v in task.state_dict().items() if not k.startswith("loss.method.")
    }
    meta_before = [p.detach().clone() for p in task.method.meta_parameters()]
    params = task.named_trainable_parameters()
    momentum = {k: torch.full_like(v, 0.01) for k, v in params.items()}
    saved_momentum = {k: v.clone() for k, v in momentum.items()}
    access = StudentAccess(
        params=params,
        lr=0.1,
        batch=(images, labels, None),
        forward=lambda p, x: task.run_student(x, p),
        loss=None,
        next_batch=None,
        outputs=lambda p, x, y, t: task.outputs(x, y, params=p, teacher_outputs=t),
        momentum=0.9,
        weight_decay=5e-4,
        nesterov=True,
        momentum_buffers=momentum,
    )
    task.method.before_step(access)
    assert task.method.meta_updates == 1
    after = {k: v for k, v in task.state_dict().items() if not k.startswith("loss.method.")}
    for key, value in before.items():  # weights and BN running statistics alike
        assert torch.equal(value, after[key]), key
    for key, value in saved_momentum.items():
        assert torch.equal(value, momentum[key]), key
    changed = [
        not torch.equal(a, b)
        for a, b in zip(meta_before, task.method.meta_parameters(), strict=True)
    ]
    assert any(changed)


def test_dry_run_with_a_cnn_and_a_vit_teacher(cnn_and_vit_dry_run):
    losses = cnn_and_vit_dry_run("mmkd", {"batch_size": 2, "buffer_size": 2, "meta_every": 1})
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("look_ahead", ["unrolled", "one_step"])
def test_real_run_resumes_mid_epoch_to_the_same_weights(run_and_resumed, look_ahead):
    """A short run on the shared data with meta steps every 2 steps from a 32-sample hard buffer:
    interrupted after 4 of 6 steps and resumed, it ends with the same student, networks, Adam
    state and buffer."""
    options = {"batch_size": 16, "buffer_size": 32, "meta_every": 2, "look_ahead": look_ahead}
    summary, folder = run_and_resumed("mmkd", options)
    epoch = read_epochs(folder)[-1]
    assert summary["global_steps"] == 6 and epoch["meta_updates"] == 3
    assert sum(epoch[f"w_feature_mean/{k}"] for k in range(2)) == pytest.approx(1.0, abs=1e-5)


def test_two_processes_keep_identical_networks(tiny_run, tmp_path, two_processes):
    recipe = tiny_run(tmp_path / "run", "mmkd", epochs=1, eval_teachers=False)
    recipe["data"]["batch_size"] = 8
    recipe["method"]["options"] = {"batch_size": 8, "buffer_size": 16, "meta_every": 2}
    methods, _ = two_processes(recipe)
    assert any(key.startswith("method.logit_net.") for key in methods[0])
