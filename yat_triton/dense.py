"""ⵟ-dense: launchers, the registered ops with their autograd, and the functional API.

Tiers (each thin): `dense_fwd` / `dense_bwd` own shapes, strides, allocation, grid and config
choice; `yat_triton::dense_fwd` / `yat_triton::dense_bwd` are `torch.library.triton_op`s, so
`torch.compile` traces into the Triton kernels; `yat_linear` validates and flattens.

What the forward saves for backward: x, W, b (already alive as inputs/parameters), the
squared norms (M + N floats) and s = x.w in fp32 (one output-sized tensor). `linear+relu`
saves its output for the ReLU mask; this op saves s instead and no output, so it stays within
one extra output-sized tensor. Recomputing s in the backward would cost a third GEMM.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor
from torch.library import triton_op
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels._common import SM90_SMEM_BYTES, TileConfig, cdiv, next_pow2, pipelined_smem_bytes
from kernels.dense import (
    NEAR_TAU,
    broken_in_loop_norms,
    elementwise_block,
    row_sqnorm_kernel,
    yat_dense_bwd_gemm_kernel,
    yat_dense_bwd_gemm_tma_kernel,
    yat_dense_bwd_near_kernel,
    yat_dense_bwd_prep_kernel,
    yat_dense_fwd_kernel,
    yat_dense_fwd_tma_kernel,
)
from yat_triton import _checks
from yat_triton._autograd import YatOp, register_yat_autograd
from yat_triton._launch import (
    INTERPRETING,
    KernelCall,
    acc_dtype,
    fast_quotient,
    k_major_if_huge,
    needs_int64,
    norm_pass_programs,
    out_max,
    overlap_norm_pass,
    persistent_programs,
    saturating_cast,
    tma_ready,
    upcast_operands,
    use_triton,
    without_autocast,
)
from yat_triton.tuning import pick_dense_config

__all__ = ["dense_bwd", "dense_fwd", "yat_linear"]

# Prep-pass tile counts the near-pair kernel sums per vector load when it scans a band.
NEAR_SCAN_TILES = 128
# Partial sums of gd a backward GEMM's epilogue adds up itself (see plan_bwd_gemm).
EPILOGUE_PARTS = 4


# ---------------------------------------------------------------------------------------
# Launchers


def norm_pass_block(K: int, elem_bytes: int, *, interpreting: bool = False) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_K, num_warps) of the row-norm pass (`plan_row_sqnorms`): on a GPU
    ~8 KB a program step (see there); under the interpreter few, large programs."""
    k_pow2 = max(16, next_pow2(max(K, 1)))
    if interpreting:  # each program costs Python time
        return 16, min(128, k_pow2), 4
    block_k = min(k_pow2, 512 if elem_bytes <= 2 else 256)
    return max(1, min(64, 8192 // (block_k * elem_bytes))), block_k, 4


def plan_row_sqnorms(
    a: Tensor, b: Tensor | None = None, *, overlap: bool = False
) -> tuple[tuple[Tensor, Tensor | None], list[KernelCall]]:
    """||m_r||^2 for every row of a, and of b (same K) in the same launch, in the
    accumulation dtype.

    The pass is memory-bound: on a GPU each program step reads ~8 KB (BLOCK_K of 512 16-bit
    or 256 32-bit values, as many rows as make 8 KB), so a 4096^2 bf16 operand spreads over
    512 programs, ~4 a SM, enough loads in flight for HBM (a 32-row program per SM would
    keep ~1/4 of that and run latency-bound).
    `overlap` (`overlap_norm_pass`: a forward GEMM follows and overlaps it): the programs
    let that GEMM launch at once, on the grid `norm_pass_programs` gives.
    """
    a = k_major_if_huge(a, 1)  # the pass steps BLOCK_K * stride_k (<= 512) in int32
    b = k_major_if_huge(b, 1) if b is not None else None
    R, K = a.shape
    RB = b.shape[0] if b is not None else 0
    acc = acc_dtype(a.dtype)
    out_a = torch.empty((R,), dtype=acc, device=a.device)
    out_b = torch.empty((RB,), dtype=acc, device=a.device) if b is not None else None
    if R + RB == 0:
        return (out_a, out_b), []
    elem = max(a.element_size(), b.element_size() if b is not None else 1)
    block_r, block_k, warps = norm_pass_block(K, elem, interpreting=INTERPRETING)
    bb = b if b is not None else a
    tiles = cdiv(R, block_r) + cdiv(RB, block_r)
    call = KernelCall(
        row_sqnorm_kernel, (norm_pass_programs(a.device, tiles) if overlap else tiles,),
        (a, bb, out_a, out_b if out_b is not None else out_a, R, RB, K,
         a.stride(0), a.stride(1), bb.stride(0), bb.stride(1)),
        dict(IS_FP64=a.dtype == torch.float64, INT64=needs_int64(a, bb), EARLY_LAUNCH=overlap,
             BLOCK_R=block_r, BLOCK_K=block_k, num_warps=warps),
    )  # fmt: skip
    return (out_a, out_b), [call]


def plan_dense_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    save_for_backward: bool,
    config: TileConfig | None = None,
    y_out: Tensor | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], list[KernelCall]]:
    """Allocate the forward's outputs and plan its kernel launches (see `dense_fwd`).
    `y_out`: a contiguous (M, N) tensor of x's dtype to write y into (a view of the caller's
    own output, which then is not a view of one made here)."""
    M, K = x.shape
    N = weight.shape[0]
    acc = acc_dtype(x.dtype)
    y = torch.empty((M, N), dtype=x.dtype, device=x.device) if y_out is None else y_out
    s = torch.empty((M, N) if save_for_backward else (0,), dtype=acc, device=x.device)
    if M == 0 or N == 0:
        zeros = lambda n: torch.zeros((n,), dtype=acc, device=x.device)  # noqa: E731
        return (y, s, zeros(M), zeros(N)), []
    alpha, eps = _fp64_scalars(x, alpha, alpha_value, eps, eps_value)
    bias = bias.contiguous() if bias is not None else None  # kernels read a dense (N,) vector
    x, weight = k_major_if_huge(x, 1), k_major_if_huge(weight, 1)
    cfg = config or pick_dense_config(M, N, K, x.dtype, device=x.device)
    tiles = cdiv(M, cfg.block_m) * cdiv(N, cfg.block_n)
    use_tma = cfg.tma and tma_ready(x, weight)
    if not use_tma or x.element_size() != 2:  # warp-specialized: the TMA kernel, 16-bit io
        cfg = cfg.unspecialized()
    if broken_in_loop_norms(cfg, x.element_size(), on_tma=use_tma):
        cfg = replace(cfg, norms_in_loop=False)  # a TMA tile on the pointer kernel too
    calls: list[KernelCall] = []
    # the GEMM overlaps the norm pass where there is one (its main loop reads x and W only)
    overlap = (use_tma or not cfg.norms_in_loop) and overlap_norm_pass(x.device, x, weight)
    if use_tma and cfg.norms_in_loop:  # ||x||^2 from the main loop, ||w||^2 from the pass
        nx = torch.empty((M,), dtype=acc, device=x.device)
        (nw, _), calls = plan_row_sqnorms(weight, overlap=overlap)
    elif cfg.norms_in_loop:
        nx = torch.empty((M,), dtype=acc, device=x.device)
        nw = torch.empty((N,), dtype=acc, device=x.device)
    else:
        (nx, nw), calls = plan_row_sqnorms(x, weight, overlap=overlap)
    # what the two forward kernels share: the optional operands (y stands in for an absent
    # one) and the epilogue's constexprs
    operands = (
        bias if bias is not None else y,
        alpha if alpha is not None else y,
        eps if eps is not None else y,
    )
    epilogue = dict(
        HAS_BIAS=bias is not None, ALPHA_FROM_PTR=alpha is not None, EPS_FROM_PTR=eps is not None,
        STORE_S=save_for_backward, DOT_PRECISION=precision, UPCAST=upcast_operands(x.dtype),
        OUT_MAX=out_max(x.dtype), FAST_RCP=fast_quotient(x.dtype, eps, eps_value), GDC_WAIT=overlap,
        GEMM_ONLY=False, **cfg.launch_options(),
    )  # fmt: skip
    if use_tma:
        # y and s leave by TMA too when their rows are 16-byte aligned (N a multiple of 8) and
        # the store staging fits next to the pipeline (a tile not pruned for sm_90 fits; a
        # forced or foreign one saving s may not: pointer stores need less)
        width = cfg.block_n // cfg.epilogue_split
        tma_store = (
            not cfg.warp_specialize
            and tma_ready(y, *([s] if save_for_backward else []))
            and (not save_for_backward or pipelined_smem_bytes(cfg, x.element_size()) <= SM90_SMEM_BYTES)
        )
        y_out = TensorDescriptor.from_tensor(y, [cfg.block_m, width]) if tma_store else y
        s_out = (
            TensorDescriptor.from_tensor(s, [cfg.block_m, width]) if tma_store and save_for_backward else s
        )
        calls.append(KernelCall(
            yat_dense_fwd_tma_kernel, (persistent_programs(x.device, tiles),),
            (TensorDescriptor.from_tensor(x, [cfg.block_m, cfg.block_k]),
             TensorDescriptor.from_tensor(weight, [cfg.block_n, cfg.block_k]),
             *operands, nx, nw, y_out, s_out, M, N, K,
             y.stride(0), y.stride(1), N if save_for_backward else 0, 1, alpha_value, eps_value),
            dict(epilogue, INT64=needs_int64(y, s), EPILOGUE_SPLIT=cfg.epilogue_split,
                 TMA_STORE=tma_store, X_NORMS_IN_LOOP=cfg.norms_in_loop,
                 WARP_SPECIALIZE=cfg.warp_specialize),
            persistent_tiles=tiles, pdl=overlap,
        ))  # fmt: skip
        return (y, s, nx, nw), calls
    calls.append(KernelCall(
        yat_dense_fwd_kernel, (tiles,),
        (x, weight, *operands, nx, nw, y, s, M, N, K,
         x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
         y.stride(0), y.stride(1), N if save_for_backward else 0, 1, alpha_value, eps_value),
        dict(epilogue, NORMS_IN_LOOP=cfg.norms_in_loop, IS_FP64=x.dtype == torch.float64,
             INT64=needs_int64(x, weight, y, s),
             EPILOGUE_SPLIT=1 if cfg.norms_in_loop else cfg.epilogue_split),
        pdl=overlap,
    ))  # fmt: skip
    return (y, s, nx, nw), calls


