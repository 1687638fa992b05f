"""YatConv2d / YatConv1d: parameters, options, padding modes and dtypes against the float64
oracle; parity with nmn's YatConv2D / YatConv1D (nmn 0.3.5) through a shared state_dict;
and `yat_triton.convert`, which swaps the nmn layers of a model for this package's."""

from __future__ import annotations

import copy
import gc
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from oracle import resolve_conv_padding, to_oracle, yat_conv2d_ref
from tolerances import assert_close
from torch import Tensor, nn

from yat_triton import YatConv1d, YatConv2d, YatLinear, convert

# the nmn parity tests compare against nmn's fp32 cuBLAS / cuDNN calls: IEEE there too
pytestmark = pytest.mark.usefixtures("no_tf32")

SQRT2 = math.sqrt(2.0)
IN, OUT = 4, 6
FP32_BF16 = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def draw(seed: int, *shape: int, device: str, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def perturb_(m: nn.Module, seed: int = 7) -> None:
    """Move alpha / bias / epsilon_param away from their initial values (alpha = 1 or a zero
    scalar bias would hide a missing one)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("alpha"):
                p.fill_(1.3)
            elif name.endswith("epsilon_param"):
                p.fill_(math.log(math.expm1(1e-2)))  # eps = softplus(raw) = 1e-2
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen).to(p))


def _round_to(t64: Tensor, dtype: torch.dtype) -> Tensor:
    """Round to `dtype`'s grid with a straight-through gradient (the parameter casts)."""
    return t64 + (t64.detach().to(dtype).to(torch.float64) - t64.detach())


def _pad_explicit(m: nn.Module) -> tuple[int, ...]:
    """F.pad widths of the module's padding, resolved here (not read from the module)."""
    spatial = len(m.kernel_size)
    k = tuple(m.kernel_size) if spatial == 2 else (1, m.kernel_size[0])
    d = tuple(m.dilation) if spatial == 2 else (1, m.dilation[0])
    p = m.padding if isinstance(m.padding, str) else (tuple(m.padding) if spatial == 2 else (0, m.padding[0]))
    top, bottom, left, right = resolve_conv_padding(p, k, d)
    return (left, right, top, bottom) if spatial == 2 else (left, right)


def module_ref(
    m: nn.Module, x: Tensor, amp: torch.dtype | None = None
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The module's math (nmn semantics) in float64 from its parameters. Returns y, the
    float64 leaves of its parameters and the float64 leaf of x, all requiring grad.
    `amp`: the module runs under torch.autocast to that dtype, which casts x, weight and
    bias (not alpha or eps) on their way into the op."""
    dtype = m.compute_dtype or x.dtype
    params = {n: to_oracle(p, requires_grad=True) for n, p in m.named_parameters()}
    x64 = to_oracle(x.to(dtype), requires_grad=True)
    w = _round_to(params["weight"], dtype)
    b = None
    if m._constant_bias_value is not None:
        store = m.param_dtype or m.weight.dtype
        value = torch.tensor(m._constant_bias_value, dtype=store).to(dtype).double()
        b = value.expand(m.out_channels)
    elif "bias" in params:
        b = F.softplus(params["bias"]) if m.softplus_bias else params["bias"]
        b = _round_to(b, dtype).expand(m.out_channels)
    alpha = _round_to(params["alpha"], dtype) if "alpha" in params else m._constant_alpha_value
    eps = F.softplus(params["epsilon_param"]) if "epsilon_param" in params else m.epsilon
    unbatched = x.dim() == len(m.kernel_size) + 1  # (C_in, *spatial): a batch of one
    xin = x64.unsqueeze(0) if unbatched else x64
    if amp is not None:
        xin, w = _round_to(xin, amp), _round_to(w, amp)
        b = _round_to(b, amp) if b is not None else None
    padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
    if m.padding_mode != "zeros":
        xin = F.pad(xin, _pad_explicit(m), mode=m.padding_mode)
        padding = 0
    if len(m.kernel_size) == 2:
        y = yat_conv2d_ref(xin, w, b, alpha, eps, tuple(m.stride), padding, tuple(m.dilation), m.groups)
    else:
        p2 = padding if isinstance(padding, str) else (0, padding if isinstance(padding, int) else padding[0])
        y = yat_conv2d_ref(xin.unsqueeze(2), w.unsqueeze(2), b, alpha, eps, (1, m.stride[0]), p2,
                           (1, m.dilation[0]), m.groups).squeeze(2)  # fmt: skip
    return (y.squeeze(0) if unbatched else y), params, x64


def check_module(
    m: nn.Module, x: Tensor, dtype: torch.dtype, seed: int = 3, *, amp: torch.dtype | None = None
) -> None:
    """Forward and the gradients of x and every trainable parameter against module_ref
    (the forward under torch.autocast to `amp`, if given)."""
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = m(x)
    y_ref, params, x64 = module_ref(m, x, amp)
    assert y.dtype == dtype and y.shape == y_ref.shape
    k = math.prod(m.kernel_size)
    assert_close(y, y_ref, dtype, reduction=m.in_channels // m.groups * k, what="y")
    # a positive upstream gradient: dalpha / deps / a scalar bias then sum terms of one sign
    g = draw(seed, *y.shape, device=x.device).abs().to(dtype)
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [x] + [p for _, p in named], g)
    refs = torch.autograd.grad(y_ref, [x64] + [params[n] for n, _ in named], to_oracle(g))
    P = y.numel() // m.out_channels
    reduction = {"x": m.out_channels // m.groups * k, "weight": P,
                 "bias": P * (m.out_channels if m.scalar_bias else 1)}  # fmt: skip
    for (name, t), gr, ref in zip([("x", x), *named], grads, refs, strict=True):
        assert gr.dtype == t.dtype and gr.shape == t.shape, name
        coarser = dtype if dtype.itemsize <= t.dtype.itemsize else t.dtype
        assert_close(gr, ref, coarser, reduction=reduction.get(name, P * m.out_channels), what=f"d{name}")


# ---------------------------------------------------------------------------------------
# Parameters and options

PARAM_CASES = [
    pytest.param({}, ["weight", "bias", "alpha"], id="default"),
    pytest.param({"bias": False}, ["weight", "alpha"], id="nobias"),
    pytest.param({"use_alpha": False}, ["weight", "bias"], id="noalpha"),
    pytest.param({"constant_alpha": True}, ["weight", "bias"], id="const-alpha-true"),
    pytest.param({"constant_alpha": 0.5}, ["weight", "bias"], id="const-alpha-0.5"),
    pytest.param(
        {"learnable_epsilon": True}, ["weight", "bias", "epsilon_param", "alpha"], id="learnable-eps"
    ),
    pytest.param({"scalar_bias": True}, ["weight", "bias", "alpha"], id="scalar-bias"),
    pytest.param({"constant_bias": 0.25}, ["weight", "alpha"], id="const-bias"),
    pytest.param(
        {"constant_bias": 0.25, "scalar_bias": True}, ["weight", "alpha"], id="const-and-scalar-bias"
    ),
]


@pytest.mark.parametrize("kwargs, names", PARAM_CASES)
@pytest.mark.parametrize("cls", [YatConv2d, YatConv1d], ids=["2d", "1d"])
def test_parameters(cls, kwargs, names, device):
    m = cls(IN, OUT, 3, groups=2, device=device, **kwargs)
    assert isinstance(m, nn.Conv2d if cls is YatConv2d else nn.Conv1d)
    k = (3, 3) if cls is YatConv2d else (3,)
    shapes = {"weight": (OUT, IN // 2, *k), "bias": (1,) if kwargs.get("scalar_bias") else (OUT,),
              "alpha": (1,), "epsilon_param": (1,)}  # fmt: skip
    assert [n for n, _ in m.named_parameters()] == names  # nmn's registration order
    assert {n: tuple(p.shape) for n, p in m.named_parameters()} == {n: shapes[n] for n in names}
    assert all(p.dtype == torch.float32 and p.device.type == device for p in m.parameters())
    if "alpha" in names:
        assert torch.equal(m.alpha.detach().cpu(), torch.ones(1))
    if kwargs.get("scalar_bias") and "bias" in names:
        assert torch.equal(m.bias.detach().cpu(), torch.zeros(1))  # nmn zero-initialises it
    elif "bias" in names:
        assert m.bias.abs().max() <= 1.0 / math.sqrt(IN // 2 * math.prod(k))


def test_constant_values():
    assert YatConv2d(2, 2, 1, constant_alpha=True)._constant_alpha_value == pytest.approx(SQRT2)
    assert YatConv1d(2, 2, 1, constant_alpha=0.5)._constant_alpha_value == 0.5
    assert YatConv2d(2, 2, 1, constant_bias=0.25)._constant_bias_value == 0.25
    assert YatConv2d(2, 2, 1, constant_bias=False).bias is None  # as in nmn: no bias at all


def test_learnable_epsilon_init(device):
    m = YatConv2d(IN, OUT, 3, epsilon=1e-3, learnable_epsilon=True, device=device)
    assert m.epsilon_param.dtype == torch.float32
    assert F.softplus(m.epsilon_param.double()).item() == pytest.approx(1e-3, rel=1e-6)
    m = YatConv1d(
        IN, OUT, 3, epsilon=1e-30, learnable_epsilon=True, param_dtype=torch.bfloat16, device=device
    )
    assert m.epsilon_param.dtype == torch.float32 and m.weight.dtype == torch.bfloat16
    assert F.softplus(m.epsilon_param.double()).item() == pytest.approx(1e-30, rel=1e-5)
    with pytest.raises(ValueError, match=r"epsilon=1e-300 is outside the normal range of the torch.float32"):
        YatConv2d(IN, OUT, 3, epsilon=1e-300, learnable_epsilon=True)


NI = NotImplementedError
REFUSED = [
    pytest.param({"use_dropconnect": True, "drop_rate": 0.1}, NI,
                 r"use_dropconnect with drop_rate=0.1 > 0 is not supported", id="dropconnect"),
    pytest.param({"mask": torch.ones(OUT, IN, 3, 3)}, NI, r"a weight mask is not supported", id="mask"),
    pytest.param({"weight_normalized": True}, NI, r"weight_normalized=True is not supported",
                 id="weight-normalized"),
    pytest.param({"tie_kernel_bank": True}, NI, r"tie_kernel_bank=True .* is not supported",
                 id="tie-kernel-bank"),
    pytest.param({"epsilon": 0.0}, ValueError, r"epsilon must be finite and > 0, got 0.0", id="epsilon-0"),
    pytest.param({"epsilon": float("inf")}, ValueError, r"epsilon must be finite", id="epsilon-inf"),
    pytest.param({"precision": "fp8"}, ValueError, r"precision must be None, 'ieee' or 'tf32'",
                 id="precision"),
    pytest.param({"padding_mode": "mirror"}, ValueError, r"padding_mode must be one of", id="padding-mode"),
    pytest.param({"padding": "same", "stride": 2}, ValueError,
                 r"padding='same' is not supported for strided", id="same-strided"),
    pytest.param({"groups": 3}, ValueError, r"in_channels must be divisible by groups", id="groups"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, exc, match", REFUSED)
@pytest.mark.parametrize("cls", [YatConv2d, YatConv1d], ids=["2d", "1d"])
def test_refused_options(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(IN, OUT, 3, **kwargs)


LATER = [
    pytest.param(YatConv2d, "mask", torch.ones(OUT, IN, 3, 3), r"mask \(a weight mask buffer\)", id="mask"),
    pytest.param(YatConv2d, "weight_normalized", True, r"weight_normalized=True", id="weight-normalized"),
    pytest.param(YatConv1d, "drop_rate", 0.5, r"use_dropconnect=True with drop_rate=0.5", id="dropconnect"),
    pytest.param(YatLinear, "spherical", True, r"spherical=True", id="linear-spherical"),
]  # fmt: skip


@pytest.mark.parametrize("cls, attr, value, match", LATER)
def test_options_switched_on_later_are_refused_at_the_call(cls, attr, value, match, device):
    """nmn reads these options at every call: one set on the layer after construction is
    refused there, not silently left out of the computation."""
    m = cls(IN, OUT, 3, device=device) if cls is not YatLinear else cls(IN, OUT, device=device)
    x = draw(3, 2, IN, *((5, 5) if cls is YatConv2d else (7,) if cls is YatConv1d else ()), device=device)
    m(x)
    if attr == "drop_rate":
        m.use_dropconnect = True
    setattr(m, attr, value.to(device) if isinstance(value, Tensor) else value)
    with pytest.raises(
        NotImplementedError, match=rf"{cls.__name__}: {match} is not supported \(set on the layer"
    ):
        m(x)


def test_dropconnect_set_later_is_refused_only_where_nmn_would_drop(device):
    """nmn drops connections only in training and not deterministic: in eval, or with
    deterministic=True, it computes what this layer does, so those calls run."""
    m = YatConv2d(IN, OUT, 3, device=device)
    x = draw(5, 2, IN, 5, 5, device=device)
    m.use_dropconnect, m.drop_rate = True, 0.5
    m(x, deterministic=True)
    m.eval()
    m(x)
    m.train()
    with pytest.raises(
        NotImplementedError, match=r"use_dropconnect=True with drop_rate=0.5 is not supported"
    ):
        m(x)


def test_conv1d_output_is_contiguous_for_any_input_layout(device):
    """A (B, L, C) activation transposed to (B, C, L) runs as a channels_last 2-D conv; the
    1-D output is contiguous all the same, as torch's conv1d (y.view(B, -1) works)."""
    torch.manual_seed(0)
    m = YatConv1d(IN, OUT, 3, padding=1, device=device, precision="ieee")
    perturb_(m)
    x = draw(4, 2, 9, IN, device=device).transpose(1, 2)
    y = m(x)
    assert y.is_contiguous() and y.view(2, -1).shape == (2, OUT * 9)
    check_module(m, x, torch.float32)


def test_accepted_noop_options(device):
    """nmn options that do nothing here are accepted: dropconnect at rate 0, a drop rate
    without dropconnect, kernel-bank settings without tying, deterministic=."""
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, use_dropconnect=True, drop_rate=0.0, kernel_bank_size=32,
                  kernel_bank_id="x", device=device, precision="ieee")  # fmt: skip
    m2 = YatConv2d(IN, OUT, 3, drop_rate=0.5, device=device, precision="ieee")
    x = draw(1, 2, IN, 5, 5, device=device)
    for layer in (m, m2):  # each the layer's math: against the oracle
        perturb_(layer)
        check_module(layer, x, torch.float32)
    assert torch.equal(m(x), m(x, deterministic=True))


# ---------------------------------------------------------------------------------------
# Forward and backward against the oracle

OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"bias": False}, id="nobias"),
    pytest.param({"use_alpha": False}, id="noalpha"),
    pytest.param({"constant_alpha": True}, id="const-alpha-sqrt2"),
    pytest.param({"learnable_epsilon": True}, id="learnable-eps"),
    pytest.param({"softplus_bias": True}, id="softplus-bias"),
    pytest.param({"constant_bias": 0.25}, id="const-bias"),
    pytest.param({"scalar_bias": True, "constant_alpha": 0.5}, id="scalar-bias-const-alpha-0.5"),
]


