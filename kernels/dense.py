"""ⵟ-dense kernels: y_ij = alpha * (x_i.w_j + b_j)^2 / (max(||x_i||^2 + ||w_j||^2 - 2 x_i.w_j, 0) + eps).

Forward: one tiled GEMM with the whole ⵟ epilogue fused (`yat_dense_fwd_kernel`). The row
norms come either from a cheap separate pass (`row_sqnorm_kernel`, default) or from the main
loop (`NORMS_IN_LOOP`). Statically, for a bf16 128x128x64 sm_90 tile, the in-loop variant
needs ~150 registers and squeezes the pipeline to 64 KB of shared memory, while the
precomputed variant needs ~117 registers and keeps 96 KB: the norm pass reads x and W once
(O(MK + NK) bytes, a few percent of the GEMM time at M=N=K=4096), whereas in-loop norms are
recomputed by every one of the N/BLOCK_N (resp. M/BLOCK_M) programs sharing a row tile and
cost registers in the hot loop. Both variants stay in the config space so the autotuner
can confirm the choice per shape on a real GPU.

`yat_dense_fwd_tma_kernel` is the persistent variant (as many programs as the SMs hold,
TMA loads, TMA stores of y and s where aligned, optionally ||x||^2 summed from the x tiles
it already holds); `yat_dense_bwd_gemm_tma_kernel` the same for the backward GEMMs. Both are config
variants (`TileConfig.tma`); the launchers fall back to the pointer kernels where TMA
cannot read the operands or a graph is being traced.

Backward (SPEC.md section 2), two passes:
1. `yat_dense_bwd_prep_kernel`: from the upstream gradient g and the forward's saved fp32
   s = x.w, computes gs = dL/ds (stored in the io dtype, the GEMM operand) and
   deterministic per-tile partial sums of gd (rows and columns), gu (columns: db),
   g u^2/q (dalpha) and gq (deps).
2. `yat_dense_bwd_gemm_kernel`, twice: dx = gs @ W + 2 x * rowsum(gd) and
   dW = gs^T @ x + 2 W * colsum(gd), the rank-1 corrections fused into the GEMM epilogue,
   which also adds up the prep pass's partial sums of gd where there are a few (a load
   each; more are summed first, and the persistent TMA variant always gets them summed:
   `dense_bwd`, `plan_bwd_gemm`).
Recomputing gs inside the GEMMs would repeat its ~10 CUDA-core flops per element once per
output column tile (32 times at 4096^3 with 128-wide tiles: ~5 GFLOP of CUDA-core work per
GEMM, ~90 us at ~60 TFLOP/s next to a ~175 us GEMM); one elementwise pass plus an io-dtype
gs round trip (~134 MB at 4096^2, ~28 us at 4.8 TB/s) is cheaper.
"""

from __future__ import annotations

from dataclasses import replace

import triton
import triton.language as tl

from kernels._common import (
    SM90_SMS,
    TileConfig,
    cdiv,
    div_plus_eps,
    fits_sm90,
    gdc_launch_dependents,
    gdc_wait,
    grouped_tile,
    load_scalars,
    next_pow2,
    saturate,
    upcast,
)


