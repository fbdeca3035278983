"""How a cache entry stores a teacher's C logits: all of them, 8-bit, or the top k.

- `float32`: every logit as computed; lossless, 4·C bytes.
- `uint8`: every logit quantised per sample to 256 levels between its min and max (C + 8
  bytes). Softmax and the losses see all C classes; the KD loss moves by about 1e-4 (measured in
  tests/teacher_cache/test_logit_codecs.py), at T = 1 and T = 4 alike.
- `topk`: the k largest logits and their classes, plus the log-sum-exp of the other C - k
  (8·k + 4 bytes at most). Softmax at T = 1 keeps the top k probabilities and the others' total
  mass exactly, spread evenly; at higher T the spread-out tail is lost, so the KD loss moves by
  far more than with `uint8` (TinyViT and FKD store sparse labels this way).
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import Tensor

Arrays = dict[str, tuple[tuple[int, ...], np.dtype]]


def index_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type that holds every class index."""
    return np.dtype(np.int16) if num_classes <= np.iinfo(np.int16).max else np.dtype(np.int32)


class LogitCodec(abc.ABC):
    """One way of storing logits: its arrays per entry, and packing and unpacking a batch."""

    name = ""

    @abc.abstractmethod
    def arrays(self, classes: int, topk: int) -> Arrays:
        """Its arrays per entry: name -> (shape, dtype)."""

    @abc.abstractmethod
    def pack(self, logits: Tensor, topk: int) -> dict[str, np.ndarray]:
        """A batch's B×C float32 logits as its arrays (B rows each)."""

    @abc.abstractmethod
    def unpack(self, arrays: dict[str, Tensor], classes: int, topk: int) -> Tensor:
        """The B×C float32 logits back from its arrays."""

    def describe(self, topk: int) -> str:
        return f"{self.name} logits"


LOGIT_CODECS: dict[str, LogitCodec] = {}


def register_codec(cls: type[LogitCodec]) -> type[LogitCodec]:
    LOGIT_CODECS[cls.name] = cls()
    return cls


@register_codec
class Float32Logits(LogitCodec):
    """Every logit, as computed."""

    name = "float32"

    def arrays(self, classes: int, topk: int) -> Arrays:
        return {"logits": ((classes,), np.dtype(np.float32))}

    def pack(self, logits: Tensor, topk: int) -> dict[str, np.ndarray]:
        return {"logits": logits.cpu().numpy()}

    def unpack(self, arrays: dict[str, Tensor], classes: int, topk: int) -> Tensor:
        return arrays["logits"]


@register_codec
class Uint8Logits(LogitCodec):
    """Every logit at 8 bits: `low + level · step`, `low` and `step` per sample."""

    name = "uint8"

    def arrays(self, classes: int, topk: int) -> Arrays:
        return {
            "levels": ((classes,), np.dtype(np.uint8)),
            "low": ((), np.dtype(np.float32)),
            "step": ((), np.dtype(np.float32)),
        }

    def pack(self, logits: Tensor, topk: int) -> dict[str, np.ndarray]:
        low = logits.min(dim=1, keepdim=True).values
        step = ((logits.max(dim=1, keepdim=True).values - low) / 255).clamp_min(1e-12)
        levels = ((logits - low) / step).round_().clamp_(0, 255).to(torch.uint8)
        return {
            "levels": levels.cpu().numpy(),
            "low": low.squeeze(1).cpu().numpy(),
            "step": step.squeeze(1).cpu().numpy(),
        }

    def unpack(self, arrays: dict[str, Tensor], classes: int, topk: int) -> Tensor:
        step, low = arrays["step"].unsqueeze(1), arrays["low"].unsqueeze(1)
        return arrays["levels"].float() * step + low


@register_codec
class TopkLogits(LogitCodec):
    """The k largest logits and their classes; the others all at the value that keeps their
    total softmax mass at T = 1."""

    name = "topk"

    def arrays(self, classes: int, topk: int) -> Arrays:
        return {
            "topk_values": ((topk,), np.dtype(np.float32)),
            "topk_indices": ((topk,), index_dtype(classes)),
            "rest_lse": ((), np.dtype(np.float32)),
        }

    def pack(self, logits: Tensor, topk: int) -> dict[str, np.ndarray]:
        values, indices = logits.topk(topk, dim=1)
        rest = logits.scatter(1, indices, float("-inf")).logsumexp(dim=1)
        return {
            "topk_values": values.cpu().numpy(),
            "topk_indices": indices.cpu().numpy().astype(index_dtype(logits.shape[1])),
            "rest_lse": rest.cpu().numpy(),
        }

    def unpack(self, arrays: dict[str, Tensor], classes: int, topk: int) -> Tensor:
        values = arrays["topk_values"]
        each = arrays["rest_lse"] - math.log(classes - topk)  # exp(each)·(C-k) = the rest's mass
        logits = each.unsqueeze(1).expand(len(values), classes).clone()
        return logits.scatter_(1, arrays["topk_indices"].long(), values)

    def describe(self, topk: int) -> str:
        return f"top-{topk} logits"


def choose_codec(setting: str, classes: int, topk: int) -> str:
    """The codec `teacher_cache.logits` names for `classes` classes; `auto` is float32 up to
    100 classes and uint8 above. A top-k of all the classes is just the logits: float32."""
    chosen = ("float32" if classes <= 100 else "uint8") if setting == "auto" else setting
    return "float32" if chosen == "topk" and topk >= classes else chosen
