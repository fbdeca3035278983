"""`mmkd` (MMKD, Zhang, Chen and Wang, ICME 2023): per-sample teacher weights from two meta-weight
networks, learned so that the student does well after a few look-ahead steps.

The student's loss is the shared one, CE + α Σ_k w_k·KL_k + β Σ_k v_k·MSE_k, with w from a logit
network over [z_1 … z_K, z_s] and v from a feature network over the batch's Gram matrices
(F_k F_kᵀ, B×B each, at the feature term's stage); by default the student's maps go through
bottleneck regressors, and without a feature term there is no feature network. Every `meta_every`
steps a hard batch (from a buffer of misclassified samples) is used to unroll, through
differentiable SGD steps of the student and its regressors imitating the student's optimizer, two
steps on the matching loss α·KD + β·feature (weights from the networks) and one on CE; the CE after
them is differentiated with respect to the networks' parameters, which Adam then steps. The unroll
runs on `torch.func.functional_call` copies: the live student, its BN statistics and the
optimizer's momentum are never touched. See docs/methods/mmkd.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MtkdrlError
from ..pool import ModelOutputs
from . import register_method
from .base import (
    DistillBatch,
    Method,
    MethodContext,
    StudentAccess,
    TeacherTerms,
    TeacherWeights,
)

MMKD_CITATION = """@inproceedings{zhang2023adaptive,
  title     = {Adaptive Multi-Teacher Knowledge Distillation with Meta-Learning},
  author    = {Zhang, Hailin and Chen, Defang and Wang, Can},
  booktitle = {IEEE International Conference on Multimedia and Expo (ICME)},
  pages     = {1943--1948},
  year      = {2023},
  doi       = {10.1109/ICME55011.2023.00333}
}"""


@dataclass
class MMKDOptions:
    """MMKD settings (docs/methods/mmkd.md#options); the defaults are the official README's."""

    batch_size: int = 64  # sizes the feature-weight network: must be the per-process batch
    meta_every: int = 5
    meta_lr: float = 1e-3
    meta_weight_decay: float = 1e-4
    look_ahead: Literal["unrolled", "one_step"] = "unrolled"
    hard_buffer: bool = True
    buffer_size: int = 256

    def __post_init__(self) -> None:
        for key in ("batch_size", "meta_every", "buffer_size"):
            if getattr(self, key) < 1:
                raise MtkdrlError(f"method.options.{key}: must be >= 1, got {getattr(self, key)}")
        if self.buffer_size % self.batch_size:
            raise MtkdrlError(
                f"method.options.buffer_size: {self.buffer_size} is not a multiple of "
                f"batch_size {self.batch_size} (the buffer fills with whole batches)"
            )


class LogitWeightNet(nn.Module):
    """[z_1 … z_K, z_s] (B×C(K+1)) → Linear → ReLU → Linear(K) → softmax over teachers."""

    def __init__(self, num_classes: int, num_teachers: int) -> None:
        super().__init__()
        width = num_classes * (num_teachers + 1)
        self.net = nn.Sequential(
            nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, num_teachers)
        )

    def forward(self, teacher_logits: list[Tensor], student_logits: Tensor) -> Tensor:
        return self.net(torch.cat([*teacher_logits, student_logits], dim=1)).softmax(dim=1)


