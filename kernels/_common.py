"""Pieces shared by every kernel family: tile configs, program ordering, dtype limits."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import triton
import triton.language as tl

# Triton decides at decoration time whether `@triton.jit` builds a compiled kernel or an
# interpreted one, so this must be read when this module is imported, like Triton does.
INTERPRETING: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Largest finite value per io dtype name: the saturating cast clamps to +-this.
FINITE_MAX: dict[str, float] = {
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
}

# Hopper (sm_90) limits used to prune configs before any GPU time is spent.
SM90_SMEM_BYTES = 232448  # opt-in dynamic shared memory per block on H100/H200
SM90_MAX_THREADS = 1024


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration of a GEMM-like kernel.

    `norms_in_loop` and `epilogue_split` only matter for the dense forward: True sums ||x||^2
    and ||w||^2 inside the main loop, False reads them from a cheap separate pass; the
    epilogue runs on `epilogue_split` column slices of the tile (fewer live registers).
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    norms_in_loop: bool = False
    epilogue_split: int = 1

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)

    @property
    def name(self) -> str:
        tag = "_nil" if self.norms_in_loop else ""
        split = f"e{self.epilogue_split}" if self.epilogue_split != 1 else ""
        return (
            f"m{self.block_m}n{self.block_n}k{self.block_k}g{self.group_m}"
            f"w{self.num_warps}s{self.num_stages}{split}{tag}"
        )


def pipelined_smem_bytes(cfg: TileConfig, elem_bytes: int) -> int:
    """Shared memory of a main loop pipelined over `num_stages` A(BMxBK) + B(BKxBN) buffers.

    Matches what Triton allocates on Hopper (a bf16 128x128x64 tile, 3 stages: 96 KB).
    """
    return cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * elem_bytes


def fits_sm90(cfg: TileConfig, elem_bytes: int) -> bool:
    """Static prune: shared memory within the opt-in limit, accumulator not absurd.

    An fp32 accumulator tile needs BM*BN/(32*num_warps) registers per thread; above ~128
    it leaves no room for the epilogue and spills (255 registers is the hard cap).
    """
    if 32 * cfg.num_warps > SM90_MAX_THREADS:
        return False
    acc_regs = cfg.block_m * cfg.block_n // (32 * cfg.num_warps)
    if acc_regs > 128:
        return False
    return pipelined_smem_bytes(cfg, elem_bytes) <= SM90_SMEM_BYTES


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a linear program id to (pid_m, pid_n) in GROUP_M-row bands.

    Consecutive programs walk down a band of GROUP_M row tiles before moving right, so the
    B tiles they share stay in L2 (the classic Triton matmul swizzle).
    """
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_pid_n
    group = pid // width
    first_m = group * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows
    return pid_m, pid_n


@triton.jit
def saturate(y, OUT_MAX: tl.constexpr):
    """Clamp to the finite range of the output dtype (NaN stays NaN); OUT_MAX=0: no-op."""
    if OUT_MAX > 0:
        y = tl.clamp(y, -OUT_MAX, OUT_MAX, propagate_nan=tl.PropagateNan.ALL)
    return y


@triton.jit
def load_scalars(
    alpha_ptr,
    eps_ptr,
    alpha_value,
    eps_value,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    """(alpha, eps) in the accumulation dtype: read from their one-element tensors, or the
    scalar arguments when the launcher passed plain floats."""
    if IS_FP64:
        ty = tl.float64
    else:
        ty = tl.float32
    if ALPHA_FROM_PTR:
        alpha = tl.load(alpha_ptr).to(ty)
    else:
        alpha = alpha_value
    if EPS_FROM_PTR:
        eps = tl.load(eps_ptr).to(ty)
    else:
        eps = eps_value
    return alpha, eps
