"""ⵟ-convolution (`yat_conv2d`, `yat_conv1d`, ops yat_triton::conv2d_fwd / conv2d_bwd) against
the float64 oracle.

Forward and every gradient (dx, dW, db, dalpha, deps) are compared to `oracle.yat_conv2d_ref`
(direct patch distances, padding resolved independently of the package) through
`torch.autograd.grad` with a random upstream gradient, within `tests/tolerances.py`. On a
CPU the ops run through the Triton interpreter (tests/conftest.py) wherever the package
routes them to Triton; on a CUDA machine the same tests run the compiled kernels. Shapes
stay tiny: the interpreter is slow.
"""

from __future__ import annotations

import contextlib
import math
import unittest.mock
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from oracle import conv_out_size, resolve_conv_padding, to_oracle, yat_conv2d_ref
from tolerances import assert_close, max_rel_err, row_checker
from torch import Tensor

import yat_triton.conv as conv
from yat_triton import yat_conv1d, yat_conv2d
from yat_triton._launch import INTERPRETING

NAMES = ("x", "weight", "bias", "alpha", "eps")
GRAD_LABEL = {"x": "dx", "weight": "dW", "bias": "db", "alpha": "dalpha", "eps": "deps"}
CL = torch.channels_last

IO_DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16"),
]
FP32_BF16 = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]
LAYOUTS = [pytest.param(False, id="nchw"), pytest.param(True, id="cl")]


# ---------------------------------------------------------------------------------------
# Helpers