class FeatureWeightNet(nn.Module):
    """The Gram matrices of the batch's maps, [G_1 … G_K, G_s] (B×B(K+1)) → Linear → ReLU →
    Linear(K) → softmax: a sample's weight depends on its whole batch, and the sizes on B."""

    def __init__(self, batch_size: int, num_teachers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        width = batch_size * (num_teachers + 1)
        self.net = nn.Sequential(
            nn.Linear(width, width // 2), nn.ReLU(), nn.Linear(width // 2, num_teachers)
        )

    def forward(self, teacher_maps: list[Tensor], student_map: Tensor) -> Tensor:
        if student_map.shape[0] != self.batch_size:
            raise MtkdrlError(
                f"method.options.batch_size: MMKD's feature-weight network takes batches of "
                f"{self.batch_size} (its layers are sized by B), this batch has "
                f"{student_map.shape[0]}; set method.options.batch_size to data.batch_size"
            )
        grams = [m.flatten(1) @ m.flatten(1).T for m in [*teacher_maps, student_map]]
        return self.net(torch.cat(grams, dim=1)).softmax(dim=1)


class HardBuffer:
    """Fixed-size store of (image, label, teacher outputs): filled with the first whole batches,
    then each step's misclassified samples overwrite random slots; sampled without replacement."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.items: dict[str, Tensor] = {}
        self.filled = 0

    def add(self, items: dict[str, Tensor], misclassified: Tensor) -> None:
        items = {k: v.detach() for k, v in items.items()}
        if self.filled < self.size:  # filling: whole batches, in order
            take = min(self.size - self.filled, next(iter(items.values())).shape[0])
            for key, value in items.items():
                if key not in self.items:
                    self.items[key] = value.new_zeros((self.size, *value.shape[1:]))
                self.items[key][self.filled : self.filled + take] = value[:take]
            self.filled += take
            return
        rows = misclassified.nonzero().flatten()
        if len(rows):
            slots = torch.randperm(self.size, generator=self.generator)[: len(rows)]
            slots = slots.to(rows.device)
            for key, value in items.items():
                self.items[key][slots] = value[rows]

    def sample(self, count: int) -> dict[str, Tensor]:
        rows = torch.randperm(self.filled, generator=self.generator)[:count]
        return {k: v[rows.to(v.device)] for k, v in self.items.items()}

    def state(self) -> dict[str, Any]:
        return {
            "items": dict(self.items),
            "filled": self.filled,
            "generator": self.generator.get_state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.items, self.filled = dict(state["items"]), state["filled"]
        self.generator.set_state(state["generator"])


@dataclass
class SGDSettings:
    """The student optimizer's step, for a look-ahead that imitates it."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


def sgd_step(
    params: dict[str, Tensor],
    loss: Tensor,
    buffers: dict[str, Tensor],
    settings: SGDSettings,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """One SGD step (momentum, weight decay, Nesterov as `torch.optim.SGD`, which also skips a
    parameter without gradient) as a differentiable function of the parameters: returns the new
    parameters and momentum buffers."""
    names = [n for n, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(
        loss, [params[n] for n in names], create_graph=True, allow_unused=True
    )
    new_params, new_buffers = dict(params), dict(buffers)
    for name, grad in zip(names, grads, strict=True):
        if grad is None:  # not in this loss (a regressor under CE): SGD leaves it as it is
            continue
        step = grad + settings.weight_decay * params[name]
        if settings.momentum:
            old = buffers.get(name)
            buffer = step if old is None else settings.momentum * old + step
            new_buffers[name] = buffer
            step = step + settings.momentum * buffer if settings.nesterov else buffer
        new_params[name] = params[name] - settings.lr * step
    return new_params, new_buffers


LOOK_AHEADS = {"unrolled": ("match", "match", "ce"), "one_step": ("match",)}


def meta_loss(
    params: dict[str, Tensor],
    buffers: dict[str, Tensor],
    settings: SGDSettings,
    steps: tuple[str, ...],
    losses: dict[str, Callable[[dict[str, Tensor]], Tensor]],
) -> Tensor:
    """CE after the look-ahead `steps` (each a key of `losses`, a loss of the parameters): the
    meta objective, differentiable with respect to whatever the losses depend on."""
    for step in steps:
        params, buffers = sgd_step(params, losses[step](params), buffers, settings)
    return losses["ce"](params)


@register_method
class MMKD(Method):
    """Meta-learned per-sample weights for logits and features."""

    name = "mmkd"
    description = (
        "MMKD: per-sample logit and feature weights from meta-weight networks, meta-learned "
        "through look-ahead steps on hard samples"
    )
    citation = MMKD_CITATION
    Options = MMKDOptions
    tracked_weights = ("logit", "feature")
    min_teachers = 2
    min_teachers_reason = "it learns a mix of teachers"
    needs_fixed_temperature = (
        "its look-ahead recomputes the loss, which must not draw new temperatures"
    )
    default_feature: ClassVar[dict[str, Any]] = {"kind": "map", "adapter": "bottleneck"}
    moved_options: ClassVar[dict[str, str]] = {
        "regressor": "write method.feature={kind: map, adapter: conv1x1} (bottleneck by default)"
    }

    def __init__(self, context: MethodContext, options: MMKDOptions) -> None:
        super().__init__(context, options)
        uses_features = context.objective.feature_stage is not None
        if uses_features and context.batch_size and context.batch_size != options.batch_size:
            raise MtkdrlError(
                f"method.options.batch_size: MMKD's feature-weight network is sized by the "
                f"per-process batch, data.batch_size {context.batch_size}, and the options say "
                f"{options.batch_size}; set method.options.batch_size={context.batch_size} (or "
                "method.feature=none, which has no feature network)"
            )
        self.logit_net = LogitWeightNet(context.num_classes, context.num_teachers)
        self.feature_net = None
        if uses_features:
            self.feature_net = FeatureWeightNet(options.batch_size, context.num_teachers)
        self.optimizer = torch.optim.Adam(
            self.meta_parameters(), lr=options.meta_lr, weight_decay=options.meta_weight_decay
        )
        seed = int(torch.randint(0, 2**62, (1,)).item()) + context.process_index
        self.buffer = HardBuffer(options.buffer_size, torch.Generator().manual_seed(seed))
        self.steps = 0
        self.meta_updates = 0
        self._pending: dict[str, Tensor] | None = None  # the step's batch, from forward
        self._epoch = 0

    def meta_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    @property
    def batch_size(self) -> int | None:
        """The one batch size its feature-weight network takes (None: any)."""
        return None if self.feature_net is None else self.options.batch_size

    def describe(self) -> str:
        mode = "one-step approximation" if self.options.look_ahead == "one_step" else "unrolled"
        return (
            f"mmkd: meta step every {self.options.meta_every} steps ({mode} look-ahead), "
            f"hard buffer {self.options.buffer_size if self.options.hard_buffer else 'off'}"
        )

    def weights(self, batch: DistillBatch) -> TeacherWeights:
        """Both networks' weights (B×K), carrying gradients to their parameters."""
        student = batch.student.detach().float()
        logit = self.logit_net([t.logits for t in batch.teachers], student.logits)
        if self.feature_net is None:
            return TeacherWeights(logit=logit)
        feature = self.feature_net([t.features for t in batch.teachers], student.features)
        return TeacherWeights(logit=logit, feature=feature)

    def teacher_weights(
        self, batch: DistillBatch, terms: TeacherTerms, epoch: int
    ) -> TeacherWeights:
        with torch.no_grad():  # the regular step never trains the networks
            weights = self.weights(batch)
        self._epoch = epoch
        self._pending = {
            "labels": batch.labels,
            "misclassified": batch.student.logits.argmax(dim=1) != batch.labels,
            **teacher_items(batch.teachers),
        }
        return weights

    def match_loss(self, batch: DistillBatch, epoch: int) -> Tensor:
        """α·KD + β·feature with the networks' weights, no CE: the look-ahead's loss."""
        objective = self.context.objective
        terms = objective.terms(batch, epoch, objective.base_temperature)
        named = objective.combine(terms, self.weights(batch))
        if "feature" not in named:
            return named["kd"].mean()
        return (named["kd"] + named["feature"]).mean()

    # ---------------------------------------------------------------- meta step
    def before_step(self, access: StudentAccess) -> None:
        """Store the step's hard samples; every `meta_every` steps, one meta update on B samples
        of the hard buffer (on the step's own batch without it)."""
        pending, self._pending = self._pending, None
        if pending is None:  # no forward since the last step: nothing to learn from
            return
        misclassified = pending.pop("misclassified")
        current = {"images": access.batch[0], **pending}
        if self.options.hard_buffer:
            self.buffer.add(current, misclassified)
        self.steps += 1
        if self.steps % self.options.meta_every == 0:
            hard = self.options.hard_buffer
            self.meta_update(
                access, self.buffer.sample(self.options.batch_size) if hard else current
            )

    def meta_update(self, access: StudentAccess, items: dict[str, Tensor]) -> None:
        """Adam on the networks' parameters along d CE(after the look-ahead) / d φ."""
        images, labels = items["images"], items["labels"]
        teachers = [
            ModelOutputs(items[f"logits{k}"], items.get(f"embedding{k}"), items.get(f"features{k}"))
            for k in range(self.context.num_teachers)
        ]
        epoch = self._epoch

        def batch_at(params: dict[str, Tensor]) -> DistillBatch:
            return access.outputs(params, images, labels, teachers)

        losses = {
            "match": lambda params: self.match_loss(batch_at(params), epoch),
            "ce": lambda params: F.cross_entropy(batch_at(params).student.logits.float(), labels),
        }
        settings = SGDSettings(access.lr, access.momentum, access.weight_decay, access.nesterov)
        params = {k: v.detach().requires_grad_(v.requires_grad) for k, v in access.params.items()}
        buffers = {k: v.detach() for k, v in access.momentum_buffers.items()}
        steps = LOOK_AHEADS[self.options.look_ahead]
        loss = meta_loss(params, buffers, settings, steps, losses)
        meta = self.meta_parameters()
        grads = torch.autograd.grad(loss, meta, allow_unused=True)
        for param, grad in zip(meta, grads, strict=True):
            grad = torch.zeros_like(param) if grad is None else grad
            param.grad = grad if self.context.reduce is None else self.context.reduce(grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.meta_updates += 1

    def end_epoch(self, epoch: int) -> dict[str, float]:
        return {"meta_updates": self.meta_updates}

    # ---------------------------------------------------------------- checkpoint
    def extra_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "buffer": self.buffer.state(),
            "steps": self.steps,
            "meta_updates": self.meta_updates,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load(state["buffer"])
        self.steps, self.meta_updates = state["steps"], state["meta_updates"]


def teacher_items(teachers: list[ModelOutputs]) -> dict[str, Tensor]:
    """Teachers' outputs as named tensors, for the hard buffer."""
    items = {}
    for k, t in enumerate(teachers):
        items[f"logits{k}"] = t.logits
        if t.embedding is not None:  # a compact teacher cache holds none for MMKD
            items[f"embedding{k}"] = t.embedding
        if t.features is not None:  # without a feature term the teachers give no maps
            items[f"features{k}"] = t.features
    return items
