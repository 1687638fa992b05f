"""ⵟ-dense op (`yat_linear`, ops yat_triton::dense_fwd / dense_bwd) against the float64 oracle.

Forward and every gradient (dx, dW, db, dalpha, deps) are compared to `tests/oracle.py`
through `torch.autograd.grad` with a random upstream gradient, within `tests/tolerances.py`.
On a CPU the Triton kernels run through the interpreter (tests/conftest.py); on a CUDA
machine the same tests run the compiled kernels. Shapes stay small: the interpreter is slow.
"""

from __future__ import annotations

import math

import pytest
import torch
from oracle import to_oracle, yat_dense_ref
from tolerances import assert_close, max_rel_err, row_checker
from torch import Tensor

import yat_triton.dense as dense
from yat_triton import yat_linear
from yat_triton._launch import INTERPRETING

ON_CUDA = torch.cuda.is_available()
NAMES = ("x", "weight", "bias", "alpha", "eps")
GRAD_LABEL = {"x": "dx", "weight": "dW", "bias": "db", "alpha": "dalpha", "eps": "deps"}

# (io dtype, fp32 dot precision) with readable ids
DTYPES = [
    pytest.param(torch.float64, None, id="fp64"),
    pytest.param(torch.float32, "ieee", id="fp32-ieee"),
    pytest.param(torch.float32, "tf32", id="fp32-tf32"),
    pytest.param(torch.float16, None, id="fp16"),
    pytest.param(torch.bfloat16, None, id="bf16"),
]
IO_DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]


# ---------------------------------------------------------------------------------------
# Helpers