def dense_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    save_for_backward: bool,
    config: TileConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward of x (M, K) against weight (N, K).

    Returns (y (M, N) io dtype, s (M, N) acc dtype or empty, ||x||^2 (M,), ||w||^2 (N,)).
    s and the norms are what the backward needs; s is only written when save_for_backward.
    `config` overrides the tuned/default tile (the autotune harness uses it).
    """
    if not use_triton(x):
        with without_autocast(x):
            return _dense_fwd_torch(x, weight, bias, alpha, alpha_value, eps, eps_value, save_for_backward)
    outputs, calls = plan_dense_fwd(
        x, weight, bias, alpha, alpha_value, eps, eps_value, precision, save_for_backward, config
    )
    for call in calls:
        call.run()
    return outputs


def _fp64_scalars(
    x: Tensor, alpha: Tensor | None, alpha_value: float, eps: Tensor | None, eps_value: float
) -> tuple[Tensor | None, Tensor | None]:
    """Triton passes Python floats as fp32: for fp64 io, hand constants over as fp64 tensors."""
    if x.dtype != torch.float64:
        return alpha, eps
    as_t = lambda v: torch.full((1,), v, dtype=torch.float64, device=x.device)  # noqa: E731
    return (alpha if alpha is not None else as_t(alpha_value)), (eps if eps is not None else as_t(eps_value))


def plan_bwd_gemm(
    a: Tensor,
    b: Tensor,
    e: Tensor,
    v: Tensor,
    precision: str,
    config: TileConfig | None = None,
    problem: dict[str, int] | None = None,
) -> tuple[Tensor, list[KernelCall]]:
    """c = a @ b + 2 e * v[:, None] in e's dtype (see yat_dense_bwd_gemm_kernel). v: (R,), or
    (parts, R) partial sums with a unit stride along R: the pointer kernel's epilogue adds
    up to EPILOGUE_PARTS of them itself; more, or more than one for the persistent TMA
    kernel, are summed first (one launch).

    `problem`: the layer's {"M", "N", "K"}, the shape its tuned backward config is stored under.
    """
    R, KD = a.shape
    C = b.shape[1]
    v = v if v.dim() == 2 else v[None]
    if v.shape[1] != R or (R > 1 and v.stride(1) != 1):
        raise ValueError(
            f"plan_bwd_gemm: v must be (R,) or (parts, R) with unit stride along R, got {v.shape}"
        )
    vp = (v.shape[0], v.stride(0))
    c = torch.empty((R, C), dtype=e.dtype, device=e.device)
    if R == 0 or C == 0:
        return c, []
    cfg = config or pick_dense_config(R, C, KD, e.dtype, "bwd", problem=problem, device=e.device)
    tiles = cdiv(R, cfg.block_m) * cdiv(C, cfg.block_n)
    a_tma = _tma_operand(a, cfg.block_m, cfg.block_k) if cfg.tma and a.dtype == b.dtype else None
    b_tma = _tma_operand(b, cfg.block_k, cfg.block_n) if a_tma else None
    if not (a_tma and b_tma) or a.element_size() != 2:  # warp-specialized: TMA, 16-bit io
        cfg = cfg.unspecialized()
    shared = dict(
        DOT_PRECISION=precision, UPCAST=upcast_operands(e.dtype), OUT_MAX=0.0, **cfg.launch_options()
    )
    # Each partial costs the epilogue a load waiting on L2: a few cost less than a reduction
    # launch, dozens more. A loop in the persistent kernel's epilogue costs it the prefetch
    # of the next e tile (sm_90 compile, Triton 3.6: 32 KB less shared memory, 15 more
    # registers), so it takes one.
    if vp[0] > (1 if a_tma and b_tma else EPILOGUE_PARTS):
        v = v.sum(0, keepdim=True)
        vp = (1, v.stride(0))
    if a_tma and b_tma:
        call = KernelCall(
            yat_dense_bwd_gemm_tma_kernel, (persistent_programs(e.device, tiles),),
            (a_tma[0], b_tma[0], e, v, c, R, C, KD, *vp, e.stride(0), e.stride(1), c.stride(0), c.stride(1)),
            dict(shared, INT64=needs_int64(e, c), A_T=a_tma[1], B_T=b_tma[1],
                 WARP_SPECIALIZE=cfg.warp_specialize),
            persistent_tiles=tiles,
        )  # fmt: skip
        return c, [call]
    a, b = k_major_if_huge(a, 1), k_major_if_huge(b, 0)
    call = KernelCall(
        yat_dense_bwd_gemm_kernel, (tiles,),
        (a, b, e, v, c, R, C, KD, *vp,
         a.stride(0), a.stride(1), b.stride(0), b.stride(1),
         e.stride(0), e.stride(1), c.stride(0), c.stride(1)),
        dict(shared, IS_FP64=e.dtype == torch.float64, INT64=needs_int64(a, b, e, c)),
    )  # fmt: skip
    return c, [call]


def _tma_operand(t: Tensor, rows: int, cols: int) -> tuple[TensorDescriptor, bool] | None:
    """(descriptor, transposed) for a GEMM operand read in (rows, cols) tiles: on t itself
    when its rows are contiguous, on the contiguous t^T (boxes (cols, rows)) when its
    columns are; None when TMA cannot read it (`tma_ready`)."""
    if t.stride(1) == 1 and tma_ready(t):
        return TensorDescriptor.from_tensor(t, [rows, cols]), False
    if t.stride(0) == 1 and tma_ready(t.t()):
        return TensorDescriptor.from_tensor(t.t(), [cols, rows]), True
    return None


def _bwd_gemm(
    a: Tensor,
    b: Tensor,
    e: Tensor,
    v: Tensor,
    precision: str,
    problem: dict[str, int],
    config: TileConfig | None,
) -> Tensor:
    cfg = pick_dense_config(
        a.shape[0], b.shape[1], a.shape[1], e.dtype, "bwd", problem=problem, override=config, device=e.device
    )
    c, calls = plan_bwd_gemm(a, b, e, v, precision, cfg, problem=problem)
    for call in calls:
        call.run()
    return c


def gs_dtype(io: torch.dtype) -> torch.dtype:
    """dtype of dL/ds, the backward GEMMs' operand. fp16 keeps it in fp32: gs holds
    gu = 2 g alpha u / q, which passes 65504 near x ~ w even when dx and dW do not; the
    GEMMs then run as TF32, whose operands hold fp16 inputs exactly and round gs like fp16
    would, at half the fp16 tensor-core rate. bf16 has the range and stays bf16."""
    return torch.float32 if io == torch.float16 else io


def gemm_precision(io: torch.dtype, precision: str) -> str:
    """tl.dot precision of the backward GEMMs (TF32 for fp16 io: see gs_dtype)."""
    return "tf32" if io == torch.float16 else precision


def near_tau(dtype: torch.dtype, precision: str) -> float:
    """NEAR_TAU for an io dtype and dot precision (TF32 operands round like fp16)."""
    key = "tf32" if dtype == torch.float32 and precision == "tf32" else str(dtype).removeprefix("torch.")
    return NEAR_TAU[key]


def plan_bwd_prep(
    grad: Tensor,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    need_db: bool,
    need_dalpha: bool,
    need_deps: bool,
    groups: int = 1,
    near_pass: bool = True,
) -> tuple[tuple[Tensor, ...], list[KernelCall]]:
    """Allocate gs and the partial-sum buffers, plan the elementwise backward pass.

    Returns ((gs, row_gd, cols, part_alpha, part_eps, tile_near), calls); the partials are
    reduced by the caller (sum over the tile axes), deterministically. cols
    holds the column partials of gd (cols[:, 0]) and, with need_db, of gu (cols[:, 1]).
    `groups` splits the N columns into groups with their own row norms, nx (M, groups)
    (convolution); row_gd is then (groups, tiles, M). `near_pass=False` keeps near pairs in
    gs and the sums, for callers without the exact near-pair pass.
    """
    M, N = grad.shape
    dev, io = grad.device, grad.dtype
    acc = acc_dtype(io)
    alpha, eps = _fp64_scalars(grad, alpha, alpha_value, eps, eps_value)
    bias = bias.contiguous() if bias is not None else None
    Ng = N // groups
    bm, bn, warps = elementwise_block(M, Ng, interpreting=INTERPRETING, elem_bytes=io.itemsize)
    tm, tn = cdiv(M, bm), cdiv(Ng, bn)
    tiles = groups * tm * tn
    # Every slot of the partial-sum buffers is written by exactly one program (a test fills
    # them with NaN first): torch.empty spares the backward its memset launches.
    gs = torch.empty((M, N), dtype=gs_dtype(io), device=dev)
    row_gd = torch.empty((groups, tn, M), dtype=acc, device=dev)
    cols = torch.empty((tm, 1 + need_db, N), dtype=acc, device=dev)
    part_alpha = torch.empty((tiles if need_dalpha else 0,), dtype=acc, device=dev)
    part_eps = torch.empty((tiles if need_deps else 0,), dtype=acc, device=dev)
    tile_near = torch.empty((tiles,), dtype=torch.int32, device=dev)
    buffers = (gs, row_gd, cols, part_alpha, part_eps, tile_near)
    if M == 0 or N == 0:
        return buffers, []
    call = KernelCall(
        yat_dense_bwd_prep_kernel, (tm * tn, groups),
        (grad, s, nx, nw, bias if bias is not None else gs,
         alpha if alpha is not None else gs, eps if eps is not None else gs,
         gs, row_gd, cols, part_alpha, part_eps, tile_near,
         M, N, Ng, tn, grad.stride(0), grad.stride(1), s.stride(0), s.stride(1),
         gs.stride(0), gs.stride(1), alpha_value, eps_value),
        dict(HAS_BIAS=bias is not None, ALPHA_FROM_PTR=alpha is not None,
             EPS_FROM_PTR=eps is not None, NEED_DB=need_db, NEED_DALPHA=need_dalpha,
             NEED_DEPS=need_deps, NEAR_TAU=near_tau(io, precision) if near_pass else 0.0,
             FAST_RCP=fast_quotient(io, eps, eps_value),
             IS_FP64=io == torch.float64,
             OUT_MAX=0.0, INT64=needs_int64(grad, s, gs),
             BLOCK_M=bm, BLOCK_N=bn, num_warps=warps),
    )  # fmt: skip
    return buffers, [call]


def plan_bwd_near(
    grad: Tensor,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    tile_near: Tensor,
    x: Tensor,
    weight: Tensor,
    dx: Tensor | None,
    dw: Tensor | None,
) -> list[KernelCall]:
    """Plan the exact near-pair updates of dx and dW (either may be None), in place, in one
    launch: dx's bands first, then dW's."""
    M, N = grad.shape
    K = x.shape[1]
    if M == 0 or N == 0 or K == 0 or (dx is None and dw is None):
        return []
    io = grad.dtype
    alpha, eps = _fp64_scalars(grad, alpha, alpha_value, eps, eps_value)
    bias = bias.contiguous() if bias is not None else None
    bm, bn, _ = elementwise_block(M, N, interpreting=INTERPRETING, elem_bytes=io.itemsize)
    dx_bands = cdiv(M, bm) if dx is not None else 0
    dw_bands = cdiv(N, bn) if dw is not None else 0
    some = dx if dx is not None else dw
    dx, dw = (dx if dx is not None else some), (dw if dw is not None else some)
    return [KernelCall(
        yat_dense_bwd_near_kernel, (dx_bands + dw_bands,),
        (grad, s, nx, nw, bias if bias is not None else some,
         alpha if alpha is not None else some, eps if eps is not None else some,
         tile_near, x, weight, dx, dw, M, N, K,
         grad.stride(0), grad.stride(1), s.stride(0), s.stride(1),
         x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
         dx.stride(0), dx.stride(1), dw.stride(0), dw.stride(1), dx_bands, alpha_value, eps_value),
        dict(HAS_BIAS=bias is not None, ALPHA_FROM_PTR=alpha is not None,
             EPS_FROM_PTR=eps is not None, NEAR_TAU=near_tau(io, precision),
             FAST_RCP=fast_quotient(io, eps, eps_value),
             IS_FP64=io == torch.float64, OUT_MAX=0.0,
             INT64=needs_int64(grad, s, x, weight, dx, dw),
             BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=min(32, max(16, next_pow2(K))),
             BLOCK_T=NEAR_SCAN_TILES, num_warps=4),
    )]  # fmt: skip


def dense_bwd(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    precision: str,
    needs: list[bool],
    config: TileConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dx, dW, db, dalpha, deps) per SPEC.md section 2.

    `needs` flags which of the five are wanted; the others come back as empty tensors.
    `config` overrides the two GEMMs' tuned/default tile (a 1x1 conv passes its own tuning).
    Gradients are not saturated (OUT_MAX=0): an fp16 overflow must reach the caller as inf,
    as with PyTorch's own layers, so that AMP's GradScaler sees it and backs off.
    Three steps: the elementwise pass (gs, partial sums, near-pair counts), the two GEMMs
    with their rank-1 terms, then the exact near-pair updates (one int load per tile when
    there are none).
    """
    if not use_triton(x):
        with without_autocast(x):
            return _dense_bwd_torch(
                grad, x, weight, bias, alpha, alpha_value, eps, eps_value, s, nx, nw, needs
            )
    need_dx, need_dw, need_db, need_dalpha, need_deps = needs
    need_db = need_db and bias is not None
    need_dalpha = need_dalpha and alpha is not None
    need_deps = need_deps and eps is not None
    elementwise = (grad, s, nx, nw, bias, alpha, alpha_value, eps, eps_value, precision)
    (gs, row_gd, cols, part_alpha, part_eps, tile_near), calls = plan_bwd_prep(
        *elementwise, need_db, need_dalpha, need_deps
    )
    for call in calls:
        call.run()

    def empty() -> Tensor:  # a fresh one per slot: op outputs must not alias
        return torch.empty((0,), dtype=x.dtype, device=x.device)

    gp = gemm_precision(x.dtype, precision)
    layer = {"M": x.shape[0], "N": weight.shape[0], "K": x.shape[1]}  # both GEMMs' tuned-config key
    # The GEMMs take the partial sums of gd as they are (plan_bwd_gemm sums them first where
    # there are many); where the dW GEMM's would be summed anyway and db is wanted, one sum
    # serves both.
    if need_dw and need_db and cols.shape[0] > EPILOGUE_PARTS:
        sums = cols.sum(0)
        col_gd, gu_sum = sums[:1], sums[1]
    else:
        col_gd, gu_sum = cols[:, 0], (cols[:, 1].sum(0) if need_db else None)
    dx = _bwd_gemm(gs, weight, x, row_gd[0], gp, layer, config) if need_dx else empty()
    dw = _bwd_gemm(gs.t(), x, weight, col_gd, gp, layer, config) if need_dw else empty()
    near = (dx if need_dx else None, dw if need_dw else None)
    for call in plan_bwd_near(*elementwise, tile_near, x, weight, *near):
        call.run()
    db = gu_sum.to(bias.dtype) if need_db else empty()
    dalpha = part_alpha.sum().reshape(alpha.shape).to(alpha.dtype) if need_dalpha else empty()
    deps = part_eps.sum().reshape(eps.shape).to(eps.dtype) if need_deps else empty()
    return dx, dw, db, dalpha, deps


