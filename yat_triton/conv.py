"""ⵟ-convolution: launchers, the registered ops with their autograd, and the functional API.

    y[b, f, oh, ow] = alpha * (s + b_f)^2 / (max(||x_patch||^2 + ||w_f||^2 - 2 s, 0) + eps),
    s = conv2d(x, w)[b, f, oh, ow]  (cross-correlation, as torch.nn.functional.conv2d)

conv1d runs as conv2d over a height-1 image. Layout: the kernels index x through its
strides and are fastest on channels_last input (a K tile is BLOCK_K contiguous channels);
NCHW input is converted to channels_last once per call (one read and one write of x) rather
than gathered channel by channel. The output has the input's memory format. The forward's
launches: one for the weight operand (its (kh, kw, c) copy and the filter norms, or the
norms alone for a channels_last weight), one for the convolution, and, for a tile without
`norms_in_loop`, one for the pixel norms whose sums over the taps give the patch norms.

1x1, stride-1, unpadded, ungrouped convs of channels_last inputs run on the dense kernels
(`_pointwise`): they are a dense layer over the (B*H*W, C_in) view of x.

What the forward saves for backward: s = conv(x, w) in fp32 as (B, OH, OW, C_out) (one
output-sized tensor, like the dense op), the patch norms (B, OH, OW, groups) and ||w_f||^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.library import triton_op
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels._common import TileConfig, cdiv, divmod_magic, next_pow2, tail_split
from kernels.conv import (
    box_count,
    conv_box,
    implicit_gemm_grid,
    tma_conv_tile,
    tma_wgrad_tile,
    yat_conv_bwd_near_kernel,
    yat_conv_dgrad_kernel,
    yat_conv_dgrad_tma_kernel,
    yat_conv_fwd_kernel,
    yat_conv_fwd_tma_kernel,
    yat_conv_weight_prep_kernel,
    yat_conv_wgrad_finish_kernel,
    yat_conv_wgrad_kernel,
    yat_conv_wgrad_tma_kernel,
)
from kernels.dense import broken_in_loop_norms, elementwise_block
from yat_triton import _checks
from yat_triton._autograd import YatOp, register_yat_autograd
from yat_triton._launch import (
    INT32_MAX,
    INTERPRETING,
    KernelCall,
    acc_dtype,
    device_sms,
    fast_quotient,
    needs_int64,
    out_max,
    overlap_norm_pass,
    saturating_cast,
    tma_ready,
    upcast_operands,
    use_triton,
    without_autocast,
)
from yat_triton.dense import (
    _fp64_scalars,
    dense_bwd,
    gemm_precision,
    near_tau,
    plan_bwd_prep,
    plan_dense_fwd,
    plan_row_sqnorms,
)
from yat_triton.tuning import conv_override, conv_shape, pick_conv_config, pick_dense_config

__all__ = ["conv_geometry", "yat_conv1d", "yat_conv2d"]

Pair = tuple[int, int]


# Geometry values past int32 overflow the launch's sizes (a padding, the output's allocation)
GEOMETRY_MAX = 2**31 - 1


def _pair(name: str, v: int | tuple[int, ...] | list[int], n: int = 2) -> tuple[int, ...]:
    """An int (Python or NumPy, not a bool) or n of them, as a tuple of n ints."""
    if _checks.is_whole(v):
        values = (int(v),) * n
    elif isinstance(v, (tuple, list)) and len(v) == n and all(_checks.is_whole(i) for i in v):
        values = tuple(int(i) for i in v)
    else:
        raise TypeError(f"{name} must be an int or a tuple of {n} ints, got {v!r}")
    if max(values) > GEOMETRY_MAX:
        raise ValueError(f"{name} must be at most 2**31 - 1, got {v!r}")
    return values


def _conv1d_pair(name: str, v: int | tuple[int, ...] | list[int], height: int) -> tuple[int, int]:
    """A conv1d argument as the (height, width) pair of the height-1 conv2d that runs it."""
    (value,) = _pair(name, v, 1)
    return (height, value)


def conv_geometry(
    x_hw: Pair,
    k_hw: Pair,
    stride: int | tuple[int, ...],
    padding: int | str | tuple[int, ...],
    dilation: int | tuple[int, ...],
    *,
    labels_1d: bool = False,
) -> tuple[Pair, tuple[int, int, int, int], Pair, Pair]:
    """Validate and resolve (stride, padding (top, bottom, left, right), dilation, (OH, OW)).

    padding: an int, a pair, "valid" (no padding) or "same" (stride 1 only; an odd total
    puts the extra row/column at the bottom/right, as torch does). `labels_1d`: the height
    is the dummy of a conv1d, and messages quote the width values only.
    """
    st = _pair("stride", stride)
    dl = _pair("dilation", dilation)

    def shown(v: tuple[int, ...]) -> object:
        return v[-1] if labels_1d else v

    if min(st) <= 0:
        raise ValueError(f"stride must be positive, got {shown(st)}")
    if min(dl) <= 0:
        raise ValueError(f"dilation must be positive, got {shown(dl)}")
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if st != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {shown(st)}")
            th, tw = dl[0] * (k_hw[0] - 1), dl[1] * (k_hw[1] - 1)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        else:
            raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    else:
        ph, pw = _pair("padding", padding)
        if min(ph, pw) < 0:
            raise ValueError(f"padding must be >= 0, got {shown((ph, pw))}")
        pads = (ph, ph, pw, pw)
    span_h = dl[0] * (k_hw[0] - 1) + 1
    span_w = dl[1] * (k_hw[1] - 1) + 1
    in_h = x_hw[0] + pads[0] + pads[1]
    in_w = x_hw[1] + pads[2] + pads[3]
    if span_h > in_h or span_w > in_w:
        raise ValueError(
            f"kernel (dilated size {shown((span_h, span_w))}) is larger than the padded input "
            f"{shown((in_h, in_w))}"
        )
    out = ((in_h - span_h) // st[0] + 1, (in_w - span_w) // st[1] + 1)
    return st, pads, dl, out


# ---------------------------------------------------------------------------------------
# Plain-PyTorch path: CPU tensors without TRITON_INTERPRET=1 and non-CUDA devices.


def _conv_padded(xp: Tensor, weight: Tensor, stride: Pair, dilation: Pair, groups: int) -> Tensor:
    """F.conv2d of an already padded x, also without input channels: torch then gives no
    output channels, where each output is the sum over an empty patch, 0."""
    if weight.shape[1] > 0:
        return F.conv2d(xp, weight, None, stride, 0, dilation, groups)
    hw, k = (xp.shape[2], xp.shape[3]), (weight.shape[2], weight.shape[3])
    oh, ow = _out_hw(hw, k, stride, (0, 0, 0, 0), dilation)
    return xp.new_zeros((xp.shape[0], weight.shape[0], oh, ow))


def _conv_math(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | float,
    eps: Tensor | float,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, s, patch norms, filter norms) in x's dtype, NCHW, with the expanded distance."""
    xp = F.pad(x, (pads[2], pads[3], pads[0], pads[1]))
    s = _conv_padded(xp, weight, stride, dilation, groups)
    C_out, cg, kh, kw = weight.shape
    ones = torch.ones((groups, cg, kh, kw), dtype=x.dtype, device=x.device)
    nx = _conv_padded(xp * xp, ones, stride, dilation, groups)  # (B, G, OH, OW)
    nw = (weight * weight).sum((1, 2, 3))
    u = s + bias.to(s.dtype)[None, :, None, None] if bias is not None else s
    nx_f = nx.repeat_interleave(C_out // groups, dim=1)
    d_raw = nx_f + nw[None, :, None, None] - 2.0 * s
    y = u * (u / (d_raw.clamp_min(0.0) + eps)) * alpha  # u^2 may overflow where y does not
    return y, s, nx, nw


def _scalar(t: Tensor | None, value: float, dtype: torch.dtype) -> Tensor | float:
    return t.to(dtype).reshape(()) if t is not None else value


def _conv_fwd_torch(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = acc_dtype(x.dtype)
    y, s, nx, nw = _conv_math(
        x.to(acc), weight.to(acc), bias, _scalar(alpha, alpha_value, acc),
        _scalar(eps, eps_value, acc), stride, pads, dilation, groups,
    )  # fmt: skip
    y = saturating_cast(y, x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.contiguous(memory_format=torch.channels_last)
    if not save_for_backward:
        return y, s.new_empty((0,)), nx.new_empty((0,)), nw
    # the kernels' layout: (B*OH*OW, C_out) and (B*OH*OW, groups)
    return y, s.permute(0, 2, 3, 1).reshape(-1, s.shape[1]), nx.permute(0, 2, 3, 1).reshape(-1, groups), nw


def _conv_bwd_torch(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """SPEC section 2 with torch ops, in float64 (no exact near-pair pass on this path:
    the wide dtype keeps the cancellation of the GEMM form small)."""
    wide = torch.float32 if x.device.type == "mps" else torch.float64
    xw, ww = x.to(wide), weight.to(wide)
    xp = F.pad(xw, (pads[2], pads[3], pads[0], pads[1]))
    C_out, cg, kh, kw = weight.shape
    s = _conv_padded(xp, ww, stride, dilation, groups)
    ones = torch.ones((groups, cg, kh, kw), dtype=wide, device=x.device)
    nx = _conv_padded(xp * xp, ones, stride, dilation, groups)
    nw = (ww * ww).sum((1, 2, 3))
    u = s + bias.to(wide)[None, :, None, None] if bias is not None else s
    d_raw = nx.repeat_interleave(C_out // groups, dim=1) + nw[None, :, None, None] - 2.0 * s
    r = u / (d_raw.clamp_min(0.0) + _scalar(eps, eps_value, wide))
    g = grad.to(wide)
    ga = g * _scalar(alpha, alpha_value, wide)
    gu = 2.0 * ga * r
    gq = -ga * r * r
    gd = torch.where(d_raw >= 0, gq, torch.zeros_like(gq))
    gs = gu - 2.0 * gd

    def empty() -> Tensor:
        return x.new_empty((0,))

    dx = dw = db = dalpha = deps = None
    if cg == 0:  # no input channels: x and w have no entries to differentiate
        dx, dw = (torch.zeros_like(x) if needs[0] else None), (torch.zeros_like(weight) if needs[1] else None)
        needs = [False, False, *needs[2:]]
    if needs[0]:
        B, _, OH, OW = gs.shape
        rows = gd.reshape(B, groups, C_out // groups, OH, OW).sum(2)  # sum_j gd per group
        dxp = torch.nn.grad.conv2d_input(xp.shape, ww, gs, stride, 0, dilation, groups)
        dxp = dxp + 2.0 * xp * torch.nn.grad.conv2d_input(xp.shape, ones, rows, stride, 0, dilation, groups)
        H, W = x.shape[2], x.shape[3]
        dx = dxp[:, :, pads[0] : pads[0] + H, pads[2] : pads[2] + W].to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last):
            dx = dx.contiguous(memory_format=torch.channels_last)
    if needs[1]:
        dw = torch.nn.grad.conv2d_weight(xp, ww.shape, gs, stride, 0, dilation, groups)
        dw = (dw + 2.0 * ww * gd.sum((0, 2, 3))[:, None, None, None]).to(weight.dtype)
    if needs[2] and bias is not None:
        db = gu.sum((0, 2, 3)).to(bias.dtype)
    if needs[3] and alpha is not None:
        dalpha = (g * u * r).sum().reshape(alpha.shape).to(alpha.dtype)
    if needs[4] and eps is not None:
        deps = gq.sum().reshape(eps.shape).to(eps.dtype)
    return tuple(t if t is not None else empty() for t in (dx, dw, db, dalpha, deps))


# ---------------------------------------------------------------------------------------
# Launchers


def _channels_last(t: Tensor) -> Tensor:
    """t itself when its channels are already contiguous (stride 1), else a channels_last copy."""
    return t if t.stride(1) == 1 or t.shape[1] == 1 else t.contiguous(memory_format=torch.channels_last)


def _pointwise(x: Tensor, weight: Tensor, stride: Pair, pads: tuple[int, int, int, int], groups: int) -> bool:
    """Whether the conv is a dense layer in disguise: a 1x1, stride-1, unpadded, ungrouped
    filter over a channels_last x is y[(b, h, w), f] = ⵟ(x[(b, h, w), :], w_f), a dense
    layer over the (B*H*W, C_in) matrix view of x, whose output view is y in channels_last.
    Such convs (half the layers of a ResNet-50 bottleneck) run on the dense kernels (TMA
    path included) with nothing copied, with the conv's own forced or tuned tiles if it has
    any, else the dense tuning of the layer. NCHW inputs keep the conv kernels
    (their output must come back NCHW), unless the output has one pixel per image."""
    B, _, H, W = x.shape
    return (
        tuple(weight.shape[2:]) == (1, 1)
        and tuple(stride) == (1, 1)
        and not any(pads)
        and groups == 1
        and x.permute(0, 2, 3, 1).is_contiguous()
        and (H * W == 1 or _out_format(x) == torch.channels_last)
    )


def _rows(t: Tensor) -> Tensor:
    """(B, C, H, W) with contiguous channels as its (B*H*W, C) matrix (a view when the
    permuted tensor is contiguous, a copy otherwise)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _out_format(x: Tensor) -> torch.memory_format:
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _khwc_strides(wk: Tensor) -> tuple[int, int, int, int]:
    """The (filter, channel, kh, kw) strides of a (C_out, KH, KW, Cg) weight operand."""
    return wk.stride(0), wk.stride(3), wk.stride(1), wk.stride(2)


def _weight_khwc(weight: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Weight with contiguous channels, and its (filter, channel, kh, kw) strides."""
    wk = weight.permute(0, 2, 3, 1).contiguous()
    return wk, _khwc_strides(wk)


def plan_weight_operand(
    weight: Tensor,
) -> tuple[tuple[Tensor, tuple[int, int, int, int], Tensor], list[KernelCall]]:
    """The forward's weight operand and filter norms in one launch: (wk (C_out, KH, KW, Cg)
    contiguous, its (filter, channel, kh, kw) strides, ||w_f||^2), and the calls. A weight
    whose channels are already innermost (channels_last) is used as it is, its norms from
    the row-norm pass; any other is copied by `yat_conv_weight_prep_kernel`, which sums the
    norms on the way."""
    C_out, Cg, KH, KW = weight.shape
    KC = Cg * KH * KW
    khwc = weight.permute(0, 2, 3, 1)
    if khwc.is_contiguous():
        (nw, _), calls = plan_row_sqnorms(khwc.reshape(C_out, KC))  # a view
        wk = khwc
    else:
        wk = torch.empty((C_out, KH, KW, Cg), dtype=weight.dtype, device=weight.device)
        nw = torch.empty((C_out,), dtype=acc_dtype(weight.dtype), device=weight.device)
        calls = []
        if C_out and KC:
            # on a GPU a filter row (up to 4096 values) a step and ~4096 values a program: one
            # step and C_out / block_r programs for ResNet's 3x3 filters up to 2304 values
            # (576 and 2304 leave ~44% of the lanes masked), two for 4608; its 64 filters of
            # 576 used to take 8 programs of two 8 KB steps
            block_k = min(max(16, next_pow2(KC)), 128 if INTERPRETING else 4096)
            block_r = 16 if INTERPRETING else max(1, min(64, 4096 // block_k))
            calls.append(KernelCall(
                yat_conv_weight_prep_kernel, (cdiv(C_out, block_r),),
                (weight, wk, nw, C_out, Cg, KW, KC, *_xs(weight)),
                dict(IS_FP64=weight.dtype == torch.float64, INT64=needs_int64(weight, wk),
                     BLOCK_R=block_r, BLOCK_K=block_k, num_warps=4),
            ))  # fmt: skip
    return (wk, _khwc_strides(wk), nw), calls


def _magic(*divisors: int) -> tuple[tuple[int, ...], bool]:
    """`divmod_magic` of each divisor, flat, and FAST_DIV: whether the kernels may use them.
    Under symbolic shapes (torch.compile with dynamic sizes) a size is a SymInt, whose
    magic numbers would pin it to one value (a guard a size, a recompile a resolution):
    the kernels divide then."""
    if all(isinstance(d, int) for d in divisors):
        return tuple(v for d in divisors for v in divmod_magic(d)), True
    return (1, 0) * len(divisors), False


def _xs(t: Tensor) -> tuple[int, int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


MAX_GRID_Y = 65535  # CUDA's limit on grid dimensions y and z


def plan_conv2d_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    precision: str,
    save_for_backward: bool,
    config: TileConfig | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], list[KernelCall]]:
    """Allocate the forward's outputs and plan its launches (see `conv2d_fwd`)."""
    if groups > MAX_GRID_Y:
        raise ValueError(
            f"groups={groups}: the conv kernels launch one grid row per group, at most {MAX_GRID_Y} "
            "(CUDA's limit on a grid's second axis)"
        )
    B, _, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    OH, OW = _out_hw((H, W), (KH, KW), stride, pads, dilation)
    M, Ng = B * OH * OW, C_out // groups
    if _pointwise(x, weight, stride, pads, groups):
        # the conv's own forced / tuned tile if any (fitted like a dense one), else the
        # dense tuning of the (M, C_out, C_in) layer it is
        override = config or conv_override(
            "fwd", x.dtype, conv_shape(x.shape, weight.shape, stride, pads, groups), x.device
        )
        cfg = pick_dense_config(M, C_out, Cg, x.dtype, override=override, device=x.device)
        # y is made here, channels_last, and the dense kernel writes its (M, C_out) rows: a
        # permuted view of the dense output would be a view, which in-place ops on y refuse
        y = torch.empty((B, C_out, H, W), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        (_, s, nx, nw), calls = plan_dense_fwd(
            _rows(x), weight.reshape(C_out, Cg), bias, alpha, alpha_value, eps, eps_value, precision,
            save_for_backward, cfg, y_out=y.permute(0, 2, 3, 1).view(M, C_out),
        )  # fmt: skip
        nx = nx.view(M, 1) if save_for_backward else nx.new_empty((0,))
        return (y, s, nx, nw), calls
    acc = acc_dtype(x.dtype)
    dev = x.device
    y = torch.empty((B, C_out, OH, OW), dtype=x.dtype, device=dev, memory_format=_out_format(x))
    s = torch.empty((M, C_out) if save_for_backward else (0,), dtype=acc, device=dev)
    nx = torch.empty((M, groups) if save_for_backward else (0,), dtype=acc, device=dev)
    (wk, ws, nw), calls = plan_weight_operand(weight)
    if M == 0 or C_out == 0:
        return (y, s, nx, nw), calls
    xk = _channels_last(x)
    alpha, eps = _fp64_scalars(x, alpha, alpha_value, eps, eps_value)
    bias = bias.contiguous() if bias is not None else None
    problem = conv_shape(x.shape, weight.shape, stride, pads, groups)
    cfg = config or pick_conv_config(M, Ng, Cg, x.dtype, "fwd", problem=problem, device=x.device)
    operands = (
        bias if bias is not None else y, alpha if alpha is not None else y,
        eps if eps is not None else y, nw, y, s, nx,
    )  # fmt: skip
    pixels = xk.permute(0, 2, 3, 1)  # (B, H, W, C_in)
    xv, wv = pixels, wk.view(C_out, KH * KW * Cg)  # (B, H, W, C); K = (kh, kw, c)
    on_tma = tma_conv_tile(cfg, Cg, stride) and tma_ready(xv, wv)
    elem = x.element_size()
    if broken_in_loop_norms(cfg, elem, on_tma=on_tma):
        cfg = replace(cfg, norms_in_loop=False)  # a TMA tile on the pointer kernel too
    # the pass reads the pixels as rows: a strided x (a channel slice, a crop) sums its
    # norms in the loop, but for 16-bit io (`broken_in_loop_norms`), whose pass reads a copy
    norm_pass = not cfg.norms_in_loop and (pixels.is_contiguous() or elem == 2)
    # the conv overlaps its pixel-norm pass (`overlap_norm_pass`) where there is one (no
    # pixels, no pass: the GEMM would follow the weight prep, whose output its main loop
    # reads): its main loop reads x and the weight operand, which calls before the pass
    # wrote (a copy of strided rows, the weight prep), complete before the pass starts
    overlap = norm_pass and B * H * W > 0 and overlap_norm_pass(x.device, xk, weight)
    if norm_pass:  # the pixel norms of each group, (B, H, W, G), for the epilogue's tap sums
        rows = pixels.reshape(B * H * W * groups, Cg)  # a view where x is dense, else a copy
        (pn, _), norm_calls = plan_row_sqnorms(rows, overlap=overlap)
        calls += norm_calls
    else:
        pn = nx  # unread
    constexprs = dict(
        KH=KH, KW=KW, NORM_PASS=norm_pass, HAS_BIAS=bias is not None, ALPHA_FROM_PTR=alpha is not None,
        EPS_FROM_PTR=eps is not None, STORE_S=save_for_backward, DOT_PRECISION=precision,
        UPCAST=upcast_operands(x.dtype), OUT_MAX=out_max(x.dtype),
        FAST_RCP=fast_quotient(x.dtype, eps, eps_value), GDC_WAIT=overlap, GEMM_ONLY=False,
        EPILOGUE_SPLIT=min(cfg.epilogue_split, max(1, cfg.block_n // 16)), **cfg.launch_options(),
    )  # fmt: skip
    width = cfg.block_n // constexprs["EPILOGUE_SPLIT"]
    # a split tail (norms from the pass: a part's loop sees part of the patch)
    split = _tail_split(
        cfg, norm_pass, *implicit_gemm_grid(B, OH, OW, Ng, Cg, KH * KW, cfg, on_tma), groups, nw
    )
    grid = (split.programs, groups)
    if on_tma:
        box = conv_box(B, OH, OW, cfg.block_m)
        y_out, s_out = _store_descriptors(y, s, list(box), width, cfg.block_n, Ng, groups)
        calls.append(KernelCall(
            yat_conv_fwd_tma_kernel, grid,
            (TensorDescriptor.from_tensor(xv, [*box, cfg.block_k]),
             TensorDescriptor.from_tensor(wv, [cfg.block_n, cfg.block_k]),
             *operands[:4], y_out, s_out, nx, pn, B, H, W, OH, OW, Cg, Ng, C_out, groups, *_xs(y),
             pads[0], pads[2], dilation[0], dilation[1], alpha_value, eps_value,
             *divmod_magic(Cg // cfg.block_k), *split.args),
            dict(constexprs, INT64=needs_int64(y, s, pn), BOX_B=box[0], BOX_H=box[1], BOX_W=box[2],
                 TMA_STORE=y_out is not y, SPLITS=split.splits),
            pdl=overlap,
        ))  # fmt: skip
        return (y, s, nx, nw), calls
    magic, fast = _magic(cdiv(Cg, cfg.block_k))
    y_out, s_out = _store_descriptors(y, s, [cfg.block_m], width, cfg.block_n, Ng, groups)
    calls.append(KernelCall(
        yat_conv_fwd_kernel, grid,
        (xk, wk, *operands[:4], y_out, s_out, nx, pn, M, H, W, OH, OW, Cg, Ng, C_out, groups, *_xs(xk), *ws,
         *_xs(y), stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1],
         alpha_value, eps_value, *magic, *split.args),
        dict(constexprs, IS_FP64=x.dtype == torch.float64, INT64=needs_int64(xk, y, s),
             EVEN_K=Cg % cfg.block_k == 0, FAST_DIV=fast, TMA_STORE=y_out is not y, SPLITS=split.splits),
        pdl=overlap,
    ))  # fmt: skip
    return (y, s, nx, nw), calls


@dataclass(frozen=True)
class _Split:
    """A grid's tail split (`kernels._common.tail_split`): its programs, parts a tail tile,
    and the kernel's (ws_ptr, cnt_ptr, dp_tiles) arguments."""

    programs: int
    splits: int
    args: tuple[object, object, int]


def _tail_split(
    cfg: TileConfig, norm_pass: bool, tiles: int, steps: int, groups: int, acc_like: Tensor
) -> _Split:
    """The split of a forward's or an input gradient's grid (`implicit_gemm_grid`) of
    `tiles` tiles a group, `steps` main-loop steps each: where the tile sets `split_tail`,
    the patch norms come from the pass (`norm_pass`; True for the input gradient), the conv is
    ungrouped (a grid of groups runs them one after another: its last partial wave is the
    last group's, not each group's) and a split pays (`tail_split` on the device's SMs), an
    fp32 (acc dtype) partial per part of each tail tile and a zeroed int32 counter per tail
    tile (the finishing part zeroes it again), allocated here, before the calls launch (the
    counters' fill precedes the pass, which any overlapped GEMM follows); else the
    plain grid, its arguments constant stand-ins that it never reads (`acc_like`, a tensor
    of the acc dtype on the device: the filter norms, the gradient's R rows; and 0: one
    compile whatever the problem). Symbolic sizes (torch.compile's dynamic shapes) take the
    plain grid: a split would pin them."""
    dev = acc_like.device
    splittable = (
        cfg.split_tail and norm_pass and groups == 1 and isinstance(tiles, int) and isinstance(steps, int)
    )
    dp, splits = tail_split(tiles, steps, device_sms(dev)) if splittable else (tiles, 1)
    if splits == 1:
        return _Split(tiles, 1, (acc_like, acc_like, 0))
    tail = tiles - dp
    ws = torch.empty((tail * splits * cfg.block_m * cfg.block_n,), dtype=acc_like.dtype, device=dev)
    counters = torch.zeros((tail,), dtype=torch.int32, device=dev)
    return _Split(dp + tail * splits, splits, (ws, counters, dp))


def _store_descriptors(
    y: Tensor, s: Tensor, box: list[int], width: int, block_n: int, Ng: int, groups: int
) -> tuple[Tensor | TensorDescriptor, Tensor | TensorDescriptor]:
    """A forward's y and s as TMA store descriptors, or y and s themselves where TMA cannot
    store them: y not channels_last, 16-byte alignment missing (`tma_ready`), fp64, or
    groups whose last column tile would spill into the next group's columns (the box is
    clipped only at the tensor's edges). box: [BLOCK_M], boxes over the (M, C_out) rows
    (the pointer kernel's tiles), or [BOX_B, BOX_H, BOX_W] over (B, OH, OW, C_out) (the
    TMA kernel's); width: the columns of an epilogue slice. s (when saved) is (M, C_out)
    contiguous."""
    rows = y.permute(0, 2, 3, 1)  # (B, OH, OW, C_out)
    if y.dtype == torch.float64 or not rows.is_contiguous() or (groups > 1 and Ng % block_n):
        return y, s
    shape = rows.shape if len(box) == 3 else (-1, y.shape[1])
    rows = rows.reshape(shape)
    if rows.shape[0] > INT32_MAX:  # the kernel's row coordinate is an int32
        return y, s
    saved = [s.view(shape)] if s.numel() else []
    if not tma_ready(rows, *saved):
        return y, s
    descs = [TensorDescriptor.from_tensor(t, [*box, width]) for t in (rows, *saved)]
    return descs[0], (descs[1] if saved else s)


def conv2d_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    precision: str,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward of x (B, C_in, H, W) with weight (C_out, C_in/groups, kH, kW).

    Returns (y (B, C_out, OH, OW) in x's memory format, s (B*OH*OW, C_out) fp32, patch
    norms (B*OH*OW, groups), filter norms (C_out,)); s and the patch norms are empty unless
    save_for_backward.
    """
    if not use_triton(x):
        with without_autocast(x):
            return _conv_fwd_torch(
                x, weight, bias, alpha, alpha_value, eps, eps_value, stride, pads, dilation, groups,
                save_for_backward,
            )  # fmt: skip
    outputs, calls = plan_conv2d_fwd(
        x, weight, bias, alpha, alpha_value, eps, eps_value, stride, pads, dilation, groups,
        precision, save_for_backward,
    )  # fmt: skip
    for call in calls:
        call.run()
    return outputs


def near_call(
    g2: Tensor,
    s: Tensor,
    nx: Tensor,
    nw: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    precision: str,
    groups: int,
    tile_near: Tensor,
    xk: Tensor,
    weight: Tensor,
    dx: Tensor | None,
    dw: Tensor | None,
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
) -> KernelCall:
    """The exact near-pair pass of the conv backward (yat_conv_bwd_near_kernel)."""
    M, C_out = g2.shape
    Ng = C_out // groups
    _, Cg, KH, KW = weight.shape
    B, _, H, W = xk.shape
    OH, OW = _out_hw((H, W), (KH, KW), stride, pads, dilation)
    bm, bn, _ = elementwise_block(M, Ng, interpreting=INTERPRETING, elem_bytes=g2.dtype.itemsize)
    tm, tn = cdiv(M, bm), cdiv(Ng, bn)
    alpha, eps = _fp64_scalars(g2, alpha, alpha_value, eps, eps_value)
    bias = bias.contiguous() if bias is not None else None
    dummy = nw
    return KernelCall(
        yat_conv_bwd_near_kernel, (1,),
        (g2, s, nx, nw, bias if bias is not None else dummy,
         alpha if alpha is not None else dummy, eps if eps is not None else dummy,
         tile_near, xk, weight, dx if dx is not None else xk, dw if dw is not None else weight,
         M, C_out, Ng, groups, tile_near.numel(), tm, tn, H, W, OH, OW, Cg,
         g2.stride(0), g2.stride(1), *_xs(xk), *_xs(weight),
         *_xs(dx if dx is not None else xk), *_xs(dw if dw is not None else weight),
         stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1],
         alpha_value, eps_value),
        dict(KH=KH, KW=KW, NEED_DX=dx is not None, NEED_DW=dw is not None,
             HAS_BIAS=bias is not None, ALPHA_FROM_PTR=alpha is not None,
             EPS_FROM_PTR=eps is not None, NEAR_TAU=near_tau(g2.dtype, precision),
             FAST_RCP=fast_quotient(g2.dtype, eps, eps_value),
             IS_FP64=g2.dtype == torch.float64,
             INT64=needs_int64(g2, s, xk, weight, *(t for t in (dx, dw) if t is not None)),
             BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=min(64, max(16, next_pow2(Cg))), BLOCK_T=1024, num_warps=8),
    )  # fmt: skip


def _out_hw(hw: Pair, k: Pair, stride: Pair, pads: tuple[int, int, int, int], dilation: Pair) -> Pair:
    return (
        (hw[0] + pads[0] + pads[1] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1,
        (hw[1] + pads[2] + pads[3] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1,
    )


def conv2d_bwd(
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
    stride: Pair,
    pads: tuple[int, int, int, int],
    dilation: Pair,
    groups: int,
    precision: str,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (dx, dW, db, dalpha, deps); unwanted ones come back empty.

    Three steps: the dense elementwise pass over the (B*OH*OW, C_out) output with groups
    (gs, and partial sums of gd / gu / dalpha / deps terms), the input-gradient implicit
    GEMM with the 2 x * conv_transpose(R, ones) term fused, and the weight-gradient
    implicit GEMM split over output positions.
    """
    if not use_triton(x):
        with without_autocast(x):
            return _conv_bwd_torch(
                grad, x, weight, bias, alpha, alpha_value, eps, eps_value, stride, pads, dilation,
                groups, needs,
            )  # fmt: skip
    if _pointwise(x, weight, stride, pads, groups):
        B, C_in, H, W = x.shape
        C_out = weight.shape[0]
        problem = conv_shape(x.shape, weight.shape, stride, pads, groups)
        override = conv_override("bwd", x.dtype, problem, x.device)
        dx, dw, db, dalpha, deps = dense_bwd(
            _rows(grad), _rows(x), weight.reshape(C_out, C_in), bias, alpha, alpha_value, eps,
            eps_value, s, nx.reshape(-1), nw, precision, needs, override,
        )  # fmt: skip
        dx = dx.view(B, H, W, C_in).permute(0, 3, 1, 2) if needs[0] else dx
        dw = dw.view(C_out, C_in, 1, 1) if needs[1] else dw
        return dx, dw, db, dalpha, deps
    need_dx, need_dw, need_db, need_dalpha, need_deps = needs
    need_db = need_db and bias is not None
    need_dalpha = need_dalpha and alpha is not None
    need_deps = need_deps and eps is not None
    B, C_in, H, W = x.shape
    C_out, Cg, KH, KW = weight.shape
    _, _, OH, OW = grad.shape
    M, Ng = B * OH * OW, C_out // groups
    acc = acc_dtype(x.dtype)
    dev = x.device
    g2 = grad.permute(0, 2, 3, 1).reshape(M, C_out)  # a view for channels_last grads
    elementwise = (g2, s, nx, nw, bias, alpha, alpha_value, eps, eps_value, precision)
    (gs, row_gd, cols, part_alpha, part_eps, tile_near), calls = plan_bwd_prep(
        *elementwise, need_db, need_dalpha, need_deps, groups=groups
    )
    for call in calls:
        call.run()

    def empty() -> Tensor:  # a fresh one per slot: op outputs must not alias
        return torch.empty((0,), dtype=x.dtype, device=dev)

    xk = _channels_last(x)
    geo = (stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1])
    dot = dict(
        DOT_PRECISION=gemm_precision(x.dtype, precision),
        UPCAST=upcast_operands(x.dtype),
        IS_FP64=x.dtype == torch.float64,
    )
    dx = dw = part = None
    KC = KH * KW * Cg
    problem = conv_shape(x.shape, weight.shape, stride, pads, groups)  # dgrad's and wgrad's tuned-config key
    if need_dx:
        dx = torch.empty_like(x, memory_format=_out_format(x))
        # R[o, g]: no sum where a group's columns fit one prep tile (a view for one group)
        rows = (row_gd[:, 0] if row_gd.shape[1] == 1 else row_gd.sum(1)).t().contiguous()
        MX = B * H * W
        if MX and Cg and M and Ng:
            wk, ws = _weight_khwc(weight)
            cfg = pick_conv_config(MX, Cg, Ng, x.dtype, "bwd", problem=problem, device=dev)
            # (gs, W) as the TMA kernel reads them, where it can: a tap's W columns start at
            # tap * Cg, and a box's first column must be 16-byte aligned
            operands = None
            if tma_conv_tile(cfg, Ng, stride) and gs.dtype == wk.dtype and Cg * wk.element_size() % 16 == 0:
                operands = gs.view(B, OH, OW, C_out), wk.view(C_out, KH * KW * Cg)
            on_tma = operands is not None and tma_ready(*operands)
            # a split tail as the forward's (the input gradient is the same implicit GEMM over
            # input pixels, channels and (tap, filter) steps)
            split = _tail_split(
                cfg, True, *implicit_gemm_grid(B, H, W, Cg, Ng, KH * KW, cfg, on_tma), groups, rows
            )
            if on_tma:
                gsv, wv = operands
                box = conv_box(B, H, W, cfg.block_m)
                KernelCall(
                    yat_conv_dgrad_tma_kernel, (split.programs, groups),
                    (TensorDescriptor.from_tensor(gsv, [*box, cfg.block_k]),
                     TensorDescriptor.from_tensor(wv, [cfg.block_k, cfg.block_n]),
                     rows, xk, dx, B, H, W, OH, OW, Cg, Ng, groups, *_xs(xk), *_xs(dx),
                     pads[0], pads[2], dilation[0], dilation[1], *divmod_magic(Ng // cfg.block_k),
                     *split.args),
                    dict(KH=KH, KW=KW, DOT_PRECISION=dot["DOT_PRECISION"], UPCAST=dot["UPCAST"],
                         INT64=needs_int64(xk, dx, rows), BOX_B=box[0], BOX_H=box[1], BOX_W=box[2],
                         SPLITS=split.splits, **cfg.launch_options()),
                ).run()  # fmt: skip
            else:
                magic, fast = _magic(cdiv(Ng, cfg.block_k))
                KernelCall(
                    yat_conv_dgrad_kernel, (split.programs, groups),
                    (gs, rows, wk, xk, dx, MX, H, W, OH, OW, Cg, Ng, C_out, groups,
                     *ws, *_xs(xk), *_xs(dx), *geo, *magic, *split.args),
                    dict(KH=KH, KW=KW, **dot, INT64=needs_int64(xk, dx, gs),
                         UNIT_STRIDE=tuple(stride) == (1, 1), EVEN_K=Ng % cfg.block_k == 0,
                         FAST_DIV=fast, SPLITS=split.splits, **cfg.launch_options()),
                ).run()  # fmt: skip
        elif MX:
            dx.zero_()
    if need_dw:
        cfg = pick_conv_config(Ng, KC, M, x.dtype, "bwd", problem=problem, device=dev)
        tiles = cdiv(Ng, cfg.block_m) * cdiv(KC, cfg.block_n) * groups
        # (gs, x as (B, H, W, C_in)) as the TMA kernel reads them, where it can: a box's first
        # channel (filter) must be 16-byte aligned, and groups start at g * Cg (g * Ng);
        # tma_ready refuses traced calls before conv_box would hash symbolic sizes
        elem, box = x.element_size(), None
        aligned = (Cg * elem) % 16 == 0 and (Ng * elem) % 16 == 0
        if tma_wgrad_tile(cfg, Cg, stride) and gs.dtype == x.dtype and aligned:
            gsv, xv = gs.view(B, OH, OW, C_out), xk.permute(0, 2, 3, 1)
            box = conv_box(B, OH, OW, cfg.block_k) if tma_ready(gsv, xv) else None
        # the K walk in units: output positions (pointer kernel) or boxes of them (TMA)
        units = box_count((B, OH, OW), box) if box else M
        unit = 1 if box else cfg.block_k
        splits = 1 if INTERPRETING else max(1, min(cdiv(264, max(tiles, 1)), cdiv(M, 4 * cfg.block_k)))
        per_split = cdiv(cdiv(max(units, 1), splits), unit) * unit
        splits = cdiv(max(units, 1), per_split)
        # every (split, filter, column) slot is stored by one program, its split's sum (0 for
        # an empty range): no memset, unless nothing is launched
        launched = bool(M and KC and Ng)
        part = (torch.empty if launched else torch.zeros)((splits, C_out, KC), dtype=acc, device=dev)
        grid = (cdiv(Ng, cfg.block_m) * cdiv(KC, cfg.block_n), groups, splits)
        if launched and box is not None:
            tiles_w = cdiv(OW, box[2])
            KernelCall(
                yat_conv_wgrad_tma_kernel, grid,
                (TensorDescriptor.from_tensor(gsv, [*box, cfg.block_m]),
                 TensorDescriptor.from_tensor(xv, [*box, cfg.block_n]), part,
                 B, OH, OW, Cg, Ng, C_out, KC, pads[0], pads[2], dilation[0], dilation[1], per_split,
                 *divmod_magic(cdiv(OH, box[1]) * tiles_w), *divmod_magic(tiles_w)),
                dict(KW=KW, DOT_PRECISION=dot["DOT_PRECISION"], UPCAST=dot["UPCAST"], BOX_B=box[0],
                     BOX_H=box[1], BOX_W=box[2], **cfg.launch_options()),
            ).run()  # fmt: skip
        elif launched:
            magic, fast = _magic(OH * OW, OW)
            KernelCall(
                yat_conv_wgrad_kernel, grid,
                (gs, xk, part, M, H, W, OH, OW, Cg, Ng, C_out, KC, *_xs(xk), *geo, per_split,
                 *magic),
                dict(KW=KW, **dot, INT64=needs_int64(xk, gs), FAST_DIV=fast,
                     **cfg.launch_options()),
            ).run()  # fmt: skip
    if (need_dx or need_dw) and M and C_out:
        # dW's near-pair terms go into split 0 of its fp32 partials (one rounding at the
        # cast of the finishing pass); dx's in its dtype, one rounding per near patch.
        part0 = part[0].view(C_out, KH, KW, Cg).permute(0, 3, 1, 2) if part is not None else None
        near_call(
            g2, s, nx, nw, bias, alpha, alpha_value, eps, eps_value, precision, groups,
            tile_near, xk, weight, dx, part0, stride, pads, dilation,
        ).run()  # fmt: skip
    col_sums = cols.sum(0) if part is not None or need_db else None  # gd's for dW, gu's for db
    db = torch.empty_like(bias) if need_db else None
    finish_db = need_db and part is not None and C_out and KC  # db's cast rides on dW's pass
    if part is not None:
        dw = torch.empty_like(weight)
        if C_out and KC:
            block = 256 if INTERPRETING else 1024
            KernelCall(
                yat_conv_wgrad_finish_kernel, (cdiv(C_out * KC, block),),
                (part, weight, col_sums[0], dw, col_sums[1] if finish_db else dw, db if finish_db else dw,
                 part.shape[0], C_out, KC, Cg, KW, *_xs(weight), *_xs(dw)),
                dict(HAS_DB=bool(finish_db), INT64=needs_int64(part, weight, dw), BLOCK=block, num_warps=4),
            ).run()  # fmt: skip
    if need_db and not finish_db:
        db.copy_(col_sums[1])
    dalpha = part_alpha.sum().reshape(alpha.shape).to(alpha.dtype) if need_dalpha else None
    deps = part_eps.sum().reshape(eps.shape).to(eps.dtype) if need_deps else None
    return tuple(t if t is not None else empty() for t in (dx, dw, db, dalpha, deps))


# ---------------------------------------------------------------------------------------
# Registered ops


@triton_op("yat_triton::conv2d_fwd", mutates_args=())
def _conv2d_fwd_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    alpha: Tensor | None,
    alpha_value: float,
    eps: Tensor | None,
    eps_value: float,
    stride: list[int],
    pads: list[int],
    dilation: list[int],
    groups: int,
    precision: str,
    save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return conv2d_fwd(
        x, weight, bias, alpha, alpha_value, eps, eps_value, tuple(stride), tuple(pads),
        tuple(dilation), groups, precision, save_for_backward,
    )  # fmt: skip


@triton_op("yat_triton::conv2d_bwd", mutates_args=())
def _conv2d_bwd_op(
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
    stride: list[int],
    pads: list[int],
    dilation: list[int],
    groups: int,
    precision: str,
    needs: list[bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return conv2d_bwd(
        grad, x, weight, bias, alpha, alpha_value, eps, eps_value, s, nx, nw, tuple(stride),
        tuple(pads), tuple(dilation), groups, precision, needs,
    )  # fmt: skip


register_yat_autograd(_conv2d_fwd_op, _conv2d_bwd_op, "yat_conv2d")
CONV2D = YatOp(_conv2d_fwd_op, _conv2d_bwd_op, conv2d_fwd, conv2d_bwd, "yat_conv2d")


# ---------------------------------------------------------------------------------------
# Functional API


def _check_conv_args(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    groups: int,
    alpha: float | Tensor | None,
    eps: float | Tensor,
    precision: str | None,
    spatial: int,
) -> None:
    _checks.check_float_tensor("x", x)
    _checks.check_float_tensor("weight", weight)
    if x.dim() != 2 + spatial:
        names = "(B, C_in, H, W) or (C_in, H, W)" if spatial == 2 else "(B, C_in, L) or (C_in, L)"
        raise ValueError(f"x must have shape {names}, got shape {tuple(x.shape)}")
    if weight.dim() != 2 + spatial:
        names = "(C_out, C_in/groups, kH, kW)" if spatial == 2 else "(C_out, C_in/groups, k)"
        raise ValueError(f"weight must have shape {names}, got shape {tuple(weight.shape)}")
    _checks.check_same("weight", weight, "x", x)
    if x.shape[0] and x.shape[1] and min(x.shape[2:]) == 0:  # as torch's conv: nothing to slide over
        raise ValueError(
            f"x has an empty spatial size {tuple(x.shape[2:])}: only an empty batch or zero channels "
            f"are supported (as F.conv{spatial}d), got shape {tuple(x.shape)}"
        )
    if not _checks.is_whole(groups) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if min(weight.shape[2:]) < 1:
        size = "kH, kW" if spatial == 2 else "k"
        raise ValueError(f"weight's kernel size ({size}) must be >= 1, got shape {tuple(weight.shape)}")
    C_in, C_out = x.shape[1], weight.shape[0]
    if C_in % groups or C_out % groups:
        raise ValueError(f"groups={groups} must divide both C_in={C_in} and C_out={C_out}")
    if weight.shape[1] * groups != C_in:
        raise ValueError(
            f"weight expects C_in/groups={weight.shape[1]} channels per group, but x has "
            f"C_in={C_in} with groups={groups} ({C_in // groups} per group)"
        )
    if bias is not None:
        _checks.check_float_tensor("bias", bias)
        _checks.check_same("bias", bias, "x", x)
        if bias.shape != (C_out,):
            raise ValueError(f"bias must have shape ({C_out},), got shape {tuple(bias.shape)}")
    if alpha is not None:
        _checks.check_scalar_arg("alpha", alpha, x, positive=False)
    _checks.check_scalar_arg("eps", eps, x, positive=True)
    _checks.check_precision(precision)


def yat_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | str | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    *,
    alpha: float | Tensor | None = None,
    eps: float | Tensor = 1e-5,
    precision: str | None = None,
) -> Tensor:
    """ⵟ-convolution: y = alpha * (conv(x, w_f) + b_f)^2 / (||x_patch - w_f||^2 + eps).

    Args:
        x: (B, C_in, H, W), float16 / bfloat16 / float32 / float64; channels_last is the
            fast layout (NCHW costs one channels_last copy of x per call).
        weight: (C_out, C_in / groups, kH, kW), same dtype and device.
        bias: optional (C_out,), inside the square.
        stride, padding, dilation, groups: as torch.nn.functional.conv2d; padding may be
            an int, a pair, "valid" or "same".
        alpha, eps, precision: as `yat_linear`.

    Returns (B, C_out, OH, OW) in x's dtype and memory format; fp16/bf16 saturate. Under
    torch.autocast the operands are cast as for F.conv2d (see `yat_linear`). An unbatched
    x (C_in, H, W) gives (C_out, OH, OW), as with F.conv2d.
    """
    if isinstance(x, Tensor) and x.dim() == 3:  # unbatched, as F.conv2d takes it
        y = yat_conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, alpha=alpha, eps=eps,
                       precision=precision)  # fmt: skip
        return y.squeeze(0)
    x, weight, bias = _checks.autocast_operands(x, weight, bias)
    _check_conv_args(x, weight, bias, groups, alpha, eps, precision, spatial=2)
    groups = int(groups)  # a NumPy one too
    st, pads, dl, _ = conv_geometry(
        (x.shape[2], x.shape[3]), (weight.shape[2], weight.shape[3]), stride, padding, dilation
    )
    alpha_t = alpha if isinstance(alpha, Tensor) else None
    alpha_value = 1.0 if alpha is None or alpha_t is not None else float(alpha)
    eps_t = eps if isinstance(eps, Tensor) else None
    eps_value = 1.0 if eps_t is not None else float(eps)
    return CONV2D(x, weight, bias, alpha_t, alpha_value, eps_t, eps_value, st, pads, dl, groups,
                  _checks.resolve_precision(precision, x.dtype))  # fmt: skip


def yat_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int] = 1,
    padding: int | str | tuple[int] = 0,
    dilation: int | tuple[int] = 1,
    groups: int = 1,
    *,
    alpha: float | Tensor | None = None,
    eps: float | Tensor = 1e-5,
    precision: str | None = None,
) -> Tensor:
    """ⵟ-convolution over sequences: x (B, C_in, L), weight (C_out, C_in / groups, k).

    Runs as `yat_conv2d` over a height-1 image; arguments as there (1-D values). An
    unbatched x (C_in, L) gives (C_out, OL), as with F.conv1d.
    """
    if isinstance(x, Tensor) and x.dim() == 2:  # unbatched, as F.conv1d takes it
        y = yat_conv1d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, alpha=alpha, eps=eps,
                       precision=precision)  # fmt: skip
        return y.squeeze(0)
    x, weight, bias = _checks.autocast_operands(x, weight, bias)
    _check_conv_args(x, weight, bias, groups, alpha, eps, precision, spatial=1)
    # validate in 1-D terms, so that messages speak of the caller's values
    conv_geometry((1, x.shape[2]), (1, weight.shape[2]), _conv1d_pair("stride", stride, 1),
                  padding if isinstance(padding, str) else _conv1d_pair("padding", padding, 0),
                  _conv1d_pair("dilation", dilation, 1), labels_1d=True)  # fmt: skip

    def one(name: str, v: int | str | tuple[int, ...] | list[int]) -> int | str | tuple[int, int]:
        if isinstance(v, str):
            return v
        (value,) = _pair(name, v, 1)
        return (1 if name != "padding" else 0, value)

    y = yat_conv2d(
        x.unsqueeze(2), weight.unsqueeze(2), bias, one("stride", stride), one("padding", padding),
        one("dilation", dilation), groups, alpha=alpha, eps=eps, precision=precision,
    )  # fmt: skip
    # a 1-D output is always contiguous, as torch's conv1d (a channels_last pass of the
    # 2-D kernels, whose layout follows x's, would leave it permuted)
    return y.squeeze(2).contiguous()


def conv_flops(x_shape: tuple[int, ...], w_shape: tuple[int, ...], out_hw: Pair) -> int:
    """SPEC section 5: 2 * B * OH * OW * C_out * (C_in/groups) * kH * kW."""
    return 2 * x_shape[0] * out_hw[0] * out_hw[1] * w_shape[0] * math.prod(w_shape[1:])
