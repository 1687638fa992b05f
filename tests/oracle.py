"""The float64 oracles for the ⵟ-dense and ⵟ-convolution ops (SPEC.md section 3).

Everything is computed in float64 on the CPU, with the squared distance formed directly as
sum_k (x_ik - w_jk)^2 (no ||x||^2 + ||w||^2 - 2 x.w cancellation), then the formula of
SPEC.md section 1 with its clamp. Backward references are `torch.autograd.grad` through this
function: the upcasts below keep autograd, so gradients flow back to whatever tensors the
caller passed (typically float64 CPU leaves made from the inputs of the op under test).

Never import the package under test here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv_out_size", "resolve_conv_padding", "to_oracle", "yat_conv2d_ref", "yat_dense_ref"]


def to_oracle(t: Tensor | None, *, requires_grad: bool = False) -> Tensor | None:
    """A float64 CPU leaf copy of `t` (its exact values), optionally requiring grad."""
    if t is None:
        return None
    return t.detach().to(device="cpu", dtype=torch.float64).requires_grad_(requires_grad)


def _f64(v: Tensor | float) -> Tensor:
    """Upcast a float or a one-element tensor to a float64 CPU scalar, keeping autograd."""
    if isinstance(v, Tensor):
        return v.to(device="cpu", dtype=torch.float64).reshape(())
    return torch.tensor(float(v), dtype=torch.float64)


def yat_dense_ref(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    alpha: Tensor | float | None = None,
    eps: Tensor | float = 1e-5,
) -> Tensor:
    """y = alpha * (x.w_j + b_j)^2 / (max(sum_k (x_k - w_jk)^2, 0) + eps), in float64.

    x: (*, K); w: (N, K); b: (N,) or None; alpha: None (= 1), a float or a one-element
    tensor; eps: a float or a one-element tensor. Returns (*, N) float64 on the CPU.
    Fine for small shapes only: the distance materialises an (M, N, K) tensor.
    """
    lead = x.shape[:-1]
    K = x.shape[-1]
    x64 = x.to(device="cpu", dtype=torch.float64).reshape(math.prod(lead), K)
    w64 = w.to(device="cpu", dtype=torch.float64)
    s = x64 @ w64.t()
    u = s + b.to(device="cpu", dtype=torch.float64) if b is not None else s
    d = ((x64[:, None, :] - w64[None, :, :]) ** 2).sum(-1)
    q = d.clamp(min=0) + _f64(eps)
    y = u * u / q
    if alpha is not None:
        y = _f64(alpha) * y
    return y.reshape(*lead, w.shape[0])


def _two(v: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def resolve_conv_padding(
    padding: int | str | tuple[int, int],
    kernel: tuple[int, int],
    dilation: int | tuple[int, int],
) -> tuple[int, int, int, int]:
    """Zero padding as (top, bottom, left, right), torch.nn.Conv2d's convention.

    'valid' is no padding; 'same' pads a total of d * (k - 1) per dimension, total // 2 at
    the top/left and the rest at the bottom/right (so an odd total puts the extra row or
    column at the bottom/right).
    """
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        dh, dw = _two(dilation)
        th, tw = dh * (kernel[0] - 1), dw * (kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = _two(padding)
    return (ph, ph, pw, pw)


def conv_out_size(size: int, pad_total: int, kernel: int, stride: int, dilation: int) -> int:
    """floor((size + pad_total - dilation * (kernel - 1) - 1) / stride) + 1."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def yat_conv2d_ref(
    x: Tensor,
    w: Tensor,
    b: Tensor | None = None,
    alpha: Tensor | float | None = None,
    eps: Tensor | float = 1e-5,
    stride: int | tuple[int, int] = 1,
    padding: int | str | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """y[b, f, oh, ow] = alpha * (<p, w_f> + b_f)^2 / (max(sum_k (p_k - w_fk)^2, 0) + eps),
    p = the receptive field of (oh, ow) in the zero-padded x, restricted to f's group.

    x: (B, C_in, H, W); w: (C_out, C_in / groups, kH, kW); b: (C_out,) or None; alpha,
    eps as `yat_dense_ref`. stride / padding / dilation / groups as torch.nn.Conv2d
    (padding: int, pair, 'same' or 'valid'). Returns (B, C_out, OH, OW) float64 NCHW on
    the CPU. Patches come from F.unfold of the explicitly padded input and the distances
    are formed directly, without the norm expansion: fine for small shapes only (it
    materialises a (B, C_out / groups, C_in / groups * kH * kW, OH * OW) tensor per group).
    """
    x64 = x.to(device="cpu", dtype=torch.float64)
    w64 = w.to(device="cpu", dtype=torch.float64)
    B, C_in, H, W = x64.shape
    C_out, cg, kh, kw = w64.shape
    st, dl = _two(stride), _two(dilation)
    top, bottom, left, right = resolve_conv_padding(padding, (kh, kw), dl)
    OH = conv_out_size(H, top + bottom, kh, st[0], dl[0])
    OW = conv_out_size(W, left + right, kw, st[1], dl[1])
    xp = F.pad(x64, (left, right, top, bottom))
    og = C_out // groups
    s_parts, d_parts = [], []
    if cg == 0:  # no input channels: empty patches, every sum 0 (F.unfold refuses them);
        # x and w stay in the graph, for their (empty) gradients
        s_parts = d_parts = [xp.new_zeros((B, C_out, OH * OW)) + 0.0 * (xp.sum() + w64.sum())]
    for g in range(groups if cg else 0):
        patches = F.unfold(xp[:, g * cg : (g + 1) * cg], (kh, kw), dilation=dl, stride=st)
        wg = w64[g * og : (g + 1) * og].reshape(og, cg * kh * kw)  # (og, K)
        s_parts.append(torch.einsum("bkl,ok->bol", patches, wg))
        d_parts.append(((patches[:, None, :, :] - wg[None, :, :, None]) ** 2).sum(2))
    s = torch.cat(s_parts, 1).reshape(B, C_out, OH, OW)
    d = torch.cat(d_parts, 1).reshape(B, C_out, OH, OW)
    u = s + b.to(device="cpu", dtype=torch.float64)[None, :, None, None] if b is not None else s
    y = u * u / (d.clamp(min=0) + _f64(eps))
    if alpha is not None:
        y = _f64(alpha) * y
    return y