def acc_of(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype (and the dtype the tests give a learnable eps)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tol_dtype(param_dtype: torch.dtype, io_dtype: torch.dtype) -> torch.dtype:
    """A gradient is held to its own dtype's entry, never finer than the accumulation."""
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


def upstream(shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int = 1234) -> Tensor:
    return Draw(seed, device)(*shape, dtype=dtype)


@dataclass(frozen=True)
class Geo:
    """One convolution: x (B, C_in, H, W), weight (C_out, C_in / groups, *k)."""

    B: int
    C_in: int
    H: int
    W: int
    C_out: int
    k: tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | str | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1

    def out_hw(self) -> tuple[int, int]:
        top, bottom, left, right = resolve_conv_padding(self.padding, self.k, self.dilation)
        st = (self.stride,) * 2 if isinstance(self.stride, int) else self.stride
        dl = (self.dilation,) * 2 if isinstance(self.dilation, int) else self.dilation
        return (
            conv_out_size(self.H, top + bottom, self.k[0], st[0], dl[0]),
            conv_out_size(self.W, left + right, self.k[1], st[1], dl[1]),
        )

    def conv_args(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}  # fmt: skip

    def pixel_max(self, per_position: Tensor) -> Tensor:
        """(B, 1, H, W): for each input pixel, the largest of `per_position` (B, OH, OW) over
        the output positions whose patch reads it (0 for a pixel no patch reads)."""
        top, bottom, left, right = resolve_conv_padding(self.padding, self.k, self.dilation)
        index = torch.arange(1, self.H * self.W + 1, dtype=torch.float64).reshape(1, 1, self.H, self.W)
        taps = F.unfold(F.pad(index, (left, right, top, bottom)), self.k, dilation=self.dilation,
                        stride=self.stride)[0].long()  # (kh*kw, OH*OW), 0 = padding  # fmt: skip
        out = torch.zeros(self.B, self.H * self.W + 1, dtype=torch.float64)
        src = per_position.reshape(self.B, 1, -1).to(torch.float64).expand(-1, taps.shape[0], -1)
        out.scatter_reduce_(1, taps.reshape(1, -1).expand(self.B, -1), src.reshape(self.B, -1), "amax")
        return out[:, 1:].reshape(self.B, 1, self.H, self.W)


def make_inputs(
    geo: Geo,
    dtype: torch.dtype,
    device: str,
    *,
    channels_last: bool = False,
    bias: bool = True,
    alpha: str = "tensor",
    eps: str = "tensor",
    eps_value: float = 1e-2,
    seed: int = 0,
    scale: float = 0.5,
) -> dict[str, Tensor | float | None]:
    """x, weight, bias (C_out,), alpha none|const|tensor, eps float|tensor; every tensor
    requires grad. Alpha tensors have the io dtype, eps tensors the accumulation dtype."""
    draw = Draw(seed, device)
    x = draw(geo.B, geo.C_in, geo.H, geo.W, dtype=dtype, scale=scale)
    if channels_last:
        x = x.contiguous(memory_format=CL)
    inp: dict[str, Tensor | float | None] = {
        "x": x.requires_grad_(),
        "weight": draw(geo.C_out, geo.C_in // geo.groups, *geo.k, dtype=dtype, scale=scale).requires_grad_(),
        "bias": draw(geo.C_out, dtype=dtype, scale=scale).requires_grad_() if bias else None,
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


def check_against_oracle(
    inp: dict[str, Tensor | float | None],
    geo: Geo,
    *,
    precision: str | None = "ieee",
    amplification: float | Tensor = 1.0,
    grad_transform=None,  # noqa: ANN001
    layer=None,  # noqa: ANN001
    tol_precision: str | None = None,
) -> dict[str, float]:
    """yat_conv2d forward + backward on `inp` against the oracle; returns the
    relative-to-max errors (labels y, dx, dW, db, dalpha, deps). `tol_precision`: the
    precision fp32 is held to where `precision` leaves it to torch's flag (None).

    Also checks dtypes, devices and memory formats: y (and dx) follow x's memory format.
    `layer` replaces `yat_conv2d` (e.g. a torch.compile'd one). A tensor `amplification` is
    the condition number of every (position, filter) pair, shaped like y (`clamp_inputs`):
    then y at each position, dx at each pixel and dW of each filter are held to their own
    scale and to the largest condition number among the pairs they sum; db, dalpha and deps
    to the largest of all."""
    x, weight = inp["x"], inp["weight"]
    dtype = x.dtype
    y = (layer or yat_conv2d)(x, weight, inp["bias"], **geo.conv_args(), alpha=inp["alpha"], eps=inp["eps"],
                   precision=precision)  # fmt: skip
    ref = {
        k: to_oracle(v, requires_grad=v.requires_grad) if isinstance(v, Tensor) else v for k, v in inp.items()
    }
    y_ref = yat_conv2d_ref(ref["x"], ref["weight"], ref["bias"], ref["alpha"], ref["eps"],
                           geo.stride, geo.padding, geo.dilation, geo.groups)  # fmt: skip
    assert y.dtype == dtype and y.device == x.device
    assert tuple(y.shape) == (geo.B, geo.C_out, *geo.out_hw())
    cl_in = x.is_contiguous(memory_format=CL)
    if cl_in and not x.is_contiguous():
        assert y.is_contiguous(memory_format=CL), f"channels_last x gave y with strides {y.stride()}"
    elif x.is_contiguous():
        assert y.is_contiguous(), f"NCHW x gave y with strides {y.stride()}"
    kh, kw = geo.k
    K = geo.C_in // geo.groups * kh * kw
    io_prec = (tol_precision or precision) if dtype == torch.float32 else None
    errors = {"y": max_rel_err(y, y_ref)}
    rows = {}  # label -> (dims a row's scale is taken over, amplification of each row)
    if isinstance(amplification, Tensor):
        per_position = amplification.amax(1)  # (B, OH, OW)
        rows = {"y": ((1,), per_position[:, None]), "dx": ((1,), geo.pixel_max(per_position)),
                "dW": ((1, 2, 3), amplification.amax((0, 2, 3))[:, None, None, None])}  # fmt: skip
        amplification = amplification.max().item()
    check = row_checker(rows, amplification)

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
    # dalpha and deps sum B*C_out*OH*OW terms of random sign: hold them to the size of the
    # summed terms (the same sum taken with |g|).
    scalars = [k for k in wrt if k in ("alpha", "eps")]
    sizes = (
        dict(zip(scalars, torch.autograd.grad(y_ref, [ref[k] for k in scalars], gy_ref.abs()), strict=True))
        if scalars
        else {}
    )
    OH, OW = geo.out_hw()
    P = geo.B * OH * OW
    reduction = {"x": geo.C_out // geo.groups * kh * kw, "weight": P, "bias": P,
                 "alpha": P * geo.C_out, "eps": P * geo.C_out}  # fmt: skip
    for k, g, r in zip(wrt, grads, refs, strict=True):
        label = GRAD_LABEL[k]
        t = inp[k]
        assert g.dtype == t.dtype and g.device == t.device and g.shape == t.shape, (
            f"{label}: got {g.dtype} {tuple(g.shape)} on {g.device}, input is {t.dtype} "
            f"{tuple(t.shape)} on {t.device}"
        )
        if k == "x" and cl_in and not t.is_contiguous():
            assert g.is_contiguous(memory_format=CL), f"dx of channels_last x has strides {g.stride()}"
        errors[label] = max_rel_err(g, r, None if k not in sizes else sizes[k].abs().item())
        gdt = tol_dtype(t.dtype, dtype)
        check(label, g, r, gdt, reduction=reduction[k], precision=io_prec if gdt == torch.float32 else None,
              scale=sizes.get(k))  # fmt: skip
    return errors


@pytest.fixture
def torch_path(monkeypatch):
    """Force the plain-PyTorch implementation (CPU tensors)."""
    if not hasattr(conv, "use_triton"):
        pytest.skip(
            "yat_triton.conv has no use_triton switch yet, so the plain-PyTorch path cannot be forced"
        )
    monkeypatch.setattr(conv, "use_triton", lambda t: False)


# ---------------------------------------------------------------------------------------
# Geometry x dtype x layout against the oracle

# (name, geometry, heavy): heavy ones (many groups or a large kernel: slow under the
# interpreter) run in two dtype/layout combinations, the others in four.
GEOMETRIES = [
    ("k1x1", Geo(2, 4, 5, 6, 6, (1, 1)), False),
    ("k3x3-p1-ragged", Geo(2, 4, 7, 5, 6, (3, 3), padding=1), False),
    ("k3x3-s2-p1-c5", Geo(2, 5, 9, 8, 3, (3, 3), stride=2, padding=1), False),
    ("k3x3-valid-d2", Geo(2, 4, 9, 7, 4, (3, 3), padding="valid", dilation=2), False),
    ("k3x2-same-asym", Geo(2, 4, 6, 7, 6, (3, 2), padding="same"), False),
    ("k3x2-same-d2x3", Geo(2, 4, 7, 8, 5, (3, 2), padding="same", dilation=(2, 3)), False),
    ("k2x2-same-asym", Geo(2, 3, 5, 4, 4, (2, 2), padding="same"), False),
    ("k3x3-s2x1-p1x2", Geo(2, 4, 7, 6, 5, (3, 3), stride=(2, 1), padding=(1, 2)), False),
    ("k3x3-g2", Geo(2, 4, 5, 6, 6, (3, 3), padding=1, groups=2), False),
    ("k1x1-s2-g2", Geo(2, 8, 5, 5, 4, (1, 1), stride=2, groups=2), False),
    ("out-1x1", Geo(2, 3, 3, 3, 5, (3, 3)), False),
    ("out-1x1-d2", Geo(2, 3, 5, 5, 4, (3, 3), dilation=2), False),
    ("out-1x4", Geo(2, 3, 3, 9, 4, (3, 3), stride=(1, 2)), False),
    ("B1-c5-ragged", Geo(1, 5, 5, 9, 7, (3, 3), padding=(0, 1)), False),
    ("k5x5-p2-g2", Geo(2, 4, 6, 5, 6, (5, 5), padding=2, groups=2), True),
    ("k5x5-s2-p1", Geo(2, 3, 9, 8, 4, (5, 5), stride=2, padding=1), True),
    ("k7x7-s2-p3", Geo(1, 3, 8, 9, 4, (7, 7), stride=2, padding=3), True),
    ("depthwise-k3", Geo(2, 3, 6, 5, 3, (3, 3), padding=1, groups=3), True),
    ("depthwise-x2-s2", Geo(2, 3, 7, 6, 6, (3, 3), stride=2, padding=1, groups=3), True),
]
COMBOS = {
    False: [(torch.float32, False, "fp32-nchw"), (torch.float32, True, "fp32-cl"),
            (torch.float16, False, "fp16-nchw"), (torch.bfloat16, True, "bf16-cl")],
    True: [(torch.float32, True, "fp32-cl"), (torch.bfloat16, False, "bf16-nchw")],
}  # fmt: skip
GEOMETRY_CASES = [
    pytest.param(geo, dtype, cl, id=f"{name}-{combo}")
    for name, geo, heavy in GEOMETRIES
    for dtype, cl, combo in COMBOS[heavy]
]


@pytest.mark.parametrize("geo, dtype, channels_last", GEOMETRY_CASES)
def test_geometry(geo, dtype, channels_last, device):
    inp = make_inputs(geo, dtype, device, channels_last=channels_last, seed=geo.C_in * 7 + geo.H)
    check_against_oracle(inp, geo)


POINTWISE_GEO = Geo(2, 8, 5, 7, 6, (1, 1))


@pytest.mark.parametrize(
    "channels_last, stride, kernel",
    [(True, 1, "yat_dense_fwd_kernel"), (False, 1, "yat_conv_fwd_kernel"), (True, 2, "yat_conv_fwd_kernel")],
    ids=["cl-dense", "nchw-conv", "cl-strided-conv"],
)
def test_pointwise_conv_routing(channels_last, stride, kernel, device):
    """1x1 stride-1 convs of channels_last inputs run on the dense kernels over the
    (B*H*W, C_in) view of x (no copy); other layouts and strides keep the conv kernel."""
    x = torch.randn(2, 8, 5, 7, device=device)
    x = x.contiguous(memory_format=CL) if channels_last else x
    w = torch.randn(6, 8, 1, 1, device=device)
    (y, _, _, _), calls = conv.plan_conv2d_fwd(
        x, w, None, None, 1.0, None, 1e-3, (stride, stride), (0, 0, 0, 0), (1, 1), 1, "ieee", True
    )
    assert calls[-1].kernel.fn.__name__ == kernel
    if kernel == "yat_dense_fwd_kernel":
        assert calls[-1].args[0].data_ptr() == x.data_ptr(), "x was copied"
        assert y.is_contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_pointwise_conv_options_via_dense(dtype, device):
    """Every gradient of a routed 1x1 conv (bias, alpha and eps tensors) against the oracle."""
    inp = make_inputs(POINTWISE_GEO, dtype, device, channels_last=True, alpha="tensor", eps="tensor", seed=8)
    check_against_oracle(inp, POINTWISE_GEO)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_pointwise_conv_small_batch_on_the_gpu_default_tile(dtype, device, launched):
    """A routed 1x1 conv of a small batch (35 rows) on the GPU's default dense tile for it,
    which writes y into the conv's own output: every gradient against the oracle. fp32's
    tile sums the norms in its main loop; 16-bit io's takes the norm pass, also when asked
    for fp32's (`broken_in_loop_norms`)."""
    from kernels.dense import dense_default_config
    from yat_triton.tuning import forced_config

    geo = Geo(1, 8, 5, 7, 6, (1, 1))
    tile = dense_default_config(35, 6, 8, 4)
    assert tile.norms_in_loop and not dense_default_config(35, 6, 8, 2).norms_in_loop
    inp = make_inputs(geo, dtype, device, channels_last=True, seed=12)
    with forced_config("dense", "fwd", tile):
        check_against_oracle(inp, geo)
    (fwd,) = [c for c in launched if c.kernel.fn.__name__ == "yat_dense_fwd_kernel"]
    in_loop = dtype == torch.float32
    assert fwd.kwargs["NORMS_IN_LOOP"] == in_loop and fwd.kwargs["STORE_S"]
    assert any(c.kernel.fn.__name__ == "row_sqnorm_kernel" for c in launched) != in_loop


OPTION_GEO = Geo(2, 4, 6, 5, 6, (3, 3), padding=1)
OPTION_CASES = [
    *[pytest.param(torch.float32, b, a, e, id=f"fp32-{'bias' if b else 'nobias'}-alpha-{a}-eps-{e}")
      for b in (True, False) for a in ("none", "const", "tensor") for e in ("float", "tensor")],
    pytest.param(torch.bfloat16, True, "tensor", "tensor", id="bf16-bias-alpha-tensor-eps-tensor"),
    pytest.param(torch.bfloat16, False, "const", "float", id="bf16-nobias-alpha-const-eps-float"),
    pytest.param(torch.float16, False, "none", "tensor", id="fp16-nobias-alpha-none-eps-tensor"),
]  # fmt: skip


@pytest.mark.parametrize("dtype, bias, alpha, eps", OPTION_CASES)
def test_options(dtype, bias, alpha, eps, device):
    inp = make_inputs(OPTION_GEO, dtype, device, bias=bias, alpha=alpha, eps=eps, seed=3)
    check_against_oracle(inp, OPTION_GEO)


@pytest.mark.parametrize(
    "which", ["x", "weight", "bias", "alpha", "eps", "x+weight", "none"], ids=lambda w: f"grad-{w}"
)
def test_partial_requires_grad(which, device):
    """Only some inputs require grad: the backward computes just those."""
    inp = make_inputs(OPTION_GEO, torch.float32, device, channels_last=True, seed=5)
    wanted = set(which.split("+"))
    for k in NAMES:
        if isinstance(inp[k], Tensor) and k not in wanted:
            inp[k].requires_grad_(False)
    check_against_oracle(inp, OPTION_GEO)


def test_alpha_tensor_of_other_dtype(device):
    """A float64 alpha with float32 io: its gradient comes back in float64."""
    inp = make_inputs(OPTION_GEO, torch.float32, device, seed=6)
    inp["alpha"] = torch.full((1,), 0.6, dtype=torch.float64, device=device, requires_grad=True)
    check_against_oracle(inp, OPTION_GEO)


def test_int_scalars(device):
    """alpha and eps given as Python ints are constants."""
    inp = make_inputs(OPTION_GEO, torch.float32, device, alpha="none", eps="float", seed=8)
    inp["alpha"], inp["eps"] = 3, 1
    check_against_oracle(inp, OPTION_GEO)


# ---------------------------------------------------------------------------------------
# Strided inputs

STRIDED_GEO = Geo(2, 4, 6, 7, 5, (3, 3), padding=1)


def _strided(kind: str, dtype: torch.dtype, device: str) -> tuple[dict, object]:
    g = STRIDED_GEO
    inp = make_inputs(g, dtype, device, seed=11)
    draw = Draw(12, device)
    transform = None
    if kind == "x-strided-w":  # every other column of a wider image
        inp["x"] = draw(g.B, g.C_in, g.H, 2 * g.W, dtype=dtype, scale=0.5).requires_grad_()[..., ::2]
    elif kind == "x-channel-slice-cl":  # channels_last strides, but not dense
        base = draw(g.B, g.C_in + 2, g.H, g.W, dtype=dtype, scale=0.5).contiguous(memory_format=CL)
        inp["x"] = base.requires_grad_()[:, 1 : 1 + g.C_in]
    elif kind == "x-hw-transposed":  # (B, C, W, H) storage seen as (B, C, H, W)
        inp["x"] = draw(g.B, g.C_in, g.W, g.H, dtype=dtype, scale=0.5).requires_grad_().transpose(2, 3)
    elif kind == "w-permuted":  # weight stored (kH, kW, C_in, C_out)
        base = draw(*g.k, g.C_in, g.C_out, dtype=dtype, scale=0.5).requires_grad_()
        inp["weight"] = base.permute(3, 2, 0, 1)
    elif kind == "w-channels-last":  # channels innermost: the forward uses it without a copy
        inp["weight"] = inp["weight"].detach().contiguous(memory_format=CL).requires_grad_()
    elif kind == "bias-expanded":
        inp["bias"] = draw(1, dtype=dtype, scale=0.5).requires_grad_().expand(g.C_out)
    elif kind == "grad-transposed":
        transform = lambda t: t.transpose(2, 3).contiguous().transpose(2, 3)  # noqa: E731
    return inp, transform


STRIDED_CASES = [
    *[pytest.param(k, torch.float32, id=f"fp32-{k}") for k in ("x-strided-w", "x-channel-slice-cl",
      "x-hw-transposed", "w-permuted", "w-channels-last", "bias-expanded", "grad-transposed")],
    pytest.param("x-channel-slice-cl", torch.bfloat16, id="bf16-x-channel-slice-cl"),
    pytest.param("w-permuted", torch.bfloat16, id="bf16-w-permuted"),
    pytest.param("w-channels-last", torch.bfloat16, id="bf16-w-channels-last"),
]  # fmt: skip


@pytest.mark.parametrize("kind, dtype", STRIDED_CASES)
def test_noncontiguous(kind, dtype, device, launched):
    inp, transform = _strided(kind, dtype, device)
    check_against_oracle(inp, STRIDED_GEO, grad_transform=transform)
    # the forward's weight operand: a channels_last weight as it is, any other copied by the
    # pass that also sums the filter norms
    first = launched[0].kernel.fn.__name__
    assert first == ("row_sqnorm_kernel" if kind == "w-channels-last" else "yat_conv_weight_prep_kernel")


# ---------------------------------------------------------------------------------------
# x ~ w: input patches equal (or close) to filters, the clamp is active

CLAMP_GEO = Geo(2, 3, 7, 7, 5, (3, 3))


def clamp_inputs(dtype: torch.dtype, device: str, channels_last: bool, seed: int = 0) -> tuple[dict, Tensor]:
    """3x3 patches of x set to filters: exactly (three patches), within 1e-3, 0.03 and 0.12
    relative (one each); eps = 1e-3. Returns the inputs and the condition numbers
    kappa = (||x_patch||^2 + ||w_f||^2) / q (B, C_out, OH, OW) by which the norm expansion
    of the distance amplifies the accumulation rounding of each (position, filter) pair:
    ~2e3 where a patch equals a filter, ~1 at most positions, which are then held to their
    own scale (`check_against_oracle`)."""
    g, scale, eps = CLAMP_GEO, 0.25, 1e-3
    draw = Draw(seed, "cpu")
    w = draw(g.C_out, g.C_in, *g.k, dtype=torch.float64, scale=scale)
    x = draw(g.B, g.C_in, g.H, g.W, dtype=torch.float64, scale=scale)
    x[0, :, 0:3, 0:3] = w[0]
    x[0, :, 4:7, 4:7] = w[1]
    x[1, :, 4:7, 4:7] = w[0]
    near = draw(4, g.C_in, *g.k, dtype=torch.float64, scale=scale)
    x[0, :, 0:3, 4:7] = w[4] + 0.12 * near[0]
    x[1, :, 0:3, 4:7] = w[2] + 1e-3 * near[1]
    x[1, :, 4:7, 0:3] = w[3] + 0.03 * near[2]
    xd = x.to(device=device, dtype=dtype)
    if channels_last:
        xd = xd.contiguous(memory_format=CL)
    inp = {
        "x": xd.requires_grad_(),
        "weight": w.to(device=device, dtype=dtype).requires_grad_(),
        "bias": draw(g.C_out, dtype=dtype, scale=scale).to(device).requires_grad_(),
        "alpha": torch.full((1,), 1.3, dtype=dtype, device=device, requires_grad=True),
        "eps": torch.full((1,), eps, dtype=acc_of(dtype), device=device, requires_grad=True),
    }
    x64, w64 = to_oracle(inp["x"]), to_oracle(inp["weight"])
    assert torch.equal(x64[0, :, 0:3, 0:3], w64[0])  # exact matches survive the cast
    patches = F.unfold(x64, g.k)  # (B, K, L)
    wf = w64.reshape(g.C_out, -1)
    nx = (patches * patches).sum(1)[:, None, :]
    nw = (wf * wf).sum(1)[None, :, None]
    q = ((patches[:, None] - wf[None, :, :, None]) ** 2).sum(2) + eps
    OH, OW = g.out_hw()
    return inp, ((nx + nw) / q).reshape(g.B, g.C_out, OH, OW)


CLAMP_CASES = [
    pytest.param(torch.float64, False, id="fp64-nchw"),
    *[pytest.param(dt, cl, id=f"{name}-{'cl' if cl else 'nchw'}")
      for dt, name in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16"))
      for cl in (False, True)],
]  # fmt: skip


@pytest.mark.parametrize("norms", ["in-loop", "pass"])
@pytest.mark.parametrize("dtype, channels_last", CLAMP_CASES)
def test_clamp_active(dtype, channels_last, norms, device, launched):
    """Forward and every gradient where patches equal filters (clamp active, distance <<
    eps) and at a range of small distances; accumulation errors may be amplified by kappa
    (the norm expansion), io rounding is held to the plain table. The patch norms summed
    in the main loop (an in-loop tile, fp32's default) and from the pixel-norm pass (16-bit
    io's default, and where an in-loop tile is asked for: `broken_in_loop_norms`)."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    inp, kappa = clamp_inputs(dtype, device, channels_last)
    tile = TileConfig(32, 16, 16, 8, 4, 1, norms_in_loop=norms == "in-loop")
    with forced_config("conv2d", "fwd", tile):
        check_against_oracle(inp, CLAMP_GEO, amplification=kappa)
    (fwd,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_fwd_kernel"]
    assert fwd.kwargs["NORM_PASS"] == (norms == "pass" or dtype.itemsize == 2)


def _positive_denominator(dtype: torch.dtype, device: str) -> None:
    """Every 3x3 patch (stride 3) equals filter 0 and eps = 1e-9, far below the cancellation
    noise of ||x_patch||^2 + ||w||^2 - 2 s: without the clamp some q would be <= 0."""
    eps = 1e-9
    draw = Draw(21, device)
    w = draw(4, 3, 3, 3, dtype=dtype, scale=1.0)
    x = w[0].repeat(1, 2, 2).unsqueeze(0).contiguous().requires_grad_()
    w.requires_grad_()
    y = yat_conv2d(x, w, stride=3, alpha=2.0, eps=eps)
    s = F.conv2d(to_oracle(x), to_oracle(w), stride=3)
    y64 = to_oracle(y)
    assert torch.isfinite(y64).all(), "non-finite output where x_patch == w"
    assert (y64 >= 0).all(), f"negative output {y64.min().item()}: the clamp is missing"
    assert (y64 <= 2.0 * s * s / eps * 1.02 + 1e-30).all(), "q < eps somewhere: the clamp is missing"
    dx, dw = torch.autograd.grad(y, (x, w), upstream(tuple(y.shape), dtype, device))
    assert torch.isfinite(dx).all() and torch.isfinite(dw).all()


@pytest.mark.parametrize("dtype", FP32_BF16)
def test_clamp_keeps_denominator_positive(dtype, device):
    _positive_denominator(dtype, device)


@pytest.mark.parametrize("dtype", FP32_BF16)
def test_clamp_keeps_denominator_positive_torch_path(dtype, torch_path):
    _positive_denominator(dtype, "cpu")


def test_torch_path_backward_divides_by_the_clamped_q(torch_path):
    """The plain-PyTorch backward recomputes the expanded distance in float64 from x; where
    a patch equals its filter, rounding makes it negative on some lanes. With eps = 1e-20,
    far below that noise, each such lane's dL/dalpha = g u^2 / q (image b equals filter b,
    one output each, g on lane (b, b) alone) must lie in [0, u^2 / eps]: a backward that
    divides by the unclamped q gives a negative term where the distance rounded below 0."""
    draw = Draw(33, "cpu")
    n = 48
    w = (
        draw(n, 16, 3, 3, dtype=torch.float64)
        * torch.logspace(-1, 1, n, dtype=torch.float64)[:, None, None, None]
    )
    x = w.clone().requires_grad_()  # image b is filter b
    w.requires_grad_()
    alpha = torch.full((1,), 1.5, dtype=torch.float64, requires_grad=True)
    eps = 1e-20
    y = yat_conv2d(x, w, alpha=alpha, eps=eps)  # (n, n, 1, 1)
    u = (w.detach().flatten(1) ** 2).sum(1)  # s on lane (b, b): ||w_b||^2
    terms = []
    for b in range(n):
        g = torch.zeros_like(y)
        g[b, b] = 1.0
        (da,) = torch.autograd.grad(y, alpha, g, retain_graph=True)
        terms.append(da.item())
    bound = (u**2 / eps).tolist()
    assert all(0.0 <= t <= 1.02 * bd for t, bd in zip(terms, bound, strict=True)), (min(terms), terms[:4])


@pytest.mark.parametrize(
    ("xv", "wv", "eps", "fast"),
    [
        # patch = filter = 2^-32 e: d = 0, u^2 = 2^-128, q = eps = 2^-126: y = 1/4 there
        pytest.param(2.0**-32, 2.0**-32, 2.0**-126, False, id="tiny-eps"),
        # q ~ u^2 = 1.125 2^127, a reciprocal past the normal range: y ~ 1 there
        pytest.param(1.5 * 2.0**63, 1.0, 1e-5, True, id="huge-distance"),
    ],
)
@pytest.mark.parametrize("tma", [False, True], ids=["pointer", "tma"])
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_quotient_at_the_float32_range_ends(dtype, tma, xv, wv, eps, fast, device, launched):
    """The forward epilogue's q = max(d, 0) + eps at both ends of the float32 range (see the
    dense test of the same name): one pixel of x and the centre tap of filter 0 are scaled
    unit vectors, so the output at that pixel holds the tested quotient, exactly formed."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    x = torch.zeros(1, 16, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = xv
    w = torch.zeros(4, 16, 3, 3, dtype=torch.float64)
    w[0, 0, 1, 1] = wv
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=CL)
    w = w.to(device=device, dtype=dtype)
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2, tma=tma)):
        y = yat_conv2d(x, w, padding=1, eps=eps)
    ref = yat_conv2d_ref(to_oracle(x), to_oracle(w), eps=eps, padding=1)
    assert ref[0, 0, 2, 2] > 0.1, "the centre pixel is where the quotient is tested"
    assert_close(y, ref, dtype, reduction=16 * 9, what="y")
    (fwd,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    assert fwd.kernel.fn.__name__ == ("yat_conv_fwd_tma_kernel" if tma else "yat_conv_fwd_kernel")
    assert fwd.kwargs["FAST_RCP"] == fast


# ---------------------------------------------------------------------------------------
# Saturation, NaN, empty batch


def test_fp16_saturation(device):
    """fp16 outputs whose exact value exceeds 65504 come back as +-65504, never inf."""
    draw = Draw(31, "cpu")
    w = draw(3, 2, 3, 3, dtype=torch.float64, scale=8.0)  # ||w_f||^2 ~ 1.2e3
    x = draw(1, 2, 6, 6, dtype=torch.float64, scale=8.0)
    x[0, :, 0:3, 0:3] = 1.05 * w[0]  # y ~ 1.05^2 / 0.05^2 ||w_0||^2 ~ 5e5
    x[0, :, 3:6, 3:6] = 1.02 * w[2]
    x16, w16 = x.to(device=device, dtype=torch.float16), w.to(device=device, dtype=torch.float16)
    for alpha in (1.0, -1.0):
        y = yat_conv2d(x16, w16, stride=3, alpha=alpha, eps=1e-3)
        ref = yat_conv2d_ref(to_oracle(x16), to_oracle(w16), alpha=alpha, eps=1e-3, stride=3)
        assert not torch.isinf(y).any(), "fp16 output overflowed to inf"
        over = ref.abs() > 65504
        assert over.sum() >= 2, "test data should exceed the fp16 range somewhere"
        y64 = to_oracle(y)
        assert torch.equal(y64[over], torch.sign(ref[over]) * 65504.0)
        assert_close(y64[~over], ref[~over], torch.float16, reduction=18, what="y (in range)")


@pytest.mark.parametrize("use_kernels", [True, False], ids=["kernels", "torch-path"])
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_huge_dot_products_do_not_overflow(dtype, use_kernels, device, monkeypatch):
    """|u| ~ 1e20 in a 3x3 conv: u^2 is past fp32's range, y = u^2 / q (~1e19) is not."""
    if not use_kernels:
        if device != "cpu":
            pytest.skip("the plain-PyTorch path is the CPU path")
        monkeypatch.setattr(conv, "use_triton", lambda t: False)
    draw = Draw(47, "cpu")
    x = draw(1, 2, 4, 4, dtype=torch.float64, scale=3e9).to(device=device, dtype=dtype)
    w = draw(3, 2, 3, 3, dtype=torch.float64, scale=3e9).to(device=device, dtype=dtype)
    assert F.conv2d(to_oracle(x), to_oracle(w)).abs().max() > 2e19, "test data should overflow u^2"
    y = yat_conv2d(x, w)
    assert_close(to_oracle(y), yat_conv2d_ref(to_oracle(x), to_oracle(w)), dtype, reduction=18, what="y")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_nan_stays_in_its_receptive_field(dtype, device):
    """A NaN in x makes exactly the outputs whose receptive field covers it NaN."""
    g = Geo(1, 2, 7, 7, 3, (3, 3), padding=1)
    inp = make_inputs(g, dtype, device, seed=41)
    x = inp["x"].detach().clone()
    x[0, 1, 3, 3] = float("nan")
    y = yat_conv2d(x, inp["weight"].detach(), inp["bias"].detach(), padding=1, alpha=0.5, eps=1e-2)
    ref = yat_conv2d_ref(to_oracle(x), to_oracle(inp["weight"]), to_oracle(inp["bias"]), 0.5, 1e-2, 1, 1)
    assert int(torch.isnan(ref).sum()) == 3 * 9
    assert_close(y, ref, dtype, reduction=18, what="y")


@pytest.mark.parametrize("dtype", FP32_BF16)
def test_empty_batch(dtype, device):
    """B = 0: empty output; dx empty, dW/db/dalpha/deps exactly zero."""
    g = Geo(0, 4, 5, 5, 6, (3, 3), padding=1)
    inp = make_inputs(g, dtype, device, seed=51)
    x, w, b, a, e = (inp[k] for k in NAMES)
    y = yat_conv2d(x, w, b, padding=1, alpha=a, eps=e)
    assert y.shape == (0, 6, 5, 5) and y.dtype == dtype
    dx, dw, db, da, de = torch.autograd.grad(y, (x, w, b, a, e), torch.zeros_like(y))
    assert dx.shape == x.shape
    for name, gr, t in (("dW", dw, w), ("db", db, b), ("dalpha", da, a), ("deps", de, e)):
        assert gr.shape == t.shape and gr.dtype == t.dtype, name
        assert torch.count_nonzero(gr) == 0, f"{name} should be zero for an empty batch"


# ---------------------------------------------------------------------------------------
# Modes and determinism


def test_no_grad_output_matches(device):
    """Without grad the forward skips saving s; the output must be identical."""
    inp = make_inputs(OPTION_GEO, torch.bfloat16, device, channels_last=True, seed=61)
    args = (inp["x"], inp["weight"], inp["bias"])
    kw = {**OPTION_GEO.conv_args(), "alpha": inp["alpha"], "eps": inp["eps"]}
    y = yat_conv2d(*args, **kw)
    with torch.no_grad():
        y_ng = yat_conv2d(*args, **kw)
    assert not y_ng.requires_grad
    assert torch.equal(y.detach(), y_ng)


def test_deterministic(device):
    """Two runs give bitwise identical outputs and gradients."""
    g = Geo(2, 4, 7, 7, 6, (3, 3), stride=2, padding=1, groups=2)
    inp = make_inputs(g, torch.bfloat16, device, channels_last=True, seed=62)
    tensors = [inp[k] for k in NAMES]
    runs = []
    for _ in range(2):
        y = yat_conv2d(
            inp["x"], inp["weight"], inp["bias"], **g.conv_args(), alpha=inp["alpha"], eps=inp["eps"]
        )
        runs.append((y, *torch.autograd.grad(y, tensors, upstream(tuple(y.shape), torch.bfloat16, device))))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_precision_none_follows_torch_flag(device, launched):
    """precision=None resolves from torch.backends.cuda.matmul.allow_tf32, both ways: every
    implicit GEMM gets the precision the flag names (the interpreter computes TF32 exactly:
    the oracle alone cannot tell), fp32 held to that precision's entry."""
    inp = make_inputs(OPTION_GEO, torch.float32, device, seed=63)
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        for flag, prec in ((False, "ieee"), (True, "tf32")):
            torch.backends.cuda.matmul.allow_tf32 = flag
            start = len(launched)
            check_against_oracle(inp, OPTION_GEO, precision=None, tol_precision=prec)
            gemms = [c for c in launched[start:] if "DOT_PRECISION" in c.kwargs]
            assert gemms or not conv.use_triton(inp["x"])
            assert {c.kwargs["DOT_PRECISION"] for c in gemms} == ({prec} if gemms else set()), (flag, gemms)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("dtype", FP32_BF16)
def test_tf32_precision(dtype, device, launched):
    """precision='tf32' is accepted; fp32 is held to the TF32 entry and every implicit
    GEMM gets it (the interpreter computes TF32 exactly: the oracle alone cannot tell it
    was dropped), bf16 ignores it."""
    inp = make_inputs(OPTION_GEO, dtype, device, channels_last=True, seed=64)
    check_against_oracle(inp, OPTION_GEO, precision="tf32")
    gemms = [c for c in launched if "DOT_PRECISION" in c.kwargs]
    assert gemms or not conv.use_triton(inp["x"])
    want = "tf32" if dtype == torch.float32 else "ieee"
    assert {c.kwargs["DOT_PRECISION"] for c in gemms} == ({want} if gemms else set()), gemms


# ---------------------------------------------------------------------------------------
# torch.autocast

AMP_DTYPES = [pytest.param(torch.bfloat16, id="amp-bf16"), pytest.param(torch.float16, id="amp-fp16")]
AMP_GEO = Geo(2, 4, 6, 5, 6, (3, 3), padding=1)


@pytest.mark.parametrize("amp_dtype", AMP_DTYPES)
def test_autocast_casts_operands(amp_dtype, device):
    """Under torch.autocast an fp32 channels_last input and fp32 parameters run in the
    autocast dtype, as F.conv2d's do: y has that dtype and x's memory format and matches
    the oracle of the cast operands; the gradients reach the fp32 tensors in fp32."""
    inp = make_inputs(AMP_GEO, torch.float32, device, channels_last=True, alpha="const", eps="float", seed=61)
    x, w, b = inp["x"], inp["weight"], inp["bias"]
    with torch.autocast(torch.device(device).type, dtype=amp_dtype):
        y = yat_conv2d(x, w, b, **AMP_GEO.conv_args(), alpha=0.75, eps=1e-2)
    assert y.dtype == amp_dtype and y.is_contiguous(memory_format=CL)
    ref = [to_oracle(t.to(amp_dtype), requires_grad=True) for t in (x, w, b)]
    y_ref = yat_conv2d_ref(*ref, 0.75, 1e-2, AMP_GEO.stride, AMP_GEO.padding)
    K = AMP_GEO.C_in * 9
    assert_close(y, y_ref, amp_dtype, reduction=K, what="y")
    gy = upstream(tuple(y.shape), amp_dtype, device)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    refs = torch.autograd.grad(y_ref, ref, to_oracle(gy))
    P = AMP_GEO.B * AMP_GEO.H * AMP_GEO.W
    for label, t, g, r, n in zip(("dx", "dW", "db"), (x, w, b), grads, refs, (AMP_GEO.C_out * 9, P, P),
                                 strict=True):  # fmt: skip
        assert g.dtype == t.dtype, f"{label}: {g.dtype}, its tensor is {t.dtype}"
        assert_close(g, r, amp_dtype, reduction=n, what=label)


def test_autocast_conv1d_mixed_dtypes(device):
    """conv1d under autocast: a bf16 input (a previous layer's output) against fp32
    parameters runs in bf16; without autocast the same call is refused."""
    draw = Draw(62, device)
    x = draw(2, 4, 9, dtype=torch.bfloat16, scale=0.5)
    w = draw(5, 4, 3, scale=0.5).requires_grad_()
    with pytest.raises(TypeError, match=r"weight has dtype torch.float32 but x has dtype torch.bfloat16"):
        yat_conv1d(x, w, padding=1)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        y = yat_conv1d(x, w, padding=1)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 5, 9)
    w64 = to_oracle(w.to(torch.bfloat16), requires_grad=True)
    y_ref = yat_conv2d_ref(to_oracle(x).unsqueeze(2), w64.unsqueeze(2), padding=(0, 1)).squeeze(2)
    assert_close(y, y_ref, torch.bfloat16, reduction=12, what="y")
    gy = upstream(tuple(y.shape), torch.bfloat16, device)
    (dw,) = torch.autograd.grad(y, (w,), gy)
    (dw_ref,) = torch.autograd.grad(y_ref, (w64,), to_oracle(gy))
    assert dw.dtype == torch.float32
    assert_close(dw, dw_ref, torch.bfloat16, reduction=18, what="dW")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_gpu_while_the_first_is_current():
    """A conv layer on cuda:1 while cuda:0 is current runs every kernel on cuda:1."""
    with torch.cuda.device(0):
        inp = make_inputs(AMP_GEO, torch.bfloat16, "cuda:1", channels_last=True, seed=63)
        check_against_oracle(inp, AMP_GEO)
        assert torch.cuda.current_device() == 0