@triton.jit
def row_sqnorm_kernel(
    a_ptr,
    b_ptr,
    out_a_ptr,
    out_b_ptr,
    RA,
    RB,
    K,
    stride_ar,
    stride_ak,
    stride_br,
    stride_bk,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    EARLY_LAUNCH: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[r] = sum_k m[r, k]^2 for two matrices with K columns in one launch (x and W): the
    first cdiv(RA, BLOCK_R) row tiles are rows of a, the others rows of b (RB = 0: a only);
    program p takes tiles p, p + programs, ... (one each on the usual grid of one program a
    tile). Accumulates in fp32 (fp64 for fp64 input).

    a_ptr: (RA, K), b_ptr: (RB, K), any float dtype, strided.
    out_a_ptr: (RA,), out_b_ptr: (RB,) float32 (float64 when IS_FP64), contiguous.

    Memory-bound: the launcher sizes (BLOCK_R, BLOCK_K) to ~8 KB a step and many programs,
    so that enough loads are in flight (at a 4096^2 bf16 operand, 512 programs a matrix).
    EARLY_LAUNCH (a GPU pass that a forward GEMM follows with programmatic dependent launch,
    `yat_triton._launch.overlap_norm_pass`): every program first lets that GEMM launch, whose
    programs then start as the SMs have room: as this pass's programs drain, on its usual
    grid; at once beside them with one program an SM (`norm_pass_programs`). Its main loop
    runs while this pass reads, and it waits for the norms (`gdc_wait`) only before its
    first epilogue.
    """
    if EARLY_LAUNCH:
        gdc_launch_dependents()
    tiles_a = tl.cdiv(RA, BLOCK_R)
    tiles = tiles_a + tl.cdiv(RB, BLOCK_R)
    for tile in range(tl.program_id(0), tiles, tl.num_programs(0)):
        if tile < tiles_a:
            _row_sqnorm_tile(
                a_ptr, out_a_ptr, tile, RA, K, stride_ar, stride_ak, IS_FP64, INT64, BLOCK_R, BLOCK_K
            )
        else:
            b_tile = tile - tiles_a
            _row_sqnorm_tile(
                b_ptr, out_b_ptr, b_tile, RB, K, stride_br, stride_bk, IS_FP64, INT64, BLOCK_R, BLOCK_K
            )


@triton.jit
def _row_sqnorm_tile(
    m_ptr,
    out_ptr,
    tile,
    R,
    K,
    stride_r,
    stride_k,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_r = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_k = tl.arange(0, BLOCK_K)
    if INT64:
        offs_r = offs_r.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    mask_r = offs_r < R
    ptrs = m_ptr + offs_r[:, None] * stride_r + offs_k[None, :] * stride_k
    if IS_FP64:
        acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        mask = mask_r[:, None] & (offs_k[None, :] < K - k0 * BLOCK_K)
        v = tl.load(ptrs, mask=mask, other=0.0).to(acc.dtype)
        acc += v * v
        ptrs += BLOCK_K * stride_k
    tl.store(out_ptr + offs_r, tl.sum(acc, axis=1), mask=mask_r)


@triton.jit
def yat_dense_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    nx_ptr,
    nw_ptr,
    y_ptr,
    s_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    stride_sm,
    stride_sn,
    alpha_value,
    eps_value,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    NORMS_IN_LOOP: tl.constexpr,
    STORE_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    EPILOGUE_SPLIT: tl.constexpr,
    FAST_RCP: tl.constexpr,
    GDC_WAIT: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Fused ⵟ-dense forward for one (BLOCK_M, BLOCK_N) output tile.

    x_ptr:     (M, K) io dtype (fp16 / bf16 / fp32 / fp64), strided.
    w_ptr:     (N, K) io dtype, strided.
    b_ptr:     (N,) io dtype, contiguous; read only when HAS_BIAS.
    alpha_ptr: (1,) any float; read when ALPHA_FROM_PTR, else `alpha_value` is used.
    eps_ptr:   (1,) any float; read when EPS_FROM_PTR, else `eps_value` is used.
    nx_ptr:    (M,) acc dtype, ||x_i||^2. Read unless NORMS_IN_LOOP; with NORMS_IN_LOOP and
               STORE_S it is written instead (by the pid_n == 0 column of programs).
    nw_ptr:    (N,) acc dtype, ||w_j||^2; same rules (written by pid_m == 0).
    y_ptr:     (M, N) io dtype output, strided.
    s_ptr:     (M, N) acc dtype, x.w saved for backward; written only when STORE_S.

    Constexprs: DOT_PRECISION "ieee" | "tf32" for fp32 operands; UPCAST converts operands to
    fp32 before tl.dot (set only under the interpreter, whose bf16 dot is broken); IS_FP64
    accumulates in fp64; OUT_MAX > 0 saturates the store to +-OUT_MAX; INT64 widens row and
    column offsets for tensors past 2^31 elements; EPILOGUE_SPLIT (1, 2, 4; 1 with
    NORMS_IN_LOOP) runs the epilogue on that many column slices of the tile; FAST_RCP
    (fp32 accumulation, eps a number >= 2^-124: `fast_quotient`) divides by d + eps with
    a reciprocal, 5 instructions a value fewer (`div_plus_eps`). GDC_WAIT: launched with
    programmatic dependent launch right after the norm pass, which may still be running:
    the main loop reads x and W only, and the epilogue waits for the pass (`gdc_wait`)
    before it reads the norms (`yat_triton._launch.overlap_norm_pass`). GEMM_ONLY: a
    diagnostic, y = s (`fwd_store`).

    NORMS_IN_LOOP sums the squares into 8-wide partials along K, thread-local adds, and
    reduces across threads once after the loop: SASS instructions a main-loop step, bf16,
    saving s, Triton 3.6 (`python -m autotune.inspect --config 64x64x64:4:4:nil --save`):
    64x64x64 on 4 warps 328 -> 257 (122 without in-loop norms), 128x64x64 481 -> 369,
    128x128x64 on 8 warps 332 -> 252; registers and shared memory unchanged.
    """
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # Edges are masked, not clamped (tl.where(mask, offs, 0)): clamping hides the contiguity
    # of an operand whose fast dimension is M or N (transposed views, dW's gs^T), which then
    # bypasses the async-copy pipeline (measured on sm_90: 226-255 registers, 1/3 of the
    # shared memory, against ~116 registers with masks). Triton specializes sizes divisible
    # by 16, which keeps the masks constant over each 16-wide vector.
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn

    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if NORMS_IN_LOOP:  # 8-wide partials along K (thread-local adds a step; one
        # cross-thread sum after the loop, as the conv forward's patch norm)
        nx = tl.zeros((BLOCK_M, BLOCK_K // 8), dtype=acc.dtype)
        nw = tl.zeros((BLOCK_K // 8, BLOCK_N), dtype=acc.dtype)
    for k0 in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k0 * BLOCK_K
        a = tl.load(x_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(w_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        if NORMS_IN_LOOP:
            af = upcast(a, acc.dtype)
            bf = upcast(b, acc.dtype)
            nx += tl.sum(tl.reshape(af * af, (BLOCK_M, BLOCK_K // 8, 8)), axis=2)
            nw += tl.sum(tl.reshape(bf * bf, (BLOCK_K // 8, 8, BLOCK_N)), axis=1)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    alpha, eps = load_scalars(
        alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64
    )
    if GDC_WAIT:  # the norm pass's outputs are complete and visible past this
        gdc_wait()
    if NORMS_IN_LOOP:
        nx = tl.sum(nx, axis=1)
        nw = tl.sum(nw, axis=0)
        if STORE_S:  # every program computed them; the first row/column of tiles saves
            if pid_n == 0:
                tl.store(nx_ptr + offs_m, nx, mask=mask_m)
            if pid_m == 0:
                tl.store(nw_ptr + offs_n, nw, mask=mask_n)
    else:
        nx = tl.load(nx_ptr + offs_m, mask=mask_m, other=0.0)
        nw = nx  # unused: the epilogue reads ||w||^2 from nw_ptr
    fwd_store(
        acc, nx, nw, offs_m * stride_ym, offs_m * stride_sm, mask_m, pid_n * BLOCK_N, N,
        nw_ptr, b_ptr, y_ptr, s_ptr, stride_yn, stride_sn, alpha, eps, 0,
        not NORMS_IN_LOOP, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_M, BLOCK_N, EPILOGUE_SPLIT, False, FAST_RCP,
        GEMM_ONLY,
    )  # fmt: skip


@triton.jit
def yat_dense_fwd_tma_kernel(
    x_desc,
    w_desc,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    nx_ptr,
    nw_ptr,
    y_ptr,
    s_ptr,
    M,
    N,
    K,
    stride_ym,
    stride_yn,
    stride_sm,
    stride_sn,
    alpha_value,
    eps_value,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    STORE_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    EPILOGUE_SPLIT: tl.constexpr,
    FAST_RCP: tl.constexpr,
    TMA_STORE: tl.constexpr,
    X_NORMS_IN_LOOP: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    GDC_WAIT: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Persistent ⵟ-dense forward with TMA loads: the same math as `yat_dense_fwd_kernel`.

    x_desc: TMA descriptor of x (M, K), K-contiguous, block (BLOCK_M, BLOCK_K).
    w_desc: TMA descriptor of W (N, K), K-contiguous, block (BLOCK_N, BLOCK_K).
    TMA_STORE: y_ptr and s_ptr are TMA descriptors of y and s with (BLOCK_M,
    BLOCK_N / EPILOGUE_SPLIT) boxes: the epilogue slices leave through shared memory as
    asynchronous bulk copies, clipped at the edges by the hardware. Otherwise pointers.
    X_NORMS_IN_LOOP: ||x_i||^2 is summed from the x tiles the main loop loads (written to
    nx_ptr by the pid_n == 0 tiles when STORE_S), sparing the norm pass over x; ||w_j||^2
    always comes from nw_ptr, so the epilogue can still be split.
    WARP_SPECIALIZE: the main loop is warp-specialized (Triton's Hopper pass): a producer
    warpgroup issues the TMA copies on few registers while two consumer warpgroups of
    num_warps (4) warps, one per 64-row half of the tile, run the MMAs and the epilogue on
    the registers it gives up (`setmaxnreg`: the producer drops to 40; here up to 128x128
    tiles: the ⵟ epilogue of a 64x256 half still spills). The pass takes neither a flattened tile loop nor TMA
    stores nor a split epilogue: the launcher passes pointers and EPILOGUE_SPLIT = 1
    (`TileConfig.warp_specialize`).
    The other pointers and constexprs are those of `yat_dense_fwd_kernel` (fp16 / bf16 /
    fp32 io only; GDC_WAIT: each tile's epilogue waits for the norm pass).

    The grid holds the programs the SMs can hold at once (`KernelCall.launch_grid`); each
    walks output tiles start, start + grid, ... in the grouped order. The main loop is
    flattened with the tile loop, so the copies of a program's next tile are in flight
    while it runs the epilogue of the current one (and where two programs fit an SM, one's
    epilogue overlaps the other's MMAs).
    TMA fills out-of-bounds boxes with zeros: the loads need no masks and no address math.
    """
    start = tl.program_id(0)
    step = tl.num_programs(0)
    num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    alpha, eps = load_scalars(alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, False)
    # The epilogue recomputes its tile from a second counter: keeping (pid_m, pid_n) of the
    # main loop alive across the flattened loop costs registers and confuses pipelining.
    tile_c = start - step
    for tile in tl.range(start, num_tiles, step, flatten=not WARP_SPECIALIZE):
        pid_m, pid_n = grouped_tile(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        nx = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for ki in tl.range(k_tiles, warp_specialize=WARP_SPECIALIZE):
            a = x_desc.load([m0, ki * BLOCK_K])
            b = w_desc.load([n0, ki * BLOCK_K])
            if X_NORMS_IN_LOOP:
                af = upcast(a, tl.float32)
                nx += tl.sum(af * af, axis=1)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)
        tile_c += step
        pid_m, pid_n = grouped_tile(tile_c, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        if INT64:
            offs_m = offs_m.to(tl.int64)
        mask_m = offs_m < M
        if GDC_WAIT:  # (each tile: past the first wait it returns at once)
            gdc_wait()
        if X_NORMS_IN_LOOP:
            if STORE_S:
                if pid_n == 0:
                    tl.store(nx_ptr + offs_m, nx, mask=mask_m)
        else:
            nx = tl.load(nx_ptr + offs_m, mask=mask_m, other=0.0)
        fwd_store(
            acc, nx, nx, offs_m * stride_ym, offs_m * stride_sm, mask_m, pid_n * BLOCK_N, N,
            nw_ptr, b_ptr, y_ptr, s_ptr, stride_yn, stride_sn, alpha, eps, pid_m * BLOCK_M,
            True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_M, BLOCK_N, EPILOGUE_SPLIT, TMA_STORE, FAST_RCP,
            GEMM_ONLY,
        )  # fmt: skip


@triton.jit
def fwd_store(
    acc,
    nx,
    nw,
    y_rows,
    s_rows,
    mask_m,
    n0,
    n_end,
    nw_ptr,
    b_ptr,
    y_ptr,
    s_ptr,
    stride_yn,
    stride_sn,
    alpha,
    eps,
    m0,
    NW_FROM_PTR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STORE_S: tl.constexpr,
    OUT_MAX: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EPILOGUE_SPLIT: tl.constexpr,
    TMA_STORE: tl.constexpr,
    FAST_RCP: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
):
    """The fused ⵟ epilogue of a (BLOCK_M, BLOCK_N) tile of s = x.w (dense and conv).

    Columns are [n0, n0 + BLOCK_N), valid below n_end; y_rows / s_rows are the rows' offsets
    into y and s. nw is a (BLOCK_N,) register vector, or read from nw_ptr (NW_FROM_PTR).
    TMA_STORE: y_ptr and s_ptr are TMA descriptors with (BLOCK_M, BLOCK_N / EPILOGUE_SPLIT)
    boxes, written at rows [m0, m0 + BLOCK_M), or with (BOX_B, BOX_H, BOX_W, BLOCK_N /
    EPILOGUE_SPLIT) boxes over (B, OH, OW, C_out), the tile's BLOCK_M rows in that order,
    written at m0 = (b0, oh0, ow0) (the hardware clips the edges; y_rows and s_rows are
    unused).

    In the wgmma accumulator layout each thread holds 2 rows but BLOCK_N/4 columns, so
    every column vector (||w||^2, bias) costs BLOCK_N/4 registers: the epilogue runs on
    EPILOGUE_SPLIT column slices to divide that (bf16 128x128x64, 8 warps, sm_90: 164
    registers unsplit, 116 in two slices, 100 in four; 130 in four when s is also stored
    for backward). A register nw cannot be sliced cheaply: it takes EPILOGUE_SPLIT = 1.

    GEMM_ONLY (a diagnostic, never a launcher's choice: `autotune.breakdown` times it): y = s,
    the accumulator cast at the same stores, without the ⵟ math (the compiler then also
    drops whatever only fed it: norms summed in the main loop, the conv's tap sum), so that
    the kernel's time splits into its GEMM (against cuBLAS's or cuDNN's) and its ⵟ math.
    Nothing is saved for backward then (STORE_S off: the conv's patch norms would be zeros).
    """
    tl.static_assert(not (GEMM_ONLY and STORE_S), "GEMM_ONLY saves nothing for backward")
    if EPILOGUE_SPLIT == 1:
        _fwd_epilogue(
            acc, nx, nw, y_rows, s_rows, n0, mask_m, n_end, nw_ptr, b_ptr, y_ptr, s_ptr,
            stride_yn, stride_sn, alpha, eps, m0, NW_FROM_PTR, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N, TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
    elif EPILOGUE_SPLIT == 2:
        tl.static_assert(NW_FROM_PTR, "a split epilogue reads ||w||^2 from memory")
        s0, s1 = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        _fwd_epilogue(
            s0, nx, nx, y_rows, s_rows, n0, mask_m, n_end, nw_ptr, b_ptr, y_ptr, s_ptr,
            stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N // 2, TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
        _fwd_epilogue(
            s1, nx, nx, y_rows, s_rows, n0 + BLOCK_N // 2, mask_m, n_end, nw_ptr, b_ptr, y_ptr,
            s_ptr, stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N // 2,
            TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
    else:
        tl.static_assert(EPILOGUE_SPLIT == 4, "EPILOGUE_SPLIT must be 1, 2 or 4")
        tl.static_assert(NW_FROM_PTR, "a split epilogue reads ||w||^2 from memory")
        s0, s1 = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        s00, s01 = tl.split(tl.permute(tl.reshape(s0, (BLOCK_M, 2, BLOCK_N // 4)), (0, 2, 1)))
        _fwd_epilogue(
            s00, nx, nx, y_rows, s_rows, n0, mask_m, n_end, nw_ptr, b_ptr, y_ptr, s_ptr,
            stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N // 4, TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
        _fwd_epilogue(
            s01, nx, nx, y_rows, s_rows, n0 + BLOCK_N // 4, mask_m, n_end, nw_ptr, b_ptr, y_ptr,
            s_ptr, stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N // 4,
            TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
        s10, s11 = tl.split(tl.permute(tl.reshape(s1, (BLOCK_M, 2, BLOCK_N // 4)), (0, 2, 1)))
        _fwd_epilogue(
            s10, nx, nx, y_rows, s_rows, n0 + BLOCK_N // 2, mask_m, n_end, nw_ptr, b_ptr, y_ptr,
            s_ptr, stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_N // 4,
            TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip
        _fwd_epilogue(
            s11, nx, nx, y_rows, s_rows, n0 + 3 * (BLOCK_N // 4), mask_m, n_end, nw_ptr, b_ptr,
            y_ptr, s_ptr, stride_yn, stride_sn, alpha, eps, m0, True, HAS_BIAS, STORE_S, OUT_MAX,
            BLOCK_N // 4, TMA_STORE,
            FAST_RCP, GEMM_ONLY,
        )  # fmt: skip


@triton.jit
def _fwd_epilogue(
    s,
    nx,
    nw,
    y_rows,
    s_rows,
    n0,
    mask_m,
    n_end,
    nw_ptr,
    b_ptr,
    y_ptr,
    s_ptr,
    stride_yn,
    stride_sn,
    alpha,
    eps,
    m0,
    NW_FROM_PTR: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    STORE_S: tl.constexpr,
    OUT_MAX: tl.constexpr,
    WIDTH: tl.constexpr,
    TMA_STORE: tl.constexpr,
    FAST_RCP: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
):
    """y = alpha u^2 / (max(||x||^2 + ||w||^2 - 2 s, 0) + eps) for columns [n0, n0 + WIDTH).

    s: (BLOCK_M, WIDTH) accumulator slice; nx: (BLOCK_M,) row norms; nw: (WIDTH,) column
    norms, or ignored and loaded from nw_ptr when NW_FROM_PTR. GEMM_ONLY: y = s instead (see
    `fwd_store`).
    """
    offs_n = n0 + tl.arange(0, WIDTH)
    mask_n = offs_n < n_end
    if GEMM_ONLY:
        y = s
    else:
        if NW_FROM_PTR:
            nw = tl.load(nw_ptr + offs_n, mask=mask_n, other=0.0)
        if HAS_BIAS:
            u = s + tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(s.dtype)[None, :]
        else:
            u = s
        # The clamp guards the cancellation of ||x||^2 + ||w||^2 - 2 s when x ~ w; NaN must
        # survive it (a plain max would turn NaN distances into 0).
        d = tl.maximum(nx[:, None] + nw[None, :] - 2.0 * s, 0.0, propagate_nan=tl.PropagateNan.ALL)
        # u * (u / q), not u^2 / q: u^2 overflows fp32 (|u| > 1.8e19) or flushes (|u| < 1e-19)
        # where y does not
        y = saturate(u * div_plus_eps(u, d, eps, FAST_RCP) * alpha, OUT_MAX)
    if TMA_STORE:
        if len(y_ptr.block_shape) == 4:  # a conv box: m0 = (image, row, column) of its corner
            y_ptr.store([m0[0], m0[1], m0[2], n0], tl.reshape(y, y_ptr.block_shape).to(y_ptr.dtype))
            if STORE_S:
                s_ptr.store([m0[0], m0[1], m0[2], n0], tl.reshape(s, s_ptr.block_shape))
        else:
            y_ptr.store([m0, n0], y.to(y_ptr.dtype))
            if STORE_S:
                s_ptr.store([m0, n0], s)
    else:
        mask = mask_m[:, None] & mask_n[None, :]
        tl.store(
            y_ptr + y_rows[:, None] + offs_n[None, :] * stride_yn, y.to(y_ptr.dtype.element_ty), mask=mask
        )
        if STORE_S:
            tl.store(s_ptr + s_rows[:, None] + offs_n[None, :] * stride_sn, s, mask=mask)


@triton.jit
def _bwd_tile(
    g_ptr,
    s_ptr,
    nx_ptr,
    nw_ptr,
    b_ptr,
    alpha,
    eps,
    offs_m,
    offs_n,
    M,
    n_end,
    stride_nx,
    stride_gm,
    stride_gn,
    stride_sm,
    stride_sn,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    """Recompute one tile of the elementwise backward from g and the saved s and norms.

    Columns valid below n_end; ||x||^2 of row m at nx_ptr + m * stride_nx (the caller
    offsets nx_ptr to its group). Loads the tile, then `_bwd_math`.
    """
    mask_m = offs_m < M
    mask_n = offs_n < n_end
    mask = mask_m[:, None] & mask_n[None, :]
    g = tl.load(g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn, mask=mask, other=0.0)
    s = tl.load(s_ptr + offs_m[:, None] * stride_sm + offs_n[None, :] * stride_sn, mask=mask, other=0.0)
    nx = tl.load(nx_ptr + offs_m * stride_nx, mask=mask_m, other=0.0)
    nw = tl.load(nw_ptr + offs_n, mask=mask_n, other=0.0)
    bias = nw
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0)
    return _bwd_math(g, s, nx, nw, bias, alpha, eps, mask, NEAR_TAU, FAST_RCP, HAS_BIAS, IS_FP64)


@triton.jit
def _bwd_math(
    g,
    s,
    nx,
    nw,
    bias,
    alpha,
    eps,
    mask,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    """The elementwise backward of a loaded tile: g and s (BLOCK_M, BLOCK_N), nx (BLOCK_M,),
    nw and bias (BLOCK_N,; bias read when HAS_BIAS), mask the tile's valid lanes.

    Returns (g, u, r, gu, gq, gd_far, near) with r = u/q and
        gu = 2 g alpha r,  gq = -g alpha r^2,  gd = [unclamped distance >= 0] gq,
        near = gd != 0 lanes whose distance is below NEAR_TAU (||x||^2 + ||w||^2),
        gd_far = gd off the near lanes.
    Shared by the prep and near-pair kernels, so all classify lanes identically (their
    launchers pass the same FAST_RCP: r by `div_plus_eps`). Values only, no pointers:
    a kernel whose store addresses depend on `near` (the conv near-pair pass) loads in
    its own body (see `scalars_from`).
    """
    if IS_FP64:
        g = g.to(tl.float64)
    else:
        g = g.to(tl.float32)
    if HAS_BIAS:
        u = s + bias.to(s.dtype)[None, :]
    else:
        u = s
    scale = nx[:, None] + nw[None, :]
    d_raw = scale - 2.0 * s
    d = tl.maximum(d_raw, 0.0, propagate_nan=tl.PropagateNan.ALL)
    r = div_plus_eps(u, d, eps, FAST_RCP)
    ga = g * alpha
    gu = 2.0 * ga * r
    gq = -ga * r * r
    gd = tl.where(d_raw >= 0.0, gq, 0.0)
    near = (d_raw >= 0.0) & (d_raw < NEAR_TAU * scale) & (gd != 0.0) & mask
    gd_far = tl.where(near, 0.0, gd)
    return g, u, r, gu, gq, gd_far, near


@triton.jit
def yat_dense_bwd_prep_kernel(
    g_ptr,
    s_ptr,
    nx_ptr,
    nw_ptr,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    gs_ptr,
    row_gd_ptr,
    col_ptr,
    part_alpha_ptr,
    part_eps_ptr,
    tile_near_ptr,
    M,
    N,
    Ng,
    n_tn,
    stride_gm,
    stride_gn,
    stride_sm,
    stride_sn,
    stride_gsm,
    stride_gsn,
    alpha_value,
    eps_value,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    NEED_DB: tl.constexpr,
    NEED_DALPHA: tl.constexpr,
    NEED_DEPS: tl.constexpr,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Elementwise ⵟ backward for one (BLOCK_M, BLOCK_N) tile of a 2-D grid (see _bwd_tile).

    The distance term of dx_i is 2 sum_j gd_ij (x_i - w_j). The GEMM form
    gs @ W + 2 x rowsum(gd), with gs = gu - 2 gd, cancels |gd| |w| against itself, and gs
    is rounded to the io dtype: for a pair at relative distance rho = sqrt(d / (||x||^2 +
    ||w||^2)) that costs ~ulp(io) / rho of its term. Near pairs (rho^2 < NEAR_TAU, where
    gd = -g alpha u^2 / q^2 is largest) are therefore left out of gs and the row/column
    sums, counted per tile, and added back exactly by `yat_dense_bwd_near_kernel` with the
    difference x_i - w_j formed directly.

    g_ptr:          (M, N) io dtype upstream gradient, strided.
    s_ptr:          (M, N) acc dtype, x.w saved by the forward.
    nx_ptr, nw_ptr: (M,), (N,) acc dtype squared norms saved by the forward.
    b_ptr:          (N,) io dtype bias (HAS_BIAS). alpha_ptr / eps_ptr: as in the forward.
    gs_ptr:         (M, N) io dtype output, gu - 2 gd_far (saturated to +-OUT_MAX if > 0).
    row_gd_ptr:     (cdiv(N, BLOCK_N), M) acc dtype partial row sums of gd_far.
    col_ptr:        (cdiv(M, BLOCK_M), 1 + NEED_DB, N) acc dtype partial column sums: of
                    gd_far at [:, 0], of gu at [:, 1] (NEED_DB); one buffer, so that the
                    launcher reduces both in one sum over its first axis.
    part_alpha_ptr: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N),) partial sums of g u^2 / q.
    part_eps_ptr:   same shape, partial sums of gq (NEED_DEPS).
    tile_near_ptr:  same shape, int32 count of near lanes per tile.
    Partials, reduced by the launcher, keep the gradients deterministic (no atomics).

    Grid (n_tm * n_tn, G): program_id(0) is a (row tile, column tile) pair, row-major, so
    that neither count meets the 65535 limit of the grid's other axes. Groups
    (convolution): program_id(1) = g covers columns [g Ng, (g + 1) Ng), the row norms are
    (M, G) and the row partials (G, n_tn, M); the dense op has G = 1.
    NEAR_TAU = 0 disables the near-pair split (for callers without the exact pass).
    """
    pid = tl.program_id(0)
    pid_m = pid // n_tn
    pid_n = pid - pid_m * n_tn
    grp = tl.program_id(1)
    n_groups = tl.num_programs(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = grp * Ng + pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    alpha, eps = load_scalars(
        alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64
    )
    n_end = grp * Ng + Ng
    g, u, r, gu, gq, gd_far, near = _bwd_tile(
        g_ptr, s_ptr, nx_ptr + grp, nw_ptr, b_ptr, alpha, eps, offs_m, offs_n, M, n_end,
        n_groups, stride_gm, stride_gn, stride_sm, stride_sn, NEAR_TAU, FAST_RCP, HAS_BIAS, IS_FP64,
    )  # fmt: skip
    mask_m = offs_m < M
    mask_n = offs_n < n_end
    gs = saturate(gu - 2.0 * gd_far, OUT_MAX)
    tl.store(
        gs_ptr + offs_m[:, None] * stride_gsm + offs_n[None, :] * stride_gsn,
        gs.to(gs_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )

    tl.store(row_gd_ptr + (grp * n_tn + pid_n) * M + offs_m, tl.sum(gd_far, axis=1), mask=mask_m)
    col_row = col_ptr + pid_m * (1 + NEED_DB) * N
    tl.store(col_row + offs_n, tl.sum(gd_far, axis=0), mask=mask_n)
    if NEED_DB:
        tl.store(col_row + N + offs_n, tl.sum(gu, axis=0), mask=mask_n)
    tile = grp * tl.num_programs(0) + pid
    if NEED_DALPHA:
        tl.store(part_alpha_ptr + tile, tl.sum(tl.sum(g * u * r, axis=1), axis=0))
    if NEED_DEPS:
        tl.store(part_eps_ptr + tile, tl.sum(tl.sum(gq, axis=1), axis=0))
    tl.store(tile_near_ptr + tile, tl.sum(tl.sum(near.to(tl.int32), axis=1), axis=0))


@triton.jit
def yat_dense_bwd_near_kernel(
    g_ptr,
    s_ptr,
    nx_ptr,
    nw_ptr,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    tile_near_ptr,
    x_ptr,
    w_ptr,
    dx_ptr,
    dw_ptr,
    M,
    N,
    K,
    stride_gm,
    stride_gn,
    stride_sm,
    stride_sn,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_dxm,
    stride_dxk,
    stride_dwn,
    stride_dwk,
    n_dx_bands,
    alpha_value,
    eps_value,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Add the near pairs' distance terms that the prep pass left out, exactly:
        dx_i += 2 gd_ij (x_i - w_j),   dW_j += 2 gd_ij (w_j - x_i).

    One program owns one band of output rows (a BLOCK_M band of x rows for dx, a BLOCK_N
    band of W rows for dW) and walks the prep tiles of that band, so every output row has a
    single writer: no atomics, deterministic. The band's tile counts are first summed
    BLOCK_T at a time (vector loads): a band without near lanes, the common case, costs
    those few loads and nothing else. In a band with some, tiles without near lanes cost
    one int load per K chunk.

    g/s/nx/nw/b/alpha/eps: as in the prep kernel; tile_near_ptr: its per-tile counts.
    x_ptr (M, K), w_ptr (N, K): io dtype, strided. dx_ptr (M, K), dw_ptr (N, K): io dtype,
    strided, already holding the GEMM results; updated in place. One launch for both: the
    first n_dx_bands programs take dx's bands, the others dW's (n_dx_bands = 0: dW only).
    """
    pid = tl.program_id(0)
    if pid < n_dx_bands:
        _near_band(
            pid, g_ptr, s_ptr, nx_ptr, nw_ptr, b_ptr, alpha_ptr, eps_ptr, tile_near_ptr, x_ptr, w_ptr,
            dx_ptr, M, N, K, stride_gm, stride_gn, stride_sm, stride_sn, stride_xm, stride_xk,
            stride_wn, stride_wk, stride_dxm, stride_dxk, alpha_value, eps_value, True, HAS_BIAS,
            ALPHA_FROM_PTR, EPS_FROM_PTR, NEAR_TAU, FAST_RCP, IS_FP64, OUT_MAX, INT64, BLOCK_M, BLOCK_N,
            BLOCK_K, BLOCK_M, BLOCK_T,
        )  # fmt: skip
    else:
        _near_band(
            pid - n_dx_bands, g_ptr, s_ptr, nx_ptr, nw_ptr, b_ptr, alpha_ptr, eps_ptr, tile_near_ptr,
            x_ptr, w_ptr, dw_ptr, M, N, K, stride_gm, stride_gn, stride_sm, stride_sn, stride_xm,
            stride_xk, stride_wn, stride_wk, stride_dwn, stride_dwk, alpha_value, eps_value, False,
            HAS_BIAS, ALPHA_FROM_PTR, EPS_FROM_PTR, NEAR_TAU, FAST_RCP, IS_FP64, OUT_MAX, INT64, BLOCK_M,
            BLOCK_N, BLOCK_K, BLOCK_N, BLOCK_T,
        )  # fmt: skip


@triton.jit
def _near_band(
    pid,
    g_ptr,
    s_ptr,
    nx_ptr,
    nw_ptr,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    tile_near_ptr,
    x_ptr,
    w_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_gm,
    stride_gn,
    stride_sm,
    stride_sn,
    stride_xm,
    stride_xk,
    stride_wn,
    stride_wk,
    stride_om,
    stride_ok,
    alpha_value,
    eps_value,
    FOR_DX: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BAND: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """One band of `yat_dense_bwd_near_kernel`: program `pid` of the dx bands (FOR_DX,
    out_ptr = dx, BAND = BLOCK_M) or of the dW bands (out_ptr = dW, BAND = BLOCK_N)."""
    n_tm = tl.cdiv(M, BLOCK_M)
    n_tn = tl.cdiv(N, BLOCK_N)
    if IS_FP64:
        acc_ty = tl.float64
    else:
        acc_ty = tl.float32
    alpha, eps = load_scalars(
        alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64
    )
    lane = tl.arange(0, BLOCK_M * BLOCK_N)
    band = pid * BAND + tl.arange(0, BAND)
    if INT64:
        band = band.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    if INT64:
        offs_k = offs_k.to(tl.int64)
    if FOR_DX:
        n_tiles = n_tn
        band_end = M
    else:
        n_tiles = n_tm
        band_end = N
    band_near = 0
    for t0 in range(0, n_tiles, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        if FOR_DX:
            idx = pid * n_tn + ts
        else:
            idx = ts * n_tn + pid
        band_near += tl.sum(tl.load(tile_near_ptr + idx, mask=ts < n_tiles, other=0), 0)
    # K chunks outermost: the band's terms accumulate in fp32 and reach `out` in one
    # rounding per element, however many near pairs a row has.
    n_chunks = tl.where(band_near > 0, tl.cdiv(K, BLOCK_K), 0)
    for k0 in range(0, n_chunks):
        ks = k0 * BLOCK_K + offs_k
        kmask = ks < K
        corr = tl.zeros((BAND, BLOCK_K), dtype=acc_ty)
        hits = 0
        for t in range(0, n_tiles):
            if FOR_DX:
                pid_m = pid
                pid_n = t
            else:
                pid_m = t
                pid_n = pid
            count = tl.load(tile_near_ptr + pid_m * n_tn + pid_n)
            if count > 0:
                hits += count
                offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
                offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
                if INT64:
                    offs_m = offs_m.to(tl.int64)
                    offs_n = offs_n.to(tl.int64)
                g, u, r, gu, gq, gd_far, near = _bwd_tile(
                    g_ptr, s_ptr, nx_ptr, nw_ptr, b_ptr, alpha, eps, offs_m, offs_n, M, N,
                    1, stride_gm, stride_gn, stride_sm, stride_sn, NEAR_TAU, FAST_RCP, HAS_BIAS, IS_FP64,
                )  # fmt: skip
                gd_near = tl.reshape(tl.where(near, gq, 0.0), (BLOCK_M * BLOCK_N,))
                todo = tl.reshape(near.to(tl.int32), (BLOCK_M * BLOCK_N,))
                # the lanes this kernel classifies as near, not the prep pass's count
                for _ in range(0, tl.sum(todo, 0)):
                    lane_id = tl.argmax(todo, 0)
                    coef = 2.0 * tl.sum(tl.where(lane == lane_id, gd_near, 0.0), 0)
                    todo = tl.where(lane == lane_id, 0, todo)
                    row = pid_m * BLOCK_M + lane_id // BLOCK_N
                    col = pid_n * BLOCK_N + lane_id % BLOCK_N
                    if INT64:
                        row = row.to(tl.int64)
                        col = col.to(tl.int64)
                    xk = tl.load(x_ptr + row * stride_xm + ks * stride_xk, mask=kmask, other=0.0)
                    wk = tl.load(w_ptr + col * stride_wn + ks * stride_wk, mask=kmask, other=0.0)
                    if FOR_DX:
                        slot = lane_id // BLOCK_N
                        diff = coef * (xk.to(acc_ty) - wk.to(acc_ty))
                    else:
                        slot = lane_id % BLOCK_N
                        diff = coef * (wk.to(acc_ty) - xk.to(acc_ty))
                    corr += tl.where((tl.arange(0, BAND) == slot)[:, None], diff[None, :], 0.0)
        if hits > 0:
            o_ptrs = out_ptr + band[:, None] * stride_om + ks[None, :] * stride_ok
            o_mask = (band < band_end)[:, None] & kmask[None, :]
            o = tl.load(o_ptrs, mask=o_mask, other=0.0).to(acc_ty)
            tl.store(o_ptrs, saturate(o + corr, OUT_MAX).to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def yat_dense_bwd_gemm_kernel(
    a_ptr,
    b_ptr,
    e_ptr,
    v_ptr,
    c_ptr,
    R,
    C,
    KD,
    v_parts,
    stride_vp,
    stride_ar,
    stride_ak,
    stride_bk,
    stride_bc,
    stride_er,
    stride_ec,
    stride_cr,
    stride_cc,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """c = a @ b + 2 e * v[:, None]: a backward GEMM with its rank-1 term fused.

    dx: a = gs (M, N), b = W (N, K), e = x (M, K), v = rowsum(gd) (M,).
    dW: a = gs^T (N, M) as strides, b = x (M, K), e = W (N, K), v = colsum(gd) (N,).

    a_ptr: (R, KD) io dtype; b_ptr: (KD, C) io dtype; e_ptr: (R, C) io dtype; all strided.
    v_ptr: (v_parts, R) acc dtype, rows stride_vp apart, unit stride along R: the prep
    pass's partial sums of v, summed by the epilogue (a few loads a row, in place of a
    reduction launch). c_ptr: (R, C) io dtype output, strided.
    Constexprs as in `yat_dense_fwd_kernel`.
    """
    pid = tl.program_id(0)
    pid_m, pid_n = grouped_tile(pid, R, C, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < R
    mask_n = offs_n < C
    a_ptrs = a_ptr + offs_m[:, None] * stride_ar + offs_k[None, :] * stride_ak  # masked edges:
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bc  # see fwd kernel

    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(KD, BLOCK_K)):
        k_left = KD - k0 * BLOCK_K
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        if a.dtype != b.dtype:  # fp16 io: fp32 gs against fp16 operands, as TF32
            b = b.to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    _bwd_gemm_store(
        acc, offs_m, offs_n, R, C, e_ptr, v_ptr, v_parts, stride_vp, c_ptr, stride_er, stride_ec,
        stride_cr, stride_cc, OUT_MAX,
    )  # fmt: skip


@triton.jit
def _bwd_gemm_store(
    acc,
    offs_m,
    offs_n,
    R,
    C,
    e_ptr,
    v_ptr,
    v_parts,
    stride_vp,
    c_ptr,
    stride_er,
    stride_ec,
    stride_cr,
    stride_cc,
    OUT_MAX: tl.constexpr,
):
    """Epilogue of the backward GEMMs: c = acc + 2 e * v[:, None] on rows offs_m, columns
    offs_n, v the sum of its v_parts partial rows."""
    mask_m = offs_m < R
    mask = mask_m[:, None] & (offs_n < C)[None, :]
    e = tl.load(e_ptr + offs_m[:, None] * stride_er + offs_n[None, :] * stride_ec, mask=mask, other=0.0)
    v = tl.zeros(offs_m.shape, dtype=v_ptr.dtype.element_ty)
    for part in range(0, v_parts):
        v += tl.load(v_ptr + part * stride_vp + offs_m, mask=mask_m, other=0.0)
    c = saturate(acc + 2.0 * e.to(acc.dtype) * v[:, None], OUT_MAX)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cr + offs_n[None, :] * stride_cc
    tl.store(c_ptrs, c.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def yat_dense_bwd_gemm_tma_kernel(
    a_desc,
    b_desc,
    e_ptr,
    v_ptr,
    c_ptr,
    R,
    C,
    KD,
    v_parts,
    stride_vp,
    stride_er,
    stride_ec,
    stride_cr,
    stride_cc,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    A_T: tl.constexpr,
    B_T: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Persistent `yat_dense_bwd_gemm_kernel` with TMA loads (fp16 / bf16 / fp32 operands of
    one dtype): c = a @ b + 2 e * v[:, None].

    a_desc: descriptor of a (R, KD), block (BLOCK_M, BLOCK_K); with A_T, of the contiguous
            a^T (KD, R), block (BLOCK_K, BLOCK_M) (dW's gs^T).
    b_desc: descriptor of b (KD, C), block (BLOCK_K, BLOCK_N); with B_T, of b^T (C, KD),
            block (BLOCK_N, BLOCK_K).
    e, v, c and the constexprs as in `yat_dense_bwd_gemm_kernel`. Program walk, pipelining
    and WARP_SPECIALIZE as in `yat_dense_fwd_tma_kernel` (its plain epilogue takes 128x256
    tiles warp-specialized without spilling, `dense_backward_ws_space`).
    """
    start = tl.program_id(0)
    step = tl.num_programs(0)
    num_tiles = tl.cdiv(R, BLOCK_M) * tl.cdiv(C, BLOCK_N)
    k_tiles = tl.cdiv(KD, BLOCK_K)
    tile_c = start - step
    for tile in tl.range(start, num_tiles, step, flatten=not WARP_SPECIALIZE):
        pid_m, pid_n = grouped_tile(tile, R, C, BLOCK_M, BLOCK_N, GROUP_M)
        m0 = pid_m * BLOCK_M
        n0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in tl.range(k_tiles, warp_specialize=WARP_SPECIALIZE):
            k0 = ki * BLOCK_K
            if A_T:
                a = a_desc.load([k0, m0]).T
            else:
                a = a_desc.load([m0, k0])
            if B_T:
                b = b_desc.load([n0, k0]).T
            else:
                b = b_desc.load([k0, n0])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)
        tile_c += step
        pid_m, pid_n = grouped_tile(tile_c, R, C, BLOCK_M, BLOCK_N, GROUP_M)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        if INT64:
            offs_m = offs_m.to(tl.int64)
            offs_n = offs_n.to(tl.int64)
        _bwd_gemm_store(
            acc, offs_m, offs_n, R, C, e_ptr, v_ptr, v_parts, stride_vp, c_ptr, stride_er, stride_ec,
            stride_cr, stride_cc, OUT_MAX,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Config space and defaults (pure Python: no torch here).


def dense_config_space(
    *, include_norms_in_loop: bool = True, include_tma: bool = True, include_warp_specialize: bool = True
) -> list[TileConfig]:
    """Candidate tiles for the GEMM-like dense kernels (wgmma-friendly multiples of 64).

    The epilogue split keeps >= 32 columns per slice; the in-loop-norms variant only runs
    unsplit (its ||w||^2 lives in registers, not in memory to reload per slice); the
    persistent TMA kernel (`tma`) takes every split, its `norms_in_loop` summing ||x||^2
    only (||w||^2 from the norm pass).

    Warp-specialized TMA forwards (`warp_specialize`, `yat_dense_fwd_tma_kernel`) only where
    Triton's Hopper pass takes them and they do not spill (sm_90 compiles with Triton 3.6,
    `python -m autotune.inspect --config 128x128x64:4:4:tma:ws`): 4 warps a consumer
    warpgroup, 128-row tiles (one 64-row half per consumer; a 64-row tile fails the pass),
    unsplit and without in-loop norms (both fail the pass), at most 128 columns (a 64x256
    half spills: 82 spill stores, `--config 128x256x64:4:3:tma:ws`).
    """
    variants = [(False, 1, False), (False, 2, False), (False, 4, False)]
    if include_norms_in_loop:
        variants.append((True, 1, False))
    if include_tma:
        variants += [(False, 1, True), (False, 2, True), (False, 4, True)]
        if include_norms_in_loop:  # the TMA kernel sums only ||x||^2 in its loop: any split
            variants += [(True, 1, True), (True, 2, True), (True, 4, True)]
    space = [
        TileConfig(bm, bn, bk, 8, w, st, norms_in_loop=nil, epilogue_split=split, tma=tma)
        for bm in (64, 128, 256)
        for bn in (64, 128, 256)
        for bk in (32, 64, 128)
        for w in (4, 8)
        for st in (2, 3, 4, 5)
        for nil, split, tma in variants
        if bn // split >= 32 and (bm * bn >= 64 * 128 or w == 4)
    ]
    if include_tma and include_warp_specialize:
        space += warp_specialized_tiles((64, 128))
    return space


def warp_specialized_tiles(widths: tuple[int, ...]) -> list[TileConfig]:
    """Warp-specialized persistent TMA tiles of `widths` columns: 128 rows (one 64-row
    half per 4-warp consumer warpgroup), K tiles of 64 or 128, 2-5 stages. The forward
    takes 64 and 128 columns (`dense_config_space`); the backward GEMMs, whose epilogue is
    plain, 256 too (`dense_backward_ws_space`)."""
    return [
        TileConfig(128, bn, bk, 8, 4, st, tma=True, warp_specialize=True)
        for bn in widths
        for bk in (64, 128)
        for st in (2, 3, 4, 5)
    ]


def dense_backward_ws_space() -> list[TileConfig]:
    """Warp-specialized tiles of the backward GEMMs (`yat_dense_bwd_gemm_tma_kernel`), on
    top of the forward's tiles (`autotune.sweep.backward_tiles`): their epilogue is a plain
    c = acc + 2 e v, so a 128x256 tile, a 64x256 accumulator half on each consumer, fits
    without spills where the forward's ⵟ epilogue does not (sm_90 compiles with Triton
    3.6 of the bf16 4096^3 dx and dW GEMMs: no spills, 229,608 B of shared memory on 4
    stages)."""
    return warp_specialized_tiles((64, 128, 256))


def prune_dense_configs(
    configs: list[TileConfig],
    M: int,
    N: int,
    K: int,
    elem_bytes: int,
    *,
    tma_staging: bool = True,
    backward: bool = False,
) -> list[TileConfig]:
    """Fit configs to the problem and drop those that cannot fit on sm_90.

    Tiles larger than the next power of two of their dimension (>= 16, the MMA minimum)
    only waste lanes, so they are clipped to it (the epilogue split with them, keeping
    >= 16 columns a slice); what the clipping makes identical is kept once.
    `tma_staging`, `backward` (tiles of the backward GEMMs): as `pipelined_smem_bytes`
    takes them. Warp-specialized tiles only for 16-bit io (fp32 through FMA or TF32 does
    not split cleanly: sm_90 compiles of the backward GEMM in fp32 spill thousands) and
    128 rows: others run unspecialized (`TileConfig.unspecialized`).
    No pointer-kernel tile with in-loop norms (`norms_in_loop` without `tma`) for 16-bit
    io: on an H200 (Triton 3.6) such a tile, whose x tile feeds both the pipelined MMA and
    the squares in registers, computed wrong x.w (the `_nil` bf16 rows marked wrong in
    reports/nvidia_h200/, dense and conv; fp16 too, and right with one stage, fp32
    operands or fp32 io: reports/nvidia_h200/diagnostics/; `IN_LOOP_NORMS_16BIT`).
    """
    kept: dict[TileConfig, None] = {}
    for cfg in configs:
        if broken_in_loop_norms(cfg, elem_bytes):
            continue
        bm = min(cfg.block_m, max(16, next_pow2(M)))
        bn = min(cfg.block_n, max(16, next_pow2(N)))
        bk = min(cfg.block_k, max(16, next_pow2(K)))
        split = max(1, min(cfg.epilogue_split, bn // 16))
        fitted = replace(cfg, block_m=bm, block_n=bn, block_k=bk, epilogue_split=split)
        if fitted.warp_specialize_problem() or elem_bytes != 2:  # clipped below 128 rows, or
            fitted = fitted.unspecialized()  # 32-bit io: the same tile unspecialized
        if fits_sm90(fitted, elem_bytes, tma_staging=tma_staging, backward=backward):
            kept.setdefault(fitted)
    return list(kept)


# Whether pointer-kernel tiles may sum the norms in the main loop with 16-bit io. Off: an
# H200 run (Triton 3.6, torch 2.11) measured them wrong (reports/nvidia_h200/, the rows
# marked wrong with `_nil` tiles); the persistent TMA kernel's in-loop x norms measured right.
IN_LOOP_NORMS_16BIT = False


def broken_in_loop_norms(cfg: TileConfig, elem_bytes: int, *, on_tma: bool | None = None) -> bool:
    """Whether `cfg` is a pointer-kernel tile summing 16-bit io's norms in its main loop,
    which `IN_LOOP_NORMS_16BIT` keeps off the GPU (pruned from sweeps; a forced or tuned
    one falls back to the default tile, as any tile that cannot fit its launch).
    `on_tma`: whether the launch runs the TMA kernel (default: the tile's `tma`; a
    launcher puts a TMA tile on the pointer kernel where its operands cannot take TMA)."""
    tma = cfg.tma if on_tma is None else on_tma
    return elem_bytes == 2 and cfg.norms_in_loop and not tma and not IN_LOOP_NORMS_16BIT


def dense_default_config(
    M: int, N: int, K: int, elem_bytes: int, *, interpreting: bool = False, backward: bool = False
) -> TileConfig:
    """Heuristic config for shapes nobody has tuned.

    GPU: a 128x128x64 tile (8 warps, HGMMA-sized, 4 stages = 128 KB of shared memory for
    16-bit io, epilogue in 32-column slices) for large problems, on the persistent TMA
    kernel for a 16-bit forward of at least one tile an SM; fp32 halves BLOCK_K to
    keep the same bytes per stage; small dimensions shrink their tile to the next power of
    two (>= 16, the MMA minimum). Two rules for small M (inference batches), where the
    GEMM streams W with few FLOPs a byte:
    - a grid short of one program per SM (`SM90_SMS`) takes 64-wide N tiles, twice the
      programs pulling W from memory (a 16-row batch of a 4096-wide layer: 32 programs of
      128 columns on 132 SMs, 64 of 64); 64 is the config space's narrowest;
    - one row of programs of at most 64 rows (M <= BLOCK_M <= 64) loads each W tile once
      in all, so the fp32 forward sums the norms from the main loop's tiles
      (`norms_in_loop`, unsplit epilogue): the norm pass would read all of W a second
      time, as many bytes as the GEMM itself. 16-bit io takes the pass
      (`IN_LOOP_NORMS_16BIT`). (sm_90 compiles, Triton 3.6, bf16, K = N = 4096, saving s:
      16 rows, 64 registers, no spills; 64 rows, 257 SASS instructions a main-loop step
      against 122 without; 128 rows, 369 against 179: the x tile's squares cost issue
      slots.)
      `backward`: a backward GEMM's tile (no norms there).
    Interpreter: the largest tiles the shape allows, since each program costs Python time.
    """

    def fit(dim: int, cap: int) -> int:
        return min(cap, max(16, next_pow2(max(dim, 1))))

    if interpreting:
        return TileConfig(fit(M, 64), fit(N, 64), fit(K, 64), group_m=8, num_warps=4, num_stages=1)
    if elem_bytes >= 8:  # fp64 (gradcheck): no tensor cores, twice the registers a value
        return TileConfig(fit(M, 64), fit(N, 64), fit(K, 16), 8, 4, 2)
    bk = 64 if elem_bytes <= 2 else 32
    bm, bn = fit(M, 128), fit(N, 128)
    if cdiv(M, bm) * cdiv(N, bn) < SM90_SMS and bn > 64:
        bn = 64
    # (16-bit io: never, see `IN_LOOP_NORMS_16BIT`; on the H200 a 16-row bf16 batch of a
    # 4096-wide layer was faster with the norm pass as a whole call and as a graph, slower
    # eagerly back to back, its one more launch costing host time: the breakdown's
    # dense-small lines)
    in_loop = M <= bm <= 64 and not backward and (elem_bytes != 2 or IN_LOOP_NORMS_16BIT)
    warps = 8 if bm * bn >= 128 * 128 else 4
    stages = 4 if elem_bytes <= 2 else 3
    split = 1 if in_loop else max(1, bn // 32)
    # 16-bit io, the 128x128 tile, a grid of at least one tile an SM: the persistent TMA
    # forward (where the operands allow TMA, sm_90 on; elsewhere the pointer kernel takes the
    # same tile). On the H200 this tile was that much faster on it than on the pointer kernel
    # in bf16 at the three dense shapes measured (4096^3, 8192^3, 8192x11008x4096: the fwd
    # rows of reports/nvidia_h200/results.db, m128n128k64g8w8s4e4_tma against
    # m128n128k64g8w8s4e4; fp16 shares the kernel's code, unmeasured); the backward's GEMMs
    # measured alike either way and keep the pointer kernels, as do the smaller tiles.
    grid = cdiv(M, bm) * cdiv(N, bn)
    tma = elem_bytes == 2 and not backward and not in_loop and bm == bn == 128 and grid >= SM90_SMS
    return TileConfig(
        bm, bn, fit(K, bk), 8, warps, stages, norms_in_loop=in_loop, epilogue_split=split, tma=tma
    )


# Relative squared distance below which a pair's distance gradient is applied exactly
# rather than through the GEMM (see yat_dense_bwd_prep_kernel): the GEMM path then loses at
# most ulp(operand) / sqrt(tau) of a pair's term, a few percent of a bf16 ulp budget.
NEAR_TAU = {
    "bfloat16": 2.0**-4,
    "float16": 2.0**-6,
    "tf32": 2.0**-6,
    "float32": 2.0**-14,
    "float64": 2.0**-30,
}


def elementwise_block(
    M: int, N: int, *, interpreting: bool = False, elem_bytes: int = 2
) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for the backward elementwise pass (the prep kernel; the
    near-pair kernels walk its tiles).

    The pass is memory-bound (g and the fp32 s in, gs out), so the block is chosen for bytes
    in flight per SM, not per program. sm_90 compiles of the bf16 prep kernel (`python -m
    autotune.inspect --all`, Triton 3.6): 64x128 on 8 warps takes 156 registers, one program
    (8 warps) an SM; 64x64 on 8 warps takes 80, three programs (24 warps, 1.5x the elements
    in flight, one program's reductions and stores overlapping the others' loads), the same
    in fp16 and fp32. A 64-channel conv layer (N = 64) no longer masks half of every tile.
    """
    if interpreting:
        return (
            min(64, max(16, next_pow2(max(M, 1)))),
            min(64, max(16, next_pow2(max(N, 1)))),
            4,
        )
    return (32, 64, 4) if elem_bytes >= 8 else (64, 64, 8)
