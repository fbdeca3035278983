"""Fixtures of the model-zoo tests: decoded rows of the shared CIFAR-10 val split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import Tensor


@pytest.fixture(scope="session")
def cifar10_val_head(shared_data: Path) -> tuple[Tensor, Tensor]:
    """The first 1000 rows of the shared CIFAR-10 val split: images in [0, 1] (N×3×H×W), labels."""
    table = pq.read_table(shared_data / "cifar10-jpeg" / "val.parquet").slice(0, 1000)
    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
            for cell in table.column("img").to_pylist()
        ]
    )
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)
    labels = torch.tensor(table.column("label").to_pylist())
    return images, labels