def acc_of(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype (and the dtype the tests give a learnable eps)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tol_dtype(param_dtype: torch.dtype, io_dtype: torch.dtype) -> torch.dtype:
    """Which table entry a gradient is held to: its own dtype, but never finer than the
    accumulation it was computed in (an fp64 alpha on fp32 io is computed in fp32)."""
    acc = acc_of(io_dtype)
    return acc if param_dtype.itemsize > acc.itemsize else param_dtype


class Draw:
    """Seeded CPU draws moved to the test device: identical data on every machine."""

    def __init__(self, seed: int, device: str | torch.device) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device

    def __call__(self, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> Tensor:
        return (torch.randn(shape, generator=self.gen, dtype=torch.float64) * scale).to(
            device=self.device, dtype=dtype
        )


def make_inputs(
    lead: tuple[int, ...],
    N: int,
    K: int,
    dtype: torch.dtype,
    device: str,
    *,
    bias: bool = True,
    alpha: str = "tensor",
    eps: str = "tensor",
    eps_value: float = 1e-2,
    seed: int = 0,
    scale: float = 0.5,
) -> dict[str, Tensor | float | None]:
    """x (*lead, K), weight (N, K), bias (N,), alpha none|const|tensor, eps float|tensor.

    Every tensor requires grad. Alpha tensors have the io dtype (as YatLinear passes them),
    eps tensors the accumulation dtype (as YatLinear's softplus(epsilon_param) is).
    """
    draw = Draw(seed, device)
    inp: dict[str, Tensor | float | None] = {
        "x": draw(*lead, K, dtype=dtype, scale=scale).requires_grad_(),
        "weight": draw(N, K, dtype=dtype, scale=scale).requires_grad_(),
        "bias": draw(N, dtype=dtype, scale=scale).requires_grad_() if bias else None,
    }
    inp["alpha"] = {
        "none": None,
        "const": 0.75,
        "tensor": torch.full((1,), 1.3, dtype=dtype, device=device, requires_grad=True),
    }[alpha]
    inp["eps"] = (
        eps_value
        if eps == "float"
        else torch.full((1,), eps_value, dtype=acc_of(dtype), device=device, requires_grad=True)
    )
    return inp


def upstream(shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int = 1234) -> Tensor:
    return Draw(seed, device)(*shape, dtype=dtype)


def check_against_oracle(
    inp: dict[str, Tensor | float | None],
    *,
    precision: str | None = None,
    tol_precision: str | None = None,
    amplification: float | Tensor = 1.0,
    skip: tuple[str, ...] = (),
    grad_transform=None,  # noqa: ANN001
    layer=None,  # noqa: ANN001
) -> dict[str, float]:
    """Run yat_linear forward + backward on `inp`, compare with the oracle, return the
    relative-to-max errors of every compared value (labels y, dx, dW, db, dalpha, deps).

    Gradients are taken w.r.t. every tensor of `inp` that requires grad (views included).
    `skip` names values whose error is measured but not asserted. `tol_precision` picks
    the fp32 tolerance entry when `precision` is None (then resolved by the package).
    `layer` replaces `yat_linear` (e.g. a torch.compile'd yat_linear). A tensor
    `amplification` is the (M, N) condition number of every pair (`clamp_inputs`): then each
    row of y and dx, and each row of dW, is held to its own scale and to the largest
    condition number among its pairs; db, dalpha and deps to the largest of all.
    """
    x, weight = inp["x"], inp["weight"]
    dtype = x.dtype
    y = (layer or yat_linear)(x, weight, inp["bias"], alpha=inp["alpha"], eps=inp["eps"], precision=precision)
    ref = {
        k: to_oracle(v, requires_grad=v.requires_grad) if isinstance(v, Tensor) else v for k, v in inp.items()
    }
    y_ref = yat_dense_ref(ref["x"], ref["weight"], ref["bias"], ref["alpha"], ref["eps"])
    assert y.dtype == dtype and y.device == x.device
    K, N = x.shape[-1], weight.shape[0]
    M = math.prod(x.shape[:-1])
    io_prec = (tol_precision or precision) if dtype == torch.float32 else None
    errors = {"y": max_rel_err(y, y_ref)}
    rows = {}  # label -> (dims a row's scale is taken over, amplification of each row)
    if isinstance(amplification, Tensor):
        per_x_row = amplification.amax(1).reshape(*x.shape[:-1], 1)  # y and dx rows
        per_w_row = amplification.amax(0)[:, None]  # dW rows
        rows = {"y": ((-1,), per_x_row), "dx": ((-1,), per_x_row), "dW": ((-1,), per_w_row)}
        amplification = amplification.max().item()
    check = row_checker(rows, amplification)

    if "y" not in skip:
        check("y", y, y_ref, dtype, reduction=K, precision=io_prec)

    wrt = [k for k in NAMES if isinstance(inp[k], Tensor) and inp[k].requires_grad]
    if not wrt:
        return errors
    gy = upstream(tuple(y.shape), dtype, x.device)
    if grad_transform is not None:
        gy = grad_transform(gy)
    grads = torch.autograd.grad(y, [inp[k] for k in wrt], gy)
    gy_ref = gy.detach().to(device="cpu", dtype=torch.float64)
    refs = torch.autograd.grad(y_ref, [ref[k] for k in wrt], gy_ref, retain_graph=True)
    # dalpha and deps are sums of M*N terms of random sign: hold them to the size of the
    # summed terms, which is the same sum taken with |g| (every term then has one sign).
    scalars = [k for k in wrt if k in ("alpha", "eps")]
    sizes = (
        dict(
            zip(
                scalars,
                torch.autograd.grad(y_ref, [ref[k] for k in scalars], gy_ref.abs()),
                strict=True,
            )
        )
        if scalars
        else {}
    )
    reduction = {"x": N, "weight": M, "bias": M, "alpha": M * N, "eps": M * N}
    for k, g, r in zip(wrt, grads, refs, strict=True):
        label = GRAD_LABEL[k]
        t = inp[k]
        assert g.dtype == t.dtype and g.device == t.device, (
            f"{label}: got {g.dtype} on {g.device}, input is {t.dtype} on {t.device}"
        )
        errors[label] = max_rel_err(g, r, None if k not in sizes else sizes[k].abs().item())
        if label in skip:
            continue
        gdt = tol_dtype(t.dtype, dtype)
        check(label, g, r, gdt, reduction=reduction[k], precision=io_prec if gdt == torch.float32 else None,
              scale=sizes.get(k))  # fmt: skip
    return errors


# ---------------------------------------------------------------------------------------
# Shapes, dtypes and options against the oracle

SHAPES = [
    pytest.param((1,), 1, 1, id="1x1x1"),
    pytest.param((5,), 123, 77, id="5x123x77"),
    pytest.param((33,), 17, 40, id="33x17x40"),
    pytest.param((1,), 50, 30, id="row-1x50x30"),
    pytest.param((2, 35), 9, 12, id="70x9x12"),  # M > 64: several row tiles on the interpreter
]


@pytest.mark.parametrize("lead, N, K", SHAPES)
@pytest.mark.parametrize("dtype, precision", DTYPES)
def test_forward_backward_shapes(lead, N, K, dtype, precision, device, launched):
    inp = make_inputs(lead, N, K, dtype, device, seed=K)
    check_against_oracle(inp, precision=precision)
    # the precision asked for reaches every GEMM (the interpreter computes TF32 exactly,
    # so the oracle alone cannot tell it was dropped)
    gemms = [c for c in launched if "DOT_PRECISION" in c.kwargs]
    assert gemms or not dense.use_triton(inp["x"])
    asked = precision or "ieee"  # fp16's backward GEMMs run TF32 on their fp32 gs
    assert {c.kwargs["DOT_PRECISION"] for c in gemms} <= {asked, dense.gemm_precision(dtype, asked)}, gemms
    if precision == "tf32":
        assert {c.kwargs["DOT_PRECISION"] for c in gemms} == {"tf32"}, gemms


@pytest.mark.parametrize("eps", ["float", "tensor"], ids=["eps-float", "eps-tensor"])
@pytest.mark.parametrize("alpha", ["none", "const", "tensor"], ids=lambda a: f"alpha-{a}")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_options(dtype, bias, alpha, eps, device):
    inp = make_inputs((9,), 20, 24, dtype, device, bias=bias, alpha=alpha, eps=eps, seed=3)
    check_against_oracle(inp, precision="ieee")


@pytest.mark.parametrize(
    "which", ["x", "weight", "bias", "alpha", "eps", "x+weight", "none"], ids=lambda w: f"grad-{w}"
)
def test_partial_requires_grad(which, device):
    """Only some inputs require grad: the backward computes just those (needs flags)."""
    inp = make_inputs((6,), 10, 12, torch.float32, device, seed=5)
    wanted = set(which.split("+"))
    for k in NAMES:
        if isinstance(inp[k], Tensor) and k not in wanted:
            inp[k].requires_grad_(False)
    check_against_oracle(inp, precision="ieee")


def test_alpha_tensor_of_other_dtype(device):
    """A float64 alpha with float32 io: its gradient comes back in float64."""
    inp = make_inputs((7,), 9, 11, torch.float32, device, seed=6)
    inp["alpha"] = torch.full((1,), 0.6, dtype=torch.float64, device=device, requires_grad=True)
    check_against_oracle(inp, precision="ieee")


def test_int_scalars(device):
    """alpha and eps given as Python ints are accepted as constants."""
    inp = make_inputs((4,), 6, 5, torch.float32, device, alpha="none", eps="float", seed=8)
    inp["alpha"], inp["eps"] = 3, 1
    check_against_oracle(inp, precision="ieee")


@pytest.mark.parametrize(
    "lead", [(2, 3), (2, 1, 3), (), (4, 0)], ids=["lead-2x3", "lead-2x1x3", "x-1d", "lead-4x0"]
)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_leading_batch_dims(lead, dtype, device):
    inp = make_inputs(lead, 13, 10, dtype, device, seed=2)
    x = inp["x"]
    y = yat_linear(x, inp["weight"], inp["bias"], alpha=inp["alpha"], eps=inp["eps"])
    assert y.shape == (*lead, 13)
    check_against_oracle(inp, precision="ieee")


# ---------------------------------------------------------------------------------------
# Strided and transposed inputs


def _noncontiguous(kind: str, dtype: torch.dtype, device: str) -> tuple[dict, object]:
    M, N, K = 7, 19, 21
    inp = make_inputs((M,), N, K, dtype, device, seed=11)
    draw = Draw(12, device)
    transform = None
    if kind in ("x-strided", "all"):
        base = draw(M, 2 * K, dtype=dtype, scale=0.5).requires_grad_()
        inp["x"] = base[:, ::2]
    if kind in ("x-transposed", "all"):
        base = draw(K, M, dtype=dtype, scale=0.5).requires_grad_()
        inp["x"] = base.t()
    if kind in ("w-transposed", "all"):
        base = draw(K, N, dtype=dtype, scale=0.5).requires_grad_()
        inp["weight"] = base.t()
    if kind == "x-batch-permuted":
        base = draw(3, M, K, dtype=dtype, scale=0.5).requires_grad_()
        inp["x"] = base.permute(1, 0, 2)  # (M, 3, K), not viewable as (3M, K)
    if kind in ("grad-transposed", "all"):
        transform = lambda g: g.t().contiguous().t()  # noqa: E731
    if kind == "x-strided":
        assert not inp["x"].is_contiguous()
    return inp, transform


@pytest.mark.parametrize(
    "kind", ["x-strided", "x-transposed", "w-transposed", "x-batch-permuted",
             "grad-transposed", "all"],
)  # fmt: skip
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_noncontiguous(kind, dtype, device):
    inp, transform = _noncontiguous(kind, dtype, device)
    check_against_oracle(inp, precision="ieee", grad_transform=transform)


@pytest.mark.parametrize("kind", ["bias-strided", "bias-expanded"])
def test_noncontiguous_bias(kind, device):
    M, N, K = 5, 9, 8
    inp = make_inputs((M,), N, K, torch.float32, device, seed=13)
    if kind == "bias-strided":
        base = Draw(14, device)(2 * N, scale=0.5).requires_grad_()
        inp["bias"] = base[::2]
    else:
        base = Draw(14, device)(1, scale=0.5).requires_grad_()
        inp["bias"] = base.expand(N)
    check_against_oracle(inp, precision="ieee")


# ---------------------------------------------------------------------------------------
# x ~ w: the clamp is active and the distance is tiny


# Relative sizes of the perturbation x_i - w_i for the "near" rows of clamp_inputs: squared
# relative distances rho^2 = d / (||x||^2 + ||w||^2) from ~0.06 down to ~3e-5, straddling
# every dtype's near-pair threshold of the backward.
NEAR_OFFSETS = (0.35, 0.25, 0.12, 0.03, 0.008)


def clamp_inputs(
    dtype: torch.dtype, device: str, seed: int = 0, *, bias: bool = True, alpha: str = "tensor"
) -> tuple[dict, Tensor]:
    """x ~ w at every scale: rows 0-3 of x equal weight rows 0-3 exactly, rows 4-5 lie within
    1e-3 relative of rows 4-5, rows 6-10 at the NEAR_OFFSETS, rows 11-12 are random;
    eps = 1e-3. Returns the inputs and the (M, N) condition numbers
    kappa_ij = (||x_i||^2 + ||w_j||^2) / q_ij by which the norm expansion of the distance
    amplifies the accumulation rounding of pair (i, j): ~4e3 where x_i = w_j, ~1 for the
    random rows, which are then held to their own scale (`check_against_oracle`)."""
    M, N, K, scale, eps = 13, 12, 16, 0.25, 1e-3
    draw = Draw(seed, "cpu")
    w = draw(N, K, dtype=torch.float64, scale=scale)
    x = draw(M, K, dtype=torch.float64, scale=scale)
    x[:4] = w[:4]
    x[4:6] = w[4:6] + draw(2, K, dtype=torch.float64, scale=1e-3 * scale)
    for i, f in enumerate(NEAR_OFFSETS):
        x[6 + i] = w[6 + i] + draw(K, dtype=torch.float64, scale=f * scale)
    b = draw(N, dtype=torch.float64, scale=scale)
    inp = {
        "x": x.to(device=device, dtype=dtype).requires_grad_(),
        "weight": w.to(device=device, dtype=dtype).requires_grad_(),
        "bias": b.to(device=device, dtype=dtype).requires_grad_() if bias else None,
        "alpha": {
            "tensor": torch.full((1,), 1.3, dtype=dtype, device=device, requires_grad=True),
            "const": 0.75,
        }[alpha],
        "eps": torch.full((1,), eps, dtype=acc_of(dtype), device=device, requires_grad=True),
    }
    x64, w64 = to_oracle(inp["x"]), to_oracle(inp["weight"])
    assert torch.equal(x64[:4], w64[:4])  # exact matches survive the cast
    nx, nw = (x64 * x64).sum(1), (w64 * w64).sum(1)
    q = ((x64[:, None, :] - w64[None, :, :]) ** 2).sum(-1) + eps
    return inp, (nx[:, None] + nw[None, :]) / q


CLAMP_DTYPES = [
    pytest.param(torch.float64, id="fp64"),
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]


@pytest.mark.parametrize(
    "seed, bias, alpha",
    [(0, True, "tensor"), (1, True, "tensor"), (2, False, "const")],
    ids=["seed0", "seed1", "seed2-nobias-const-alpha"],
)
@pytest.mark.parametrize("dtype", CLAMP_DTYPES)
def test_clamp_active(dtype, seed, bias, alpha, device):
    """Forward and every gradient where x ~ w (clamp active, distance << eps, and pairs at
    a range of small distances). The norm expansion costs kappa = (||x||^2 + ||w||^2) / q of
    the accumulation precision (~2e3-5e3 here), which the tolerance allows; io rounding is
    held to the plain table (no cancellation may reach the io dtype)."""
    inp, kappa = clamp_inputs(dtype, device, seed, bias=bias, alpha=alpha)
    check_against_oracle(inp, precision="ieee", amplification=kappa)


def test_clustered_near_pairs(device):
    """Inputs and weights clustered around one centre: every pair is near, a row has dozens
    of near pairs across two column tiles. Each row's exact near-pair terms must reach dx /
    dW with one io rounding, not one per pair (bf16: the plain table, no amplification)."""
    draw = Draw(61, "cpu")
    M, N, K = 6, 72, 16
    centre = draw(K, dtype=torch.float64)
    w = (centre + 0.1 * draw(N, K, dtype=torch.float64)).to(device=device, dtype=torch.bfloat16)
    x = (centre + 0.1 * draw(M, K, dtype=torch.float64)).to(device=device, dtype=torch.bfloat16)
    x.requires_grad_()
    w.requires_grad_()
    g = upstream((M, N), torch.bfloat16, device)
    dx, dw = torch.autograd.grad(yat_linear(x, w, eps=1e-2), (x, w), g)
    xr, wr = to_oracle(x, requires_grad=True), to_oracle(w, requires_grad=True)
    dxr, dwr = torch.autograd.grad(yat_dense_ref(xr, wr, None, None, 1e-2), (xr, wr), to_oracle(g))
    assert_close(dx, dxr, torch.bfloat16, reduction=N, what="dx (clustered)")
    assert_close(dw, dwr, torch.bfloat16, reduction=M, what="dW (clustered)")


def test_near_pairs_found_past_the_first_scan_of_a_band(device, monkeypatch, launched):
    """The near-pair kernel sums a band's prep-tile counts NEAR_SCAN_TILES at a time before
    it does any work. With 2 tiles a scan, near pairs planted only in a band's last column
    tile (the dx bands of rows 5 and 150) and last row tile (the dW bands of columns 70 and
    190) are found on the second scan; a band the scan got wrong would miss those pairs'
    terms outright (the GEMM path leaves them out), far outside the bf16 table."""
    monkeypatch.setattr(dense, "NEAR_SCAN_TILES", 2)
    M, N, K = 150 + 10, 200, 16
    draw = Draw(62, "cpu")
    w = draw(N, K, dtype=torch.float64, scale=0.5)
    x = draw(M, K, dtype=torch.float64, scale=0.5)
    for i, j in ((5, 190), (150, 190), (150, 70)):
        x[i] = w[j] + draw(K, dtype=torch.float64, scale=0.005)
    x = x.to(device=device, dtype=torch.bfloat16).requires_grad_()
    w = w.to(device=device, dtype=torch.bfloat16).requires_grad_()
    g = upstream((M, N), torch.bfloat16, device)
    dx, dw = torch.autograd.grad(yat_linear(x, w, eps=1e-3), (x, w), g)
    (near,) = [c for c in launched if c.kernel.fn.__name__ == "yat_dense_bwd_near_kernel"]
    assert near.kwargs["BLOCK_T"] == 2
    bm, bn = near.kwargs["BLOCK_M"], near.kwargs["BLOCK_N"]
    assert -(-N // bn) > 2 and -(-M // bm) > 2  # both kinds of band take two scans
    assert near.grid == (-(-M // bm) + -(-N // bn),)  # one launch: dx's bands, then dW's
    xr, wr = to_oracle(x, requires_grad=True), to_oracle(w, requires_grad=True)
    dxr, dwr = torch.autograd.grad(yat_dense_ref(xr, wr, None, None, 1e-3), (xr, wr), to_oracle(g))
    assert_close(dx, dxr, torch.bfloat16, reduction=N, what="dx (late near tiles)")
    assert_close(dw, dwr, torch.bfloat16, reduction=M, what="dW (late near tiles)")


@pytest.mark.parametrize("path", ["kernels", "torch-path"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
@pytest.mark.parametrize("eps", [1e-9, 1e-20], ids=["eps1e-9", "eps1e-20"])
def test_clamp_keeps_denominator_positive(dtype, path, eps, device, monkeypatch):
    """x == w exactly (rows of magnitudes 1e-2 to 1e2) and eps far below the cancellation
    noise of ||x||^2 + ||w||^2 - 2 x.w: without the clamp some q would be <= 0 (negative
    or infinite y). With it, every 0 <= y <= alpha u^2 / eps, the gradients are finite,
    and the backward divides by the same clamped q: for g >= 0 each term of
    dL/dalpha = sum g u^2 / q lies in [0, g u^2 / eps] (also where eps = 1e-20 puts the
    distance gradients past float32's range)."""
    if path == "torch-path":
        monkeypatch.setattr(dense, "use_triton", lambda t: False)
        device = "cpu"
    M, K = 64, 96
    draw = Draw(21, device)
    w = draw(M, K, dtype=dtype, scale=1.0) * torch.logspace(-2, 2, M, device=device, dtype=dtype)[:, None]
    x = w.clone().requires_grad_()
    w.requires_grad_()
    alpha = torch.full((1,), 2.0, dtype=dtype, device=device, requires_grad=True)
    y = yat_linear(x, w, alpha=alpha, eps=eps)
    x64, w64 = to_oracle(x), to_oracle(w)
    bound = 2.0 * (x64 @ w64.t()) ** 2 / eps
    y64 = to_oracle(y)
    assert torch.isfinite(y64).all(), "non-finite output where x == w"
    assert (y64 >= 0).all(), f"negative output {y64.min().item()}: the clamp is missing"
    assert (y64 <= bound * 1.02 + 1e-30).all(), "q < eps somewhere: the clamp is missing"
    g = upstream(tuple(y.shape), dtype, device).abs()
    dx, dw, da = torch.autograd.grad(y, (x, w, alpha), g)
    if eps >= 1e-9:  # at 1e-20, g u^2 / q^2 passes float32's range where x == w
        assert torch.isfinite(dx).all() and torch.isfinite(dw).all()
    da_bound = (to_oracle(g) * bound / 2.0).sum().item()
    assert 0.0 <= to_oracle(da).item() <= da_bound * 1.02, "the backward divides by an unclamped q"


def _spec_backward(g, x, w, b, alpha, eps, s, nx, nw):  # noqa: ANN001, ANN202 - float64 tensors
    """SPEC section 2 evaluated in float64 on given saved tensors: q from the clamped
    expanded distance, gd masked where it is negative (torch.clamp's gradient)."""
    u = s + b[None, :]
    d_raw = nx[:, None] + nw[None, :] - 2.0 * s
    q = d_raw.clamp_min(0.0) + eps
    gu = 2.0 * g * alpha * u / q
    gq = -g * alpha * u * u / (q * q)
    gd = torch.where(d_raw >= 0, gq, torch.zeros_like(gq))
    gs = gu - 2.0 * gd
    dx = gs @ w + 2.0 * x * gd.sum(1, keepdim=True)
    dw = gs.t() @ x + 2.0 * w * gd.sum(0)[:, None]
    return dx, dw, gu.sum(0), (g * u * u / q).sum().reshape(1), gq.sum().reshape(1)


@pytest.mark.parametrize("path", ["kernels", "torch-path"])
def test_backward_clamps_and_masks_a_negative_expanded_distance(path, device, monkeypatch):
    """The backward recomputes the distance from the saved s and norms. Where that
    expanded distance is negative (rounding, x ~ w), SPEC section 2 divides by q = eps and
    masks the distance gradient. Fed saved tensors that make about half the lanes negative
    by construction, every gradient matches SPEC's formulas in float64 (the clamp and the
    mask each change them: dropping either fails this test)."""
    if path == "torch-path":
        monkeypatch.setattr(dense, "use_triton", lambda t: False)
        device = "cpu"
    M, N, K = 12, 10, 8
    draw = Draw(5, device)
    x, w, b, g = draw(M, K), draw(N, K), draw(N), draw(M, N)
    nx, nw = (x.double() ** 2).sum(1).float(), (w.double() ** 2).sum(1).float()
    # d_raw = nx + nw - 2 s = -2 c: negative where c > 0, of order 1 either way
    s = ((nx[:, None] + nw[None, :]) / 2 + draw(M, N, scale=0.5)).float()
    alpha = torch.full((1,), 1.3, device=device)
    eps = torch.full((1,), 0.25, device=device)
    assert 0.3 < ((nx[:, None] + nw[None, :] - 2 * s) < 0).float().mean() < 0.7
    got = dense._dense_bwd_op(g, x, w, b, alpha, 1.0, eps, 1.0, s, nx, nw, "ieee", [True] * 5)
    want = _spec_backward(*(to_oracle(t) for t in (g, x, w, b, alpha, eps, s, nx, nw)))
    for name, a, e, red in zip(
        ("dx", "dW", "db", "dalpha", "deps"), got, want, (N, M, M, M * N, M * N), strict=True
    ):
        assert_close(a, e, torch.float32, reduction=red, what=name)


# The forward epilogue divides by q = max(d, 0) + eps with a bare reciprocal where it may
# (`div_plus_eps`): these inputs put q where a bare reciprocal breaks. x and w are scaled
# unit rows (w2: a second entry of w's rows), so every product and distance is exact in
# float32.
RANGE_ENDS = [
    # x = w = 2^-32 e_i: d = 0, u^2 = 2^-128 (subnormal), q = eps = 2^-126, the smallest
    # eps a number may be: y = 1/4 on the diagonal. Scaled by 1/4 as a larger q would be,
    # q turns subnormal, whose reciprocal flushes to inf.
    pytest.param(2.0**-32, 2.0**-32, 0.0, 2.0**-126, False, id="tiny-eps"),
    # x = 1.5 2^63 e_i, w = e_i + e_(i+4): u^2 = 1.125 2^127 and q ~ 1.125 2^127, whose
    # reciprocal is subnormal, flushed to 0 unless q is scaled first: y ~ 1 on the
    # diagonal, and dx_(i+4) ~ 2 / 1.5 2^63 (without the second 1 in w, dx would cancel).
    pytest.param(1.5 * 2.0**63, 1.0, 1.0, 1e-5, True, id="huge-distance"),
]


@pytest.mark.parametrize(("xv", "wv", "w2", "eps", "fast"), RANGE_ENDS)
@pytest.mark.parametrize("eps_kind", ["number", "tensor"])
@pytest.mark.parametrize("tma", [False, True], ids=["pointer", "tma"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_quotient_at_the_float32_range_ends(dtype, tma, eps_kind, xv, wv, w2, eps, fast, device, launched):
    """y and dx against the oracle at both ends of the float32 range, through the pointer
    and the persistent TMA forward. The reciprocal (FAST_RCP, forward and backward) is
    taken only for an eps that is a number >= 2^-124; a tensor eps (learnable) or a tinier
    one divides."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    x = (torch.eye(4, 16, dtype=torch.float64) * xv).to(device=device, dtype=dtype)
    unit = torch.eye(4, 16, dtype=torch.float64)
    w = (unit * wv + unit.roll(4, dims=1) * w2).to(device=device, dtype=dtype)
    eps_arg = eps if eps_kind == "number" else torch.tensor([eps], dtype=torch.float32, device=device)
    cfg = TileConfig(16, 32, 16, 2, 4, 2, epilogue_split=2, tma=tma)
    x.requires_grad_()
    with forced_config("dense", "fwd", cfg):
        y = yat_linear(x, w, eps=eps_arg)
    xr = to_oracle(x, requires_grad=True)
    ref = yat_dense_ref(xr, to_oracle(w), eps=eps)
    assert ref.diagonal().min() > 0.1, "the diagonal is where the quotient is tested"
    assert_close(y, ref, dtype, reduction=16, what="y")
    # the backward's prep kernel recomputes r = u / q the same way
    gy = upstream(tuple(y.shape), dtype, device)
    (dx,) = torch.autograd.grad(y, (x,), gy)
    (dx_ref,) = torch.autograd.grad(ref, (xr,), to_oracle(gy))
    assert_close(dx, dx_ref, dtype, reduction=4, what="dx")
    (fwd,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_dense_fwd")]
    assert fwd.kernel.fn.__name__ == ("yat_dense_fwd_tma_kernel" if tma else "yat_dense_fwd_kernel")
    (prep,) = [c for c in launched if c.kernel.fn.__name__ == "yat_dense_bwd_prep_kernel"]
    assert fwd.kwargs["FAST_RCP"] == prep.kwargs["FAST_RCP"] == (fast and eps_kind == "number")


# ---------------------------------------------------------------------------------------
# torch.autocast

AMP_DTYPES = [pytest.param(torch.bfloat16, id="amp-bf16"), pytest.param(torch.float16, id="amp-fp16")]


@pytest.mark.parametrize("amp_dtype", AMP_DTYPES)
@pytest.mark.parametrize("x_dtype", [pytest.param(torch.float32, id="x-fp32"),
                                     pytest.param(torch.bfloat16, id="x-bf16")])  # fmt: skip
def test_autocast_casts_operands(amp_dtype, x_dtype, device):
    """Under torch.autocast fp32 parameters (and an fp32 input, or a half input of the other
    kind, such as a previous layer's output) run in the autocast dtype, as F.linear's do:
    y has that dtype and matches the oracle of the cast operands, and every gradient
    reaches its tensor in that tensor's own dtype. Without autocast the same mixed call is
    refused (test_errors)."""
    check_autocast(amp_dtype, x_dtype, device)


def check_autocast(amp_dtype: torch.dtype, x_dtype: torch.dtype, device: str, layer=None) -> None:  # noqa: ANN001
    """`layer` (default yat_linear) on an x_dtype input and fp32 weight and bias under
    autocast to amp_dtype, against the oracle of the cast operands (see
    test_autocast_casts_operands)."""
    draw = Draw(41, device)
    x = draw(2, 9, 24, dtype=x_dtype, scale=0.5).requires_grad_()
    w = draw(17, 24, scale=0.5).requires_grad_()
    b = draw(17, scale=0.5).requires_grad_()
    with torch.autocast(torch.device(device).type, dtype=amp_dtype):
        y = (layer or yat_linear)(x, w, b, alpha=1.3, eps=1e-2)
    assert y.dtype == amp_dtype and y.shape == (2, 9, 17)
    ref = [to_oracle(t.to(amp_dtype), requires_grad=True) for t in (x, w, b)]
    y_ref = yat_dense_ref(*ref, alpha=1.3, eps=1e-2)
    assert_close(y, y_ref, amp_dtype, reduction=24, what="y")
    gy = upstream(tuple(y.shape), amp_dtype, device)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    refs = torch.autograd.grad(y_ref, ref, to_oracle(gy))
    for label, t, g, r, reduction in zip(
        ("dx", "dW", "db"), (x, w, b), grads, refs, (17, 18, 18), strict=True
    ):
        assert g.dtype == t.dtype, f"{label}: {g.dtype}, its tensor is {t.dtype}"
        assert_close(g, r, amp_dtype, reduction=reduction, what=label)


def test_autocast_keeps_float64(device):
    """float64 operands stay float64 under autocast (autocast leaves float64 alone); one
    float64 operand among cast ones is refused, the message saying that autocast cast."""
    inp = make_inputs((6,), 11, 9, torch.float64, device, seed=43)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        check_against_oracle(inp)
        x = torch.ones(3, 9, device=device)
        with pytest.raises(TypeError, match=r"weight has dtype torch.float64 but x has dtype torch.bfloat16 "
                                            r"\(after torch.autocast cast"):  # fmt: skip
            yat_linear(x, inp["weight"].detach())


@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, id="fp16"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_autocast_around_forward_and_backward(dtype, device):
    """Forward and backward both inside the autocast region (the backward is usually run
    after it): the kernels' results are unchanged by it."""
    inp = make_inputs((5,), 19, 28, dtype, device, seed=44)
    with torch.autocast(torch.device(device).type, dtype=dtype):
        check_against_oracle(inp)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_gpu_while_the_first_is_current():
    """A layer on cuda:1 while cuda:0 is current (a model spread over GPUs without
    torch.cuda.set_device): every kernel must run on cuda:1 (see test_configs'
    test_launch_makes_its_cuda_device_current for the mechanism, checked anywhere)."""
    with torch.cuda.device(0):
        check_against_oracle(make_inputs((37,), 70, 96, torch.bfloat16, "cuda:1", seed=45))
        assert torch.cuda.current_device() == 0


# ---------------------------------------------------------------------------------------
# Saturation, NaN/Inf, empty and degenerate sizes


def test_fp16_saturation(device):
    """fp16: entries whose exact value exceeds 65504 come back as +-65504, never inf; the
    others are still right."""
    dtype = torch.float16
    draw = Draw(31, "cpu")
    K, N = 8, 6
    w = draw(N, K, dtype=torch.float64, scale=8.0)  # ||w||^2 ~ 512
    x = draw(4, K, dtype=torch.float64, scale=8.0)
    x[0] = 1.05 * w[0]  # y00 = 1.05^2 / 0.05^2 ||w0||^2 ~ 2e5
    x[1] = 1.02 * w[3]
    x[2] = -1.05 * w[1]  # anti-parallel: moderate value
    x16, w16 = x.to(device=device, dtype=dtype), w.to(device=device, dtype=dtype)
    for alpha in (1.0, -1.0):
        y = yat_linear(x16, w16, alpha=alpha, eps=1e-3)
        ref = yat_dense_ref(to_oracle(x16), to_oracle(w16), alpha=alpha, eps=1e-3)
        assert not torch.isinf(y).any(), "fp16 output overflowed to inf"
        over = ref.abs() > 65504
        assert over.sum() >= 2, "test data should exceed the fp16 range somewhere"
        y64 = to_oracle(y)
        assert torch.equal(y64[over], torch.sign(ref[over]) * 65504.0)
        assert_close(y64[~over], ref[~over], dtype, reduction=K, what="y (in range)")


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "torch-path"])
def test_fp16_gradient_overflow_is_not_saturated(use_kernels, device, monkeypatch):
    """Unlike the forward, gradients overflow to inf like PyTorch's own layers do, so that
    AMP's GradScaler sees the overflow and backs off instead of stepping on clipped values."""
    if not use_kernels:
        if device != "cpu":
            pytest.skip("the plain-PyTorch path is the CPU path")
        monkeypatch.setattr(dense, "use_triton", lambda t: False)
    draw = Draw(37, "cpu")
    w = draw(6, 16, dtype=torch.float64, scale=0.1)
    x = draw(4, 16, dtype=torch.float64, scale=0.1)
    x[0] = w[2]  # u/q ~ ||w||^2 / eps = 0.16 / 1e-4: gu = 2 g alpha u/q ~ 2e8 for g = 6e4
    x16 = x.to(device=device, dtype=torch.float16).requires_grad_()
    w16 = w.to(device=device, dtype=torch.float16).requires_grad_()
    y = yat_linear(x16, w16, eps=1e-4)
    assert torch.isfinite(y).all(), "the forward saturates"
    dx, dw = torch.autograd.grad(y, (x16, w16), torch.full_like(y, 6e4))
    assert not torch.isfinite(dx[0]).all(), "dx overflowed in fp16 but came back finite"
    assert not torch.isfinite(dw[2]).all(), "dW overflowed in fp16 but came back finite"
    assert (dx[0].abs() != 65504).all() and (dw[2].abs() != 65504).all(), "saturated gradient"


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "torch-path"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_huge_dot_products_do_not_overflow(dtype, use_kernels, device, monkeypatch):
    """|u| ~ 3e19: u^2 is past fp32's range (3.4e38) while y = u^2 / q (~1e19) is not; the
    epilogue must not form u^2 first (fp32 would return inf, bf16 its saturated maximum)."""
    if not use_kernels:
        if device != "cpu":
            pytest.skip("the plain-PyTorch path is the CPU path")
        monkeypatch.setattr(dense, "use_triton", lambda t: False)
    draw = Draw(43, "cpu")
    x = draw(3, 8, dtype=torch.float64, scale=3e9).to(device=device, dtype=dtype)
    w = draw(2, 8, dtype=torch.float64, scale=3e9).to(device=device, dtype=dtype)
    assert (to_oracle(x) @ to_oracle(w).t()).abs().max() > 2e19, "test data should overflow u^2"
    y = yat_linear(x, w)
    assert_close(to_oracle(y), yat_dense_ref(to_oracle(x), to_oracle(w)), dtype, reduction=8, what="y")


def test_fp16_large_intermediate_gradient_stays_finite(device):
    """x ~ w with a small eps: gu = 2 g u/q passes 65504 while dx and dW do not (~2.7e4);
    the backward must not turn that intermediate into a spurious inf."""
    draw = Draw(71, "cpu")
    w = draw(4, 64, dtype=torch.float64, scale=0.125)
    x = draw(3, 64, dtype=torch.float64, scale=0.125)
    x[0] = w[2]
    x16 = x.to(device=device, dtype=torch.float16).requires_grad_()
    w16 = w.to(device=device, dtype=torch.float16).requires_grad_()
    g = torch.full((3, 4), 4.0, device=device, dtype=torch.float16)
    dx, dw = torch.autograd.grad(yat_linear(x16, w16, eps=1e-4), (x16, w16), g)
    xr, wr = to_oracle(x16, requires_grad=True), to_oracle(w16, requires_grad=True)
    dxr, dwr = torch.autograd.grad(yat_dense_ref(xr, wr, None, None, 1e-4), (xr, wr), to_oracle(g))
    assert dxr.abs().max() < 65504 and dwr.abs().max() < 65504, "the exact gradients fit fp16"
    assert_close(dx, dxr, torch.float16, reduction=4, what="dx")
    assert_close(dw, dwr, torch.float16, reduction=3, what="dW")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_nan_inf_propagate(dtype, bad, device):
    """A NaN/Inf in one input row makes that output row NaN (as the oracle's), leaves the
    other rows right, and the backward runs; dx of the clean rows stays right."""
    inp = make_inputs((4,), 5, 6, dtype, device, seed=41)
    x = inp["x"].detach().clone()
    x[1, 2] = float(bad)
    x.requires_grad_()
    y = yat_linear(x, inp["weight"], inp["bias"], alpha=inp["alpha"], eps=inp["eps"])
    tensors = (x, inp["weight"], inp["bias"], inp["alpha"], inp["eps"])
    ref_in = [to_oracle(t, requires_grad=True) for t in tensors]
    ref = yat_dense_ref(*ref_in)
    assert torch.isnan(y[1]).all(), f"row with {bad} gave {y[1]}"
    assert_close(y, ref, dtype, reduction=6, what="y")
    gy = upstream(tuple(y.shape), dtype, device)
    dx, _, _, _, _ = torch.autograd.grad(y, tensors, gy)
    (dx_ref,) = torch.autograd.grad(ref, ref_in[0], to_oracle(gy))
    clean = [0, 2, 3]
    assert_close(dx[clean], dx_ref[clean], dtype, reduction=5, what="dx (clean rows)")


@pytest.mark.parametrize("lead", [(0,), (2, 0)], ids=["M0", "lead-2x0"])
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_empty_batch(dtype, lead, device):
    """M = 0: empty output; dx empty, dW/db/dalpha/deps exactly zero."""
    inp = make_inputs(lead, 7, 5, dtype, device, seed=51)
    x, w, b, a, e = (inp[k] for k in NAMES)
    y = yat_linear(x, w, b, alpha=a, eps=e)
    assert y.shape == (*lead, 7) and y.dtype == dtype
    dx, dw, db, da, de = torch.autograd.grad(y, (x, w, b, a, e), torch.zeros_like(y))
    assert dx.shape == x.shape
    for name, g, t in (("dW", dw, w), ("db", db, b), ("dalpha", da, a), ("deps", de, e)):
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert torch.count_nonzero(g) == 0, f"{name} should be zero for an empty batch"


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_zero_out_features(dtype, device):
    """N = 0: output (M, 0); dx zero, dW/db empty, dalpha/deps zero."""
    inp = make_inputs((4,), 0, 6, dtype, device, seed=52)
    x, w, b, a, e = (inp[k] for k in NAMES)
    y = yat_linear(x, w, b, alpha=a, eps=e)
    assert y.shape == (4, 0)
    dx, dw, db, da, de = torch.autograd.grad(y, (x, w, b, a, e), torch.zeros_like(y))
    assert dx.shape == x.shape and torch.count_nonzero(dx) == 0
    assert dw.shape == (0, 6) and db.shape == (0,)
    assert torch.count_nonzero(da) == 0 and torch.count_nonzero(de) == 0


def test_zero_in_features(device):
    """K = 0: y = alpha b^2 / eps, dx/dW empty, db/dalpha/deps from the oracle."""
    inp = make_inputs((3,), 4, 0, torch.float32, device, seed=53)
    check_against_oracle(inp, precision="ieee")


# ---------------------------------------------------------------------------------------
# Modes and determinism


def test_no_grad_output_matches(device):
    """Without grad the forward skips saving s; the output must be identical."""
    inp = make_inputs((6,), 9, 10, torch.bfloat16, device, seed=61)
    args = (inp["x"], inp["weight"], inp["bias"])
    kw = {"alpha": inp["alpha"], "eps": inp["eps"]}
    y = yat_linear(*args, **kw)
    with torch.no_grad():
        y_ng = yat_linear(*args, **kw)
    assert not y_ng.requires_grad
    assert torch.equal(y.detach(), y_ng)


def test_deterministic(device):
    """No atomics: two runs give bitwise identical outputs and gradients."""
    inp = make_inputs((33,), 17, 40, torch.bfloat16, device, seed=62)
    tensors = [inp[k] for k in NAMES]
    gy = upstream((33, 17), torch.bfloat16, device)
    runs = []
    for _ in range(2):
        y = yat_linear(inp["x"], inp["weight"], inp["bias"], alpha=inp["alpha"], eps=inp["eps"])
        runs.append((y, *torch.autograd.grad(y, tensors, gy)))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_precision_none_follows_torch_flag(device, launched):
    """precision=None resolves from torch.backends.cuda.matmul.allow_tf32, and every GEMM
    launched gets it (the interpreter computes TF32 exactly: the oracle alone cannot tell)."""
    inp = make_inputs((5,), 8, 9, torch.float32, device, seed=63)
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for flag, prec in ((False, "ieee"), (True, "tf32")):
            torch.backends.cuda.matmul.allow_tf32 = flag
            assert dense._checks.resolve_precision(None, torch.float32) == prec
            start = len(launched)
            check_against_oracle(inp, precision=None, tol_precision=prec)
            gemms = [c for c in launched[start:] if "DOT_PRECISION" in c.kwargs]
            assert gemms or not dense.use_triton(inp["x"])
            assert {c.kwargs["DOT_PRECISION"] for c in gemms} == ({prec} if gemms else set()), (flag, gemms)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert dense._checks.resolve_precision(None, torch.bfloat16) == "ieee"


# ---------------------------------------------------------------------------------------
# gradcheck and opcheck


@pytest.mark.parametrize("variant", ["bias-alpha-eps-tensors", "lead-dims-nobias-const-alpha"])
def test_gradcheck_fp64(variant, device):
    draw = Draw(71, device)
    f64 = torch.float64
    if variant == "bias-alpha-eps-tensors":
        x = draw(3, 5, dtype=f64, scale=0.5).requires_grad_()
        w = draw(4, 5, dtype=f64, scale=0.5).requires_grad_()
        b = draw(4, dtype=f64, scale=0.5).requires_grad_()
        a = torch.full((1,), 1.3, dtype=f64, device=device, requires_grad=True)
        e = torch.full((1,), 0.1, dtype=f64, device=device, requires_grad=True)
        fn = lambda x, w, b, a, e: yat_linear(x, w, b, alpha=a, eps=e)  # noqa: E731
        args = (x, w, b, a, e)
    else:
        x = draw(2, 2, 5, dtype=f64, scale=0.5).requires_grad_()
        w = draw(3, 5, dtype=f64, scale=0.5).requires_grad_()
        fn = lambda x, w: yat_linear(x, w, alpha=math.sqrt(2.0), eps=0.05)  # noqa: E731
        args = (x, w)
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def _op_args(device: str, dtype: torch.dtype = torch.float32) -> tuple[tuple, tuple]:
    """Arguments of yat_triton::dense_fwd and a matching dense_bwd call."""
    inp = make_inputs((3,), 5, 8, dtype, device, seed=81)
    x, w, b, a, e = (inp[k] for k in NAMES)
    fwd = (x, w, b, a, 1.0, e, 1.0, "ieee", True)
    with torch.no_grad():
        _, s, nx, nw = dense._dense_fwd_op(x, w, b, a, 1.0, e, 1.0, "ieee", True)
    g = upstream((3, 5), dtype, device)
    d = lambda t: t.detach()  # noqa: E731
    bwd = (g, d(x), d(w), d(b), d(a), 1.0, d(e), 1.0, s, nx, nw, "ieee", [True] * 5)
    return fwd, bwd


INTERPRETER_SAFE = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("op", ["dense_fwd", "dense_bwd"])
def test_opcheck(op, device):
    """Under the interpreter only the tests that do not trace into a graph can run; on CUDA
    the full default opcheck (AOT dispatch included)."""
    fwd, bwd = _op_args(device)
    fn, args = (dense._dense_fwd_op, fwd) if op == "dense_fwd" else (dense._dense_bwd_op, bwd)
    if INTERPRETING:
        result = torch.library.opcheck(fn, args, test_utils=INTERPRETER_SAFE)
    else:
        result = torch.library.opcheck(fn, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.skipif(not INTERPRETING, reason="AOT dispatch is only refused under TRITON_INTERPRET=1")
@pytest.mark.parametrize("op", ["dense_fwd", "dense_bwd"])
def test_aot_dispatch_refused_under_interpreter(op, device):
    fwd, bwd = _op_args(device)
    fn, args = (dense._dense_fwd_op, fwd) if op == "dense_fwd" else (dense._dense_bwd_op, bwd)
    with pytest.raises(Exception) as info:
        torch.library.opcheck(fn, args, test_utils="test_aot_dispatch_dynamic")
    chain, err = [], info.value
    while err is not None and len(chain) < 10:
        chain.append(err)
        err = err.__cause__ or err.__context__
    runtime = [c for c in chain if type(c) is RuntimeError and "TRITON_INTERPRET" in str(c)]
    assert runtime, f"expected a RuntimeError naming TRITON_INTERPRET, got {chain!r}"


@pytest.fixture
def torch_path(monkeypatch):
    """Force the plain-PyTorch implementation (CPU tensors)."""
    monkeypatch.setattr(dense, "use_triton", lambda t: False)


@pytest.mark.parametrize("op", ["dense_fwd", "dense_bwd"])
def test_opcheck_torch_path(op, torch_path):
    fwd, bwd = _op_args("cpu")
    fn, args = (dense._dense_fwd_op, fwd) if op == "dense_fwd" else (dense._dense_bwd_op, bwd)
    result = torch.library.opcheck(fn, args)
    assert set(result) >= {"test_schema", "test_faketensor", "test_aot_dispatch_dynamic"}
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="fp64"), *IO_DTYPES])
def test_torch_path_vs_oracle(dtype, torch_path):
    inp = make_inputs((5,), 123, 77, dtype, "cpu", seed=91)
    check_against_oracle(inp, precision="ieee")
    inp = make_inputs((2, 3), 17, 40, dtype, "cpu", bias=False, alpha="const", eps="float", seed=92)
    check_against_oracle(inp, precision="ieee")


@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, id="fp16"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_torch_path_under_autocast(dtype, torch_path, autocast_state):
    """The plain-PyTorch path computes in fp32 also inside an autocast region, whose matmuls
    would otherwise run in the autocast dtype (a half-precision s fails the forward's
    check): forward and backward through autograd, and both ops called there directly
    (autograd runs the backward with autocast off; a direct call does not)."""
    inp = make_inputs((33,), 40, 64, dtype, "cpu", seed=93)
    with torch.autocast("cpu", dtype=dtype):
        check_against_oracle(inp, precision="ieee")

    fwd, bwd = _op_args("cpu", dtype)
    seen = autocast_state(dense, "_dense_fwd_torch", "_dense_bwd_torch")
    with torch.autocast("cpu", dtype=dtype):
        dense._dense_fwd_op(*fwd)
        dense._dense_bwd_op(*bwd)
    assert seen == [("_dense_fwd_torch", False), ("_dense_bwd_torch", False)], seen


@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="fp64"),
                                   pytest.param(torch.float32, id="fp32")])  # fmt: skip
def test_torch_path_clamp_active(dtype, torch_path):
    inp, kappa = clamp_inputs(dtype, "cpu", 0)
    check_against_oracle(inp, precision="ieee", amplification=kappa)


# ---------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("alpha, eps", [("const", "float"), ("tensor", "tensor")], ids=["floats", "tensors"])
def test_torch_path_traces_with_dynamic_shapes(alpha, eps, torch_path):
    """The public function's checks and routing trace whole (fullgraph) with symbolic sizes
    and scalars (dynamic=True: a float argument arrives as a SymFloat), on a CPU too: the
    plain-PyTorch path under torch.compile, two shapes through one compile, against the
    oracle."""
    torch._dynamo.reset()
    compiled = torch.compile(yat_linear, fullgraph=True, dynamic=True, backend="eager")
    for seed, lead in ((111, (5,)), (112, (3, 7))):
        inp = make_inputs(lead, 12, 9, torch.float32, "cpu", alpha=alpha, eps=eps, seed=seed)
        check_against_oracle(inp, precision="ieee", layer=compiled)


@pytest.mark.skipif(not ON_CUDA, reason="torch.compile traces the Triton kernels only on CUDA; "
                    "under the interpreter tracing is refused by design")  # fmt: skip
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
@pytest.mark.parametrize("tma", [False, True], ids=["default-tile", "tma-tile"])
def test_torch_compile(dtype, tma, device):
    """yat_linear under torch.compile (fullgraph) against the float64 oracle, forward and
    every gradient. With a TMA tile forced, tracing must fall back to the pointer kernel
    (host descriptors do not pass through triton_op tracing) and stay correct."""
    import contextlib

    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    torch._dynamo.reset()
    compiled = torch.compile(yat_linear, fullgraph=True)
    forced = contextlib.ExitStack()
    if tma:
        cfg = TileConfig(32, 64, 32, 4, 4, 2, tma=True)
        forced.enter_context(forced_config("dense", "fwd", cfg))
        forced.enter_context(forced_config("dense", "bwd", cfg))
    with forced:
        check_against_oracle(
            make_inputs((37,), 70, 96, dtype, device, seed=101), precision="ieee", layer=compiled
        )


@pytest.mark.skipif(not ON_CUDA, reason="torch.compile traces the Triton kernels only on CUDA; "
                    "under the interpreter tracing is refused by design")  # fmt: skip
def test_torch_compile_dynamic(device):
    """dynamic=True: symbolic sizes and float alpha / eps arriving as SymFloats reach the
    kernels through one compile for two shapes (the CPU twin: the torch path's test)."""
    torch._dynamo.reset()
    compiled = torch.compile(yat_linear, fullgraph=True, dynamic=True)
    for seed, lead in ((115, (37,)), (116, (5, 9))):
        inp = make_inputs(lead, 70, 96, torch.bfloat16, device, alpha="const", eps="float", seed=seed)
        check_against_oracle(inp, precision="ieee", layer=compiled)


@pytest.mark.skipif(not ON_CUDA, reason="torch.compile traces the Triton kernels only on CUDA; "
                    "under the interpreter tracing is refused by design")  # fmt: skip
def test_torch_compile_under_autocast(device):
    """The autocast casts trace into the graph (fullgraph): fp32 operands run in bf16."""
    torch._dynamo.reset()
    check_autocast(torch.bfloat16, torch.float32, device, torch.compile(yat_linear, fullgraph=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_tma_kernels_end_to_end(dtype, device, launched):
    """A layer whose forward and backward GEMMs all run the persistent TMA kernels (dW reads
    gs^T through a transposed box), every gradient against the oracle. fp16 keeps its
    backward GEMMs on the pointer kernel (fp32 gs against fp16 operands)."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    cfg = TileConfig(16, 32, 16, 2, 4, 2, epilogue_split=2, tma=True)
    inp = make_inputs((24,), 40, 48, dtype, device, seed=21)
    with forced_config("dense", "fwd", cfg), forced_config("dense", "bwd", cfg):
        check_against_oracle(inp)
    names = [c.kernel.fn.__name__ for c in launched]
    assert "yat_dense_fwd_tma_kernel" in names
    gemms = [k for k in names if "bwd_gemm" in k]
    expected = "yat_dense_bwd_gemm_kernel" if dtype == torch.float16 else "yat_dense_bwd_gemm_tma_kernel"
    assert gemms == [expected] * 2, names


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_warp_specialized_backward_matches_oracle(dtype, device, launched):
    """The backward GEMMs on a warp-specialized 128x256 TMA tile (dx reads gs, dW gs^T in
    transposed boxes; two row tiles each, ragged), every gradient against the oracle (fp16
    keeps its GEMMs on the pointer kernel, whose gs is fp32). On a GPU, part of the GPU
    script's canary: the bf16 GEMMs must run warp-specialized, as the sweep will run them
    (no WarpSpecializationFallback), and be split into a producer and two 4-warp consumer
    warpgroups."""
    import warnings

    from kernels._common import TileConfig
    from yat_triton._launch import WarpSpecializationFallback
    from yat_triton.tuning import forced_config

    tile = TileConfig(128, 256, 64, 2, 4, 2, tma=True, warp_specialize=True)
    inp = make_inputs((150,), 136, 72, dtype, device, seed=23)
    with forced_config("dense", "bwd", tile), warnings.catch_warnings():
        warnings.simplefilter("error", WarpSpecializationFallback)
        check_against_oracle(inp)
    gemms = [c for c in launched if "bwd_gemm" in c.kernel.fn.__name__]
    expected = "yat_dense_bwd_gemm_kernel" if dtype == torch.float16 else "yat_dense_bwd_gemm_tma_kernel"
    assert [c.kernel.fn.__name__ for c in gemms] == [expected] * 2
    if dtype == torch.bfloat16:
        assert all(c.kwargs["WARP_SPECIALIZE"] and c.kwargs["num_warps"] == 4 for c in gemms)
        assert [c.kwargs["BLOCK_M"] for c in gemms] == [128, 128]
    if device == "cuda" and dtype == torch.bfloat16:
        for c in gemms:
            compiled = c.kernel.warmup(*c.args, grid=c.grid, **c.kwargs)
            assert compiled.metadata.num_warps == 12, "Triton did not warp-specialize the backward GEMM"


def test_eager_launches_skip_the_graph_dispatcher(device, monkeypatch):
    """Eager launches call the kernel directly; wrap_triton (the higher-order-op path that
    lets a graph record the kernel) only runs while a dispatch mode traces, on a GPU: an
    interpreted kernel cannot be recorded (torch 2.11's wrap_triton refuses it), so under
    the interpreter it runs directly inside the mode too."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import yat_triton._launch as launch_mod

    wrapped: list[object] = []
    monkeypatch.setattr(launch_mod, "wrap_triton", lambda k: wrapped.append(k) or k)

    class Passthrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            return func(*args, **(kwargs or {}))

    x, w = torch.randn(8, 16, device=device), torch.randn(4, 16, device=device)
    y = dense.dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", False)[0]
    assert wrapped == []
    with Passthrough():
        y2 = dense.dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", False)[0]
    assert bool(wrapped) == (device == "cuda") and torch.equal(y, y2)
    assert_close(y, yat_dense_ref(x.cpu(), w.cpu(), None, None, 1e-3), torch.float32, reduction=16, what="y")


@pytest.mark.parametrize("groups", [1, 3])
def test_bwd_prep_writes_every_partial_slot(groups, device):
    """The partial-sum buffers are allocated uninitialized: the elementwise pass must write
    every slot (filled with NaN / -1 first; ragged M and N, groups as the conv uses them)."""
    M, N = 37, 30 * groups
    g = torch.randn(M, N, device=device)
    s = torch.randn(M, N, device=device)
    nx = torch.rand(M, groups, device=device) + 1.0
    nw = torch.rand(N, device=device) + 1.0
    b, alpha, eps = (
        torch.randn(N, device=device),
        torch.ones(1, device=device),
        torch.full((1,), 1e-3, device=device),
    )
    buffers, calls = dense.plan_bwd_prep(
        g, s, nx, nw, b, alpha, 1.0, eps, 1e-3, "ieee", True, True, True, groups=groups
    )
    for t in buffers[1:]:
        t.fill_(-1 if t.dtype == torch.int32 else float("nan"))
    for call in calls:
        call.run()
    for name, t in zip(("row_gd", "cols", "part_alpha", "part_eps", "tile_near"), buffers[1:], strict=True):
        assert t.numel() > 0, name
        assert not torch.isnan(t.float()).any() and not (t == -1).any() if t.dtype == torch.int32 else True, (
            name
        )
        assert torch.isfinite(t.float()).all(), name


def test_plans_stay_within_grid_and_int32_limits():
    """Plans on meta tensors (nothing runs). The backward's elementwise pass puts its tiles
    on the grid's first axis: a 4.2M-column output has 65,625 column tiles, past the 65535
    limit of the other axes. The norm pass copies an operand whose K stride times its
    K block (up to 512) would overflow its int32 pointer step."""
    meta = dict(device="meta")
    M, N = 256, 4_200_000
    grad = torch.empty((M, N), dtype=torch.bfloat16, **meta)
    s = torch.empty((M, N), dtype=torch.float32, **meta)
    nx, nw = torch.empty((M,), **meta), torch.empty((N,), **meta)
    _, (call,) = dense.plan_bwd_prep(grad, s, nx, nw, None, None, 1.0, None, 1e-3, "ieee", True, False, False)
    bm, bn = call.kwargs["BLOCK_M"], call.kwargs["BLOCK_N"]
    assert call.grid == (-(-M // bm) * -(-N // bn), 1)

    rows = torch.empty((1024, 5_000_000), dtype=torch.bfloat16, **meta).t()  # K stride 5e6 > 2^31 / 512
    _, (norms,) = dense.plan_row_sqnorms(rows)
    assert norms.args[0].stride() == (1024, 1) and norms.args[0].shape == rows.shape
    small = torch.empty((1024, 4_000_000), dtype=torch.bfloat16, **meta).t()  # within: no copy
    _, (norms,) = dense.plan_row_sqnorms(small)
    assert norms.args[0].stride() == small.stride()