@pytest.mark.parametrize("kwargs", OPTIONS)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_conv2d_vs_oracle(kwargs, dtype, device):
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, padding=1, groups=2, device=device, precision="ieee", **kwargs)
    perturb_(m)
    check_module(m, draw(1, 2, IN, 6, 5, device=device, dtype=dtype), dtype)


@pytest.mark.parametrize("kwargs", OPTIONS[:1] + OPTIONS[4:6])
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_conv1d_vs_oracle(kwargs, dtype, device):
    torch.manual_seed(0)
    m = YatConv1d(IN, OUT, 3, stride=2, padding=1, device=device, precision="ieee", **kwargs)
    perturb_(m)
    check_module(m, draw(2, 2, IN, 9, device=device, dtype=dtype), dtype)


PADDING_MODES = [
    pytest.param("reflect", 1, id="reflect-p1"),
    pytest.param("reflect", "same", id="reflect-same-asym"),
    pytest.param("replicate", (2, 1), id="replicate-p2x1"),
    pytest.param("circular", 1, id="circular-p1"),
    pytest.param("circular", "same", id="circular-same-asym"),
]


@pytest.mark.parametrize("mode, padding", PADDING_MODES)
def test_padding_modes_2d(mode, padding, device):
    """Non-zero padding modes pad x first (patch norms included), like torch's Conv2d; a
    channels_last input gives a channels_last output whatever the mode."""
    torch.manual_seed(0)
    k = (3, 2) if padding == "same" else 3
    m = YatConv2d(IN, OUT, k, padding=padding, padding_mode=mode, device=device, precision="ieee")
    perturb_(m)
    x = draw(4, 2, IN, 5, 6, device=device)
    check_module(m, x, torch.float32)
    y_cl = m(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    # ... and not as zero padding
    zeros = YatConv2d(IN, OUT, k, padding=padding, device=device, precision="ieee")
    zeros.load_state_dict(m.state_dict())
    assert not torch.allclose(m(x), zeros(x))


@pytest.mark.parametrize("mode, padding", [("reflect", 2), ("circular", "same"), ("replicate", 1)])
def test_padding_modes_1d(mode, padding, device):
    torch.manual_seed(0)
    k = 4 if padding == "same" else 3
    m = YatConv1d(IN, OUT, k, padding=padding, padding_mode=mode, device=device, precision="ieee")
    perturb_(m)
    check_module(m, draw(5, 2, IN, 7, device=device, dtype=torch.bfloat16), torch.bfloat16)


def test_compute_dtype_option(device):
    """dtype=bfloat16 with param_dtype=float32: fp32 storage, bf16 computation and output."""
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, padding=1, dtype=torch.bfloat16, param_dtype=torch.float32, device=device)
    perturb_(m)
    assert m.weight.dtype == torch.float32
    check_module(m, draw(2, 2, IN, 5, 5, device=device), torch.bfloat16)