# ---------------------------------------------------------------------------------------
# Plain-PyTorch path: CPU tensors without TRITON_INTERPRET=1 and non-CUDA devices.
# Same math, same saved tensors, so the registered autograd serves both paths.


def _scalar(t: Tensor | None, value: float, acc: torch.dtype) -> Tensor | float:
    return t.to(acc).reshape(()) if t is not None else value


def _epilogue_torch(
    s: Tensor, nx: Tensor, nw: Tensor, bias: Tensor | None, eps: Tensor | float
) -> tuple[Tensor, Tensor, Tensor]:
    """(u, unclamped distance, q) from the saved quantities."""
    u = s + bias.to(s.dtype) if bias is not None else s
    d_raw = nx[:, None] + nw[None, :] - 2.0 * s
    return u, d_raw, d_raw.clamp_min(0.0) + eps


def _dense_fwd_torch(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = acc_dtype(x.dtype)
    xf, wf = x.to(acc), weight.to(acc)
    s = xf @ wf.t()
    nx, nw = (xf * xf).sum(1), (wf * wf).sum(1)
    u, _, q = _epilogue_torch(s, nx, nw, bias, _scalar(eps, eps_value, acc))
    y = saturating_cast(u * (u / q) * _scalar(alpha, alpha_value, acc), x.dtype)  # u^2 may overflow
    if not save_for_backward:
        s = s.new_empty((0,))
    return y, s, nx, nw


def _dense_bwd_torch(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    # The saved s and norms are fp32, but the GEMM form of the distance gradient cancels
    # |gd| |w| against itself (see yat_dense_bwd_prep_kernel): without the kernels' exact
    # near-pair pass, this path runs its backward in float64 where the device has it.
    acc = torch.float32 if x.device.type == "mps" else torch.float64

    def empty() -> Tensor:
        return x.new_empty((0,))

    u, d_raw, q = _epilogue_torch(s.to(acc), nx.to(acc), nw.to(acc), bias, _scalar(eps, eps_value, acc))
    ga = grad.to(acc) * _scalar(alpha, alpha_value, acc)
    r = u / q
    gu = 2.0 * ga * r
    gq = -ga * r * r
    gd = torch.where(d_raw >= 0, gq, torch.zeros_like(gq))
    gs = gu - 2.0 * gd
    xf, wf = x.to(acc), weight.to(acc)
    dx = (gs @ wf + 2.0 * xf * gd.sum(1, keepdim=True)).to(x.dtype) if needs[0] else empty()
    dw = (gs.t() @ xf + 2.0 * wf * gd.sum(0)[:, None]).to(x.dtype) if needs[1] else empty()
    db = gu.sum(0).to(bias.dtype) if needs[2] and bias is not None else empty()
    dalpha = (
        (grad.to(acc) * u * r).sum().reshape(alpha.shape).to(alpha.dtype)
        if needs[3] and alpha is not None
        else empty()
    )
    deps = gq.sum().reshape(eps.shape).to(eps.dtype) if needs[4] and eps is not None else empty()
    return dx, dw, db, dalpha, deps


# ---------------------------------------------------------------------------------------
# Registered ops


@triton_op("yat_triton::dense_fwd", mutates_args=())
def _dense_fwd_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return dense_fwd(x, weight, bias, alpha, alpha_value, eps, eps_value, precision, save_for_backward)


@triton_op("yat_triton::dense_bwd", mutates_args=())
def _dense_bwd_op(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    precision: str,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return dense_bwd(grad, x, weight, bias, alpha, alpha_value, eps, eps_value, s, nx, nw, precision, needs)


register_yat_autograd(_dense_fwd_op, _dense_bwd_op, "yat_linear")
DENSE = YatOp(_dense_fwd_op, _dense_bwd_op, dense_fwd, dense_bwd, "yat_linear")


# ---------------------------------------------------------------------------------------
# Functional API


def yat_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    alpha: float | Tensor | None = None,
    eps: float | Tensor = 1e-5,
    precision: str | None = None,
) -> Tensor:
    """ⵟ-dense layer: y = alpha * (x.w_j + b_j)^2 / (max(||x||^2 + ||w_j||^2 - 2 x.w_j, 0) + eps).

    Args:
        x: input, shape (*, K), float16 / bfloat16 / float32 / float64.
        weight: shape (N, K), same dtype and device as x.
        bias: optional, shape (N,), same dtype and device; it sits inside the square.
        alpha: None (no scaling), a Python float (constant) or a one-element tensor
            (learnable; any float dtype, its gradient has its dtype).
        eps: a finite float > 0, or a one-element tensor (e.g. softplus of a learnable raw
            parameter) holding one: checked on the CPU; on the GPU its value is not read
            (a host sync each call), and one that is not finite and > 0 makes y NaN.
        precision: for float32 inputs on the GPU, "ieee" (exact fp32) or "tf32" (tensor
            cores); None follows torch.backends.cuda.matmul.allow_tf32. Ignored otherwise:
            fp16/bf16 always accumulate in fp32.

    Returns:
        Tensor of shape (*, N) and x's dtype; fp16/bf16 results saturate to the finite
        range instead of overflowing to inf (gradients do not saturate: an overflow
        reaches AMP's GradScaler as inf). NaN/Inf in the input propagate.

    CUDA tensors run the Triton kernels; CPU tensors run the same kernels through the Triton
    interpreter when TRITON_INTERPRET=1 was set before import, else a plain-PyTorch
    implementation of the same math. Gradients are first order only.

    Under torch.autocast (CUDA or CPU) x, weight and bias are cast to the autocast dtype as
    for F.linear (float64 excepted), so fp32 parameters train in bf16 / fp16 with fp32
    gradients; the result has the autocast dtype.
    """
    x, weight, bias = _checks.autocast_operands(x, weight, bias)
    _checks.check_float_tensor("x", x)
    _checks.check_float_tensor("weight", weight)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (*, K), got a 0-d tensor")
    if weight.dim() != 2:
        raise ValueError(f"weight must have shape (N, K), got shape {tuple(weight.shape)}")
    _checks.check_same("weight", weight, "x", x)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x has K={x.shape[-1]} features (shape {tuple(x.shape)}) but weight expects "
            f"K={weight.shape[1]} (shape {tuple(weight.shape)})"
        )
    if bias is not None:
        _checks.check_float_tensor("bias", bias)
        _checks.check_same("bias", bias, "x", x)
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got shape {tuple(bias.shape)}")
    if alpha is not None:
        _checks.check_scalar_arg("alpha", alpha, x, positive=False)
    _checks.check_scalar_arg("eps", eps, x, positive=True)
    _checks.check_precision(precision)

    alpha_t = alpha if isinstance(alpha, Tensor) else None
    alpha_value = 1.0 if alpha is None else (1.0 if alpha_t is not None else float(alpha))
    eps_t = eps if isinstance(eps, Tensor) else None
    eps_value = 1.0 if eps_t is not None else float(eps)
    lead = x.shape[:-1]
    x2 = x.reshape(math.prod(lead), x.shape[-1])  # -1 is ambiguous when K == 0
    y = DENSE(x2, weight, bias, alpha_t, alpha_value, eps_t, eps_value,
              _checks.resolve_precision(precision, x.dtype))  # fmt: skip
    return y.reshape(*lead, weight.shape[0])
