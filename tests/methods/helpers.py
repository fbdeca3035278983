"""A method on the objective, built as a run builds it but from plain facts instead of models, so
a test can feed it batches of outputs made by hand."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mtkdrl.assembly import RunFacts, build_objective
from mtkdrl.batch import DistillBatch, TeacherWeights
from mtkdrl.methods import MethodContext, method_class, method_options
from mtkdrl.recipe import MethodConfig
from mtkdrl.weight_log import WeightLog
from mtkdrl.weighted_loss import WeightedLoss


def build(
    config: MethodConfig,
    num_teachers: int,
    num_classes: int = 10,
    dims: int | list[int] = 8,
    heads: list[nn.Module | None] | None = None,
    feature_channels: list[int] | None = None,
    student_width: int = 0,
    batch_size: int = 0,
    gather: Callable[[Tensor], Tensor] | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
    weights_by_class: bool = False,
) -> WeightedLoss:
    """The `WeightedLoss` of `config` for `num_teachers` teachers whose embeddings are `dims`
    wide (and whose maps at the feature stage have `feature_channels`, the embedding widths by
    default); `reduce`/`gather` stand in for several processes."""
    cls = method_class(config.name)
    options = method_options(cls, config.options)
    facts = RunFacts(gather=gather, reduce=reduce, batch_size=batch_size)
    objective = build_objective(config, cls, options, facts)
    widths = [dims] * num_teachers if isinstance(dims, int) else list(dims)
    uses_maps = objective.feature_stage is not None
    context = MethodContext(
        teacher_names=[f"t{k}" for k in range(num_teachers)],
        num_classes=num_classes,
        embedding_dims=widths,
        teacher_heads=heads if heads is not None else [None] * num_teachers,
        objective=objective,
        feature_channels=(feature_channels or widths) if uses_maps else [],
        batch_size=batch_size,
        student_width=student_width,
        gather=gather,
        reduce=reduce,
    )
    log = WeightLog(num_teachers, num_classes if weights_by_class else 0, gather)
    return WeightedLoss(cls(context, options), objective, log)


def method_loss(name: str, num_teachers: int, **config) -> WeightedLoss:
    """`build` for `MethodConfig(name=name, **config)` with the other facts at their defaults."""
    return build(MethodConfig(name=name, **config), num_teachers)


def terms_of(loss: WeightedLoss, batch: DistillBatch, epoch: int = 0) -> dict[str, Tensor]:
    """The named per-sample terms of one batch, as the run's step gets them."""
    return loss(batch, epoch)[1]


def weights_of(loss: WeightedLoss, batch: DistillBatch, epoch: int = 0) -> TeacherWeights:
    """The method's weights for a batch at the objective's base T."""
    objective = loss.objective
    terms = objective.terms(batch, epoch, objective.base_temperature)
    return loss.method.teacher_weights(batch, terms, epoch)
