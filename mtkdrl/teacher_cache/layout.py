"""What a cache entry holds per teacher, and how outputs are packed into it and read back.

An entry is one (view, sample). Per teacher it holds only what the run reads:
- the logits, in one of the `logit_codecs` (float32, uint8, top-k);
- the pooled embedding, only for methods that read it (MTKD-RL's agent state), at the width the
  method asks for, in `embedding_dtype`;
- the feature map at the feature term's stage, only when the objective has one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..pool import ModelOutputs, pooled_channels
from .logit_codecs import LOGIT_CODECS

# numpy has no bf16: bf16 arrays are stored as their 16 bits
DTYPES: dict[str, tuple[np.dtype, torch.dtype]] = {
    "float16": (np.dtype(np.float16), torch.float16),
    "bfloat16": (np.dtype(np.int16), torch.bfloat16),
    "float32": (np.dtype(np.float32), torch.float32),
}


@dataclass(frozen=True)
class CacheLayout:
    """`views` x `num_samples` entries; per teacher k: its logits (by `logit_codec`), its
    embedding at `embedding_dims[k]` (0: not stored), its map (when `feature_shapes` is set);
    `has_crops`: each entry's CIFAR crop and flip."""

    num_samples: int
    views: int
    num_classes: list[int]
    logit_codec: str  # a name in LOGIT_CODECS
    logit_topk: int  # the k of the `topk` codec
    embedding_dims: list[int]  # 0: no embedding
    embedding_dtype: str
    feature_shapes: list[list[int]] | None
    feature_dtype: str
    has_crops: bool

    def teacher_arrays(self, k: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Teacher k's files, per entry: name -> (shape, dtype)."""
        classes, dims = self.num_classes[k], self.embedding_dims[k]
        codec = LOGIT_CODECS[self.logit_codec]
        arrays = {
            f"t{k}.{name}": spec for name, spec in codec.arrays(classes, self.logit_topk).items()
        }
        if dims:
            arrays[f"t{k}.embedding"] = ((dims,), DTYPES[self.embedding_dtype][0])
        if self.feature_shapes is not None:
            shape = tuple(self.feature_shapes[k])
            arrays[f"t{k}.features"] = (shape, DTYPES[self.feature_dtype][0])
        return arrays

    def arrays(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Every file of the cache: name -> (shape, dtype)."""
        entries = (self.views, self.num_samples)
        arrays = {"seeds": (entries, np.dtype(np.int64))}
        if self.has_crops:
            arrays["crops"] = ((*entries, 3), np.dtype(np.int16))
        for k in range(len(self.num_classes)):
            for name, (shape, dtype) in self.teacher_arrays(k).items():
                arrays[name] = ((*entries, *shape), dtype)
        return arrays

    def teacher_entry_bytes(self) -> list[int]:
        """Bytes per entry (one sample's view) of each teacher's outputs."""
        sizes = []
        for k in range(len(self.num_classes)):
            arrays = self.teacher_arrays(k).values()
            sizes.append(sum(math.prod(shape) * dtype.itemsize for shape, dtype in arrays))
        return sizes

    def entry_bytes(self) -> int:
        """Bytes per entry, all teachers, the augmentation seed and crop included."""
        return sum(self.teacher_entry_bytes()) + 8 + (6 if self.has_crops else 0)

    def nbytes(self) -> int:
        """The size of every file together: what the cache needs on disk."""
        return sum(math.prod(shape) * dtype.itemsize for shape, dtype in self.arrays().values())

    def describe(self, k: int) -> str:
        """What teacher k's entry holds, in a few words, for the size line."""
        parts = [LOGIT_CODECS[self.logit_codec].describe(self.logit_topk)]
        if self.embedding_dims[k]:
            parts.append(f"{self.embedding_dims[k]}-d {self.embedding_dtype} embedding")
        if self.feature_shapes is not None:
            shape = "x".join(map(str, self.feature_shapes[k]))
            parts.append(f"{shape} {self.feature_dtype} map")
        return " + ".join(parts)

    # ---------------------------------------------------------------- packing
    def pack(self, k: int, out: ModelOutputs) -> dict[str, np.ndarray]:
        """Teacher k's outputs for a batch as the arrays its entries store."""
        logits = out.logits.detach().float()
        codec = LOGIT_CODECS[self.logit_codec]
        packed = {f"t{k}.{name}": a for name, a in codec.pack(logits, self.logit_topk).items()}
        if self.embedding_dims[k]:
            embedding = pooled_channels(out.embedding.detach().float(), self.embedding_dims[k])
            packed[f"t{k}.embedding"] = _to_storage(embedding, self.embedding_dtype)
        if self.feature_shapes is not None:
            packed[f"t{k}.features"] = _to_storage(out.features.detach(), self.feature_dtype)
        return packed

    def unpack(self, k: int, arrays: dict[str, Tensor]) -> ModelOutputs:
        """Teacher k's outputs (float32, on the arrays' device) from its stored arrays."""
        prefix = f"t{k}."
        mine = {name[len(prefix) :]: a for name, a in arrays.items() if name.startswith(prefix)}
        codec = LOGIT_CODECS[self.logit_codec]
        logits = codec.unpack(mine, self.num_classes[k], self.logit_topk)
        embedding = features = None
        if self.embedding_dims[k]:
            embedding = _from_storage(arrays[f"t{k}.embedding"], self.embedding_dtype)
        if self.feature_shapes is not None:
            features = _from_storage(arrays[f"t{k}.features"], self.feature_dtype)
        return ModelOutputs(logits, embedding, features)

    def round_trip(self, k: int, out: ModelOutputs) -> ModelOutputs:
        """Teacher k's outputs as a lookup would give them back once stored."""
        device = out.logits.device
        packed = self.pack(k, out)
        return self.unpack(k, {name: torch.from_numpy(a).to(device) for name, a in packed.items()})


def _to_storage(tensor: Tensor, dtype: str) -> np.ndarray:
    rounded = tensor.to(DTYPES[dtype][1])
    bits = rounded.view(torch.int16) if rounded.dtype is torch.bfloat16 else rounded
    return bits.cpu().numpy()


def _from_storage(tensor: Tensor, dtype: str) -> Tensor:
    return tensor.view(DTYPES[dtype][1]).float()