# ---------------------------------------------------------------------------------------
# conv1d

CONV1D = [
    pytest.param(dict(B=2, C_in=4, L=9, C_out=5, k=3, padding=1), id="k3-p1"),
    pytest.param(dict(B=2, C_in=3, L=9, C_out=4, k=5, stride=2, padding="valid"), id="k5-s2-valid"),
    pytest.param(
        dict(B=2, C_in=4, L=8, C_out=6, k=2, padding="same", dilation=3, groups=2), id="k2-same-d3-g2"
    ),
    pytest.param(dict(B=1, C_in=3, L=7, C_out=6, k=3, stride=2, padding=1, groups=3), id="depthwise-x2-s2"),
    pytest.param(dict(B=2, C_in=5, L=6, C_out=3, k=1), id="k1"),
    pytest.param(dict(B=2, C_in=3, L=3, C_out=2, k=3), id="out-1"),
]


@pytest.mark.parametrize(
    "dtype, layout",
    [
        pytest.param(torch.float32, "ncl", id="fp32-ncl"),
        pytest.param(torch.bfloat16, "nlc-view", id="bf16-nlc-view"),
    ],
)
@pytest.mark.parametrize("cfg", CONV1D)
def test_conv1d(cfg, dtype, layout, device):
    """yat_conv1d against the 2-D oracle over a height-1 image (x (B, C, L) plain, or a
    transposed view of (B, L, C) storage)."""
    c = dict(cfg)
    B, C_in, L, C_out, k = (c.pop(n) for n in ("B", "C_in", "L", "C_out", "k"))
    stride, padding, dilation, groups = (c.get("stride", 1), c.get("padding", 0), c.get("dilation", 1),
                                         c.get("groups", 1))  # fmt: skip
    draw = Draw(k * 13 + L, device)
    if layout == "ncl":
        x = draw(B, C_in, L, dtype=dtype, scale=0.5).requires_grad_()
    else:
        x = draw(B, L, C_in, dtype=dtype, scale=0.5).transpose(1, 2).requires_grad_()
    w = draw(C_out, C_in // groups, k, dtype=dtype, scale=0.5).requires_grad_()
    b = draw(C_out, dtype=dtype, scale=0.5).requires_grad_()
    a = torch.full((1,), 1.3, dtype=dtype, device=device, requires_grad=True)
    e = torch.full((1,), 1e-2, dtype=torch.float32, device=device, requires_grad=True)
    y = yat_conv1d(x, w, b, stride, padding, dilation, groups, alpha=a, eps=e, precision="ieee")
    refs_in = [to_oracle(t, requires_grad=True) for t in (x, w, b, a, e)]
    pad2 = padding if isinstance(padding, str) else (0, padding)
    x64, w64, b64, a64, e64 = refs_in
    y_ref = yat_conv2d_ref(x64.unsqueeze(2), w64.unsqueeze(2), b64, a64, e64, (1, stride), pad2,
                           (1, dilation), groups).squeeze(2)  # fmt: skip
    assert y.dtype == dtype and y.dim() == 3
    assert_close(y, y_ref, dtype, reduction=C_in // groups * k, what="y")
    gy = upstream(tuple(y.shape), dtype, device)
    grads = torch.autograd.grad(y, (x, w, b, a, e), gy)
    refs = torch.autograd.grad(y_ref, refs_in, to_oracle(gy), retain_graph=True)
    sizes = torch.autograd.grad(y_ref, refs_in[3:], to_oracle(gy).abs())
    P = B * y.shape[2]
    red = (C_out // groups * k, P, P, P * C_out, P * C_out)
    scale = (None, None, None, sizes[0].abs().item(), sizes[1].abs().item())
    for name, g, r, n, sc, t in zip(("dx", "dW", "db", "dalpha", "deps"), grads, refs, red, scale,
                                    (x, w, b, a, e), strict=True):  # fmt: skip
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert_close(g, r, tol_dtype(t.dtype, dtype), reduction=n, what=name, scale=sc)


# ---------------------------------------------------------------------------------------
# gradcheck and opcheck


@pytest.mark.parametrize(
    "variant", ["bias-alpha-eps-tensors-g2-s2-p1", "same-asym-d2x1-const-alpha", "conv1d"]
)
def test_gradcheck_fp64(variant, device):
    """fast_mode (random projections of the Jacobians): the full Jacobian costs one
    interpreted forward per input element, and the oracle tests above compare every
    gradient elementwise already."""
    draw = Draw(71, device)
    f64 = torch.float64
    if variant == "bias-alpha-eps-tensors-g2-s2-p1":
        x = draw(1, 2, 4, 3, dtype=f64, scale=0.5).requires_grad_()
        w = draw(2, 1, 2, 2, dtype=f64, scale=0.5).requires_grad_()
        b = draw(2, dtype=f64, scale=0.5).requires_grad_()
        a = torch.full((1,), 1.3, dtype=f64, device=device, requires_grad=True)
        e = torch.full((1,), 0.1, dtype=f64, device=device, requires_grad=True)
        fn = lambda x, w, b, a, e: yat_conv2d(x, w, b, 2, 1, 1, 2, alpha=a, eps=e)  # noqa: E731
        args = (x, w, b, a, e)
    elif variant == "same-asym-d2x1-const-alpha":
        x = draw(1, 1, 4, 4, dtype=f64, scale=0.5).requires_grad_()
        w = draw(2, 1, 2, 3, dtype=f64, scale=0.5).requires_grad_()
        fn = lambda x, w: yat_conv2d(x, w, padding="same", dilation=(2, 1), alpha=math.sqrt(2.0), eps=0.05)  # noqa: E731
        args = (x, w)
    else:
        x = draw(2, 2, 5, dtype=f64, scale=0.5).requires_grad_()
        w = draw(3, 2, 3, dtype=f64, scale=0.5).requires_grad_()
        b = draw(3, dtype=f64, scale=0.5).requires_grad_()
        fn = lambda x, w, b: yat_conv1d(x, w, b, stride=2, padding=1, eps=0.05)  # noqa: E731
        args = (x, w, b)
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def _op_args(device: str, dtype: torch.dtype = torch.float32) -> tuple[tuple, tuple]:
    """Arguments of yat_triton::conv2d_fwd and a matching conv2d_bwd call (groups 2,
    stride 2, asymmetric padding, channels_last x)."""
    g = Geo(2, 4, 5, 6, 6, (3, 3), stride=2, groups=2)
    inp = make_inputs(g, dtype, device, channels_last=True, seed=81)
    x, w, b, a, e = (inp[k] for k in NAMES)
    geo = ([2, 2], [1, 0, 0, 1], [1, 1], 2)
    fwd = (x, w, b, a, 1.0, e, 1.0, *geo, "ieee", True)
    with torch.no_grad():
        y, s, nx, nw = conv._conv2d_fwd_op(*fwd)
    gy = upstream(tuple(y.shape), dtype, device)
    d = lambda t: t.detach()  # noqa: E731
    bwd = (gy, d(x), d(w), d(b), d(a), 1.0, d(e), 1.0, s, nx, nw, *geo, "ieee", [True] * 5)
    return fwd, bwd


INTERPRETER_SAFE = ("test_schema", "test_autograd_registration", "test_faketensor")


@pytest.mark.parametrize("op", ["conv2d_fwd", "conv2d_bwd"])
def test_opcheck(op, device):
    """Under the interpreter only the tests that do not trace into a graph can run; on CUDA
    the full default opcheck (AOT dispatch included)."""
    fwd, bwd = _op_args(device)
    fn, args = (conv._conv2d_fwd_op, fwd) if op == "conv2d_fwd" else (conv._conv2d_bwd_op, bwd)
    if INTERPRETING:
        result = torch.library.opcheck(fn, args, test_utils=INTERPRETER_SAFE)
    else:
        result = torch.library.opcheck(fn, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("op", ["conv2d_fwd", "conv2d_bwd"])
def test_opcheck_torch_path(op, torch_path):
    fwd, bwd = _op_args("cpu")
    fn, args = (conv._conv2d_fwd_op, fwd) if op == "conv2d_fwd" else (conv._conv2d_bwd_op, bwd)
    result = torch.library.opcheck(fn, args)
    assert set(result) >= {"test_schema", "test_faketensor", "test_aot_dispatch_dynamic"}
    assert all(v == "SUCCESS" for v in result.values()), result


# ---------------------------------------------------------------------------------------
# The plain-PyTorch path

TORCH_PATH_GEOS = [
    pytest.param(Geo(2, 4, 7, 5, 6, (3, 3), padding=1), id="k3x3-p1"),
    pytest.param(Geo(2, 4, 7, 8, 5, (3, 2), padding="same", dilation=(2, 3), groups=1), id="k3x2-same-d2x3"),
    pytest.param(Geo(2, 4, 7, 7, 8, (3, 3), stride=2, padding=(1, 2), groups=4), id="depthwise-x2-s2"),
]


@pytest.mark.parametrize("channels_last", LAYOUTS)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="fp64"), *IO_DTYPES])
@pytest.mark.parametrize("geo", TORCH_PATH_GEOS)
def test_torch_path_vs_oracle(geo, dtype, channels_last, torch_path):
    inp = make_inputs(geo, dtype, "cpu", channels_last=channels_last, seed=91)
    check_against_oracle(inp, geo)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float64, id="fp64"), *FP32_BF16])
