"""Config choice for the launchers: the tuned winners where a shape has been tuned, else the
heuristic default that lives next to each kernel."""

from __future__ import annotations

import torch

from kernels._common import INTERPRETING, TileConfig
from kernels.dense import dense_default_config


def pick_dense_config(M: int, N: int, K: int, dtype: torch.dtype) -> TileConfig:
    """Config for a GEMM-like dense launch of an (M, K) x (K, N) product in `dtype`."""
    return dense_default_config(M, N, K, dtype.itemsize, interpreting=INTERPRETING)
