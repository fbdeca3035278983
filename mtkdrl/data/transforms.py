"""Image transforms: timm's, from a model's data config, and the standard CIFAR training one.

Training augmentation is a pure function of a per-sample seed, drawn from (run seed, epoch,
sample index): the same sample in the same epoch always gets the same view, whatever the
worker or process that loads it. That makes resumed runs exact and lets a teacher-output cache
replay views.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torch import Tensor

from ..errors import MtkdrlError


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation, distinct for each (seed, epoch, index)."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2, np.uint32)
    return int(mixed[0]) << 31 | int(mixed[1]) >> 1


@dataclass(frozen=True)
class CropFlip:
    """One CIFAR view: the crop's top-left corner in the padded image and a horizontal flip."""

    top: int
    left: int
    flip: bool


class CifarTrainTransform:
    """Zero-pad by `padding`, take a random `size` crop, flip half the time, then normalise."""

    def __init__(self, size: int, mean, std, padding: int = 4) -> None:
        self.size, self.padding = size, padding
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def _check_size(self, pixels: np.ndarray, index: int | None = None) -> None:
        if pixels.shape[:2] != (self.size, self.size):
            row = "" if index is None else f" (row {index})"
            raise MtkdrlError(
                f"data.train_transform=cifar expects {self.size}x{self.size} images, got "
                f"{pixels.shape[1]}x{pixels.shape[0]}{row}; use data.train_transform: timm"
            )

    def sample(self, seed: int) -> CropFlip:
        rng = random.Random(seed)
        span = 2 * self.padding
        return CropFlip(rng.randint(0, span), rng.randint(0, span), rng.random() < 0.5)

    def apply(self, pixels: np.ndarray, view: CropFlip) -> Tensor:
        """`pixels` is HxWx3 uint8; returns the normalised 3xSxS float view."""
        self._check_size(pixels)
        pad = self.padding
        padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)))
        crop = padded[view.top : view.top + self.size, view.left : view.left + self.size]
        if view.flip:
            crop = crop[:, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255)
        return (image - self.mean) / self.std

    def __call__(self, pixels: np.ndarray, seed: int) -> Tensor:
        return self.apply(pixels, self.sample(seed))

    def stack(self, images: list[np.ndarray]) -> Tensor:
        """Decoded images as one zero-padded N×(S+2p)×(S+2p)×3 uint8 tensor, for `batch`."""
        for index, pixels in enumerate(images):
            self._check_size(pixels, index)
        pad = self.padding
        return torch.from_numpy(np.pad(np.stack(images), ((0, 0), (pad, pad), (pad, pad), (0, 0))))

    def batch(self, padded: Tensor, rows: Tensor, seeds: list[int]) -> Tensor:
        """The views of `seeds` for the images at `rows` of `stack`'s tensor, as one B×3×S×S
        batch: the same numbers as `__call__` per image, in a few tensor operations (on the
        tensor's device) instead of per-image work."""
        views = [self.sample(seed) for seed in seeds]
        device, span = padded.device, torch.arange(self.size, device=padded.device)
        tops = torch.tensor([v.top for v in views], device=device)
        lefts = torch.tensor([v.left for v in views], device=device)
        flips = torch.tensor([v.flip for v in views], device=device)
        ys = tops[:, None] + span
        xs = lefts[:, None] + torch.where(flips[:, None], span.flip(0), span)
        crops = padded[rows.to(device)[:, None, None], ys[:, :, None], xs[:, None, :]]
        images = crops.permute(0, 3, 1, 2).float().div_(255)
        normalised = (images - self.mean.to(device)) / self.std.to(device)
        return normalised.contiguous()  # NCHW as the stacked per-image batches: the same kernels


class SeededTimmTransform:
    """A timm (torchvision) transform run under a fixed seed, leaving the global RNGs untouched."""

    def __init__(self, transform: Callable[[Image.Image], Tensor]) -> None:
        self.transform = transform

    def __call__(self, pixels: np.ndarray, seed: int) -> Tensor:
        image = Image.fromarray(pixels)
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                return self.transform(image)
            finally:
                random.setstate(state)


class EvalTransform:
    """timm's deterministic eval transform (resize, centre crop, normalise) on decoded pixels."""

    def __init__(self, data_config: dict) -> None:
        self.transform = create_transform(**_timm_args(data_config), is_training=False)

    def __call__(self, pixels: np.ndarray, seed: int = 0) -> Tensor:
        return self.transform(Image.fromarray(pixels))


def _timm_args(data_config: dict) -> dict:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return {key: data_config[key] for key in keys if key in data_config}


def _cifar(data_config: dict) -> CifarTrainTransform:
    return CifarTrainTransform(
        data_config["input_size"][-1], data_config["mean"], data_config["std"]
    )


def _timm(data_config: dict) -> SeededTimmTransform:
    return SeededTimmTransform(create_transform(**_timm_args(data_config), is_training=True))


TRAIN_TRANSFORMS: dict[str, Callable[[dict], Callable[[np.ndarray, int], Tensor]]] = {
    "cifar": _cifar,
    "timm": _timm,
}


def build_train_transform(kind: str, data_config: dict) -> Callable[[np.ndarray, int], Tensor]:
    """The training transform `kind` for a model's data config: called as `t(pixels, seed)`."""
    if kind not in TRAIN_TRANSFORMS:
        raise MtkdrlError(
            f"data.train_transform: {kind!r} is not one of {sorted(TRAIN_TRANSFORMS)}"
        )
    return TRAIN_TRANSFORMS[kind](data_config)
