"""Feature terms: what the objective's β·Σ_k v_k·d_k compares, chosen by `method.feature`.

`none` distils logits only; `map` passes the student's map at `stage` (the last stage's by default)
through a per-teacher adapter and compares it with the teacher's map at the same stage; `hint` is
FitNets' (ConvReg regressors at `stage`, the second-to-last by default). Any weighting method's
per-sample feature weights v apply to whichever term the recipe picks. See docs/objective.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor

from .losses import FeatureAdapters, feature_mse_per_sample, normalised_mse_per_sample
from .registry import Registry

WHERE = "method.feature"
FEATURE_TERMS = Registry("feature term", WHERE, key="kind")

DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": feature_mse_per_sample,
    "normalised": normalised_mse_per_sample,
}


@dataclass
class NoSettings:
    """A term without settings."""


class FeatureTerm:
    """Per-sample distances between the student's adapted maps and the teachers' maps.

    `stage` is the `forward_intermediates` entry read for student and teachers alike (None: no
    maps are needed), `adapter` a key of `losses.ADAPTERS`, `distance` a key of `DISTANCES`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoSettings

    def __init__(self, options: Any) -> None:
        self.options = options

    @property
    def stage(self) -> int | None:
        return self.options.stage

    @property
    def adapter(self) -> str:
        return self.options.adapter

    @property
    def distance(self) -> str:
        return self.options.distance

    def build_adapters(self, student_map: Tensor, teacher_maps: list[Tensor]) -> FeatureAdapters:
        """One adapter per teacher, sized by probe maps (B×C×H×W)."""
        return FeatureAdapters.build(student_map, teacher_maps, self.adapter)

    def distances(self, adapted: list[Tensor], teacher_maps: list[Tensor]) -> list[Tensor]:
        """Each teacher's distance per sample (K tensors of shape B)."""
        measure = DISTANCES[self.distance]
        return [measure(a, t) for a, t in zip(adapted, teacher_maps, strict=True)]

    def describe(self) -> str:
        """The term as a recipe would write it, e.g. `hint (stage -2)`."""
        return f"{self.name} (stage {self.stage})"


@FEATURE_TERMS.register
class NoFeature(FeatureTerm):
    """No feature term: logits only."""

    name = "none"
    description = "no feature term: the student learns from the teachers' logits only"

    @property
    def stage(self) -> None:
        return None

    def describe(self) -> str:
        return "none"


@dataclass
class MapOptions:
    """`stage`: the `forward_intermediates` entry (CIFAR zoo: 0 the stem, 1..n the stages;
    negative counts from the last); `adapter` and `distance` as MMKD and AMTML-KD use them."""

    stage: int = -1
    adapter: Literal["conv1x1", "bottleneck", "linear1x1"] = "conv1x1"
    distance: Literal["mse", "normalised"] = "mse"


@FEATURE_TERMS.register
class MapTerm(FeatureTerm):
    """The student's map resized and projected per teacher (1×1 conv, BN, ReLU by default)."""

    name = "map"
    description = "the student's map through a per-teacher adapter against the teacher's (MSE)"
    Options = MapOptions

    def describe(self) -> str:
        plain = MapOptions()
        extras = "".join(
            f", {key} {getattr(self.options, key)}"
            for key in ("adapter", "distance")
            if getattr(self.options, key) != getattr(plain, key)
        )
        return f"map (stage {self.stage}{extras})"


@dataclass
class HintOptions:
    """`stage`: as for `map`; -2 is the second of a CIFAR ResNet's three stages (FitNet-MKD's)."""

    stage: int = -2


@FEATURE_TERMS.register
class HintTerm(FeatureTerm):
    """FitNets' hints: a ConvReg regressor per teacher (its conv chosen by the spatial ratio)
    whose MSE gradient reaches the student."""

    name = "hint"
    description = "FitNets' hints: the student's map through a ConvReg regressor per teacher (MSE)"
    Options = HintOptions
    adapter = "convreg"
    distance = "mse"


def build_feature_term(
    spec: str | Mapping[str, Any] | None, default: Mapping[str, Any]
) -> FeatureTerm:
    """The term a recipe's `method.feature` names (`hint`, `{kind: hint, stage: 2}`), or the
    method's `default` when the recipe names none."""
    cls, options = FEATURE_TERMS.resolve(default if spec is None else spec)
    return cls(options)
