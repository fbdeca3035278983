"""`fixed`: one T for every sample and epoch (4 by default), what a plain number in a recipe is."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import MtkdrlError
from . import register_temperature_policy
from .base import PolicyInput, TemperaturePolicy


@dataclass
class FixedOptions:
    value: float = 4.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise MtkdrlError(f"method.temperature: expected a positive T, got {self.value}")


@register_temperature_policy
class FixedTemperature(TemperaturePolicy):
    """The same T throughout."""

    name = "fixed"
    description = "one T for every sample and epoch"
    Options = FixedOptions

    @property
    def fixed_value(self) -> float:
        return self.options.value

    def choose(self, seen: PolicyInput) -> float:
        return self.options.value