@pytest.mark.parametrize("amp", [pytest.param(torch.bfloat16, id="amp-bf16"),
                                 pytest.param(torch.float16, id="amp-fp16")])  # fmt: skip
@pytest.mark.parametrize("cls", [YatConv2d, YatConv1d])
def test_autocast(cls, amp, device):
    """fp32 parameters and input under torch.autocast (mixed-precision training): the
    forward runs in the autocast dtype, x and every parameter get fp32 gradients."""
    torch.manual_seed(0)
    m = cls(IN, OUT, 3, padding=1, learnable_epsilon=True, device=device)
    perturb_(m)
    shape = (2, IN, 5, 5) if cls is YatConv2d else (2, IN, 7)
    check_module(m, draw(4, *shape, device=device), amp, amp=amp)


def test_dtype_sets_storage_too(device):
    """dtype without param_dtype is both the storage and the computation dtype (as nmn)."""
    m = YatConv1d(IN, OUT, 3, dtype=torch.bfloat16, learnable_epsilon=True, constant_bias=0.3, device=device)
    assert m.weight.dtype == m.alpha.dtype == torch.bfloat16 and m.epsilon_param.dtype == torch.float32
    perturb_(m)
    check_module(m, draw(3, 2, IN, 8, device=device), torch.bfloat16)


