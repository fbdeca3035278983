"""Stop a run whose loss goes NaN or infinite, naming the step, the term and the recipe values
that feed it, before a diverged student is saved anywhere.

Each step's terms are checked on the device (a few tensor operations, no host sync); the flags
are read where the loop syncs anyway on an accelerator (logging, checkpoints, epoch ends) and
after every step on a CPU, where reading costs nothing. Under several processes every rank reads
every rank's flags at the same steps, so all stop together.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor

from .errors import MtkdrlError
from .recipe import Recipe

# the recipe values that scale or feed each objective term, shown when the term diverges
TERM_SETTINGS = {
    "ce": ("optim.lr",),
    "kd": ("method.alpha", "method.temperature", "optim.lr"),
    "feature": ("method.beta", "method.feature", "optim.lr"),
}


NEVER = torch.iinfo(torch.long).max  # a term that has stayed finite


class FiniteGuard:
    """The first step at which each loss term was not finite (-1: none yet), kept on the device."""

    def __init__(self, recipe: Recipe, accelerator: Accelerator) -> None:
        self.recipe, self.accelerator = recipe, accelerator
        self.names: list[str] | None = None
        self.first_bad: Tensor | None = None
        self.every_step = accelerator.device.type == "cpu"

    def add(self, step: int, loss: Tensor, terms: dict[str, Tensor]) -> None:
        """Note this step's loss and terms (detached scalars)."""
        values = torch.stack([loss.float(), *(t.float() for t in terms.values())])
        if self.first_bad is None:
            self.names = ["loss", *terms]
            self.first_bad = torch.full_like(values, -1, dtype=torch.long)
        bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)
        if self.every_step:
            self.check()

    def check(self) -> None:
        """One line naming the first non-finite step and term, if there was one on any process."""
        if self.first_bad is None:
            return
        flags = torch.where(self.first_bad < 0, NEVER, self.first_bad)
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.gather(flags.unsqueeze(0)).amin(0)
        steps = zip(self.names, flags.tolist(), strict=True)
        bad = {name: step for name, step in steps if step != NEVER}
        if bad:
            raise MtkdrlError(self.message(bad))

    def check_weights(self, step: int, tensors: list[Tensor]) -> None:
        """Before weights are saved: a finite loss can still send non-finite gradients into the
        weights or batch statistics (one device sync, at checkpoints and epoch ends only)."""
        self.check()
        if not torch.stack([t.detach().isfinite().all() for t in tensors]).all():
            values = {key: self._value(key) for key in ("optim.lr", "method.alpha", "method.beta")}
            shown = ", ".join(f"{k} = {_show(v)}" for k, v in values.items())
            raise MtkdrlError(
                f"step {step}: the student's weights went non-finite (its gradients overflowed) "
                f"and the run stopped; look at {shown}; the checkpoints written before it are kept"
            )

    def message(self, bad: dict[str, int]) -> str:
        step = min(bad.values())
        terms = [name for name, first in bad.items() if first == step and name != "loss"]
        keys = dict.fromkeys(k for term in terms for k in TERM_SETTINGS.get(term, ()))
        values = {key: self._value(key) for key in keys or ("optim.lr",)}
        shown = ", ".join(f"{k} = {_show(v)}" for k, v in values.items() if v is not None)
        what = f"term{'s' * (len(terms) > 1)} {', '.join(terms)}" if terms else "loss"
        return (
            f"step {step}: the {what} went non-finite (NaN or infinite) and the run stopped; "
            f"look at {shown}; the checkpoints written before it are kept"
        )

    def _value(self, dotted: str) -> object:
        node = self.recipe.to_dict()
        for key in dotted.split("."):
            node = node[key]
        return node


def _show(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
