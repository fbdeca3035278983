"""A method's weights on the objective's terms: the feature weights reach whichever term the
recipe picks, and the weights the loop logs are the ones applied."""

import pytest
import timm
import torch

import mtkdrl  # noqa: F401  (registers the CIFAR architectures)
from mtkdrl.batch import DistillBatch, TeacherTerms, TeacherWeights
from mtkdrl.methods import METHODS, Method
from mtkdrl.recipe import MethodConfig
from mtkdrl.task import DistillationTask


class SilenceFirstTeacher(Method):
    """Equal logit weights; feature weight 0 for teacher 0 and equal weights for the others."""

    name = "test_silence_first"
    description = "a test method that gives teacher 0 no feature weight"
    tracked_weights = ("logit", "feature")

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        k = batch.num_teachers
        logit = terms.logit.new_full(terms.logit.shape, 1 / k)
        feature = terms.logit.new_full(terms.logit.shape, 1 / (k - 1))
        feature[:, 0] = 0.0
        return TeacherWeights(logit=logit, feature=feature)


@pytest.fixture
def silence_first():
    METHODS.register(SilenceFirstTeacher)
    yield SilenceFirstTeacher.name
    del METHODS[SilenceFirstTeacher.name]


def task_for(method: str, feature) -> DistillationTask:
    torch.manual_seed(0)
    student = timm.create_model("resnet20_cifar", num_classes=10)
    teachers = [timm.create_model(f"resnet{d}_cifar", num_classes=10) for d in (20, 32, 44)]
    return DistillationTask.from_models(
        student, teachers, MethodConfig(name=method, feature=feature)
    )


def grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    ("feature", "regressor"),
    [({"kind": "hint", "stage": 2}, "ConvRegressor"), ("map", "FeatureAdapter")],
)
def test_a_teacher_weighted_zero_gives_its_regressor_no_gradient(silence_first, feature, regressor):
    task = task_for(silence_first, feature)
    assert [type(a).__name__ for a in task.adapters] == [regressor] * 3
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)
    result = task(images, labels)
    assert result["feature"] > 0
    result["loss"].backward()
    silenced, *heard = task.adapters
    assert all(p.grad is None or not p.grad.any() for p in silenced.parameters())
    assert all(grad_norm(adapter) > 0 for adapter in heard)


def test_the_logged_weights_are_the_applied_ones(silence_first):
    task = task_for(silence_first, "hint")
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    task(images, labels)
    figures = task.end_epoch(0)
    assert figures["w_feature_mean/0"] == 0.0
    assert figures["w_feature_mean/1"] == pytest.approx(0.5)
    assert figures["w_logit_mean/2"] == pytest.approx(1 / 3)
    assert task.end_epoch(1) == {}  # the next epoch starts from nothing


def test_a_trial_loss_leaves_the_weight_log_as_it_was(silence_first):
    task = task_for(silence_first, "none")
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    task(images, labels)
    before = task.loss.weight_log.sums
    with task.look_ahead():
        task(images, labels)
        assert task.loss.weight_log.sums is not before
    assert task.loss.weight_log.sums is before