def test_param_dtype_bf16_fp32_input(device):
    """bf16 parameters, fp32 input: computes in fp32; a constant bias is rounded to the
    bf16 storage first, as in nmn."""
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, param_dtype=torch.bfloat16, constant_bias=0.3, device=device)
    perturb_(m)
    assert m.weight.dtype == torch.bfloat16
    check_module(m, draw(2, 2, IN, 5, 5, device=device), torch.float32)


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_half_cast_keeps_epsilon_fp32(cast, device):
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, learnable_epsilon=True, epsilon=1e-3, device=device)
    perturb_(m)
    getattr(m, cast)()
    dtype = torch.float16 if cast == "half" else torch.bfloat16
    assert m.epsilon_param.dtype == torch.float32
    assert m.weight.dtype == m.bias.dtype == m.alpha.dtype == dtype
    check_module(m, draw(4, 2, IN, 5, 5, device=device, dtype=dtype), dtype)
    m.float()
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_unbatched_and_channels_last(device):
    torch.manual_seed(0)
    m = YatConv2d(IN, OUT, 3, padding=1, device=device, precision="ieee")
    perturb_(m)
    x = draw(6, 2, IN, 5, 4, device=device)
    check_module(m, x[1], torch.float32)  # unbatched (C_in, H, W) against the oracle
    assert m(x[1]).shape == (OUT, 5, 4)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert m(x_cl).is_contiguous(memory_format=torch.channels_last)
    check_module(m, x_cl, torch.float32)
    m1 = YatConv1d(IN, OUT, 3, device=device, precision="ieee")
    perturb_(m1)
    assert m1(x[0, :, 0]).shape == (OUT, 2)
    check_module(m1, x[0, :, 0], torch.float32)


