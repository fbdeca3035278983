"""`DistillationTask` in a user's own loop, checked against timm's own `LogitDistillationTask`."""

import pytest
import timm
import torch
from timm.task import LogitDistillationTask
from torch import nn

import mtkdrl  # noqa: F401  (registers the *_cifar architectures)
from mtkdrl.pool import load_checkpoint
from mtkdrl.task import DistillationTask


def teacher(teacher_file, depth: int) -> nn.Module:
    model = timm.create_model(f"resnet{depth}_cifar", num_classes=10)
    load_checkpoint(model, teacher_file(depth), "teacher", f"resnet{depth}_cifar")
    return model


def test_kd_task_loss_equals_timms_logit_distillation(teacher_file):
    """One teacher, weight 1, T = 4: CE + T²·KL, exactly what timm's own task computes."""
    torch.manual_seed(0)
    student = timm.create_model("resnet20_cifar", num_classes=10).eval()
    ours = DistillationTask.from_models(student, [teacher(teacher_file, 56)], "kd")
    theirs = LogitDistillationTask(
        student,
        teacher(teacher_file, 56),
        criterion=nn.CrossEntropyLoss(),
        distill_loss_weight=1.0,
        task_loss_weight=1.0,
        temperature=4.0,
        verbose=False,
    )
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    student.eval()
    result = ours(images, labels)
    expected = theirs(images, labels)
    assert set(result) == {"loss", "output", "ce", "kd"}
    torch.testing.assert_close(result["output"], expected["output"])
    torch.testing.assert_close(result["ce"], expected["task_loss"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result["kd"], expected["kd_loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result["loss"], expected["loss"], rtol=1e-5, atol=1e-6)


def test_a_users_loop_trains_the_student_and_adapters_with_avg(teacher_file):
    torch.manual_seed(0)
    student = timm.create_model("resnet20_cifar", num_classes=10)
    task = DistillationTask.from_models(
        student, [teacher(teacher_file, 20), teacher(teacher_file, 32)], "avg"
    )
    params = task.trainable_parameters()
    assert len(params) == len(list(student.parameters())) + len(list(task.adapters.parameters()))
    optimizer = torch.optim.SGD(params, lr=0.05)
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    losses = []
    for _ in range(3):
        result = task(images, labels)
        assert result["loss"].item() == pytest.approx(
            (result["ce"] + result["kd"] + result["feature"]).item(), rel=1e-6
        )
        optimizer.zero_grad()
        result["loss"].backward()
        optimizer.step()
        losses.append(result["loss"].item())
    assert losses[-1] < losses[0]
