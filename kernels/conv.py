"""ⵟ-convolution kernels: implicit GEMM, no im2col buffer, no second (ones-filter) conv.

GEMM view of the forward, per group g: M = B*OH*OW output positions, N = C_out/groups
filters, K = kH*kW*C_in/groups taps, ordered (kh, kw, c) with c fastest so that a K tile is
BLOCK_K contiguous channels of a channels_last input. The patch norm ||x_patch||^2 is
summed one of two ways (the tile's `norms_in_loop`): from the very x tiles the main loop
loads (squares of every value, KH*KW times a pixel), or after the loop from a pass of
pixel norms ||x[b, :, h, w]||^2 (`row_sqnorm_kernel` over the channels_last rows, one read
of x), KH*KW gathered loads a row (`_patch_norm`). ||w_f||^2 comes from the dense row-norm
kernel.
`yat_conv_fwd_tma_kernel` is the same forward for stride 1, with every (tap, channel block)
step one TMA copy of a shifted box of x (`conv_box`), the padding zero-filled by the copy.
Both can share the tiles of a last partial wave among a few programs each (`split_tail`
tiles: `_split_unit`, `_split_join`, `kernels._common.tail_split`).

Backward, per SPEC.md section 2 (with gs / gd from the dense elementwise pass, run over
the (M, C_out) output with groups):
- `yat_conv_dgrad_kernel`: dx = conv_transpose(gs, W) + 2 x * conv_transpose(R, ones),
  R[o, g] = sum_{f in g} gd[o, f]; both sums walk the same (o, tap) pairs, in one pass.
  `yat_conv_dgrad_tma_kernel` is the same for stride 1, every (tap, filter block) step one
  TMA copy of a shifted box of gs.
- `yat_conv_wgrad_kernel`: dW = gs^T @ patches(x), split over output positions into fp32
  partials; `yat_conv_wgrad_finish_kernel` sums the splits, adds the rank-1 term
  2 w * colsum(gd), casts and writes dW in the weight's layout in one pass (and db's cast).
  `yat_conv_wgrad_tma_kernel` is the same for stride 1, walking the positions box by box:
  each step one TMA copy of a box of gs and one of x shifted by the tile's tap.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import triton
import triton.language as tl

from kernels._common import (
    TileConfig,
    assume_positive,
    cdiv,
    fast_div,
    gdc_wait,
    grouped_tile,
    load_scalars,
    next_pow2,
    scalars_from,
    upcast,
)
from kernels.dense import IN_LOOP_NORMS_16BIT, _bwd_math, dense_config_space, fwd_store, prune_dense_configs


@triton.jit
def yat_conv_fwd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    nw_ptr,
    y_ptr,
    s_ptr,
    nx_ptr,
    pn_ptr,
    M,
    H,
    W,
    OH,
    OW,
    Cg,
    Ng,
    C_out,
    G,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    stride_yb,
    stride_yc,
    stride_yh,
    stride_yw,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    alpha_value,
    eps_value,
    cb_m,
    cb_p,
    ws_ptr,
    cnt_ptr,
    dp_tiles,
    KH: tl.constexpr,
    KW: tl.constexpr,
    NORM_PASS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    STORE_S: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IS_FP64: tl.constexpr,
    OUT_MAX: tl.constexpr,
    INT64: tl.constexpr,
    EPILOGUE_SPLIT: tl.constexpr,
    FAST_RCP: tl.constexpr,
    TMA_STORE: tl.constexpr,
    EVEN_K: tl.constexpr,
    FAST_DIV: tl.constexpr,
    GDC_WAIT: tl.constexpr,
    SPLITS: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Fused ⵟ-conv forward for one (BLOCK_M positions, BLOCK_N filters) tile of group
    program_id(1), or with SPLITS > 1 one part of a tail tile's main loop (`_split_unit`:
    ws_ptr, cnt_ptr, dp_tiles; norms from the pass).

    x_ptr:  (B, C_in, H, W) io dtype, any strides (channels_last: stride_xc == 1).
    w_ptr:  (C_out, C_in/G, KH, KW) io dtype, any strides.
    b_ptr:  (C_out,) io dtype (HAS_BIAS); alpha_ptr / eps_ptr: (1,) as in the dense kernel.
    nw_ptr: (C_out,) acc dtype ||w_f||^2.
    y_ptr:  (B, C_out, OH, OW) io dtype output, any strides.
    s_ptr:  (M, C_out) acc dtype, the convolution saved for backward (STORE_S).
    nx_ptr: (M, G) acc dtype patch norms, written when STORE_S (by the pid_n == 0 tiles).
    pn_ptr: (B, H, W, G) acc dtype pixel norms ||x[b, :, h, w]||^2 of each group, read when
    NORM_PASS: the patch norm is then their sum over the taps, after the main loop
    (`_patch_norm`), instead of squares summed from every x tile the loop loads.
    Geometry: M = B*OH*OW, Cg = C_in/G, Ng = C_out/G; stride / pad (top, left) / dilation.
    Constexprs as in `yat_dense_fwd_kernel` (GEMM_ONLY, a diagnostic, also skips the tap sum
    of the pass's norms); KH, KW unroll the tap decode. TMA_STORE: y_ptr
    and s_ptr are TMA descriptors of the (M, C_out) rows of a channels_last y and of s,
    (BLOCK_M, BLOCK_N / EPILOGUE_SPLIT) boxes, which the hardware clips at M; the launcher
    takes them where it can (`_store_descriptors`). Against pointer stores, static sm_90
    compiles (Triton 3.6, bf16, 56x56x64 layer, saving s, in-loop patch norms, `python -m
    autotune.inspect --op conv2d --save [--config ...:nil]`): 128x64x64:8:4:e2, 117 -> 99
    registers and 787 -> 679 SASS instructions after the main loop; 128x128x64:8:4:e4,
    157 -> 128 registers (two programs an SM instead of one); 64x64x64:4:4, 126 -> 112
    registers but 57,344 -> 73,728 B of shared memory, four programs an SM -> three.
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    c_blocks = tl.cdiv(Cg, BLOCK_K)
    tile, first, end, part = _split_unit(pid, dp_tiles, KH * KW * c_blocks, SPLITS, NORM_PASS)
    pid_m, pid_n = grouped_tile(tile, M, Ng, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < Ng
    ohw = OH * OW
    bb = offs_m // ohw
    rem = offs_m - bb * ohw
    oh = rem // OW
    ow = rem - oh * OW
    ih0 = oh * conv_sh - pad_h
    iw0 = ow * conv_sw - pad_w
    x_base = x_ptr + bb * stride_xb + (g * Cg) * stride_xc
    w_base = w_ptr + (g * Ng + offs_n)[None, :] * stride_wo

    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    nx = tl.zeros((BLOCK_M, BLOCK_K // 8), dtype=acc.dtype)
    # One flat loop over (tap, channel block): a single pipelined loop even when C_in/G
    # fits in one BLOCK_K (nested loops would leave the inner one nothing to pipeline).
    x_rows = x_base + ih0 * stride_xh + iw0 * stride_xw  # tap (0, 0), channel 0
    for it in range(first, end):
        tap = fast_div(it, c_blocks, cb_m, cb_p, FAST_DIV)
        c0 = (it - tap * c_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        # one unsigned compare per bound: a negative ih wraps past H
        inside = mask_m & ((ih0 + kh * dil_h).to(tl.uint32) < H) & ((iw0 + kw * dil_w).to(tl.uint32) < W)
        shift = (kh * dil_h) * stride_xh + (kw * dil_w) * stride_xw + c0 * stride_xc
        cs = c0 + offs_k
        a_mask = inside[:, None]
        b_mask = mask_n[None, :]
        if not EVEN_K:
            a_mask = a_mask & (cs < Cg)[None, :]
            b_mask = b_mask & (cs < Cg)[:, None]
        a = tl.load(x_rows[:, None] + (shift + offs_k[None, :] * stride_xc), mask=a_mask, other=0.0)
        b = tl.load(
            w_base + (cs[:, None] * stride_wc + (kh * stride_wh + kw * stride_ww)), mask=b_mask, other=0.0
        )
        if not NORM_PASS:
            af = upcast(a, acc.dtype)
            nx += tl.sum(tl.reshape(af * af, (BLOCK_M, BLOCK_K // 8, 8)), axis=2)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)

    acc, finish = _split_join(acc, pid, dp_tiles, tile, part, ws_ptr, cnt_ptr, SPLITS, BLOCK_M, BLOCK_N)
    if finish:  # (SPLITS == 1: always, at compile time)
        if GDC_WAIT:  # launched while the norm pass before it ran: its norms are complete past this
            gdc_wait()
        # (new names in the block: a compiled `if` keeps the types of the names before it)
        if NORM_PASS and not GEMM_ONLY:  # (GEMM_ONLY: a diagnostic, y = s, `fwd_store`)
            patch = _patch_norm(pn_ptr, bb, ih0, iw0, mask_m, H, W, G, g, dil_h, dil_w, KH, KW)
        else:
            patch = tl.sum(nx, axis=1)
        alpha, eps = load_scalars(
            alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64
        )
        if STORE_S:
            if pid_n == 0:
                tl.store(nx_ptr + offs_m * G + g, patch, mask=mask_m)
        y_rows = bb * stride_yb + oh * stride_yh + ow * stride_yw
        n_first = g * Ng + pid_n * BLOCK_N
        if INT64 and not TMA_STORE:  # an NCHW y: channel * OH * OW can pass 2^31 in one image
            n_first = n_first.to(tl.int64)
        fwd_store(
            acc, patch, patch, y_rows, offs_m * C_out, mask_m, n_first, g * Ng + Ng,
            nw_ptr, b_ptr, y_ptr, s_ptr, stride_yc, 1, alpha, eps, pid_m * BLOCK_M,
            True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_M, BLOCK_N, EPILOGUE_SPLIT, TMA_STORE, FAST_RCP,
            GEMM_ONLY,
        )  # fmt: skip


@triton.jit
def _split_unit(pid, dp_tiles, n_it, SPLITS: tl.constexpr, NORM_PASS: tl.constexpr):
    """(tile, first, end, part): the output tile of program pid of a forward grid and the
    iterations [first, end) of its n_it-step main loop that it runs (`tail_split`).

    SPLITS == 1: tile pid, every step. Otherwise programs below dp_tiles own their tile
    whole, and each tile after them (the tail, which would leave most SMs idle in a last
    partial wave) is shared by SPLITS consecutive programs, part p running steps
    [p n_it / SPLITS, (p + 1) n_it / SPLITS) into an fp32 partial (`_split_join`). A
    forward's patch norms then come from the pixel-norm pass (NORM_PASS), never from a
    part's loop (the input gradient's loop sums nothing else: it passes True).
    """
    if SPLITS == 1:
        tile = pid
        first = 0
        end = n_it
        part = 0
    else:
        tl.static_assert(NORM_PASS, "a split forward takes its patch norms from the pass")
        split = pid >= dp_tiles
        u = tl.maximum(pid - dp_tiles, 0)
        part = tl.where(split, u % SPLITS, 0)
        tile = tl.where(split, dp_tiles + u // SPLITS, pid)
        first = tl.where(split, part * n_it // SPLITS, 0)
        end = tl.where(split, (part + 1) * n_it // SPLITS, n_it)
        assume_positive(end - first)  # (SPLITS <= n_it: no zero-trip path, see assume_positive)
    return tile, first, end, part


@triton.jit
def _split_join(
    acc, pid, dp_tiles, tile, part, ws_ptr, cnt_ptr, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """(acc, finish): after a `_split_unit` main loop, whether this program runs its tile's
    epilogue, and the tile's whole accumulator if so.

    SPLITS == 1: (acc, True). Otherwise (one group: the launcher splits ungrouped convs
    only) a part stores its partial to its slot of ws_ptr (acc dtype (tail, SPLITS,
    BLOCK_M, BLOCK_N)), then takes a ticket from its tail tile's counter at cnt_ptr ((tail,)
    int32, zeroed by the launcher) with release-acquire semantics: the part that takes the
    last ticket has every other part's stores in view, sums the SPLITS partials in part
    order (the same sum whichever part finishes last: deterministic), sets the counter back
    to 0 (a recorded launch runs again as it ran first) and runs the epilogue; the others
    end. No program waits for another.
    """
    if SPLITS == 1:
        finish = True
    else:
        split = pid >= dp_tiles
        slot = tl.maximum(tile - dp_tiles, 0)
        size: tl.constexpr = BLOCK_M * BLOCK_N
        offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        tile_ws = ws_ptr + slot.to(tl.int64) * (SPLITS * size)
        last = pid < 0  # (False)
        if split:
            tl.store(tile_ws + part * size + offs, acc)
            tl.debug_barrier()  # every thread's partial stored before the ticket releases them
            last = tl.atomic_add(cnt_ptr + slot, 1, sem="acq_rel", scope="gpu") == SPLITS - 1
        if last:
            tl.store(cnt_ptr + slot, 0)  # (every part has taken its ticket)
            acc = tl.load(tile_ws + offs, cache_modifier=".cg")
            for p in tl.static_range(1, SPLITS):
                acc += tl.load(tile_ws + p * size + offs, cache_modifier=".cg")
        finish = last | (pid < dp_tiles)
    return acc, finish


@triton.jit
def _box_tile(
    pid, B, H, W, N, BOX_B: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr, BLOCK_N: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """(b0, h0, w0, pid_n): the first image, row and column of program pid's box of (B, H,
    W) positions (grouped order, counted in boxes: boxes * BLOCK_M could pass 2^31), and
    its tile of N columns."""
    tiles_w = tl.cdiv(W, BOX_W)
    tiles_hw = tl.cdiv(H, BOX_H) * tiles_w
    pid_m, pid_n = grouped_tile(pid, tl.cdiv(B, BOX_B) * tiles_hw, tl.cdiv(N, BLOCK_N), 1, 1, GROUP_M)
    return (
        (pid_m // tiles_hw) * BOX_B,
        ((pid_m % tiles_hw) // tiles_w) * BOX_H,
        (pid_m % tiles_w) * BOX_W,
        pid_n,
    )


@triton.jit
def _box_rows(
    b0, h0, w0, B, H, W, BOX_H: tl.constexpr, BOX_W: tl.constexpr, BLOCK_M: tl.constexpr, INT64: tl.constexpr
):
    """(image, row, column, inside (B, H, W)) of the box's BLOCK_M positions, in the order
    a box load flattens them."""
    r = tl.arange(0, BLOCK_M)
    bb = b0 + r // (BOX_H * BOX_W)
    h = h0 + (r // BOX_W) % BOX_H
    w = w0 + r % BOX_W
    if INT64:
        bb = bb.to(tl.int64)
    return bb, h, w, (bb < B) & (h < H) & (w < W)


@triton.jit
def _patch_norm(pn_ptr, bb, ih0, iw0, mask_m, H, W, G, g, dil_h, dil_w, KH: tl.constexpr, KW: tl.constexpr):
    """||x_patch||^2 of each row from the pixel norms pn (B, H, W, G): the sum over the KH*KW
    taps of the pixels each reads (the padding's count 0). Row r's patch starts at pixel
    (bb[r], ih0[r], iw0[r]); KH*KW gathered loads a row, where the in-loop sum squares
    every x value the main loop loads."""
    pn_rows = pn_ptr + (bb * H) * W * G + g
    nx = tl.zeros(ih0.shape, dtype=pn_ptr.dtype.element_ty)
    for kh in tl.static_range(KH):
        ih = ih0 + kh * dil_h
        row_ok = mask_m & (ih.to(tl.uint32) < H)  # one unsigned compare: a negative ih wraps
        for kw in tl.static_range(KW):
            iw = iw0 + kw * dil_w
            inside = row_ok & (iw.to(tl.uint32) < W)
            nx += tl.load(pn_rows + (ih * W + iw) * G, mask=inside, other=0.0)
    return nx


@triton.jit
def yat_conv_fwd_tma_kernel(
    x_desc,
    w_desc,
    b_ptr,
    alpha_ptr,
    eps_ptr,
    nw_ptr,
    y_ptr,
    s_ptr,
    nx_ptr,
    pn_ptr,
    B,
    H,
    W,
    OH,
    OW,
    Cg,
    Ng,
    C_out,
    G,
    stride_yb,
    stride_yc,
    stride_yh,
    stride_yw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    alpha_value,
    eps_value,
    cb_m,
    cb_p,
    ws_ptr,
    cnt_ptr,
    dp_tiles,
    KH: tl.constexpr,
    KW: tl.constexpr,
    NORM_PASS: tl.constexpr,
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
    GDC_WAIT: tl.constexpr,
    SPLITS: tl.constexpr,
    GEMM_ONLY: tl.constexpr,
    BOX_B: tl.constexpr,
    BOX_H: tl.constexpr,
    BOX_W: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """ⵟ-conv forward of a stride-1 conv with TMA loads: the math of `yat_conv_fwd_kernel`,
    for one (BLOCK_M positions, BLOCK_N filters) tile of group program_id(1), or with
    SPLITS > 1 one part of a tail tile's main loop (`_split_unit`).

    The tile's BLOCK_M = BOX_B * BOX_H * BOX_W output positions are a box of BOX_B images,
    BOX_H rows and BOX_W columns. With stride 1 the pixels that tap (kh, kw) reads for
    such a box are the same box of x shifted by (kh dil_h - pad_h, kw dil_w - pad_w), so
    every (tap, channel block) step is one TMA copy of a (BOX_B, BOX_H, BOX_W, BLOCK_K) box
    of x, whose out-of-bounds pixels (the padding, and the box's overhang past the image)
    the hardware fills with zeros: no gather address math, no masks.

    x_desc: TMA descriptor of x as (B, H, W, C_in), channels contiguous.
    w_desc: TMA descriptor of W as (C_out, KH*KW*C_in/G), K ordered (kh, kw, c), block
    (BLOCK_N, BLOCK_K); C_in/G is a multiple of BLOCK_K, so a K tile never spans two taps
    or two groups. The other arguments are those of `yat_conv_fwd_kernel` (fp16 / bf16 /
    fp32 io; (cb_m, cb_p): `divmod_magic` of Cg / BLOCK_K). TMA_STORE: y_ptr and s_ptr are
    TMA descriptors over (B, OH, OW, C_out) with (BOX_B, BOX_H, BOX_W, BLOCK_N /
    EPILOGUE_SPLIT) boxes, the tile's own box, which the hardware clips at the image
    edges as the loads' boxes are zero-filled there (`_store_descriptors`: a channels_last
    y); otherwise the epilogue stores through pointers, masked to the positions inside the
    output. Against pointer stores (Triton 3.6, bf16, 56x56x64 layer saving s, `python
    -m autotune.inspect --op conv2d --save --config ...:nil:tma`): 128x64x64:8:4:e2, 102 ->
    90 registers and 773 -> 704 SASS instructions after the main loop; 128x128x64:8:4:e4,
    139 -> 122 registers (two programs an SM instead of one); 64x64x64:4:4, 830 -> 668.

    Not persistent, unlike the dense TMA kernels: ResNet-50's 64-channel 3x3 layers have a
    9-step main loop, and the ⵟ epilogue costs a large part of those steps' MMAs (for a
    128x64 tile on 8 warps, 704 SASS instructions follow the main loop, for 32 values a
    thread: ~1,400 issue cycles on 4 schedulers, against ~2,300 cycles of MMA at peak;
    Triton 3.6, `after_loop` of `python -m autotune.inspect --op conv2d --config
    128x64x64:8:4:e2:nil:tma --save`; 983 before the epilogue's quotient took a bare
    reciprocal, `div_plus_eps`, and its stores went by TMA).
    Written persistent (flattened loops, commit 2bca5dd), this kernel took 153 registers at
    that tile (Triton 3.6): one program an SM, whose epilogue nothing overlaps but its next tile's
    copies. One program a tile takes 106, and two resident programs per SM overlap one's
    epilogue with the other's MMAs.

    Triton (3.6 and 3.9) reads a multi-dimensional box back through registers to flatten it
    to (BLOCK_M, BLOCK_K): the MMA takes x from registers (which the in-loop patch norm
    loads anyway) rather than from shared memory as the pointer kernel's does. Static sm_90
    compiles (Triton 3.6) of a ResNet-50 56x56x64 layer, bf16, saving s, no spills, HGMMA
    (`python -m autotune.inspect --op conv2d --config 128x64x64:8:4:e2:nil[:tma] --save`):
    128x64x64 tiles take 99 registers and 81,920 B on the pointer kernel, 90 and 81,976 B
    here; 128x128x64:8:4:e4, 128 / 114,688 B and 122 / 114,744 B (two programs fit an SM
    in all four; both store by TMA). Which is faster is for the sweep to measure.

    The main loop's cost is its instruction issue as much as its MMAs: a 128x64x64 step
    is 4 HGMMA (~256 tensor-core cycles an SM) among ~200-300 instructions a warp, 8 warps
    on 4 schedulers. So it decodes the tap with `fast_div` (no integer division) and sums
    ||x||^2 into 8-wide partials a row (thread-local adds; one cross-thread reduction
    after the loop): 253 -> 212 SASS instructions a step here, 303 -> 227 in
    `yat_conv_fwd_kernel` (which also drops the channel masks when EVEN_K and checks each
    bound with one unsigned compare); then 196 and 204, the norm's bf16 read as fp32 two
    values a register at a time (`upcast`) and the pointer kernel's offsets summed in
    int32 before they meet the pointer. `loop_step` of `python -m autotune.inspect
    --op conv2d --dtype bfloat16 [--config 128x64x64:8:4:e2:nil:tma] --save`, Triton 3.6,
    56x56x64 layer, default tiles (in-loop norms). With the patch norms from the
    pixel-norm pass (NORM_PASS, the same commands without `:nil`): 122 and 123 a step, 866
    and 865 after the loop (the tap sums), the pointer kernel's x tile left in shared
    memory (98,304 B) and the TMA kernel at 80 registers.
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    c_blocks = Cg // BLOCK_K
    assume_positive(c_blocks)  # (no zero-trip path: ptxas serialized the wgmma of its inference)
    tile, first, end, part = _split_unit(pid, dp_tiles, KH * KW * c_blocks, SPLITS, NORM_PASS)
    b0, oh0, ow0, pid_n = _box_tile(tile, B, OH, OW, Ng, BOX_B, BOX_H, BOX_W, BLOCK_N, GROUP_M)
    n0 = g * Ng + pid_n * BLOCK_N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    nx = tl.zeros((BLOCK_M, BLOCK_K // 8), dtype=tl.float32)
    for it in range(first, end):
        tap = fast_div(it, c_blocks, cb_m, cb_p, True)
        c0 = (it - tap * c_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        a = x_desc.load([b0, oh0 + kh * dil_h - pad_h, ow0 + kw * dil_w - pad_w, g * Cg + c0])
        a = a.reshape(BLOCK_M, BLOCK_K)
        b = w_desc.load([n0, tap * Cg + c0])
        if not NORM_PASS:
            af = upcast(a, tl.float32)
            nx += tl.sum(tl.reshape(af * af, (BLOCK_M, BLOCK_K // 8, 8)), axis=2)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)

    acc, finish = _split_join(acc, pid, dp_tiles, tile, part, ws_ptr, cnt_ptr, SPLITS, BLOCK_M, BLOCK_N)
    if finish:  # (SPLITS == 1: always, at compile time)
        alpha, eps = load_scalars(
            alpha_ptr, eps_ptr, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, False
        )
        bb, oh, ow, mask_m = _box_rows(b0, oh0, ow0, B, OH, OW, BOX_H, BOX_W, BLOCK_M, INT64)
        if GDC_WAIT:
            gdc_wait()
        # (new names in the block: a compiled `if` keeps the types of the names before it)
        if NORM_PASS and not GEMM_ONLY:  # (GEMM_ONLY: a diagnostic, y = s, `fwd_store`)
            patch = _patch_norm(pn_ptr, bb, oh - pad_h, ow - pad_w, mask_m, H, W, G, g, dil_h, dil_w, KH, KW)
        else:
            patch = tl.sum(nx, axis=1)
        offs_m = (bb * OH + oh) * OW + ow
        if STORE_S:
            if pid_n == 0:
                tl.store(nx_ptr + offs_m * G + g, patch, mask=mask_m)
        y_rows = bb * stride_yb + oh * stride_yh + ow * stride_yw
        n_first = n0
        if INT64 and not TMA_STORE:  # an NCHW y: channel * OH * OW can pass 2^31 in one image
            n_first = n_first.to(tl.int64)
        fwd_store(
            acc, patch, patch, y_rows, offs_m * C_out, mask_m, n_first, g * Ng + Ng,
            nw_ptr, b_ptr, y_ptr, s_ptr, stride_yc, 1, alpha, eps, (b0, oh0, ow0),
            True, HAS_BIAS, STORE_S, OUT_MAX, BLOCK_M, BLOCK_N, EPILOGUE_SPLIT, TMA_STORE, FAST_RCP,
            GEMM_ONLY,
        )  # fmt: skip


@triton.jit
def _dgrad_source(
    ih,
    iw,
    bb,
    o_unit,
    kh,
    kw,
    mask_m,
    OH,
    OW,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    UNIT_STRIDE: tl.constexpr,
):
    """(hit, o): whether tap (kh, kw) of output position o reads input pixel (ih, iw) of
    image bb, and o. With stride 1, o is o_unit (tap (0, 0)'s) shifted by the tap, and one
    unsigned compare a bound checks the range (a negative index wraps past it)."""
    th = ih + pad_h - kh * dil_h
    tw = iw + pad_w - kw * dil_w
    if UNIT_STRIDE:
        hit = mask_m & (th.to(tl.uint32) < OH) & (tw.to(tl.uint32) < OW)
        o = o_unit - (kh * dil_h * OW + kw * dil_w)
    else:
        oh = th // conv_sh
        ow = tw // conv_sw
        hit = (
            mask_m & (th >= 0) & (tw >= 0) & (oh * conv_sh == th) & (ow * conv_sw == tw)
            & (oh < OH) & (ow < OW)
        )  # fmt: skip
        o = (bb * OH + oh) * OW + ow
    return hit, o


@triton.jit
def _dgrad_epilogue(
    acc,
    rows_ptr,
    x_ptr,
    dx_ptr,
    bb,
    ih,
    iw,
    o_unit,
    mask_m,
    offs_n,
    mask_n,
    g,
    Cg,
    G,
    OH,
    OW,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_db,
    stride_dc,
    stride_dh,
    stride_dw,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    KH: tl.constexpr,
    KW: tl.constexpr,
    INT64: tl.constexpr,
    UNIT_STRIDE: tl.constexpr,
):
    """dx = acc + 2 x * sum_tap R[o(p, tap), g] for the tile's input pixels (image bb, row
    ih, column iw; mask_m: inside x) and channels offs_n of group g, stored through
    pointers. R is summed over the taps after the main loop, which then reads gs and W
    only."""
    rsum = tl.zeros((acc.shape[0],), dtype=acc.dtype)
    for tap in range(0, KH * KW):
        kh = tap // KW
        kw = tap - kh * KW
        hit, o = _dgrad_source(
            ih, iw, bb, o_unit, kh, kw, mask_m, OH, OW, conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
            UNIT_STRIDE,
        )  # fmt: skip
        rsum += tl.load(rows_ptr + o * G + g, mask=hit, other=0.0)
    cols = (g * Cg + offs_n)[None, :]
    if INT64:  # an NCHW dx: channel * H * W can pass 2^31 in one image
        cols = cols.to(tl.int64)
    mask = mask_m[:, None] & mask_n[None, :]
    xv = tl.load(
        x_ptr + (bb * stride_xb + ih * stride_xh + iw * stride_xw)[:, None] + cols * stride_xc,
        mask=mask,
        other=0.0,
    )
    dx = acc + 2.0 * xv.to(acc.dtype) * rsum[:, None]
    tl.store(
        dx_ptr + (bb * stride_db + ih * stride_dh + iw * stride_dw)[:, None] + cols * stride_dc,
        dx.to(dx_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def yat_conv_dgrad_kernel(
    gs_ptr,
    rows_ptr,
    w_ptr,
    x_ptr,
    dx_ptr,
    MX,
    H,
    W,
    OH,
    OW,
    Cg,
    Ng,
    C_out,
    G,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_db,
    stride_dc,
    stride_dh,
    stride_dw,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    fb_m,
    fb_p,
    ws_ptr,
    cnt_ptr,
    dp_tiles,
    KH: tl.constexpr,
    KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    UNIT_STRIDE: tl.constexpr,
    EVEN_K: tl.constexpr,
    FAST_DIV: tl.constexpr,
    SPLITS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """dx[p, c] = sum_{tap, f in g} gs[o(p, tap), f] w[f, c, tap] + 2 x[p, c] sum_tap R[o(p, tap), g]
    for a (BLOCK_M input pixels, BLOCK_N channels) tile of group program_id(1), or with
    SPLITS > 1 one part of a tail tile's main loop (as the forward's: `_split_unit`,
    `_split_join`; the epilogue is linear in the sum).

    o(p, tap) is the output position whose patch puts tap (kh, kw) on pixel p:
    oh = (ih + pad_h - kh dil_h) / stride_h when that divides exactly and lands in range.

    gs_ptr:   (M, C_out) io dtype, dL/ds (contiguous). rows_ptr: (M, G) acc dtype, R.
    w_ptr:    (C_out, C_in/G, KH, KW) io dtype, strided. x_ptr / dx_ptr: (B, C_in, H, W)
    io dtype, strided. MX = B*H*W; Ng >= 1 (without filters dx is zero: no launch).
    (fb_m, fb_p): `divmod_magic` of cdiv(Ng, BLOCK_K).
    UNIT_STRIDE: stride 1, where o(p, tap) is p's own output index shifted by the tap, no
    division. EVEN_K: Ng a multiple of BLOCK_K (no filter mask in the main loop). R is
    summed over the taps after the main loop, which then reads gs and W only: a step of
    the 56x56x64 layer's default 128x64x64 tile went from 228 SASS instructions a warp to
    139 (Triton 3.6, bf16; 4 HGMMA; `loop_step` of `python -m autotune.inspect --all`).
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    f_blocks = tl.cdiv(Ng, BLOCK_K)
    tile, first, end, part = _split_unit(pid, dp_tiles, KH * KW * f_blocks, SPLITS, True)
    pid_m, pid_n = grouped_tile(tile, MX, Cg, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64:
        offs_m = offs_m.to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < MX
    mask_n = offs_n < Cg
    hw = H * W
    bb = offs_m // hw
    rem = offs_m - bb * hw
    ih = rem // W
    iw = rem - ih * W
    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    w_base = w_ptr + offs_n[None, :] * stride_wc  # channel within the group
    o_unit = (bb * OH + ih + pad_h) * OW + iw + pad_w  # UNIT_STRIDE: o at tap (0, 0)
    # The exact bound: at least one step, as in the wgrad, would spare the sweep-only
    # 64x64x64 tile on 8 warps, 2 stages its serialized wgmma (Triton 3.6, C7515; the
    # static prune drops that tile), but cost the default 128x64x64 tile 39 SASS
    # instructions after the loop.
    for it in range(first, end):
        tap = fast_div(it, f_blocks, fb_m, fb_p, FAST_DIV)
        f0 = (it - tap * f_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        hit, o = _dgrad_source(
            ih, iw, bb, o_unit, kh, kw, mask_m, OH, OW, conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w,
            UNIT_STRIDE,
        )  # fmt: skip
        fs = f0 + offs_k
        a_mask = hit[:, None]
        b_mask = mask_n[None, :]
        if not EVEN_K:
            a_mask = a_mask & (fs < Ng)[None, :]
            b_mask = b_mask & (fs < Ng)[:, None]
        a = tl.load(gs_ptr + o[:, None] * C_out + (g * Ng + fs)[None, :], mask=a_mask, other=0.0)
        b = tl.load(
            w_base + ((g * Ng + fs)[:, None] * stride_wo + (kh * stride_wh + kw * stride_ww)),
            mask=b_mask,
            other=0.0,
        )
        if a.dtype != b.dtype:  # fp16 io: fp32 gs against fp16 operands, as TF32
            b = b.to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)

    acc, finish = _split_join(acc, pid, dp_tiles, tile, part, ws_ptr, cnt_ptr, SPLITS, BLOCK_M, BLOCK_N)
    if finish:  # (SPLITS == 1: always, at compile time)
        _dgrad_epilogue(
            acc, rows_ptr, x_ptr, dx_ptr, bb, ih, iw, o_unit, mask_m, offs_n, mask_n, g, Cg, G, OH, OW,
            stride_xb, stride_xc, stride_xh, stride_xw, stride_db, stride_dc, stride_dh, stride_dw,
            conv_sh, conv_sw, pad_h, pad_w, dil_h, dil_w, KH, KW, INT64, UNIT_STRIDE,
        )  # fmt: skip


@triton.jit
def yat_conv_dgrad_tma_kernel(
    gs_desc,
    w_desc,
    rows_ptr,
    x_ptr,
    dx_ptr,
    B,
    H,
    W,
    OH,
    OW,
    Cg,
    Ng,
    G,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_db,
    stride_dc,
    stride_dh,
    stride_dw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    fb_m,
    fb_p,
    ws_ptr,
    cnt_ptr,
    dp_tiles,
    KH: tl.constexpr,
    KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    INT64: tl.constexpr,
    SPLITS: tl.constexpr,
    BOX_B: tl.constexpr,
    BOX_H: tl.constexpr,
    BOX_W: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """`yat_conv_dgrad_kernel` of a stride-1 conv with TMA loads, for one (BLOCK_M input
    pixels, BLOCK_N channels) tile of group program_id(1), or with SPLITS > 1 one part of a
    tail tile's main loop.

    With stride 1 the input-gradient is itself a stride-1 correlation: the output position
    whose tap (kh, kw) lands on pixel (ih, iw) is (ih + pad_h - kh dil_h, iw + pad_w - kw
    dil_w). The tile's pixels are a box of BOX_B images, BOX_H rows and BOX_W columns
    (`conv_box` over (B, H, W)), so every (tap, filter block) step is one TMA copy of the
    same box of gs shifted by the tap, whose out-of-range positions the hardware fills with
    zeros (no gather address math, no masks, no bound compares), and one copy of a
    (BLOCK_K filters, BLOCK_N channels) box of W.

    gs_desc: descriptor of gs as (B, OH, OW, C_out), block (BOX_B, BOX_H, BOX_W, BLOCK_K),
    of W's dtype (bf16 / fp32: fp16 io keeps an fp32 gs, which runs the pointer kernel).
    w_desc: descriptor of W as (C_out, KH*KW*C_in/G), columns ordered (kh, kw, c), block
    (BLOCK_K, BLOCK_N). Ng is a multiple of BLOCK_K, so a filter block never spans two
    groups; a channel tile past Cg reads the next tap's channels (or zeros past the last),
    into columns the store masks off. (fb_m, fb_p): `divmod_magic` of Ng / BLOCK_K. The
    other arguments are those of `yat_conv_dgrad_kernel`, whose epilogue this shares.

    Static sm_90 compiles (Triton 3.6) of the ResNet-50 56x56x64 layer's default
    128x64x64:8:4 tile (`python -m autotune.inspect --all`), against the pointer kernel:
    bf16, 101 -> 74 registers and 139 -> 118 SASS instructions a warp issues a main-loop
    step, most of them now on the uniform datapath (the copies are issued by one elected
    thread; the gs box reaches the MMA through registers, 4 LDSM a step, as the TMA
    forward's x box); fp32 (TF32), 123 -> 97 and 152 -> 103. Both fit two programs an SM.
    Smaller tiles (`python -m autotune.inspect --op conv2d --backward --config
    TILE[:tma]`): 64x64x64:4:4, 156 -> 122; on 8 warps, 110 -> 123 (the uniform
    bookkeeping is repeated by every warp). Which is faster is for the sweep to measure
    (it times each stride-1 backward tile both ways).
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    f_blocks = Ng // BLOCK_K
    # At least one step in the compiler's eyes (there always is one: Ng >= BLOCK_K): over a
    # loop that may run zero times ptxas serialized every wgmma (C7515; see the wgrad's)
    tile, first, end, part = _split_unit(pid, dp_tiles, tl.maximum(KH * KW * f_blocks, 1), SPLITS, True)
    b0, h0, w0, pid_n = _box_tile(tile, B, H, W, Cg, BOX_B, BOX_H, BOX_W, BLOCK_N, GROUP_M)
    c0 = pid_n * BLOCK_N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(first, end):
        tap = fast_div(it, f_blocks, fb_m, fb_p, True)
        f = g * Ng + (it - tap * f_blocks) * BLOCK_K
        kh = tap // KW
        kw = tap - kh * KW
        a = gs_desc.load([b0, h0 + pad_h - kh * dil_h, w0 + pad_w - kw * dil_w, f])
        a = a.reshape(BLOCK_M, BLOCK_K)
        b = w_desc.load([f, tap * Cg + c0])
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)

    acc, finish = _split_join(acc, pid, dp_tiles, tile, part, ws_ptr, cnt_ptr, SPLITS, BLOCK_M, BLOCK_N)
    if finish:  # (SPLITS == 1: always, at compile time)
        bb, ih, iw, mask_m = _box_rows(b0, h0, w0, B, H, W, BOX_H, BOX_W, BLOCK_M, INT64)
        offs_n = c0 + tl.arange(0, BLOCK_N)
        o_unit = (bb * OH + ih + pad_h) * OW + iw + pad_w  # o at tap (0, 0)
        _dgrad_epilogue(
            acc, rows_ptr, x_ptr, dx_ptr, bb, ih, iw, o_unit, mask_m, offs_n, offs_n < Cg, g, Cg, G, OH, OW,
            stride_xb, stride_xc, stride_xh, stride_xw, stride_db, stride_dc, stride_dh, stride_dw,
            1, 1, pad_h, pad_w, dil_h, dil_w, KH, KW, INT64, True,
        )  # fmt: skip


@triton.jit
def yat_conv_wgrad_kernel(
    gs_ptr,
    x_ptr,
    part_ptr,
    M,
    H,
    W,
    OH,
    OW,
    Cg,
    Ng,
    C_out,
    KC,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    m_per_split,
    ohw_m,
    ohw_p,
    ow_m,
    ow_p,
    KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    FAST_DIV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """part[split, f, j] = sum_{o in split} gs[o, f] patch(x)[o, j], j = (kh, kw, c) with c
    fastest (KC = KH*KW*C_in/G columns), for a (BLOCK_M filters, BLOCK_N columns) tile of
    group program_id(1) and output-position split program_id(2).

    gs_ptr: (M, C_out) io dtype (contiguous). x_ptr: (B, C_in, H, W) io dtype, strided.
    part_ptr: (splits, C_out, KC) acc dtype, contiguous.
    (ohw_m, ohw_p), (ow_m, ow_p): `divmod_magic` of OH*OW and OW, which decode the output
    positions of each step without a division (int32 offsets and FAST_DIV; INT64 and
    symbolic sizes divide): with the
    column's tap folded into one offset and one unsigned compare a bound, a step of the
    56x56x64 layer's default 64x128x64 tile went from 367 SASS instructions a warp to 201
    (Triton 3.6, bf16; 4 HGMMA; `loop_step` of `python -m autotune.inspect --all`).
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    pid_m, pid_n = grouped_tile(pid, Ng, KC, BLOCK_M, BLOCK_N, GROUP_M)
    offs_f = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_f = offs_f < Ng
    mask_j = offs_j < KC
    tap = offs_j // Cg
    cc = offs_j - tap * Cg
    kh = tap // KW
    kw = tap - kh * KW
    dh = kh * dil_h
    dw = kw * dil_w
    col_off = dh * stride_xh + dw * stride_xw + (g * Cg + cc) * stride_xc  # the column's tap and channel
    offs_k = tl.arange(0, BLOCK_K)
    if IS_FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    m_start = split * m_per_split
    m_stop = tl.minimum(m_start + m_per_split, M)
    ohw = OH * OW
    # At least one step, also for an empty split (its masked loads leave acc zero): over a
    # loop that may run zero times LLVM copied acc's zero fill onto the path that skips it,
    # and ptxas then serialized every wgmma of the loop (C7515, "non wgmma instructions
    # defining accumulator registers"; `wgmma_serialized` of autotune.inspect).
    for step in range(0, tl.maximum(tl.cdiv(m_stop - m_start, BLOCK_K), 1)):
        o = m_start + step * BLOCK_K + offs_k
        if INT64:
            o = o.to(tl.int64)
        bb = fast_div(o, ohw, ohw_m, ohw_p, FAST_DIV and not INT64)
        rem = o - bb * ohw
        oh = fast_div(rem, OW, ow_m, ow_p, FAST_DIV and not INT64)
        omask = o < m_stop
        ow = rem - oh * OW
        ih0 = oh * conv_sh - pad_h
        iw0 = ow * conv_sw - pad_w
        # one unsigned compare a bound: a negative index wraps past it
        inside = (
            (omask[:, None] & mask_j[None, :])
            & ((ih0[:, None] + dh[None, :]).to(tl.uint32) < H)
            & ((iw0[:, None] + dw[None, :]).to(tl.uint32) < W)
        )
        a = tl.load(
            gs_ptr + (o[None, :] * C_out + (g * Ng + offs_f)[:, None]),
            mask=mask_f[:, None] & omask[None, :],
            other=0.0,
        )
        row_off = bb * stride_xb + ih0 * stride_xh + iw0 * stride_xw
        b = tl.load(x_ptr + (row_off[:, None] + col_off[None, :]), mask=inside, other=0.0)
        if a.dtype != b.dtype:  # fp16 io: fp32 gs against fp16 operands, as TF32
            b = b.to(a.dtype)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)
    rows = split * C_out + g * Ng + offs_f
    tl.store(
        part_ptr + rows[:, None] * KC + offs_j[None, :],
        acc,
        mask=mask_f[:, None] & mask_j[None, :],
    )


@triton.jit
def yat_conv_wgrad_tma_kernel(
    gs_desc,
    x_desc,
    part_ptr,
    B,
    OH,
    OW,
    Cg,
    Ng,
    C_out,
    KC,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    boxes_per_split,
    hw_m,
    hw_p,
    w_m,
    w_p,
    KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BOX_B: tl.constexpr,
    BOX_H: tl.constexpr,
    BOX_W: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """`yat_conv_wgrad_kernel` of a stride-1 conv with TMA loads, for one (BLOCK_M filters,
    BLOCK_N columns) tile of group program_id(1) and box split program_id(2).

    The K walk over output positions goes box by box: BLOCK_K = BOX_B * BOX_H * BOX_W
    positions (`conv_box` over (B, OH, OW)), flattened in the same order for both
    operands. A step copies that box of gs (its out-of-range positions arrive as zeros, so
    they add nothing) and, the tile's columns being BLOCK_N channels of one tap (Cg a
    multiple of BLOCK_N), the same box of x shifted by the tap, the padding zero-filled:
    no position decoding, no gather address math, no bound compares.

    gs_desc: descriptor of gs as (B, OH, OW, C_out), block (BOX_B, BOX_H, BOX_W, BLOCK_M).
    x_desc: descriptor of x as (B, H, W, C_in), block (BOX_B, BOX_H, BOX_W, BLOCK_N); of
    gs's dtype (bf16 / fp32: fp16 keeps an fp32 gs, which runs the pointer kernel). A
    filter tile past Ng reads the next group's filters (or zeros past C_out) into rows the
    store masks off. Split s sums boxes [s * boxes_per_split, (s + 1) * boxes_per_split)
    into part[s] ((splits, C_out, KC) fp32, as the pointer kernel's, for the finishing
    pass). (hw_m, hw_p), (w_m, w_p): `divmod_magic` of the boxes an image and a box row.

    Static sm_90 compiles (Triton 3.6, bf16; `python -m autotune.inspect --op conv2d
    --backward --config TILE[:tma] [--conv 64 128 28 128 3]`): SASS instructions a warp
    issues a main-loop step, pointer -> TMA. ResNet-50 56x56x64 layer: 64x64x64:4:4,
    211 -> 125; 64x64x128:4:3, 406 -> 165; 64x64x64:8:4, 133 -> 135 (the TMA loop's
    bookkeeping is uniform-datapath work every warp repeats, while the pointer loop's
    address math is spread over more threads). 28x28x128 layer: the default 64x128x64:8:4,
    201 -> 126; 128x128x64:8:3, 204 -> 139. The gs box reaches the MMA through registers (4
    LDSM a step: Triton flattens a multi-row box that way), the x box from shared memory.
    Which is faster is for the sweep to measure.
    """
    pid = tl.program_id(0)
    g = tl.program_id(1)
    split = tl.program_id(2)
    pid_m, pid_n = grouped_tile(pid, Ng, KC, BLOCK_M, BLOCK_N, GROUP_M)
    f0 = g * Ng + pid_m * BLOCK_M
    j0 = pid_n * BLOCK_N
    tap = j0 // Cg
    kh = tap // KW
    kw = tap - kh * KW
    dh = kh * dil_h - pad_h
    dw = kw * dil_w - pad_w
    c = g * Cg + j0 - tap * Cg
    tiles_w = tl.cdiv(OW, BOX_W)
    tiles_hw = tl.cdiv(OH, BOX_H) * tiles_w
    start = split * boxes_per_split
    count = tl.minimum(boxes_per_split, tl.cdiv(B, BOX_B) * tiles_hw - start)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # At least one step in the compiler's eyes (a split holds at least one box): over a loop
    # that may run zero times ptxas serialized every wgmma (C7515; see the pointer kernel's)
    for i in range(0, tl.maximum(count, 1)):
        t = start + i
        bi = fast_div(t, tiles_hw, hw_m, hw_p, True)
        r = t - bi * tiles_hw
        hi = fast_div(r, tiles_w, w_m, w_p, True)
        b0 = bi * BOX_B
        oh0 = hi * BOX_H
        ow0 = (r - hi * tiles_w) * BOX_W
        a = gs_desc.load([b0, oh0, ow0, f0]).reshape(BLOCK_K, BLOCK_M)
        b = x_desc.load([b0, oh0 + dh, ow0 + dw, c]).reshape(BLOCK_K, BLOCK_N)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a.T, b, acc, input_precision=DOT_PRECISION, out_dtype=tl.float32)
    offs_f = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = j0 + tl.arange(0, BLOCK_N)
    rows = split * C_out + g * Ng + offs_f
    tl.store(
        part_ptr + rows[:, None] * KC + offs_j[None, :],
        acc,
        mask=(offs_f < Ng)[:, None] & (offs_j < KC)[None, :],
    )


@triton.jit
def _khwc_offset(j, Cg, KW, stride_c, stride_h, stride_w):
    """Offset, within one filter of a weight with strides (stride_c, stride_h, stride_w), of
    the implicit GEMM's K index j = (kh KW + kw) Cg + c (channels fastest)."""
    tap = j // Cg
    c = j - tap * Cg
    kh = tap // KW
    return c * stride_c + kh * stride_h + (tap - kh * KW) * stride_w


@triton.jit
def yat_conv_weight_prep_kernel(
    w_ptr,
    wk_ptr,
    nw_ptr,
    C_out,
    Cg,
    KW,
    KC,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The forward's weight operand in one pass over W: wk[f, j] = W[f, c, kh, kw] with
    j = (kh KW + kw) Cg + c (the K order of the implicit GEMM, channels fastest) and
    nw[f] = ||w_f||^2 in the accumulation dtype (in place of a copy and a norm launch).

    w_ptr: (C_out, Cg, KH, KW) any float dtype, strides stride_w*. wk_ptr: (C_out, KC)
    same dtype, contiguous. nw_ptr: (C_out,) float32 (float64 when IS_FP64).
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_K)
    if INT64:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    mask_r = rows < C_out
    if IS_FP64:
        acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_R, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, KC, BLOCK_K):
        j = k0 + cols
        mask = mask_r[:, None] & (j < KC)[None, :]
        src = rows[:, None] * stride_wo + _khwc_offset(j, Cg, KW, stride_wc, stride_wh, stride_ww)[None, :]
        w = tl.load(w_ptr + src, mask=mask, other=0.0)
        tl.store(wk_ptr + rows[:, None] * KC + j[None, :], w, mask=mask)
        v = w.to(acc.dtype)
        acc += v * v
    tl.store(nw_ptr + rows, tl.sum(acc, axis=1), mask=mask_r)


@triton.jit
def yat_conv_wgrad_finish_kernel(
    part_ptr,
    w_ptr,
    colgd_ptr,
    dw_ptr,
    gu_ptr,
    db_ptr,
    splits,
    C_out,
    KC,
    Cg,
    KW,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    stride_do,
    stride_dc,
    stride_dh,
    stride_dw,
    HAS_DB: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dW[f, c, kh, kw] = sum_split part[split, f, j] + 2 W[f, c, kh, kw] colsum(gd)[f] with
    j = (kh KW + kw) Cg + c, cast to dW's dtype: the weight gradient's split reduction, its
    rank-1 term, the cast and the (kh, kw, c) -> (c, kh, kw) layout in one elementwise pass
    (in place of six PyTorch launches).

    part_ptr:  (splits, C_out, KC) acc dtype, contiguous: `yat_conv_wgrad_kernel`'s partials
               (split 0 also holding the near pairs' terms).
    w_ptr:     (C_out, Cg, KH, KW) weight, strides stride_w*.
    colgd_ptr: (C_out,) acc dtype column sums of gd (the prep pass's, reduced).
    dw_ptr:    (C_out, Cg, KH, KW) output in the weight's dtype, strides stride_d*.
    gu_ptr, db_ptr: (C_out,) column sums of gu (acc dtype) and db, their cast to the bias
               dtype (HAS_DB), written by the programs whose elements cover [0, C_out).
    """
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    if INT64:
        offs = offs.to(tl.int64)
        n = C_out.to(tl.int64) * KC
    else:
        n = C_out * KC
    mask = offs < n
    acc = tl.zeros((BLOCK,), dtype=part_ptr.dtype.element_ty)
    for split in range(0, splits):
        acc += tl.load(part_ptr + split * n + offs, mask=mask, other=0.0)
    f = offs // KC
    j = offs - f * KC
    w_offs = f * stride_wo + _khwc_offset(j, Cg, KW, stride_wc, stride_wh, stride_ww)
    w = tl.load(w_ptr + w_offs, mask=mask, other=0.0)
    colgd = tl.load(colgd_ptr + f, mask=mask, other=0.0)
    acc += 2.0 * w.to(acc.dtype) * colgd
    dw = acc.to(dw_ptr.dtype.element_ty)
    tl.store(dw_ptr + f * stride_do + _khwc_offset(j, Cg, KW, stride_dc, stride_dh, stride_dw), dw, mask=mask)
    if HAS_DB:
        first = offs < C_out
        gu = tl.load(gu_ptr + offs, mask=first, other=0.0)
        tl.store(db_ptr + offs, gu.to(db_ptr.dtype.element_ty), mask=first)


def tma_wgrad_tile(cfg: TileConfig, Cg: int, stride: tuple[int, int] | list[int]) -> bool:
    """Whether a weight gradient with this (fitted) tile runs `yat_conv_wgrad_tma_kernel`
    (operands permitting): a `tma` tile, stride 1, and column tiles of one tap each (the
    channels per group a multiple of BLOCK_N). Otherwise the pointer kernel takes it."""
    return cfg.tma and tuple(stride) == (1, 1) and Cg % cfg.block_n == 0


def conv_config_space(*, include_tma: bool = True) -> list[TileConfig]:
    """Candidate implicit-GEMM tiles: the dense space's tiles, each with the patch norm
    summed in the main loop (`norms_in_loop`, any epilogue split: the conv's norm is a row
    vector) and from the pixel-norm pass. `tma` tiles select `yat_conv_fwd_tma_kernel` for
    stride-1 forwards (`include_tma=False` for problems it cannot take: their TMA tiles
    would only repeat the pointer ones). No warp-specialized tiles: the conv kernels do not
    take them."""
    tiles = dense_config_space(
        include_norms_in_loop=False, include_tma=include_tma, include_warp_specialize=False
    )
    return [replace(c, norms_in_loop=nil) for c in tiles for nil in (True, False)]


def prune_conv_configs(
    configs: list[TileConfig], M: int, Ng: int, Cg: int, elem_bytes: int
) -> list[TileConfig]:
    """As `prune_dense_configs` with K = C_in/groups: a K tile never spans two taps, so
    BLOCK_K beyond the channels per group is clipped like any oversized tile. The conv
    kernels are not persistent: their TMA stores reuse the pipeline's buffers, no staging
    (`pipelined_smem_bytes`). They are not warp-specialized: such a tile (a winners
    file's) runs unspecialized."""
    configs = [c.unspecialized() for c in configs]
    return prune_dense_configs(configs, M, Ng, Cg, elem_bytes, tma_staging=False)


def tma_conv_tile(cfg: TileConfig, k_group: int, stride: tuple[int, int] | list[int]) -> bool:
    """Whether an implicit GEMM with this tile runs its TMA kernel (operands permitting): a
    `tma` tile, stride 1, and a K tile that divides k_group, the channels per group its K
    walks (never spanning two taps or two groups): C_in/G for the forward
    (`yat_conv_fwd_tma_kernel`), C_out/G for the input gradient
    (`yat_conv_dgrad_tma_kernel`). Otherwise the pointer kernel takes the tile."""
    return cfg.tma and tuple(stride) == (1, 1) and k_group % cfg.block_k == 0


@functools.lru_cache(maxsize=4096)  # a search over box shapes, asked every forward call
def conv_box(B: int, OH: int, OW: int, block_m: int) -> tuple[int, int, int]:
    """(BOX_B, BOX_H, BOX_W): the output box of `yat_conv_fwd_tma_kernel`'s M tile, powers
    of two whose product is block_m, chosen to waste the fewest lanes on the overhang past
    the output (ties: wider rows, then taller boxes). ResNet-50's 3x3 layers at batch 64
    and 128 positions: 56x56 takes (2, 8, 8), 28x28 (8, 4, 4), 14x14 (32, 2, 2), none
    wasted; 7x7 (16, 1, 8), 12.5% (the pointer kernel's flat M tile wastes nothing, but
    gathers every row). Every box row is BLOCK_K contiguous channels whatever the shape,
    and each tap copies the whole box, so the shape changes the overhang, not the bytes
    a step moves."""

    def pow2s(cap: int) -> list[int]:
        return [1 << i for i in range(cap.bit_length()) if (1 << i) <= cap]

    best: tuple[int, int, int, int] | None = None
    for tb in pow2s(block_m):
        for th in pow2s(block_m // tb):
            tw = block_m // (tb * th)
            padded = -(-B // tb) * tb * (-(-OH // th) * th) * (-(-OW // tw) * tw)
            key = (padded, -tw, -th)
            if best is None or key < best[:3]:
                best = (*key, tb)
    assert best is not None
    _, neg_tw, neg_th, tb = best
    return tb, -neg_th, -neg_tw


def box_count(sizes: tuple[int, int, int], box: tuple[int, int, int]) -> int:
    """Boxes of shape `box` (`conv_box`) that cover (B, H, W) `sizes`: the TMA kernels' M
    tiles, or the TMA weight gradient's K steps."""
    return math.prod(cdiv(n, b) for n, b in zip(sizes, box, strict=True))


def implicit_gemm_grid(
    B: int, OH: int, OW: int, Ng: int, Cg: int, taps: int, cfg: TileConfig, on_tma: bool
) -> tuple[int, int]:
    """(tiles a group, main-loop steps a tile) of an implicit GEMM with this tile over the
    (B, OH, OW) positions, Ng columns and taps x Cg steps: the conv forward (output
    positions, filters, channels) or its input gradient (input pixels, channels, filters).
    On the TMA kernel (`on_tma`) its M tiles are `conv_box` boxes, on the pointer kernel
    BLOCK_M rows; a step is one (tap, BLOCK_K block)."""
    tiles_m = (
        box_count((B, OH, OW), conv_box(B, OH, OW, cfg.block_m)) if on_tma else cdiv(B * OH * OW, cfg.block_m)
    )
    return tiles_m * cdiv(Ng, cfg.block_n), taps * cdiv(Cg, cfg.block_k)


def conv_default_config(M: int, N: int, K: int, elem_bytes: int, *, interpreting: bool = False) -> TileConfig:
    """Heuristic implicit-GEMM tile: as the dense default, with BLOCK_K capped by the
    channels per group (a K tile never spans two taps), the patch norm summed in the main
    loop (`norms_in_loop`: no extra read of x; whether the pixel-norm pass pays instead is
    for the sweep to measure) except for 16-bit io, where such tiles computed wrong on an
    H200 (`IN_LOOP_NORMS_16BIT`; what the pass costs the ResNet-50 56x56x64 layer's bf16
    forward: the conv2d fwd and fwd-norms lines of that run's breakdown), and 8 warps from
    128x64 up: the in-loop patch norm reads the x tile into registers, BLOCK_M*BLOCK_K/threads
    values a thread (sm_90, bf16, a ResNet-50 3x3 layer, 128x64x64 tile: 220 registers
    with 4 warps, 114 with 8; Triton 3.6: 241 and 117)."""

    def fit(dim: int, cap: int) -> int:
        return min(cap, max(16, next_pow2(max(dim, 1))))

    in_loop = elem_bytes != 2 or IN_LOOP_NORMS_16BIT
    if interpreting:  # the norms as on the GPU
        return TileConfig(fit(M, 64), fit(N, 64), fit(K, 32), 8, 4, 1, norms_in_loop=in_loop)
    if elem_bytes >= 8:  # fp64 (gradcheck): no tensor cores, twice the registers a value
        return TileConfig(fit(M, 64), fit(N, 32), fit(K, 16), 8, 4, 2, norms_in_loop=True)
    bk = 64 if elem_bytes <= 2 else 32
    bm, bn = fit(M, 128), fit(N, 128)
    warps = 8 if bm * bn >= 128 * 64 else 4
    stages = 4 if elem_bytes <= 2 else 3
    split = max(1, bn // 32)
    return TileConfig(bm, bn, fit(K, bk), 8, warps, stages, norms_in_loop=in_loop, epilogue_split=split)


@triton.jit
def yat_conv_bwd_near_kernel(
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
    C_out,
    Ng,
    G,
    n_tiles,
    n_tm,
    n_tn,
    H,
    W,
    OH,
    OW,
    Cg,
    stride_gm,
    stride_gn,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,
    stride_wc,
    stride_wh,
    stride_ww,
    stride_db,
    stride_dc,
    stride_dh,
    stride_dw,
    stride_vo,
    stride_vc,
    stride_vh,
    stride_vw,
    conv_sh,
    conv_sw,
    pad_h,
    pad_w,
    dil_h,
    dil_w,
    alpha_value,
    eps_value,
    KH: tl.constexpr,
    KW: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    NEAR_TAU: tl.constexpr,
    FAST_RCP: tl.constexpr,
    IS_FP64: tl.constexpr,
    INT64: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Add the near (patch, filter) pairs' distance terms that the elementwise pass left out:
        dx[pixel of patch o at tap t] += 2 gd_of (x - w_f[t]),   dW_f[t] += 2 gd_of (w_f[t] - x)
    with the difference formed directly (a padded pixel is 0 and has no dx).

    Patches overlap, so two programs could update one input pixel: a single program (grid
    (1,)) does the whole pass. It scans the prep pass's per-tile counts BLOCK_T at a time
    and visits only tiles that have near lanes, so without near pairs it costs a few vector
    loads. Arguments as in the prep kernel and `yat_conv_dgrad_kernel`; g_ptr / s_ptr are
    the (M, C_out) gradient and saved convolution, nx_ptr (M, G), dx_ptr (strides d*) /
    dw_ptr (strides v*) the gradients already computed, updated in place. INT64 widens
    every offset (a tensor reaching past 2^31 elements).

    Its store addresses depend on which lanes are near, so everything that decides them
    is loaded here in the body and passed to value-only helpers (`_bwd_math`,
    `scalars_from`): torch.compile's mutation analysis would otherwise take the inputs
    behind a helper call for outputs (and a bias that requires grad cannot be one).
    """
    if IS_FP64:
        acc_ty = tl.float64
    else:
        acc_ty = tl.float32
    alpha_in = alpha_value
    eps_in = eps_value
    if ALPHA_FROM_PTR:
        alpha_in = tl.load(alpha_ptr)
    if EPS_FROM_PTR:
        eps_in = tl.load(eps_ptr)
    alpha, eps = scalars_from(alpha_in, eps_in, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64)
    lane = tl.arange(0, BLOCK_M * BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    if INT64:
        offs_k = offs_k.to(tl.int64)
    ohw = OH * OW
    for t0 in range(0, n_tiles, BLOCK_T):
        counts = tl.load(tile_near_ptr + t0 + offs_t, mask=t0 + offs_t < n_tiles, other=0)
        busy = counts > 0
        for _tile in range(0, tl.sum(busy.to(tl.int32), 0)):
            pick = tl.argmax(busy.to(tl.int32), 0)
            busy = busy & (offs_t != pick)
            tile = t0 + pick
            count = tl.sum(tl.where(offs_t == pick, counts, 0), 0)
            grp = tile // (n_tm * n_tn)
            pid_m = (tile // n_tn) % n_tm
            pid_n = tile % n_tn
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            offs_n = grp * Ng + pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
            if INT64:
                offs_m = offs_m.to(tl.int64)
                offs_n = offs_n.to(tl.int64)
            mask_m = offs_m < M
            mask_n = offs_n < grp * Ng + Ng
            mask = mask_m[:, None] & mask_n[None, :]
            gt = tl.load(
                g_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn, mask=mask, other=0.0
            )
            st = tl.load(s_ptr + offs_m[:, None] * C_out + offs_n[None, :], mask=mask, other=0.0)
            nxt = tl.load(nx_ptr + offs_m * G + grp, mask=mask_m, other=0.0)
            nwt = tl.load(nw_ptr + offs_n, mask=mask_n, other=0.0)
            bt = nwt
            if HAS_BIAS:
                bt = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0)
            g, u, r, gu, gq, gd_far, near = _bwd_math(
                gt, st, nxt, nwt, bt, alpha, eps, mask, NEAR_TAU, FAST_RCP, HAS_BIAS, IS_FP64
            )
            gd_near = tl.reshape(tl.where(near, gq, 0.0), (BLOCK_M * BLOCK_N,))
            todo = tl.reshape(near.to(tl.int32), (BLOCK_M * BLOCK_N,))
            for _pair in range(0, count):
                lane_id = tl.argmax(todo, 0)
                coef = 2.0 * tl.sum(tl.where(lane == lane_id, gd_near, 0.0), 0)
                todo = tl.where(lane == lane_id, 0, todo)
                o = pid_m * BLOCK_M + lane_id // BLOCK_N
                f = grp * Ng + pid_n * BLOCK_N + lane_id % BLOCK_N
                if INT64:
                    o = o.to(tl.int64)
                    f = f.to(tl.int64)
                bb = o // ohw
                oh = (o - bb * ohw) // OW
                ow = o - bb * ohw - oh * OW
                for tap in range(0, KH * KW):
                    kh = tap // KW
                    kw = tap - kh * KW
                    # as vectors: a scalar-and-vector mask is not portable to the interpreter
                    ih = oh * conv_sh - pad_h + kh * dil_h + 0 * offs_k
                    iw = ow * conv_sw - pad_w + kw * dil_w + 0 * offs_k
                    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                    for c0 in range(0, Cg, BLOCK_K):
                        cs = c0 + offs_k
                        cmask = cs < Cg
                        chan = grp * Cg + cs
                        xv = tl.load(
                            x_ptr + bb * stride_xb + ih * stride_xh + iw * stride_xw + chan * stride_xc,
                            mask=cmask & inside,
                            other=0.0,
                        ).to(acc_ty)
                        w_at = w_ptr + f * stride_wo + cs * stride_wc + kh * stride_wh + kw * stride_ww
                        wv = tl.load(w_at, mask=cmask, other=0.0).to(acc_ty)
                        diff = coef * (xv - wv)
                        if NEED_DX:
                            d_at = (
                                dx_ptr + bb * stride_db + ih * stride_dh + iw * stride_dw + chan * stride_dc
                            )
                            cur = tl.load(d_at, mask=cmask & inside, other=0.0).to(acc_ty)
                            tl.store(d_at, (cur + diff).to(dx_ptr.dtype.element_ty), mask=cmask & inside)
                        if NEED_DW:
                            dw_at = dw_ptr + f * stride_vo + cs * stride_vc + kh * stride_vh + kw * stride_vw
                            cur = tl.load(dw_at, mask=cmask, other=0.0).to(acc_ty)
                            tl.store(dw_at, (cur - diff).to(dw_ptr.dtype.element_ty), mask=cmask)