def test_repr():
    r = repr(
        YatConv2d(IN, OUT, 3, constant_alpha=True, learnable_epsilon=True, padding_mode="reflect", padding=1)
    )
    assert r.startswith("YatConv2d(4, 6, kernel_size=(3, 3)") and "padding_mode=reflect" in r
    assert "constant_alpha=1.41421" in r and "learnable_epsilon=True" in r


# ---------------------------------------------------------------------------------------
# Parity with nmn 0.3.5


def _nmn():
    pytest.importorskip("nmn.torch")
    from nmn.torch.layers import YatConv1D, YatConv2D
    from nmn.torch.nmn import YatNMN

    return YatConv2D, YatConv1D, YatNMN


NMN_2D = [
    pytest.param({"padding": 1}, id="default-p1"),
    pytest.param({"padding": 1, "bias": False}, id="nobias"),
    pytest.param({"padding": 1, "use_alpha": False}, id="noalpha"),
    pytest.param({"padding": 1, "constant_alpha": True}, id="const-alpha"),
    pytest.param({"padding": 1, "learnable_epsilon": True}, id="learnable-eps"),
    pytest.param({"padding": 1, "scalar_bias": True}, id="scalar-bias"),
    pytest.param({"padding": 1, "softplus_bias": True}, id="softplus-bias"),
    pytest.param({"padding": 1, "constant_bias": 0.25}, id="const-bias"),
    pytest.param({"padding": "same", "padding_mode": "reflect", "groups": 2, "kernel_size": (3, 2)},
                 id="same-reflect-g2-k3x2"),
    pytest.param({"stride": 2, "dilation": 2, "padding": 2, "groups": 2}, id="s2-d2-g2"),
    pytest.param({"padding": 1, "param_dtype": torch.bfloat16, "constant_bias": 0.3},
                 id="bf16-params-const-bias"),
]  # fmt: skip
NMN_1D = [
    pytest.param({"padding": 1}, id="default-p1"),
    pytest.param(
        {"padding": "same", "kernel_size": 4, "learnable_epsilon": True}, id="same-k4-learnable-eps"
    ),
    pytest.param({"padding": 2, "padding_mode": "circular", "scalar_bias": True}, id="circular-scalar-bias"),
    pytest.param(
        {"stride": 2, "groups": 2, "constant_alpha": True, "softplus_bias": True}, id="s2-g2-const-alpha"
    ),
]


