"""The float64 oracle for the ⵟ-dense op (SPEC.md section 3).

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
from torch import Tensor

__all__ = ["to_oracle", "yat_dense_ref"]


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
