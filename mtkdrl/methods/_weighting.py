"""Teacher-weighting terms shared by several methods (the `_` keeps it out of the registry)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def confidence_weights(teacher_ce: Tensor) -> Tensor:
    """CA-MKD's confidence weights (1 − softmax_k(CE_k)) / (K − 1) per sample (B×K, rows sum to 1):
    a teacher with a lower cross-entropy on the label gets more. MTKD-RL mixes the same term."""
    return (1.0 - F.softmax(teacher_ce, dim=1)) / (teacher_ce.shape[1] - 1)