def _parity(ours_cls: type, ref_cls: type, kwargs: dict, x: Tensor, dtype: torch.dtype) -> None:
    kwargs = dict(kwargs)
    k = kwargs.pop("kernel_size", 3)
    torch.manual_seed(0)
    ref = ref_cls(IN, OUT, k, device=x.device, **kwargs)
    torch.manual_seed(0)
    ours = ours_cls(IN, OUT, k, device=x.device, precision="ieee", **kwargs)
    # same initialisation from the same seed, same parameter order
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), f"{n} initialised differently from nmn"
    perturb_(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)

    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), ref(x_ref)
    assert y_ours.dtype == y_ref.dtype == dtype and y_ours.shape == y_ref.shape
    kk = math.prod(ours.kernel_size)
    assert_close(y_ours, y_ref.double(), dtype, reduction=IN * kk, what="y vs nmn")
    g = draw(12, *y_ref.shape, device=x.device).abs().to(dtype)
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    mine, theirs = dict(ours.named_parameters()), dict(ref.named_parameters())
    grads_ours = torch.autograd.grad(y_ours, [x_ours, *[mine[n] for n in names]], g)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, *[theirs[n] for n in names]], g)
    P = y_ref.numel() // OUT
    reduction = {"x": OUT * kk, "weight": P, "bias": P}
    for name, a, b in zip(["x", *names], grads_ours, grads_ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert_close(a, b.double(), dtype, reduction=reduction.get(name, P * OUT), what=f"d{name} vs nmn")


@pytest.mark.parametrize("kwargs", NMN_2D)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_nmn_parity_2d(kwargs, dtype, device):
    YatConv2D, _, _ = _nmn()
    _parity(YatConv2d, YatConv2D, kwargs, draw(11, 2, IN, 6, 7, device=device, dtype=dtype), dtype)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@pytest.mark.parametrize("kwargs", NMN_1D)
@pytest.mark.parametrize("dtype", FP32_BF16)
def test_nmn_parity_1d(kwargs, dtype, device):
    _, YatConv1D, _ = _nmn()
    _parity(YatConv1d, YatConv1D, kwargs, draw(13, 2, IN, 9, device=device, dtype=dtype), dtype)


def test_nmn_parity_half_module(device):
    """Both modules cast with .bfloat16(): bf16 parameters, fp32 learnable epsilon."""
    YatConv2D, _, _ = _nmn()
    torch.manual_seed(0)
    ref = YatConv2D(IN, OUT, 3, padding=1, learnable_epsilon=True, device=device).bfloat16()
    ours = YatConv2d(IN, OUT, 3, padding=1, learnable_epsilon=True, device=device).bfloat16()
    perturb_(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.epsilon_param.dtype == ref.epsilon_param.dtype == torch.float32
    x = draw(14, 2, IN, 5, 5, device=device, dtype=torch.bfloat16)
    assert_close(ours(x), ref(x).double(), torch.bfloat16, reduction=IN * 9, what="y vs nmn")


# ---------------------------------------------------------------------------------------
# convert


class _Body(nn.Module):
    """A custom module holding nmn layers in a ModuleList, with a parameter of its own."""

    def __init__(self, YatConv1D: type, YatNMN: type, device: str) -> None:
        super().__init__()
        self.seq = nn.ModuleList([YatConv1D(4, 5, 3, padding="same", learnable_epsilon=True, device=device)])
        self.gain = nn.Parameter(torch.full((1,), 0.9, device=device))
        self.frozen = YatNMN(5, 5, lazy=True, constant_bias=0.1, device=device)

    def forward(self, x: Tensor) -> Tensor:
        h = self.seq[0](x.flatten(2)).mean(-1) * self.gain
        return self.frozen(h)


def nmn_model(device: str) -> nn.Module:
    YatConv2D, YatConv1D, YatNMN = _nmn()
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", YatConv2D(3, 4, 3, padding=1, constant_alpha=True, device=device))
    model.add_module("body", _Body(YatConv1D, YatNMN, device))
    model.add_module("head", YatNMN(5, 3, scalar_bias=True, device=device))
    perturb_(model)
    return model


def _nmn_modules(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m).__module__.startswith("nmn.")]


def test_convert_model(device):
    """Every nmn layer replaced, the same Parameter objects kept (names, order, dtype,
    device, requires_grad), and the same outputs and gradients as the nmn model."""
    ref = nmn_model(device)
    model = copy.deepcopy(ref)
    before = list(model.named_parameters())
    rng = torch.get_rng_state()
    out = convert(model, precision="ieee")
    assert torch.equal(torch.get_rng_state(), rng), "convert consumed random numbers"
    assert out is model
    assert _nmn_modules(model) == []
    assert type(model.stem) is YatConv2d and type(model.body.seq[0]) is YatConv1d
    assert type(model.head) is YatLinear and type(model.body.frozen) is YatLinear
    after = list(model.named_parameters())
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(a is b for (_, a), (_, b) in zip(after, before, strict=True))
    assert not model.body.frozen.weight.requires_grad
    assert model.stem._constant_alpha_value == pytest.approx(SQRT2) and model.stem.precision == "ieee"
    assert model.state_dict().keys() == ref.state_dict().keys()

    x = draw(21, 2, 3, 4, 4, device=device)
    y, y_ref = model(x), ref(x)
    assert_close(y, y_ref.double(), torch.float32, reduction=36, what="y vs nmn model")
    g = draw(22, *y.shape, device=device)
    trainable = [n for n, p in ref.named_parameters() if p.requires_grad]
    mine, theirs = dict(model.named_parameters()), dict(ref.named_parameters())
    grads = torch.autograd.grad(y, [mine[n] for n in trainable], g)
    grads_ref = torch.autograd.grad(y_ref, [theirs[n] for n in trainable], g)
    for n, a, b in zip(trainable, grads, grads_ref, strict=True):
        assert_close(a, b.double(), torch.float32, reduction=64, what=f"d{n} vs nmn model")


def test_convert_root_and_shared_layers(device):
    YatConv2D, _, YatNMN = _nmn()
    layer = YatConv2D(2, 3, 1, device=device)
    new = convert(layer)
    assert type(new) is YatConv2d and new.weight is layer.weight and new.bias is layer.bias
    head = YatNMN(3, 2, device=device)
    assert type(convert(head)) is YatLinear
    shared = YatNMN(3, 3, device=device)
    model = nn.Sequential(shared, nn.Identity(), shared)
    convert(model)
    assert type(model[0]) is YatLinear and model[0] is model[2] and model[0].weight is shared.weight


def test_convert_keeps_mode_dtype_and_hooks(device):
    _, YatConv1D, _ = _nmn()
    layer = YatConv1D(2, 3, 3, learnable_epsilon=True, device=device).bfloat16().eval()
    calls = []
    handle = layer.register_forward_hook(lambda mod, args, out: calls.append(type(mod).__name__))
    new = convert(nn.Sequential(layer))[0]
    assert type(new) is YatConv1d and not new.training
    assert new.weight.dtype == torch.bfloat16 and new.epsilon_param.dtype == torch.float32
    new(draw(23, 1, 2, 5, device=device, dtype=torch.bfloat16))
    assert calls == ["YatConv1d"]
    handle.remove()
    new(draw(23, 1, 2, 5, device=device, dtype=torch.bfloat16))
    assert calls == ["YatConv1d"]


def test_convert_keeps_state_dict_hooks_buffers_children_and_attributes(device):
    """What a user hung on an nmn layer survives the swap: state_dict and load hooks, a
    non-persistent buffer (a strict load of an older checkpoint must not want it), child
    modules (a converted one included) with their own mode, public attributes."""
    _, _, YatNMN = _nmn()
    layer = YatNMN(4, 3, device=device)
    layer.register_state_dict_post_hook(lambda mod, sd, prefix, local: sd.__setitem__(prefix + "extra", 1))
    loaded, pre = [], []
    layer.register_load_state_dict_post_hook(lambda mod, incompatible: loaded.append(mod))
    layer.register_load_state_dict_pre_hook(lambda mod, *args: pre.append(mod))  # bound to its module
    running = torch.zeros(3, device=device)
    layer.register_buffer("running", running, persistent=False)
    layer.probe = YatNMN(3, 2, device=device)
    layer.tag = "block-7"
    checkpoint = {k: v for k, v in layer.state_dict().items() if k != "extra"}
    model = nn.Sequential(layer)
    layer.probe.eval()
    new = convert(model)[0]
    del layer
    gc.collect()  # the nmn layer is gone: a hook still bound to it could not run
    assert type(new) is YatLinear and type(new.probe) is YatLinear and not new.probe.training
    assert new.running is running and new.tag == "block-7"
    probe = ["probe.weight", "probe.alpha", "probe.bias"]
    assert list(new.state_dict()) == ["weight", "alpha", "bias", *probe, "extra"]
    new.load_state_dict(checkpoint | {f"probe.{k}": v for k, v in new.probe.state_dict().items()})
    assert loaded == [new] and pre == [new]


def test_convert_accepts_inactive_dropconnect(device):
    """Dropconnect at rate 0 is a no-op: converted, its flag and rate kept (the same options)."""
    YatConv2D, _, _ = _nmn()
    model = nn.Sequential(YatConv2D(2, 3, 3, use_dropconnect=True, drop_rate=0.0, device=device))
    layer = convert(model)[0]
    assert type(layer) is YatConv2d and layer.use_dropconnect is True and layer.drop_rate == 0.0


def test_convert_names_old_style_weight_hooks(device):
    """torch.nn.utils.spectral_norm (the hook kind) renames weight to weight_orig: convert
    says that is why it cannot map the layer."""
    _, _, YatNMN = _nmn()
    layer = torch.nn.utils.spectral_norm(YatNMN(3, 2, device=device))
    with pytest.raises(
        ValueError, match=r"\['weight_orig'\] come from torch.nn.utils' spectral_norm / weight_norm"
    ):
        convert(layer)


def _refusal_cases() -> list:
    def build(kind: str, monkeypatch: pytest.MonkeyPatch, device: str) -> nn.Module:
        YatConv2D, YatConv1D, YatNMN = _nmn()
        model = nmn_model(device)
        if kind == "spherical":
            model.head = YatNMN(5, 3, spherical=True, device=device)
        elif kind == "nmn-weight-normalized":
            model.body.frozen = YatNMN(5, 5, weight_normalized=True, device=device)
        elif kind == "conv-weight-normalized":
            model.stem = YatConv2D(3, 4, 3, padding=1, weight_normalized=True, device=device)
        elif kind == "dropconnect":
            model.stem = YatConv2D(3, 4, 3, padding=1, use_dropconnect=True, drop_rate=0.2, device=device)
        elif kind == "mask":
            model.body.seq[0] = YatConv1D(4, 5, 3, padding="same", mask=torch.ones(5, 4, 3), device=device)
        elif kind == "tie-kernel-bank":
            monkeypatch.setattr(YatConv2D, "_KERNEL_BANKS", {})  # keep nmn's global registry clean
            monkeypatch.setattr(YatConv2D, "_KERNEL_BANK_USED", {})
            model.stem = YatConv2D(3, 4, 3, padding=1, tie_kernel_bank=True, device=device)
        elif kind == "subclass":

            class MyNMN(YatNMN):
                pass

            model.head = MyNMN(5, 3, device=device)
        return model

    cases = [
        ("spherical", r"head \(YatNMN\) uses spherical=True"),
        ("nmn-weight-normalized", r"body.frozen \(YatNMN\) uses weight_normalized=True"),
        ("conv-weight-normalized", r"stem \(YatConv2D\) uses weight_normalized=True"),
        ("dropconnect", r"stem \(YatConv2D\) uses use_dropconnect=True with drop_rate=0.2"),
        ("mask", r"body.seq.0 \(YatConv1D\) uses mask"),
        ("tie-kernel-bank", r"stem \(YatConv2D\) uses tie_kernel_bank=True"),
        ("subclass", r"head is a .*MyNMN, a subclass of nmn's YatNMN"),
    ]
    return [pytest.param(build, kind, match, id=kind) for kind, match in cases]


@pytest.mark.parametrize("build, kind, match", _refusal_cases())
def test_convert_refuses(build, kind, match, device, monkeypatch):
    """A clear ValueError naming the layer and the option, and nothing replaced."""
    model = build(kind, monkeypatch, device)
    before = _nmn_modules(model)
    with pytest.raises(ValueError, match=match):
        convert(model)
    assert _nmn_modules(model) == before, "a refused convert must leave the model untouched"


def test_convert_refuses_parametrized(device):
    _, _, YatNMN = _nmn()
    layer = YatNMN(3, 2, device=device)
    torch.nn.utils.parametrize.register_parametrization(layer, "weight", nn.Identity())
    with pytest.raises(ValueError, match=r"<root> \(YatNMN\) has parametrized parameters"):
        convert(layer)


def test_convert_bad_precision():
    with pytest.raises(ValueError, match=r"precision must be None, 'ieee' or 'tf32', got 'fp8'"):
        convert(nn.Linear(2, 2), precision="fp8")


def test_convert_without_nmn(monkeypatch):
    """With nmn not importable there is nothing to convert: the model comes back as is."""
    for name in ("nmn", "nmn.torch", "nmn.torch.nmn", "nmn.torch.layers"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(ImportError):
        import nmn.torch.layers  # noqa: F401
    model = nn.Sequential(nn.Linear(3, 4), YatConv2d(2, 2, 1), nn.Sequential(YatLinear(4, 2)))
    children = list(model.modules())
    assert convert(model) is model
    assert list(model.modules()) == children
