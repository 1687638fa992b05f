"""The one tolerance table of the test suite, and the comparison that uses it.

Errors are measured relative to the scale of the expected tensor (`scale = max|expected|`
unless the caller knows a better one), so one table serves outputs and gradients of any
magnitude. An element passes when

    |actual - expected| <= scale * (atol + acc * sqrt(reduction) * amplification)
                           + rtol * |expected|

- `atol`: what rounding to the io dtype costs on its own (output store, the io-dtype
  operand the backward GEMMs read), relative to the scale.
- `acc`: per sqrt(term) rounding of the fp32 (fp64 for fp64 io) accumulation; `reduction`
  is the length of the sum behind the compared value (K for the forward, N for dx, M for
  dW and db, M*N for dalpha and deps).
- `amplification`: condition number of the computation, 1 for well-spread data. The norm
  expansion d = ||x||^2 + ||w||^2 - 2 x.w that the kernels use (SPEC.md section 1) loses
  (||x||^2 + ||w||^2) / q of the accumulation precision, so tests where x ~ w pass that
  ratio here. It scales only the accumulation term, never the io rounding.
- `rtol`: a few units in the last place of the io dtype.

`scale` and `amplification` may also be tensors that broadcast to the expected shape, each
element then held to its own. A test whose rows differ in size or condition by orders of
magnitude (x ~ w in some rows only) gives each row its own scale (`abs_max` over the row)
and condition number, so that no row is held to the loosest one (an all-zero row takes
the whole tensor's scale; a condition number below 1 counts as 1).

Calibrated on the interpreter against the float64 oracle (relative-to-max errors measured
on 5x123x77, 33x17x40, 1x50x30, 1x1x1 with random data: forward fp32 <= 5e-7,
fp16 <= 3e-4, bf16 <= 5.5e-3; gradients fp32 <= 7e-7, fp16 <= 5e-4, bf16 <= 1.1e-2;
with x ~ w, kappa ~ 2.5e3-4.6e3: fp32 <= 5e-4, fp16 <= 4.3e-4, bf16 <= 5.5e-3). Every
entry leaves a margin of ~2-4x over those, and stays orders of magnitude below what a
wrong kernel produces (a dropped bias, a flipped sign in one gradient term: O(1) errors;
a 0.1% scale error fails fp32 and fp64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TOLERANCES", "Tol", "abs_max", "assert_close", "max_rel_err", "row_checker", "tol_for"]


@dataclass(frozen=True)
class Tol:
    atol: float  # io rounding, relative to the scale
    acc: float  # accumulation rounding per sqrt(reduction), relative to the scale
    rtol: float  # relative to |expected| elementwise


# Keyed by dtype name; ("float32", "tf32") is fp32 io with TF32 tensor-core dot products
# (10-bit mantissa operands, unit roundoff 2^-11: fp16-like, GPU only; on the interpreter
# tf32 is exact and the entry is merely generous).
TOLERANCES: dict[str | tuple[str, str], Tol] = {
    "float64": Tol(atol=1e-13, acc=1e-14, rtol=1e-12),
    "float32": Tol(atol=1e-6, acc=2e-7, rtol=1e-5),
    ("float32", "tf32"): Tol(atol=5e-3, acc=5e-4, rtol=1e-2),
    "float16": Tol(atol=1e-3, acc=2e-7, rtol=2e-3),
    "bfloat16": Tol(atol=8e-3, acc=2e-7, rtol=1.6e-2),
}


def _name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def tol_for(dtype: torch.dtype | str | tuple, precision: str | None = None) -> Tol:
    """The table entry for an io dtype (and, for float32, the dot precision)."""
    if isinstance(dtype, tuple):
        dtype, precision = dtype
    name = _name(dtype)
    if name == "float32" and precision == "tf32":
        return TOLERANCES[("float32", "tf32")]
    return TOLERANCES[name]


def assert_close(
    actual: Tensor,
    expected: Tensor,
    dtype: torch.dtype | str | tuple,
    *,
    reduction: int = 1,
    what: str = "",
    precision: str | None = None,
    scale: float | Tensor | None = None,
    amplification: float | Tensor = 1.0,
) -> None:
    """Compare `actual` (any dtype/device) to the float64 `expected` per the table entry.

    `dtype` selects the entry (the dtype the value was produced in; a ("float32", "tf32")
    key or `precision="tf32"` selects the TF32 entry). Shapes must match exactly; NaNs must
    sit at the same places, and infinities must match exactly. On failure the message gives
    the max abs error, the max rel error (relative to the scale, and elementwise) and the
    first bad index with both values. A tensor `scale` or `amplification` of more than one
    element sets each element's own (broadcast to the expected shape).
    """
    label = what or "value"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{label}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    if e.numel() == 0:
        return
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        idx = torch.nonzero(nan_a != nan_e)[0].tolist()
        raise AssertionError(
            f"{label}: NaN mismatch at index {idx}: actual {a[tuple(idx)].item()}, "
            f"expected {e[tuple(idx)].item()}"
        )
    t = tol_for(dtype, precision)
    finite = e[torch.isfinite(e)]
    whole = finite.abs().max().item() if finite.numel() else 0.0
    whole = whole or 1.0  # an all-zero expectation: the tolerance becomes absolute
    if isinstance(scale, Tensor) and scale.numel() > 1:
        scale_v = scale.detach().to(device="cpu", dtype=torch.float64).abs().expand_as(e)
        scale_v = torch.where(scale_v == 0.0, whole, scale_v)  # an all-zero row: the whole's
    else:
        if scale is None:
            s = whole
        else:
            s = float(scale.abs().max()) if isinstance(scale, Tensor) else abs(float(scale))
        scale_v = torch.tensor(s or 1.0, dtype=torch.float64)
    amp = (  # per element: never below 1, the well-spread data the table is calibrated on
        amplification.detach().to(device="cpu", dtype=torch.float64).clamp_min(1.0).expand_as(e)
        if isinstance(amplification, Tensor)
        else torch.tensor(float(amplification), dtype=torch.float64)
    )
    allowed_all = (scale_v * (t.atol + t.acc * math.sqrt(max(reduction, 1)) * amp)).expand_as(e)
    keep = ~nan_e
    a, e, allowed = a[keep], e[keep], allowed_all[keep]
    scale_v, amp = scale_v.expand_as(keep)[keep], amp.expand_as(keep)[keep]
    full_index = torch.nonzero(keep)
    if e.numel() == 0:
        return
    err = (a - e).abs()
    # inf matching inf of the same sign is exact; inf against a finite value is an error of inf
    same_inf = torch.isinf(a) & torch.isinf(e) & (torch.sign(a) == torch.sign(e))
    err = torch.where(same_inf, torch.zeros_like(err), err)
    bound = torch.where(torch.isinf(e), torch.zeros_like(e), allowed + t.rtol * e.abs())
    bad = err > bound
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        first = full_index[i].tolist()
        rel = err / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
        key = dtype if isinstance(dtype, tuple) else _name(dtype)
        raise AssertionError(
            f"{label} [{key}{'/' + precision if precision else ''}, reduction={reduction}, "
            f"amplification={amp[i].item():.3g}]: {int(bad.sum())}/{bad.numel()} elements out "
            f"of tolerance; max abs err {err.max().item():.3e}; max rel err "
            f"{(err / scale_v).max().item():.3e} relative to the scale "
            f"(elementwise {rel.max().item():.3e}); first bad index {first}: actual "
            f"{a[i].item():.8g}, expected {e[i].item():.8g}, allowed {allowed[i].item():.3e} + "
            f"{t.rtol:g}*|expected| at scale {scale_v[i].item():.3e}"
        )


def abs_max(t: Tensor, dims: tuple[int, ...]) -> Tensor:
    """max |t| over `dims` (non-finite values left out), kept as size-1 dims: a per-row
    scale for `assert_close`."""
    a = t.detach().to(device="cpu", dtype=torch.float64).abs()
    return torch.where(torch.isfinite(a), a, 0.0).amax(dim=dims, keepdim=True)


def row_checker(rows: dict[str, tuple[tuple[int, ...], Tensor]], amplification: float):  # noqa: ANN201
    """check(label, value, ref, dtype, **assert_close kwargs): `assert_close` with what=label,
    where `rows` maps a label to (dims, amp): that value is held row by row, each row's
    scale the max of |ref| over `dims` (`abs_max`), its amplification `amp` (broadcast
    against the value); other labels are held to `amplification`."""

    def check(label: str, value: Tensor, ref: Tensor, dtype: torch.dtype, **kw) -> None:
        if label in rows:
            dims, amp = rows[label]
            kw |= {"scale": abs_max(ref, dims), "amplification": amp}
        else:
            kw.setdefault("amplification", amplification)
        assert_close(value, ref, dtype, what=label, **kw)

    return check


def max_rel_err(actual: Tensor, expected: Tensor, scale: float | None = None) -> float:
    """max|actual - expected| / scale (scale = max|expected|): what the reports quote."""
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    if e.numel() == 0:
        return 0.0
    s = e.abs().max().item() if scale is None else scale
    return ((a - e).abs().max().item()) / (s or 1.0)