def test_torch_path_clamp_active(dtype, torch_path):
    inp, kappa = clamp_inputs(dtype, "cpu", channels_last=True)
    check_against_oracle(inp, CLAMP_GEO, amplification=kappa)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float16, id="fp16"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_torch_path_under_autocast(dtype, torch_path, autocast_state):
    """The plain-PyTorch path computes in fp32 also inside an autocast region, whose
    convolutions would otherwise run in the autocast dtype: forward and backward through
    autograd, and both ops called there directly (autograd runs the backward with
    autocast off; a direct call does not)."""
    geo = TORCH_PATH_GEOS[0].values[0]
    inp = make_inputs(geo, dtype, "cpu", channels_last=True, seed=94)
    with torch.autocast("cpu", dtype=dtype):
        check_against_oracle(inp, geo)

    fwd, bwd = _op_args("cpu", dtype)
    seen = autocast_state(conv, "_conv_fwd_torch", "_conv_bwd_torch")
    with torch.autocast("cpu", dtype=dtype):
        conv._conv2d_fwd_op(*fwd)
        conv._conv2d_bwd_op(*bwd)
    assert seen == [("_conv_fwd_torch", False), ("_conv_bwd_torch", False)], seen


# ---------------------------------------------------------------------------------------
# Validation at the public boundary


def other_device(device: str) -> str:
    return "cpu" if device == "cuda" else "meta"


def _t(*shape: int, device: str, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.zeros(shape, device=device, dtype=dtype)


ERRORS_2D = [
    pytest.param((2, 4, 5, 5), (6, 3, 3, 3), {}, ValueError,
                 r"weight expects C_in/groups=3 channels per group, but x has C_in=4",
                 id="channels-mismatch"),
    pytest.param((2, 4, 5, 5), (6, 1, 3, 3), {"groups": 3}, ValueError,
                 r"groups=3 must divide both C_in=4 and C_out=6", id="groups-not-dividing-cin"),
    pytest.param((2, 4, 5, 5), (6, 1, 3, 3), {"groups": 4}, ValueError,
                 r"groups=4 must divide both C_in=4 and C_out=6", id="groups-not-dividing-cout"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"groups": 0}, ValueError,
                 r"groups must be a positive int, got 0", id="groups-0"),
    pytest.param((2, 4, 2, 2), (6, 4, 3, 3), {}, ValueError,
                 r"kernel \(dilated size \(3, 3\)\) is larger than the padded input \(2, 2\)",
                 id="kernel-too-large"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"dilation": 3}, ValueError,
                 r"kernel \(dilated size \(7, 7\)\) is larger than the padded input \(5, 5\)",
                 id="dilated-kernel-too-large"),
    pytest.param((2, 4, 5, 5), (6, 4, 3), {}, ValueError,
                 r"weight must have shape \(C_out, C_in/groups, kH, kW\), got shape \(6, 4, 3\)",
                 id="weight-3d"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3, 1), {}, ValueError,
                 r"weight must have shape \(C_out, C_in/groups, kH, kW\)", id="weight-5d"),
    pytest.param((4, 5), (6, 4, 3, 3), {}, ValueError,
                 r"x must have shape \(B, C_in, H, W\) or \(C_in, H, W\), got shape \(4, 5\)", id="x-2d"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"stride": 0}, ValueError,
                 r"stride must be positive, got \(0, 0\)", id="stride-0"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"stride": (1, -1)}, ValueError,
                 r"stride must be positive, got \(1, -1\)", id="stride-negative"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"dilation": 0}, ValueError,
                 r"dilation must be positive, got \(0, 0\)", id="dilation-0"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"padding": "same", "stride": 2}, ValueError,
                 r"padding='same' needs stride 1, got stride \(2, 2\)", id="same-stride-2"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"padding": "full"}, ValueError,
                 r"padding must be an int, a tuple, 'same' or 'valid', got 'full'", id="bad-padding-string"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"padding": -1}, ValueError,
                 r"padding must be >= 0", id="negative-padding"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"padding": (1, 1, 1)}, TypeError,
                 r"padding must be an int or a tuple of 2 ints, got \(1, 1, 1\)", id="padding-3-tuple"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"stride": 1.5}, TypeError,
                 r"stride must be an int or a tuple of 2 ints, got 1.5", id="stride-float"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"eps": 0.0}, ValueError, r"eps must be > 0, got 0.0",
                 id="eps-0"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"eps": float("nan")}, ValueError, r"eps must be finite",
                 id="eps-nan"),
    pytest.param((2, 4, 5, 5), (6, 4, 3, 3), {"precision": "fp8"}, ValueError,
                 r"precision must be None, 'ieee' or 'tf32', got 'fp8'", id="bad-precision"),
    # as F.conv2d: an empty image (padded or not) is refused; an empty batch or no channels is not
    pytest.param((2, 4, 0, 6), (6, 4, 3, 3), {"padding": 2}, ValueError,
                 r"x has an empty spatial size \(0, 6\): only an empty batch or zero channels are "
                 r"supported \(as F.conv2d\), got shape \(2, 4, 0, 6\)", id="empty-image-padded"),
    pytest.param((1, 4, 5, 0), (6, 4, 1, 1), {}, ValueError, r"x has an empty spatial size \(5, 0\)",
                 id="empty-image-1x1"),
]  # fmt: skip


@pytest.mark.parametrize("x_shape, w_shape, kwargs, exc, match", ERRORS_2D)
def test_errors_conv2d(x_shape, w_shape, kwargs, exc, match, device):
    kw = dict(kwargs)
    args = [kw.pop(n, d) for n, d in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))]
    with pytest.raises(exc, match=match):
        yat_conv2d(_t(*x_shape, device=device), _t(*w_shape, device=device), None, *args, **kw)


def test_mixed_dtypes(device):
    x = _t(2, 4, 5, 5, device=device)
    with pytest.raises(TypeError, match=r"weight has dtype torch.float16 but x has dtype torch.float32"):
        yat_conv2d(x, _t(6, 4, 3, 3, device=device, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"bias has dtype torch.bfloat16 but x has dtype torch.float32"):
        yat_conv2d(x, _t(6, 4, 3, 3, device=device), _t(6, device=device, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match=r"x must have a floating dtype"):
        yat_conv2d(x.to(torch.int32), _t(6, 4, 3, 3, device=device))


@pytest.mark.parametrize("which", ["weight", "bias", "alpha", "eps"])
def test_mixed_devices(which, device):
    other = other_device(device)
    t = {
        "x": _t(2, 4, 5, 5, device=device),
        "weight": _t(6, 4, 3, 3, device=other if which == "weight" else device),
        "bias": _t(6, device=other if which == "bias" else device),
    }
    kw = {n: torch.ones(1, device=other) for n in ("alpha", "eps") if n == which}
    with pytest.raises(ValueError, match=rf"{which} is on {other}.* but x is on {device}"):
        yat_conv2d(t["x"], t["weight"], t["bias"], **kw)


def test_wrong_bias_shape(device):
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\), got shape \(1,\)"):
        yat_conv2d(_t(2, 4, 5, 5, device=device), _t(6, 4, 3, 3, device=device), _t(1, device=device))


ERRORS_1D = [
    pytest.param((2, 4, 5, 5), (6, 4, 3), {},
                 r"x must have shape \(B, C_in, L\) or \(C_in, L\), got shape \(2, 4, 5, 5\)", id="x-4d"),
    pytest.param((2, 4, 9), (6, 4, 3, 3), {}, r"weight must have shape \(C_out, C_in/groups, k\)",
                 id="weight-4d"),
    pytest.param((2, 4, 9), (6, 4, 3), {"stride": 0}, r"stride must be positive", id="stride-0"),
    pytest.param((2, 4, 9), (6, 4, 3), {"padding": "same", "stride": 2}, r"padding='same' needs stride 1",
                 id="same-stride-2"),
    pytest.param((2, 4, 9), (6, 4, 3), {"padding": "full"},
                 r"padding must be an int, a tuple, 'same' or 'valid'", id="bad-padding-string"),
    pytest.param((2, 4, 2), (6, 4, 3), {}, r"larger than the padded input", id="kernel-too-large"),
    pytest.param((2, 4, 9), (6, 2, 3), {"groups": 3}, r"groups=3 must divide both C_in=4", id="groups"),
    pytest.param((2, 4, 0), (6, 4, 3), {"padding": 2},
                 r"x has an empty spatial size \(0,\): only an empty batch or zero channels are supported "
                 r"\(as F.conv1d\)", id="empty-sequence-padded"),
]  # fmt: skip


@pytest.mark.parametrize("x_shape, w_shape, kwargs, match", ERRORS_1D)
def test_errors_conv1d(x_shape, w_shape, kwargs, match, device):
    with pytest.raises(ValueError, match=match):
        yat_conv1d(_t(*x_shape, device=device), _t(*w_shape, device=device), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "length", "match"),
    [
        ({"stride": 0}, 9, r"stride must be positive, got 0$"),
        ({"dilation": 0}, 9, r"dilation must be positive, got 0$"),
        ({"stride": 2, "padding": "same"}, 9, r"needs stride 1, got stride 2$"),
        ({}, 2, r"dilated size 3\) is larger than the padded input 2$"),
    ],
    ids=["stride0", "dilation0", "same-stride2", "kernel-too-long"],
)
def test_conv1d_errors_speak_1d(kwargs, length, match, device):
    """conv1d runs as a height-1 conv2d, but its errors quote the caller's 1-D values."""
    x = torch.randn(2, 4, length, device=device)
    with pytest.raises(ValueError, match=match):
        conv.yat_conv1d(x, torch.randn(3, 4, 3, device=device), **kwargs)


def test_zero_output_channels(device):
    """C_out = 0: an empty output and a zero input gradient, like the dense op with N = 0."""
    x = torch.randn(2, 4, 5, 5, device=device, requires_grad=True)
    w = torch.randn(0, 4, 3, 3, device=device, requires_grad=True)
    y = conv.yat_conv2d(x, w)
    assert y.shape == (2, 0, 3, 3)
    dx, dw = torch.autograd.grad(y.sum(), (x, w))
    assert torch.equal(dx, torch.zeros_like(x)) and dw.shape == w.shape


@pytest.mark.parametrize("path", ["kernels", "torch"])
@pytest.mark.parametrize("groups", [1, 2])
def test_no_input_channels(groups, path, device, monkeypatch):
    """C_in = 0: every patch is empty, so y = alpha b^2 / eps, on both paths (torch's own
    conv gives no output channels there); gradients against the oracle."""
    if path == "torch":
        if device != "cpu":
            pytest.skip("the plain-PyTorch path runs for CPU tensors")
        monkeypatch.setattr(conv, "use_triton", lambda t: False)
    geo = Geo(2, 0, 5, 4, 4, (3, 3), padding=1, groups=groups)
    check_against_oracle(make_inputs(geo, torch.float32, device, channels_last=True), geo)


@pytest.mark.parametrize("alpha, eps", [("const", "float"), ("tensor", "tensor")], ids=["floats", "tensors"])
def test_torch_path_traces_with_dynamic_shapes(alpha, eps, torch_path):
    """As the dense test of that name: yat_conv2d's checks and routing trace whole with
    symbolic sizes and scalars on the plain-PyTorch path, two shapes through one compile,
    against the oracle."""
    torch._dynamo.reset()
    compiled = torch.compile(yat_conv2d, fullgraph=True, dynamic=True, backend="eager")
    for seed, geo in ((113, Geo(2, 4, 6, 5, 6, (3, 3), stride=2, padding=1, groups=2)),
                      (114, Geo(3, 4, 8, 7, 6, (3, 3), stride=2, padding=1, groups=2))):  # fmt: skip
        inp = make_inputs(geo, torch.float32, "cpu", channels_last=True, alpha=alpha, eps=eps, seed=seed)
        check_against_oracle(inp, geo, layer=compiled)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="torch.compile traces the Triton kernels only on CUDA; under the interpreter "
    "tracing is refused by design",
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("pointwise", [False, True], ids=["k3-s2-g2", "k1-on-dense"])
def test_torch_compile(dtype, pointwise, device):
    """yat_conv2d traces into the kernels without a graph break (the grouped strided conv
    kernels, or a 1x1 conv on the dense kernels); forward and gradients under
    torch.compile match the float64 oracle."""
    torch._dynamo.reset()
    k, stride, pad, groups = (1, 1, 0, 1) if pointwise else (3, 2, 1, 2)

    def f(x, w, b):
        return conv.yat_conv2d(x, w, b, stride, pad, 1, groups, alpha=1.5, eps=1e-3, precision="ieee")

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 9, 9, generator=gen).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    w = (
        (0.3 * torch.randn(6, 8 // groups, k, k, generator=gen))
        .to(device=device, dtype=dtype)
        .requires_grad_()
    )
    b = torch.randn(6, generator=gen).to(device=device, dtype=dtype).requires_grad_()
    y = torch.compile(f, fullgraph=True)(x, w, b)
    gy = torch.randn(y.shape, generator=gen).to(device=device, dtype=dtype)
    grads = torch.autograd.grad(y, (x, w, b), gy)
    refs = [to_oracle(t, requires_grad=True) for t in (x, w, b)]
    y_ref = yat_conv2d_ref(*refs, 1.5, 1e-3, stride, pad, 1, groups)
    assert_close(y, y_ref, dtype, reduction=8 // groups * k * k, what="compiled y")
    ref_grads = torch.autograd.grad(y_ref, refs, to_oracle(gy))
    for name, g, r in zip(("dx", "dW", "db"), grads, ref_grads, strict=True):
        assert_close(g, r, dtype, reduction=2 * y.shape[2] * y.shape[3], what=f"compiled {name}")


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="torch.compile traces the Triton kernels only on CUDA; under the interpreter "
    "tracing is refused by design",
)
def test_torch_compile_split_tail(device, monkeypatch):
    """A split-tail tile traces too: its partials and counters, allocated in the op, are
    outputs of the traced kernel (torch.compile's mutation analysis); the compiled forward,
    split as planned at trace time, and its gradients match the oracle."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    planned = []
    tail_split = conv._tail_split
    monkeypatch.setattr(conv, "_tail_split", lambda *a: planned.append(tail_split(*a)) or planned[-1])
    torch._dynamo.reset()
    geo = Geo(2, 64, 6, 6, 32, (3, 3), padding=1)  # 36 steps of 16 channels: split in parts
    inp = make_inputs(geo, torch.bfloat16, device, channels_last=True, seed=33)
    compiled = torch.compile(yat_conv2d, fullgraph=True)
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2, split_tail=True)):
        check_against_oracle(inp, geo, layer=compiled)
    assert any(p.splits > 1 for p in planned), planned  # (the forward's; the backward's tile: plain)


def test_pointwise_conv_follows_the_conv_tiles(device, launched):
    """A 1x1 conv on the dense kernels takes the conv's forced (or tuned) tiles, forward and
    backward, so that sweeping the conv problem times what it changes."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    inp = make_inputs(POINTWISE_GEO, torch.float32, device, channels_last=True, seed=9)
    fwd, bwd = TileConfig(32, 16, 16, 2, 4, 2, tma=True), TileConfig(16, 32, 16, 4, 4, 2)
    with forced_config("conv2d", "fwd", fwd), forced_config("conv2d", "bwd", bwd):
        check_against_oracle(inp, POINTWISE_GEO)
    kernels = {c.kernel.fn.__name__: c for c in launched}
    assert kernels["yat_dense_fwd_tma_kernel"].kwargs["BLOCK_M"] == 32
    gemms = [c for c in launched if c.kernel.fn.__name__ == "yat_dense_bwd_gemm_kernel"]
    # the forced backward tile, fitted to each GEMM (the interpreter's default would be
    # 64-row tiles in groups of 8)
    assert len(gemms) == 2 and all(c.kwargs["BLOCK_M"] == 16 and c.kwargs["GROUP_M"] == 4 for c in gemms)


@pytest.mark.parametrize(
    "geo, even, unit",
    [
        pytest.param(Geo(2, 32, 6, 5, 32, (3, 3), padding=1), True, True, id="even-unit"),
        pytest.param(Geo(2, 24, 7, 6, 20, (3, 2), stride=2, padding=(1, 2), dilation=(1, 2)), False, False,
                     id="ragged-strided"),
    ],
)  # fmt: skip
def test_main_loop_variants(geo, even, unit, device, launched):
    """The forward's and the input gradient's main loops drop the channel / filter masks
    where the channels a group are a multiple of BLOCK_K (EVEN_K), and the input gradient
    finds its output positions without a division at stride 1 (UNIT_STRIDE): both ways
    against the oracle, forward and backward."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    tile = TileConfig(32, 16, 16, 2, 4, 2)
    inp = make_inputs(geo, torch.bfloat16, device, channels_last=True, seed=64)
    with forced_config("conv2d", "fwd", tile), forced_config("conv2d", "bwd", tile):
        check_against_oracle(inp, geo)
    calls = {c.kernel.fn.__name__: c.kwargs for c in launched}
    assert calls["yat_conv_fwd_kernel"]["EVEN_K"] is even
    assert calls["yat_conv_dgrad_kernel"]["EVEN_K"] is even
    assert calls["yat_conv_dgrad_kernel"]["UNIT_STRIDE"] is unit
    kernels = ("yat_conv_fwd_kernel", "yat_conv_dgrad_kernel", "yat_conv_wgrad_kernel")
    assert all(calls[k]["FAST_DIV"] for k in kernels)


@pytest.mark.parametrize("tma", [False, True], ids=["default-tiles", "tma-tiles"])
def test_symbolic_sizes_divide_in_the_kernels(tma, launched):
    """Traced with symbolic sizes (torch.compile with dynamic shapes), the conv kernels get
    no `divmod_magic` numbers, which would pin every size they are made of to its value
    (a guard a size: a recompile for each resolution), and divide instead (FAST_DIV off).
    With TMA tiles forced, the traced call plans the same tiles on the pointer kernels,
    without asking for a box of symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    geo = Geo(2, 16, 6, 5, 8, (3, 3), padding=1)
    inp = make_inputs(geo, torch.float32, "cpu", channels_last=True, alpha="none", eps="float", seed=65)

    planned = []

    def fwd_bwd(x, w, b, g):  # noqa: ANN001, ANN202
        (y, s, nx, nw), fwd = conv.plan_conv2d_fwd(
            x, w, b, None, 1.0, None, 1e-2, [1, 1], (1, 1, 1, 1), [1, 1], 1, "ieee", True
        )
        planned.extend(fwd)
        return conv.conv2d_bwd(
            g, x, w, b, None, 1.0, None, 1e-2, s, nx, nw, [1, 1], (1, 1, 1, 1), [1, 1], 1, "ieee",
            [True, True, False, False, False],
        )  # fmt: skip

    args = [inp[k].detach() for k in ("x", "weight", "bias")] + [torch.randn(2, 8, 6, 5)]
    tile = TileConfig(16, 16, 16, 2, 4, 2, tma=True) if tma else None
    with (
        unittest.mock.patch.object(conv, "use_triton", lambda t: True),
        forced_config("conv2d", "fwd", tile) if tma else contextlib.nullcontext(),
        forced_config("conv2d", "bwd", tile) if tma else contextlib.nullcontext(),
    ):
        make_fx(fwd_bwd, tracing_mode="symbolic")(*args)
    # traced: the same tiles on the pointer kernels (host descriptors do not trace)
    calls = {c.kernel.fn.__name__: c.kwargs for c in planned + launched}
    kernels = ("yat_conv_fwd_kernel", "yat_conv_dgrad_kernel", "yat_conv_wgrad_kernel")
    assert all(k in calls and calls[k]["FAST_DIV"] is False for k in kernels), calls.keys()


# ---------------------------------------------------------------------------------------
# The TMA forward (stride 1: every tap reads a shifted box of x)

TMA_GEOS = [
    # boxes overhanging the image and the batch; two channel blocks a tap; a ragged N tile
    pytest.param(Geo(3, 32, 5, 6, 24, (3, 3), padding=1), id="k3x3-p1"),
    # the zero fill standing in for asymmetric padding, dilation, and groups of 16 channels
    pytest.param(Geo(2, 32, 6, 7, 12, (3, 2), padding="same", dilation=(2, 1), groups=2), id="same-d2-g2"),
]


@pytest.mark.parametrize("geo", TMA_GEOS)
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_tma_forward(geo, dtype, device, launched):
    """A forced `tma` tile runs `yat_conv_fwd_tma_kernel` (boxes from `conv_box`, one
    program a tile) on stride-1 convs, NCHW x included (it reads the channels_last copy):
    forward, and the backward from the s and patch norms it saved, against the oracle.
    The patch norms summed in the loop here (the pass: `test_patch_norms_from_the_pixel_norm_pass`)."""
    from kernels._common import TileConfig
    from kernels.conv import conv_box
    from yat_triton.tuning import forced_config

    tile = TileConfig(32, 16, 16, 2, 4, 2, norms_in_loop=True, tma=True)
    for channels_last in (True, False):
        launched.clear()
        inp = make_inputs(geo, dtype, device, channels_last=channels_last, seed=21)
        with forced_config("conv2d", "fwd", tile):
            check_against_oracle(inp, geo)
        fwd = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
        assert [c.kernel.fn.__name__ for c in fwd] == ["yat_conv_fwd_tma_kernel"]
        assert not fwd[0].kwargs["NORM_PASS"]
        OH, OW = geo.out_hw()
        box = conv_box(geo.B, OH, OW, 32)
        assert (fwd[0].kwargs["BOX_B"], fwd[0].kwargs["BOX_H"], fwd[0].kwargs["BOX_W"]) == box
        assert fwd[0].kwargs["STORE_S"]
        # TMA stores of the tile's box where y is channels_last and no group's last column
        # tile overhangs into the next group (one group: clipped at C_out)
        overhang = geo.groups > 1 and (geo.C_out // geo.groups) % 16
        assert fwd[0].kwargs["TMA_STORE"] == (channels_last and not overhang)
        tiles_m = math.prod(-(-n // b) for n, b in zip((geo.B, OH, OW), box, strict=True))
        assert fwd[0].grid == (tiles_m * -(-geo.C_out // geo.groups // 16), geo.groups)


NORM_GEOS = [
    *TMA_GEOS,
    # stride 2, padding past one side only: the pointer kernel's tap sums at strided pixels
    pytest.param(Geo(2, 16, 9, 8, 16, (3, 3), stride=2, padding=1), id="k3x3-s2-p1"),
    # a 1x1 conv with padding (not a dense layer): the border rows' patches are all padding
    pytest.param(Geo(2, 16, 4, 5, 16, (1, 1), padding=1), id="1x1-p1"),
]


@pytest.mark.parametrize("tma", [False, True], ids=["pointer", "tma"])
@pytest.mark.parametrize("geo", NORM_GEOS)
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_patch_norms_from_the_pixel_norm_pass(geo, dtype, tma, device, launched):
    """A tile without `norms_in_loop` sums each patch norm after the main loop from a pass
    of pixel norms (one row-norm launch over the (B*H*W*G, C_in/G) rows of the channels_last
    x), in both forward kernels: forward, and the backward from the patch norms it saved,
    against the oracle. The pass's rows and the flag are checked on the launches."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    tile = TileConfig(32, 16, 16, 2, 4, 2, tma=tma)
    inp = make_inputs(geo, dtype, device, channels_last=True, seed=23)
    with forced_config("conv2d", "fwd", tile):
        check_against_oracle(inp, geo)
    fwd = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    takes_tma = tma and geo.stride in (1, (1, 1))
    assert [c.kernel.fn.__name__ for c in fwd] == [f"yat_conv_fwd{'_tma' if takes_tma else ''}_kernel"]
    assert fwd[0].kwargs["NORM_PASS"]
    norms = [c for c in launched if c.kernel.fn.__name__ == "row_sqnorm_kernel"]
    rows = (geo.B * geo.H * geo.W * geo.groups, geo.C_in // geo.groups)  # (R, K) of the pass
    assert [c.args[4:7:2] for c in norms].count(rows) == 1, [c.args[4:7:2] for c in norms]


SPLIT_CASES = [
    # (geo, tma, SMs the plan counts, (whole tiles, parts a tail tile)): every tile split
    # (fewer tiles than SMs), 2 parts
    pytest.param(Geo(2, 16, 6, 5, 16, (3, 3), padding=1), False, 132, (0, 2), id="all-tail-pointer"),
    pytest.param(Geo(2, 16, 6, 5, 16, (3, 3), padding=1), True, 132, (0, 2), id="all-tail-tma"),
    # whole tiles, then a tail: 1 tile in 4 parts (C_in = 64: 36 steps of 16), in 2
    pytest.param(Geo(2, 64, 6, 6, 32, (3, 3), padding=1), True, 5, (5, 4), id="tail-tma-4parts"),
    pytest.param(Geo(3, 32, 5, 6, 16, (3, 3), padding=1), False, 2, (2, 2), id="tail-pointer"),
    # 3 parts on the pointer kernel (C_in = 32: 18 steps), stride 2 (the pointer kernel), dilation
    pytest.param(Geo(4, 32, 5, 6, 16, (3, 3), padding=1), False, 3, (3, 3), id="tail-pointer-3parts"),
    pytest.param(Geo(2, 16, 9, 8, 16, (3, 3), stride=2, padding=1, dilation=2), False, 3, (0, 2), id="s2-d2"),
]


@pytest.mark.parametrize(("geo", "tma", "sms", "expect"), SPLIT_CASES)
@pytest.mark.parametrize("dtype", IO_DTYPES)
def test_split_tail_forward(geo, tma, sms, expect, dtype, device, launched, monkeypatch):
    """A `split_tail` tile shares each tail tile among `tail_split`'s parts: each runs its
    share of the main loop into an fp32 partial, and the last to finish sums them and runs
    the epilogue. Forward (training, then inference), and the backward from what it saved,
    against the oracle; every fresh buffer NaN-filled, so that a partial no part wrote
    reaches y; the grid and SPLITS checked on the launch."""
    from kernels._common import TileConfig, tail_split
    from kernels.conv import conv_box
    from yat_triton import conv as conv_mod
    from yat_triton.tuning import forced_config

    nan_filled_buffers(monkeypatch)
    monkeypatch.setattr(conv_mod, "device_sms", lambda dev: sms)
    tile = TileConfig(32, 16, 16, 2, 4, 2, tma=tma, split_tail=True)
    inp = make_inputs(geo, dtype, device, channels_last=True, seed=29)
    with forced_config("conv2d", "fwd", tile):
        check_against_oracle(inp, geo)
        (fwd,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
        launched.clear()  # inference (no input requires grad): nothing saved
        check_against_oracle({k: v.detach() if isinstance(v, Tensor) else v for k, v in inp.items()}, geo)
        (infer,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    takes_tma = tma and geo.stride in (1, (1, 1))
    assert fwd.kernel.fn.__name__ == f"yat_conv_fwd{'_tma' if takes_tma else ''}_kernel"
    OH, OW = geo.out_hw()
    tiles_m = (
        math.prod(-(-n // b) for n, b in zip((geo.B, OH, OW), conv_box(geo.B, OH, OW, 32), strict=True))
        if takes_tma else -(-(geo.B * OH * OW) // 32)
    )  # fmt: skip
    tiles = tiles_m * -(-geo.C_out // geo.groups // 16)
    steps = geo.k[0] * geo.k[1] * -(-geo.C_in // geo.groups // 16)
    dp, splits = tail_split(tiles, steps, sms)
    assert (dp, splits) == expect
    assert fwd.kwargs["SPLITS"] == splits and fwd.kwargs["NORM_PASS"]
    assert fwd.grid == (dp + (tiles - dp) * splits, geo.groups)
    assert fwd.args[-1] == dp and fwd.kwargs["STORE_S"]
    assert infer.kwargs["SPLITS"] == splits and not infer.kwargs["STORE_S"]


def test_split_tail_needs_the_norm_pass_a_tail_and_one_group(device, launched, monkeypatch) -> None:
    """A `split_tail` tile runs the plain grid where the patch norms are summed in the loop
    (fp32 io, `norms_in_loop`: a part sees part of each patch), where no split pays (a
    grid of whole waves), and for a grouped conv (its groups' grids run one after another:
    the last partial wave is the last group's)."""
    from kernels._common import TileConfig
    from yat_triton import conv as conv_mod
    from yat_triton.tuning import forced_config

    geo = Geo(2, 16, 6, 5, 16, (3, 3), padding=1)  # 60 positions: 2 row tiles of 32
    grouped = Geo(2, 32, 6, 5, 32, (3, 3), padding=1, groups=2)
    for g, tile, sms in (
        (geo, TileConfig(32, 16, 16, 2, 4, 2, norms_in_loop=True, split_tail=True), 132),
        (geo, TileConfig(32, 16, 16, 2, 4, 2, split_tail=True), 2),
        (grouped, TileConfig(32, 16, 16, 2, 4, 2, split_tail=True), 132),
    ):
        monkeypatch.setattr(conv_mod, "device_sms", lambda dev, sms=sms: sms)
        launched.clear()
        inp = make_inputs(g, torch.float32, device, channels_last=True, seed=30)
        with forced_config("conv2d", "fwd", tile):
            check_against_oracle(inp, g)
        (fwd,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_fwd_kernel"]
        assert fwd.kwargs["SPLITS"] == 1 and fwd.grid == (2, g.groups) and fwd.args[-1] == 0


SPLIT_DGRAD_CASES = [
    # (geo, tma, SMs the plan counts, (whole tiles, parts a tail tile)) of the input gradient:
    # pixels B*H*W, channels C_in, steps taps x filter blocks of 16
    pytest.param(Geo(2, 16, 6, 5, 64, (3, 3), padding=1), False, 132, (0, 4), id="all-tail-pointer"),
    pytest.param(Geo(2, 16, 6, 6, 64, (3, 3), padding=1), True, 2, (2, 2), id="tail-tma"),
    pytest.param(Geo(4, 16, 5, 6, 32, (3, 3), padding=1), False, 3, (3, 3), id="tail-pointer"),
    pytest.param(Geo(2, 16, 9, 8, 32, (3, 3), stride=2, padding=1), False, 132, (0, 4), id="s2"),
]


@pytest.mark.parametrize(("geo", "tma", "sms", "expect"), SPLIT_DGRAD_CASES)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_split_tail_input_gradient(geo, tma, sms, expect, dtype, device, launched, monkeypatch):
    """A `split_tail` backward tile splits the input gradient's tail as the forward's
    (`tail_split` over its tiles of input pixels and channels; its epilogue, acc + 2 x R,
    runs once a tile, on the parts' sum), on both of its kernels: every gradient against
    the oracle, every fresh buffer NaN-filled; the recorded launch run again gives dx bit
    for bit (the finishing part zeroes its counter)."""
    from kernels._common import TileConfig, tail_split
    from kernels.conv import conv_box
    from yat_triton import conv as conv_mod
    from yat_triton.tuning import forced_config

    nan_filled_buffers(monkeypatch)
    monkeypatch.setattr(conv_mod, "device_sms", lambda dev: sms)
    inp = make_inputs(geo, dtype, device, channels_last=True, seed=34)
    with forced_config("conv2d", "bwd", TileConfig(32, 16, 16, 2, 4, 2, tma=tma, split_tail=True)):
        check_against_oracle(inp, geo)
    takes_tma = tma and geo.stride in (1, (1, 1))
    (dgrad,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_dgrad")]
    assert dgrad.kernel.fn.__name__ == f"yat_conv_dgrad{'_tma' if takes_tma else ''}_kernel"
    MX = geo.B * geo.H * geo.W
    boxes = math.prod(
        -(-n // b) for n, b in zip((geo.B, geo.H, geo.W), conv_box(geo.B, geo.H, geo.W, 32), strict=True)
    )
    tiles = (boxes if takes_tma else -(-MX // 32)) * -(-geo.C_in // 16)
    dp, splits = tail_split(tiles, geo.k[0] * geo.k[1] * -(-geo.C_out // 16), sms)
    assert (dp, splits) == expect
    assert dgrad.kwargs["SPLITS"] == splits and dgrad.grid == (dp + (tiles - dp) * splits, 1)
    dx = dgrad.args[4]  # (both kernels: gs or its descriptor, W, rows, x, dx, ...)
    first = dx.clone()
    dx.fill_(float("nan"))
    dgrad.run()
    assert torch.equal(dx, first) and not dgrad.args[-2].any()


@pytest.mark.skipif(
    not torch.cuda.is_available() or INTERPRETING, reason="a split tile's parts race only on a GPU (CUDA)"
)
def test_split_tail_parts_racing_on_a_gpu(launched) -> None:
    """On a GPU a split tile's parts run at once, and the one that takes the last ticket
    must see every other part's partial (release-acquire through the counter): a 14x14x256
    layer at batch 8, 26 tiles of 128x128, all tail, each in 4 parts (104 racing programs),
    on both forward kernels, matches the oracle and gives y bit for bit the same 30 times
    over (the partials summed in part order: a late or stale partial would change it; the
    backward from a split forward: `test_split_tail_forward`)."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    geo = Geo(8, 256, 14, 14, 256, (3, 3), padding=1)
    inp = make_inputs(geo, torch.bfloat16, "cuda", channels_last=True, seed=32)
    args = {k: v.detach() if isinstance(v, Tensor) else v for k, v in inp.items()}
    for tma in (False, True):
        launched.clear()
        tile = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=2, tma=tma, split_tail=True)
        with forced_config("conv2d", "fwd", tile):
            check_against_oracle(args, geo)  # (inference: no input requires grad)
            (fwd,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
            assert fwd.kernel.fn.__name__ == f"yat_conv_fwd{'_tma' if tma else ''}_kernel"
            assert fwd.kwargs["SPLITS"] == 4, fwd.kwargs
            runs = [
                yat_conv2d(args["x"], args["weight"], args["bias"], **geo.conv_args(), alpha=args["alpha"],
                           eps=args["eps"], precision="ieee")
                for _ in range(30)
            ]  # fmt: skip
        assert all(torch.equal(y, runs[0]) for y in runs[1:]), tile.name


@pytest.mark.parametrize("tma", [False, True], ids=["pointer", "tma"])
def test_a_split_launch_runs_again_as_it_ran_first(tma, device, monkeypatch) -> None:
    """The finishing part of a split tile zeroes its counter again: a recorded launch run a
    second time (as the breakdown times each kernel, as a CUDA graph replays it) gives the
    same y, bit for bit, every tail tile's epilogue included, and leaves the counters 0."""
    from kernels._common import TileConfig
    from yat_triton import conv as conv_mod

    monkeypatch.setattr(conv_mod, "device_sms", lambda dev: 132)
    geo = Geo(2, 64, 6, 6, 32, (3, 3), padding=1)  # 36 steps of 16 channels: 4 parts
    inp = make_inputs(geo, torch.bfloat16, device, channels_last=True, seed=31)
    tile = TileConfig(32, 16, 16, 2, 4, 2, tma=tma, split_tail=True)
    (y, *_), calls = conv_mod.plan_conv2d_fwd(
        inp["x"].detach(), inp["weight"].detach(), inp["bias"].detach(), None, 1.0, None, 1e-3,
        (1, 1), (1, 1, 1, 1), (1, 1), 1, "ieee", False, tile,
    )  # fmt: skip
    (fwd,) = [c for c in calls if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    assert fwd.kwargs["SPLITS"] == 4
    counters = fwd.args[-2]
    for call in calls:
        call.run()
    first = y.clone()
    assert not first.isnan().any() and not counters.any()
    y.fill_(float("nan"))
    fwd.run()
    assert torch.equal(y, first) and not counters.any()


def test_patch_norms_in_the_loop_where_x_is_no_channels_last_block(device, launched):
    """x with contiguous channels whose pixels do not form one (B*H*W, C) block (a slice of
    a wider channels_last image): no pixel-norm rows to read, so a pass tile sums the patch
    norms in the loop, and the result is still right."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    geo = Geo(2, 16, 6, 5, 16, (3, 3), padding=1)
    inp = make_inputs(Geo(2, 16, 6, 9, 16, (3, 3)), torch.float32, device, channels_last=True, seed=24)
    inp["x"] = inp["x"].detach()[:, :, :, :5].requires_grad_()
    assert inp["x"].stride(1) == 1 and not inp["x"].permute(0, 2, 3, 1).is_contiguous()
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2)):
        check_against_oracle(inp, geo)
    (fwd,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_fwd_kernel"]
    assert not fwd.kwargs["NORM_PASS"]


def nan_filled_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fresh torch.empty buffer NaN-filled (integers -1): a slot no program writes
    then reaches the result."""
    empty = torch.empty

    def nan_empty(*args: object, **kwargs: object) -> torch.Tensor:
        t = empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-1)

    monkeypatch.setattr(torch, "empty", nan_empty)


def gpu_plan_with_nan_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launchers' GPU choices (split weight gradients), with every fresh torch.empty
    buffer NaN-filled (`nan_filled_buffers`)."""
    monkeypatch.setattr(conv, "INTERPRETING", False)
    nan_filled_buffers(monkeypatch)


TMA_BACKWARD_CASES = [
    # (geo, whether the input gradient and the weight gradient run their TMA kernels with a
    # 16x16x16 tile: filters a group a multiple of BLOCK_K, channels of BLOCK_N)
    # 24 channels: the input gradient's 16-wide channel tile past them reads the next tap's
    # (masked off at the store), the weight gradient's column tiles would span two taps
    pytest.param(Geo(3, 24, 5, 6, 32, (3, 3), padding=1), True, False, id="k3x3-p1-c24"),
    # no padding: fewer output rows than input rows, boxes shifted past both ends
    pytest.param(Geo(2, 16, 6, 7, 16, (3, 3), padding=0), True, True, id="valid"),
    # asymmetric "same" padding, dilation, groups of 16 filters and 32 channels
    pytest.param(Geo(2, 64, 6, 7, 32, (3, 2), padding="same", dilation=(2, 1), groups=2), True, True,
                 id="same-d2-g2"),
    # a padded 1x1 (not a dense layer): more output rows than input rows
    pytest.param(Geo(2, 32, 5, 6, 32, (1, 1), padding=1, groups=2), True, True, id="1x1-p1-g2"),
]  # fmt: skip


@pytest.mark.parametrize("geo, dgrad_tma, wgrad_tma", TMA_BACKWARD_CASES)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_tma_backward(geo, dgrad_tma, wgrad_tma, dtype, device, launched):
    """A forced `tma` backward tile runs the TMA input gradient (every tap a shifted box of
    gs, the pixels a box from `conv_box` over (B, H, W)) and the TMA weight gradient (the
    positions box by box from `conv_box` over (B, OH, OW), x shifted by the tile's tap)
    where they take it, for NCHW and channels_last x: every gradient against the oracle."""
    from kernels._common import TileConfig
    from kernels.conv import conv_box
    from yat_triton.tuning import forced_config

    tile = TileConfig(16, 16, 16, 2, 4, 2, tma=True)
    OH, OW = geo.out_hw()
    for channels_last in (True, False):
        launched.clear()
        inp = make_inputs(geo, dtype, device, channels_last=channels_last, seed=26)
        with forced_config("conv2d", "bwd", tile):
            check_against_oracle(inp, geo)
        calls = {c.kernel.fn.__name__: c for c in launched}
        grads = sorted(name for name in calls if name.endswith(("grad_kernel", "grad_tma_kernel")))
        assert grads == [
            "yat_conv_dgrad_tma_kernel" if dgrad_tma else "yat_conv_dgrad_kernel",
            "yat_conv_wgrad_tma_kernel" if wgrad_tma else "yat_conv_wgrad_kernel",
        ]
        if dgrad_tma:
            dgrad = calls["yat_conv_dgrad_tma_kernel"]
            box = conv_box(geo.B, geo.H, geo.W, 16)
            assert (dgrad.kwargs["BOX_B"], dgrad.kwargs["BOX_H"], dgrad.kwargs["BOX_W"]) == box
            tiles_m = math.prod(-(-n // b) for n, b in zip((geo.B, geo.H, geo.W), box, strict=True))
            assert dgrad.grid == (tiles_m * -(-geo.C_in // geo.groups // 16), geo.groups)
        if wgrad_tma:
            wgrad = calls["yat_conv_wgrad_tma_kernel"]
            box = conv_box(geo.B, OH, OW, 16)
            assert (wgrad.kwargs["BOX_B"], wgrad.kwargs["BOX_H"], wgrad.kwargs["BOX_W"]) == box
            cols = geo.C_in // geo.groups * math.prod(geo.k)
            assert wgrad.grid == (-(-geo.C_out // geo.groups // 16) * -(-cols // 16), geo.groups, 1)


def test_tma_weight_gradient_split_over_boxes(device, monkeypatch, launched):
    """The GPU's plan splits the TMA weight gradient's boxes over programs (the interpreter
    otherwise takes one split): forced here, with NaN-filled fresh buffers (a partial-sum
    slot no program writes would reach dW), every gradient against the oracle."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    gpu_plan_with_nan_buffers(monkeypatch)
    geo = Geo(2, 16, 12, 12, 16, (3, 3), padding=1)  # 18 boxes of 4x4 positions
    inp = make_inputs(geo, torch.bfloat16, device, channels_last=True, seed=32)
    with forced_config("conv2d", "bwd", TileConfig(16, 16, 16, 2, 4, 2, tma=True)):
        check_against_oracle(inp, geo)
    (wgrad,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_wgrad_tma_kernel"]
    splits, per_split = wgrad.grid[2], wgrad.args[14]
    assert splits > 1 and (splits - 1) * per_split < 18 <= splits * per_split, (splits, per_split)


@pytest.mark.parametrize(
    "geo, why, dgrad_tma, wgrad_tma",
    [
        (Geo(2, 16, 7, 6, 32, (3, 3), stride=2, padding=1), "stride 2", False, False),
        # the weight gradient takes ragged filter tiles (rows past them are masked off)
        (Geo(2, 16, 5, 6, 24, (3, 3), padding=1), "24 filters: not a multiple of BLOCK_K", False, True),
        (Geo(2, 12, 5, 6, 16, (3, 2), padding=1), "12 channels: a tap's columns start off 16 bytes", False,
         False),
        (Geo(2, 32, 5, 6, 8, (3, 3), padding=1, groups=2), "groups of 4 filters: 8-byte group starts", False,
         False),
        (Geo(2, 16, 5, 6, 16, (3, 3), padding=1), "fp16: gs in fp32, its operands in fp16", False, False),
    ],
    ids=["stride2", "f24", "c12", "g2-f4", "fp16"],
)  # fmt: skip
def test_tma_backward_falls_back(geo, why, dgrad_tma, wgrad_tma, device, launched):
    """Backward kernels whose operands TMA cannot read run the pointer kernel with the same
    tile, each on its own terms: every gradient against the oracle."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    dtype = torch.float16 if why.startswith("fp16") else torch.bfloat16
    inp = make_inputs(geo, dtype, device, channels_last=True, seed=27)
    with forced_config("conv2d", "bwd", TileConfig(32, 16, 16, 2, 4, 2, tma=True)):
        check_against_oracle(inp, geo)
    grads = {c.kernel.fn.__name__: c for c in launched}
    grads = {name: c for name, c in grads.items() if "grad" in name and "finish" not in name}
    assert sorted(grads) == [
        "yat_conv_dgrad_tma_kernel" if dgrad_tma else "yat_conv_dgrad_kernel",
        "yat_conv_wgrad_tma_kernel" if wgrad_tma else "yat_conv_wgrad_kernel",
    ], why
    assert grads["yat_conv_dgrad_kernel"].kwargs["BLOCK_M"] == 32


STORE_CASES = [
    # (geo, channels_last, TMA stores for fp32 / bf16)
    pytest.param(Geo(2, 16, 5, 6, 16, (3, 3), padding=1), True, (True, True), id="cl"),
    pytest.param(Geo(2, 16, 5, 6, 16, (3, 3), padding=1), False, (False, False), id="nchw"),
    # 12 channels: 48-byte fp32 rows, 24-byte bf16 ones (TMA needs 16-byte multiples)
    pytest.param(Geo(2, 16, 5, 6, 12, (3, 3), padding=1), True, (True, False), id="c12"),
    # groups of 16 filters, the 16-wide tile's columns stay inside their group
    pytest.param(Geo(2, 16, 5, 6, 32, (3, 3), padding=1, groups=2), True, (True, True), id="g2-ng16"),
    # groups of 12: the tile's last 4 columns belong to the next group, which a box would overwrite
    pytest.param(Geo(2, 16, 5, 6, 24, (3, 3), padding=1, groups=2), True, (False, False), id="g2-ng12"),
]


def test_store_descriptors_keep_row_coordinates_in_int32() -> None:
    """The pointer kernel's TMA store addresses rows by an int32 coordinate: from 2^31 output
    positions on, y leaves through pointers; the TMA kernel's (image, row, column) boxes
    are not affected (meta tensors: nothing is allocated)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from yat_triton.conv import _store_descriptors

    for B, rows_by_tma in ((2**15 - 1, True), (2**15, False)):  # M = B * 2^16 output positions
        y = torch.empty(B, 8, 2**8, 2**8, dtype=torch.bfloat16, device="meta").to(memory_format=CL)
        none = torch.empty(0)
        assert isinstance(_store_descriptors(y, none, [128], 8, 8, 8, 1)[0], TensorDescriptor) == rows_by_tma
        assert isinstance(_store_descriptors(y, none, [1, 2, 64], 8, 8, 8, 1)[0], TensorDescriptor)


@pytest.mark.parametrize("geo, channels_last, tma_store", STORE_CASES)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_pointer_forward_stores_by_tma_where_it_can(geo, channels_last, tma_store, dtype, device, launched):
    """The pointer forward writes y and s through TMA descriptors of their (M, C_out) rows
    when y is channels_last, 16-byte aligned and no group's tile overhangs into the next
    group; through pointers otherwise. Forward and backward (from the s it saved) against
    the oracle either way."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    inp = make_inputs(geo, dtype, device, channels_last=channels_last, seed=23)
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2)):
        check_against_oracle(inp, geo)
    (fwd,) = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    assert fwd.kernel.fn.__name__ == "yat_conv_fwd_kernel"
    assert fwd.kwargs["TMA_STORE"] == tma_store[dtype == torch.bfloat16]


@pytest.mark.parametrize(
    "geo, why",
    [
        (Geo(2, 32, 7, 6, 8, (3, 3), stride=2, padding=1), "stride 2"),
        (Geo(2, 24, 5, 6, 8, (3, 3), padding=1), "24 channels: not a multiple of BLOCK_K"),
        (Geo(2, 32, 5, 6, 8, (3, 3), padding=1), "x starts 2 bytes past a 16-byte boundary"),
    ],
    ids=["stride2", "c24", "misaligned"],
)
def test_tma_forward_falls_back(geo, why, device, launched):
    """Convs the TMA kernel cannot read run the pointer kernel with the same tile."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    inp = make_inputs(geo, torch.float16, device, channels_last=True, seed=22)
    if why.startswith("x starts"):  # a channels_last view from the second channel on
        wider = Draw(23, device)(geo.B, geo.C_in + 1, geo.H, geo.W, dtype=torch.float16, scale=0.5)
        inp["x"] = wider.contiguous(memory_format=CL)[:, 1:].requires_grad_()
        assert inp["x"].stride(1) == 1 and inp["x"].data_ptr() % 16 == 2
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2, tma=True)):
        check_against_oracle(inp, geo)
    fwd = [c for c in launched if c.kernel.fn.__name__.startswith("yat_conv_fwd")]
    assert [c.kernel.fn.__name__ for c in fwd] == ["yat_conv_fwd_kernel"], why
    assert fwd[0].kwargs["BLOCK_M"] == 32 and fwd[0].kwargs["BLOCK_K"] == 16


def test_conv_box_wastes_the_fewest_lanes() -> None:
    """conv_box against a brute force over every power-of-two box of the tile."""
    from itertools import product

    from kernels.conv import conv_box

    def padded(B: int, OH: int, OW: int, box: tuple[int, int, int]) -> int:
        return math.prod(-(-n // b) * b for n, b in zip((B, OH, OW), box, strict=True))

    for B, OH, OW, bm in product((1, 3, 64), (1, 5, 7, 28, 56), (1, 6, 7, 14, 56), (16, 64, 128, 256)):
        box = conv_box(B, OH, OW, bm)
        assert math.prod(box) == bm and all(b & (b - 1) == 0 for b in box), box
        best = min(
            padded(B, OH, OW, (tb, th, bm // (tb * th)))
            for tb in (1 << i for i in range(9)) for th in (1 << i for i in range(9))
            if tb * th <= bm and bm % (tb * th) == 0
        )  # fmt: skip
        assert padded(B, OH, OW, box) == best, (B, OH, OW, bm, box)
    # ResNet-50's 3x3 layers at batch 64: no overhang but at 7x7
    boxes = [conv_box(64, hw, hw, 128) for hw in (56, 28, 14, 7)]
    assert boxes == [(2, 8, 8), (8, 4, 4), (32, 2, 2), (16, 1, 8)]


def test_wgrad_split_over_output_positions(device, monkeypatch, launched):
    """The GPU's weight gradient splits the output positions over programs and sums their
    partial dW (the interpreter otherwise takes one split): forced here, dW against the
    oracle. Buffers are allocated uninitialized: torch.empty hands out NaN-filled memory
    here, so a partial-sum slot no program writes would reach dW."""
    gpu_plan_with_nan_buffers(monkeypatch)
    geo = Geo(2, 4, 12, 12, 6, (3, 3), padding=1)  # 288 output positions
    inp = make_inputs(geo, torch.float32, device, channels_last=True, seed=31)
    check_against_oracle(inp, geo)
    (wgrad,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_wgrad_kernel"]
    assert wgrad.grid[2] > 1, wgrad.grid


def test_backward_glue_is_a_few_launches(device, monkeypatch):
    """In a CUDA graph (the harness's timing, torch.compile's reduce-overhead) each small
    launch still costs microseconds, a real share of a ResNet-sized conv.
    - The conv backward issues two PyTorch kernels between its Triton ones: the one sum of
      the column partials and the weight's (kh, kw, c) copy for the input gradient. The
      split weight-gradient reduction, its rank-1 term, the casts and the layout are one
      Triton pass.
    - The dense backward issues one: the column partials' sum (or the bias gradient's,
      where the dW GEMM adds up few enough partials of gd itself), plus the bias cast where
      the dtypes differ. One launch makes the near-pair updates of dx and dW.
    Kernels are recorded, not run: the interpreter's own tensor traffic stays out of the count."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import yat_triton.dense as dense
    from yat_triton._launch import KernelCall

    no_kernel = {"empty", "empty_like", "empty_strided", "permute", "view", "t", "transpose", "select",
                 "slice", "as_strided", "_reshape_alias", "reshape", "expand", "unsqueeze", "alias",
                 "detach"}  # fmt: skip

    class Compute(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            if func.overloadpacket.__name__ not in no_kernel:
                self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    def new(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.ones(shape, dtype=dtype, device=device)

    monkeypatch.setattr(conv, "INTERPRETING", False)  # the GPU's plan: a split weight gradient
    recorded: list[KernelCall] = []
    monkeypatch.setattr(KernelCall, "run", lambda self: recorded.append(self))

    def names() -> list[str]:
        return [c.kernel.fn.__name__ for c in recorded]

    x = new(2, 16, 9, 9, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    g = new(2, 24, 9, 9, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    w, b = new(24, 16, 3, 3, dtype=torch.bfloat16), new(24, dtype=torch.bfloat16)
    s, nx, nw = new(2 * 81, 24), new(2 * 81, 1), new(24)
    needs = [True, True, True, False, False]
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    with Compute() as c:
        conv.conv2d_bwd(g, x, w, b, None, 1.0, None, 1e-3, s, nx, nw, *geo, "ieee", needs)
    assert names() == ["yat_dense_bwd_prep_kernel", "yat_conv_dgrad_kernel", "yat_conv_wgrad_kernel",
                       "yat_conv_bwd_near_kernel", "yat_conv_wgrad_finish_kernel"]  # fmt: skip
    assert sorted(c.ops) == ["clone", "sum"], c.ops
    # 200 columns in 4 tiles: the dx GEMM adds up the 4 row partials; 300 rows in 5 tiles: the
    # column partials (gd and gu) are summed first, in one launch
    args = (new(300, 200), new(300, 32), new(200, 32), new(200), None, 1.0, None, 1e-3, new(300, 200),
            new(300), new(200), "ieee", needs)  # fmt: skip
    recorded.clear()
    with Compute() as c:
        dense.dense_bwd(*args)
    assert names() == ["yat_dense_bwd_prep_kernel", "yat_dense_bwd_gemm_kernel", "yat_dense_bwd_gemm_kernel",
                       "yat_dense_bwd_near_kernel"]  # fmt: skip
    assert [call.args[8] for call in recorded[1:3]] == [4, 1]  # v_parts of the dx and dW GEMMs
    assert dense.EPILOGUE_PARTS == 4 and sorted(c.ops) == ["sum"], c.ops


@pytest.mark.parametrize("c_in, c_out", [(0, 4), (4, 0)], ids=["no-input-channels", "no-filters"])
def test_empty_channels_backward_on_the_gpu_plan(c_in, c_out, device, monkeypatch):
    """A conv with no input channels or no filters has zero-sized gradients or zero ones, on
    the GPU's launch plan too (the split weight gradient once divided by its zero tiles)."""
    monkeypatch.setattr(conv, "INTERPRETING", False)  # the launcher's GPU choices
    x = torch.randn(2, c_in, 5, 5, device=device).contiguous(memory_format=CL).requires_grad_()
    w = torch.randn(c_out, c_in, 3, 3, device=device, requires_grad=True)
    b = torch.randn(c_out, device=device, requires_grad=True)
    y = yat_conv2d(x, w, b, padding=1, eps=1e-3)
    assert y.shape == (2, c_out, 5, 5)
    g = upstream(tuple(y.shape), torch.float32, device)
    grads = torch.autograd.grad(y, (x, w, b), g, allow_unused=True)
    # against the oracle: with no input channels y = b^2 / eps everywhere, db = 2 b / eps * sum(g)
    ref = [to_oracle(t, requires_grad=True) for t in (x, w, b)]
    y_ref = yat_conv2d_ref(*ref, None, 1e-3, 1, 1)
    assert_close(y, y_ref, torch.float32, reduction=max(1, c_in * 9), what="y")
    refs = torch.autograd.grad(y_ref, ref, to_oracle(g), allow_unused=True)
    for name, t, got, want in zip(("dx", "dW", "db"), (x, w, b), grads, refs, strict=True):
        want = torch.zeros(t.shape, dtype=torch.float64) if want is None else want
        got = torch.zeros_like(t) if got is None else got
        assert_close(got, want, torch.float32, reduction=max(1, 2 * 25), what=name)


@pytest.mark.parametrize("case", ["options-cl", "near-pairs-nchw"])
def test_int64_offsets_path(case, device, monkeypatch):
    """Every conv kernel's 64-bit offset path (taken past 2^31 elements, forced here on a
    small problem, the split weight gradient included) computes the same forward and
    gradients, against the oracle: channels_last with every option, and NCHW x, y and dx
    (channel offsets of OH*OW / H*W each) with near pairs, which the near-pair pass adds."""
    import dataclasses

    from yat_triton._launch import KernelCall

    run = KernelCall.run
    forced = []

    def with_int64(self: KernelCall) -> None:
        if "INT64" in self.kwargs:
            forced.append(self.kernel.fn.__name__)
            self = dataclasses.replace(self, kwargs={**self.kwargs, "INT64": True})
        run(self)

    monkeypatch.setattr(conv, "INTERPRETING", False)  # the launcher's GPU choices
    monkeypatch.setattr(KernelCall, "run", with_int64)
    if case == "options-cl":
        inp = make_inputs(OPTION_GEO, torch.float32, device, channels_last=True, seed=9)
        check_against_oracle(inp, OPTION_GEO)
    else:
        inp, kappa = clamp_inputs(torch.bfloat16, device, channels_last=False)
        check_against_oracle(inp, CLAMP_GEO, amplification=kappa)
    assert {"yat_conv_weight_prep_kernel", "yat_conv_fwd_kernel", "yat_conv_dgrad_kernel",
            "yat_conv_wgrad_kernel", "yat_conv_wgrad_finish_kernel", "yat_dense_bwd_prep_kernel",
            "yat_conv_bwd_near_kernel"} <= set(forced)  # fmt: skip


def test_near_pass_widens_offsets_past_2_31_and_groups_are_capped(device):
    """Plans on meta tensors: the near-pair pass of a conv whose (positions, filters)
    gradient passes 2^31 elements takes the 64-bit offsets (the prep pass before it does);
    a small one keeps int32. More groups than a grid axis holds is a clear error."""
    meta = dict(device="meta")

    def near_int64(M: int, C_out: int) -> bool:
        g2 = torch.empty((M, C_out), dtype=torch.bfloat16, **meta)
        s = torch.empty((M, C_out), dtype=torch.float32, **meta)
        xk = torch.empty((1, 1, 256, M // 256), dtype=torch.bfloat16, **meta).contiguous(memory_format=CL)
        w = torch.empty((C_out, 1, 3, 3), dtype=torch.bfloat16, **meta)
        call = conv.near_call(
            g2, s, torch.empty((M, 1), **meta), torch.empty((C_out,), **meta), None, None, 1.0, None, 1e-3,
            "ieee", 1, torch.empty((4,), dtype=torch.int32, **meta), xk, w, torch.empty_like(xk), None,
            (1, 1), (1, 1, 1, 1), (1, 1),
        )  # fmt: skip
        return call.kwargs["INT64"]

    assert near_int64(65536, 65536) and not near_int64(65536, 64)
    x, w = torch.randn(1, 65536, 1, 1, device=device), torch.randn(65536, 1, 1, 1, device=device)
    with pytest.raises(ValueError, match="groups=65536: the conv kernels launch one grid row per group"):
        yat_conv2d(x, w, groups=65536)


def test_unbatched_input_as_f_conv(device):
    """An unbatched x, (C_in, H, W) or (C_in, L), gives an unbatched output, as F.conv2d /
    F.conv1d do: value and gradients against the oracle on a batch of one."""
    torch.manual_seed(0)
    x, w, b = (
        torch.randn(4, 6, 6, device=device),
        torch.randn(6, 2, 3, 3, device=device),
        torch.randn(6, device=device),
    )
    for t in (x, w, b):
        t.requires_grad_()
    y = yat_conv2d(x, w, b, padding=1, groups=2)
    x64, w64, b64 = (to_oracle(t, requires_grad=True) for t in (x, w, b))
    y64 = yat_conv2d_ref(x64.unsqueeze(0), w64, b64, padding=(1, 1), groups=2).squeeze(0)
    assert y.shape == y64.shape == (6, 6, 6)
    assert_close(y, y64, torch.float32, reduction=18, what="y")
    v = torch.randn_like(y)
    grads, grads64 = (
        torch.autograd.grad(y, (x, w, b), v),
        torch.autograd.grad(y64, (x64, w64, b64), to_oracle(v)),
    )
    for name, g, g64 in zip(("dx", "dW", "db"), grads, grads64, strict=True):
        assert_close(g, g64, torch.float32, reduction=18 * 36, what=name)
    y1 = yat_conv1d(x[:, 0], w[:, :, 0], b, padding=1, groups=2)
    ref1 = yat_conv2d_ref(to_oracle(x[:, 0]).unsqueeze(0).unsqueeze(2), to_oracle(w[:, :, 0]).unsqueeze(2),
                          to_oracle(b), padding=(0, 1), groups=2)  # fmt: skip
    assert y1.shape == (6, 6)
    assert_close(y1, ref1.squeeze(2).squeeze(0), torch.float32, reduction=6, what="y (1-D)")


@pytest.mark.parametrize(
    "case", ["channel-slice", "crop", "tma-tile-stride-2"], ids=["channel-slice", "crop", "tma-stride-2"]
)
def test_16bit_forward_never_sums_norms_in_the_pointer_loop(case, device, launched):
    """A bf16 forward whose pointer kernel would have summed the patch norms in its loop
    takes them from the pixel-norm pass (`broken_in_loop_norms`: such tiles computed wrong
    on the H200): a strided channels_last x (a channel slice, a crop), whose pass reads a
    copy of its rows, and an in-loop TMA tile that a stride-2 layer puts on the pointer
    kernel. y and s against the oracle."""
    from kernels._common import TileConfig
    from yat_triton.tuning import forced_config

    gen = torch.Generator().manual_seed(31)
    full = torch.randn(2, 24, 9, 10, generator=gen).to(torch.bfloat16).contiguous(memory_format=CL)
    x = {"channel-slice": full[:, :16], "crop": full[:, :16, 1:8, 2:9]}.get(case, full[:, :16])
    if case == "tma-tile-stride-2":
        x = x.contiguous(memory_format=CL)
    else:  # strided views: channel stride 1, pixels 24 channels apart
        assert x.stride(1) == 1 and not x.permute(0, 2, 3, 1).is_contiguous()
    stride = 2 if case == "tma-tile-stride-2" else 1
    w = (torch.randn(8, 16, 3, 3, generator=gen) / 12).to(torch.bfloat16)
    b = torch.randn(8, generator=gen).to(torch.bfloat16)
    tile = TileConfig(32, 16, 16, 8, 4, 1, norms_in_loop=True, tma=case == "tma-tile-stride-2")
    with forced_config("conv2d", "fwd", tile):
        y = yat_conv2d(x.to(device), w.to(device), b.to(device), stride, 1, alpha=1.5, eps=1e-3)
    (fwd,) = [c for c in launched if c.kernel.fn.__name__ == "yat_conv_fwd_kernel"]
    assert fwd.kwargs["NORM_PASS"], case
    assert any(c.kernel.fn.__name__ == "row_sqnorm_kernel" for c in launched), case
    ref = yat_conv2d_ref(x, w, b, 1.5, 1e-3, stride, 1)
    assert_close(y, ref, torch.bfloat16, reduction=16 * 9, what="y")
