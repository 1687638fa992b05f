"""YatLinear: parameters, options, forward/backward against the float64 oracle, dtype casts,
and parity with `nmn.torch.nmn.YatNMN` (nmn 0.3.5) through a shared state_dict."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from oracle import to_oracle, yat_dense_ref
from tolerances import assert_close
from torch import Tensor

from yat_triton import YatConv2d, YatLinear

# the nmn parity tests compare against nmn's fp32 cuBLAS / cuDNN calls: IEEE there too
pytestmark = pytest.mark.usefixtures("no_tf32")

IN, OUT = 24, 10
SQRT2 = math.sqrt(2.0)


def draw(seed: int, *shape: int, device: str, dtype: torch.dtype = torch.float32) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)


def perturb_(m: torch.nn.Module, seed: int = 7) -> None:
    """Move alpha / bias / epsilon_param away from their initial values, so that a wrong
    use of any of them shows (alpha = 1 would hide a missing alpha)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name == "alpha":
                p.fill_(1.3)
            elif name == "epsilon_param":
                p.fill_(math.log(math.expm1(1e-2)))  # eps = softplus(raw) = 1e-2
            elif name == "bias":
                p.copy_(0.3 * torch.randn(p.shape, generator=gen).to(p))


def _round_to(t64: Tensor, dtype: torch.dtype) -> Tensor:
    """Round a float64 tensor to `dtype`'s grid, passing gradients straight through (the
    module's parameter casts have identity gradients)."""
    return t64 + (t64.detach().to(dtype).to(torch.float64) - t64.detach())


def module_ref(
    m: YatLinear, x: Tensor, amp: torch.dtype | None = None
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The module's math in float64 from its parameters (nmn semantics). Returns y, the
    float64 leaves of its parameters, and the float64 leaf of x, all requiring grad.
    `amp`: the module runs under torch.autocast to that dtype, which casts x, weight and
    bias (not alpha or eps) on their way into the op."""
    dtype = m.dtype or x.dtype
    params = {n: to_oracle(p, requires_grad=True) for n, p in m.named_parameters()}
    x64 = to_oracle(x.to(dtype), requires_grad=True)
    w = _round_to(params["weight"], dtype)
    b = None
    if m._constant_bias_value is not None:
        b = torch.full((m.out_features,), m._constant_bias_value, dtype=torch.float64)
    elif "bias" in params:
        b = F.softplus(params["bias"]) if m.softplus_bias else params["bias"]
        b = _round_to(b.expand(m.out_features), dtype)
    if "alpha" in params:
        alpha = _round_to(params["alpha"], dtype)
    else:
        alpha = m._constant_alpha_value
    eps = F.softplus(params["epsilon_param"]) if "epsilon_param" in params else m.epsilon
    xin = x64
    if amp is not None:
        xin, w = _round_to(x64, amp), _round_to(w, amp)
        b = _round_to(b, amp) if b is not None else None
    return yat_dense_ref(xin, w, b, alpha, eps), params, x64


# ---------------------------------------------------------------------------------------
# Parameters and options


def test_default_parameters(device):
    m = YatLinear(IN, OUT, device=device)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"weight": (OUT, IN), "alpha": (1,), "bias": (OUT,)}
    assert all(p.dtype == torch.float32 and p.device.type == device for p in m.parameters())
    assert m.epsilon_param is None
    assert torch.equal(m.alpha.detach().cpu(), torch.ones(1))
    bound = 1.0 / math.sqrt(IN)
    assert m.bias.abs().max() <= bound


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"bias": False}, {"weight": (OUT, IN), "alpha": (1,)}),
        ({"alpha": False}, {"weight": (OUT, IN), "bias": (OUT,)}),
        ({"constant_alpha": True}, {"weight": (OUT, IN), "bias": (OUT,)}),
        ({"constant_alpha": 0.5}, {"weight": (OUT, IN), "bias": (OUT,)}),
        ({"learnable_epsilon": True},
         {"weight": (OUT, IN), "alpha": (1,), "bias": (OUT,), "epsilon_param": (1,)}),
        ({"scalar_bias": True}, {"weight": (OUT, IN), "alpha": (1,), "bias": (1,)}),
        ({"constant_bias": 0.25}, {"weight": (OUT, IN), "alpha": (1,)}),
    ],
    ids=["nobias", "noalpha", "const-alpha-true", "const-alpha-0.5", "learnable-eps",
         "scalar-bias", "const-bias"],
)  # fmt: skip
def test_option_parameters(kwargs, expected, device):
    m = YatLinear(IN, OUT, device=device, **kwargs)
    assert {n: tuple(p.shape) for n, p in m.named_parameters()} == expected


def test_constant_alpha_values():
    assert YatLinear(3, 2, constant_alpha=True)._constant_alpha_value == pytest.approx(SQRT2)
    assert YatLinear(3, 2, constant_alpha=0.5)._constant_alpha_value == 0.5


def test_learnable_epsilon_init(device):
    m = YatLinear(IN, OUT, epsilon=1e-3, learnable_epsilon=True, device=device)
    assert m.epsilon_param.dtype == torch.float32
    assert F.softplus(m.epsilon_param.double()).item() == pytest.approx(1e-3, rel=1e-6)
    # tiny epsilon: the inverse softplus must not underflow to -inf
    m = YatLinear(IN, OUT, epsilon=1e-30, learnable_epsilon=True, device=device)
    assert torch.isfinite(m.epsilon_param).all()
    assert F.softplus(m.epsilon_param.double()).item() == pytest.approx(1e-30, rel=1e-5)


def test_freeze_and_positive_init(device):
    m = YatLinear(IN, OUT, lazy=True, positive_init=True, device=device)
    assert not m.weight.requires_grad
    assert (m.weight >= 0).all()
    m = YatLinear(IN, OUT, freeze_kernel=True, device=device)
    assert not m.weight.requires_grad and m.bias.requires_grad and m.alpha.requires_grad


# ---------------------------------------------------------------------------------------
# Forward and backward against the oracle

OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"bias": False}, id="nobias"),
    pytest.param({"alpha": False}, id="noalpha"),
    pytest.param({"constant_alpha": True}, id="const-alpha-sqrt2"),
    pytest.param({"constant_alpha": 0.5}, id="const-alpha-0.5"),
    pytest.param({"learnable_epsilon": True}, id="learnable-eps"),
    pytest.param({"softplus_bias": True}, id="softplus-bias"),
    pytest.param({"constant_bias": 0.25}, id="const-bias"),
    pytest.param({"scalar_bias": True}, id="scalar-bias"),
]


def _check_module(
    m: YatLinear, x: Tensor, dtype: torch.dtype, seed: int = 3, *, amp: torch.dtype | None = None
) -> None:
    """Forward and every trainable parameter's gradient against module_ref (the forward
    under torch.autocast to `amp`, if given)."""
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        y = m(x)
    assert y.dtype == dtype and y.shape == (*x.shape[:-1], m.out_features)
    y_ref, params, _ = module_ref(m, x, amp)
    M = math.prod(x.shape[:-1])
    assert_close(y, y_ref, dtype, reduction=IN, what="y")
    # a positive upstream gradient: dalpha / deps then sum terms of one sign (no
    # cancellation), so relative-to-value tolerances apply to them
    g = draw(seed, *y.shape, device=x.device).abs().to(dtype)
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(y, [p for _, p in named], g)
    refs = torch.autograd.grad(y_ref, [params[n] for n, _ in named], to_oracle(g))
    reduction = {"weight": M, "bias": M * (OUT if m.scalar_bias else 1)}
    for (name, p), gr, ref in zip(named, grads, refs, strict=True):
        assert gr.dtype == p.dtype and gr.shape == p.shape, name
        coarser = dtype if dtype.itemsize <= p.dtype.itemsize else p.dtype
        assert_close(gr, ref, coarser, reduction=reduction.get(name, M * OUT), what=f"d{name}")


@pytest.mark.parametrize("kwargs", OPTIONS)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_forward_backward_vs_oracle(kwargs, dtype, device):
    torch.manual_seed(0)
    m = YatLinear(IN, OUT, device=device, precision="ieee", **kwargs)
    perturb_(m)
    x = draw(1, 3, 5, IN, device=device, dtype=dtype)
    _check_module(m, x, dtype)


def test_computation_dtype_option(device):
    """dtype=bfloat16 with fp32 parameters: computes (and returns) in bf16."""
    torch.manual_seed(0)
    m = YatLinear(IN, OUT, dtype=torch.bfloat16, device=device)
    perturb_(m)
    x = draw(2, 6, IN, device=device)
    _check_module(m, x, torch.bfloat16)


@pytest.mark.parametrize("amp", [pytest.param(torch.bfloat16, id="amp-bf16"),
                                 pytest.param(torch.float16, id="amp-fp16")])  # fmt: skip
def test_autocast(amp, device):
    """fp32 parameters and input under torch.autocast (mixed-precision training): the
    forward runs in the autocast dtype, every parameter gets an fp32 gradient."""
    torch.manual_seed(0)
    m = YatLinear(IN, OUT, learnable_epsilon=True, device=device)
    perturb_(m)
    _check_module(m, draw(6, 3, 4, IN, device=device), amp, amp=amp)


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_half_cast_keeps_epsilon_fp32(cast, device):
    torch.manual_seed(0)
    m = YatLinear(IN, OUT, learnable_epsilon=True, device=device, epsilon=1e-3)
    perturb_(m)
    getattr(m, cast)()
    dtype = torch.float16 if cast == "half" else torch.bfloat16
    assert m.epsilon_param.dtype == torch.float32
    assert m.weight.dtype == m.bias.dtype == m.alpha.dtype == dtype
    x = draw(4, 6, IN, device=device, dtype=dtype)
    _check_module(m, x, dtype)
    m.float()
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_double_cast(device):
    """.double() casts weight/bias/alpha; epsilon_param keeps its storage dtype on every
    cast, as in nmn."""
    torch.manual_seed(0)
    m = YatLinear(IN, OUT, learnable_epsilon=True, device=device).double()
    perturb_(m)
    assert m.weight.dtype == m.bias.dtype == m.alpha.dtype == torch.float64
    assert m.epsilon_param.dtype == torch.float32
    x = draw(5, 6, IN, device=device, dtype=torch.float64)
    _check_module(m, x, torch.float64)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: YatLinear(4, 3, learnable_epsilon=True), id="linear"),
    pytest.param(lambda: YatConv2d(2, 3, 3, learnable_epsilon=True), id="conv2d"),
])  # fmt: skip
def test_learnable_epsilon_follows_module_apply(make):
    """A learnable epsilon_param keeps its dtype only on a cast: share_memory, a meta
    construction materialized by to_empty, and .to("meta") reach it like any parameter."""
    m = make().share_memory()
    assert all(p.is_shared() for p in m.parameters())
    with torch.device("meta"):
        lazy = make()
    assert lazy.epsilon_param.is_meta
    lazy.to_empty(device="cpu")
    assert all(p.device.type == "cpu" for p in lazy.parameters())
    assert make().to("meta").epsilon_param.is_meta
    m.epsilon_param.grad = torch.ones_like(m.epsilon_param)
    m.bfloat16()
    assert m.epsilon_param.dtype == m.epsilon_param.grad.dtype == torch.float32
    assert m.weight.dtype == torch.bfloat16


def test_zero_in_features(device):
    """No input features: y = alpha * b^2 / eps, its bias and alpha gradients against the
    oracle."""
    m = YatLinear(0, 3, device=device)
    perturb_(m)
    _check_module(m, torch.zeros(2, 0, device=device), torch.float32)


# ---------------------------------------------------------------------------------------
# Parity with nmn 0.3.5

NMN_OPTIONS = [
    pytest.param({}, id="default"),
    pytest.param({"bias": False}, id="nobias"),
    pytest.param({"alpha": False}, id="noalpha"),
    pytest.param({"constant_alpha": True}, id="const-alpha"),
    pytest.param({"learnable_epsilon": True}, id="learnable-eps"),
    pytest.param({"scalar_bias": True}, id="scalar-bias"),
    pytest.param({"softplus_bias": True}, id="softplus-bias"),
    pytest.param({"constant_bias": 0.25}, id="const-bias"),
]


@pytest.mark.parametrize("kwargs", NMN_OPTIONS)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.bfloat16, id="bf16")])  # fmt: skip
def test_nmn_parity(kwargs, dtype, device):
    pytest.importorskip("nmn.torch")
    from nmn.torch.nmn import YatNMN

    torch.manual_seed(0)
    ref = YatNMN(IN, OUT, device=device, **kwargs)
    perturb_(ref)
    ours = YatLinear(IN, OUT, device=device, precision="ieee", **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert set(dict(ours.named_parameters())) == set(dict(ref.named_parameters()))

    x = draw(11, 4, 6, IN, device=device, dtype=dtype)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = ours(x_ours), ref(x_ref)
    assert y_ours.dtype == y_ref.dtype == dtype and y_ours.shape == y_ref.shape
    assert_close(y_ours, y_ref.double(), dtype, reduction=IN, what="y vs nmn")

    g = draw(12, *y_ref.shape, device=device).abs().to(dtype)  # one sign: see _check_module
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    grads_ours = torch.autograd.grad(y_ours, [x_ours, *[dict(ours.named_parameters())[n] for n in names]], g)
    grads_ref = torch.autograd.grad(y_ref, [x_ref, *[dict(ref.named_parameters())[n] for n in names]], g)
    M = 24
    reduction = {"x": OUT, "weight": M, "bias": M}
    for name, a, b in zip(["x", *names], grads_ours, grads_ref, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert_close(a, b.double(), dtype, reduction=reduction.get(name, M * OUT),
                     what=f"d{name} vs nmn")  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="default"),
        pytest.param({"constant_bias": 0.25, "alpha": False}, id="const-bias-noalpha"),
        pytest.param({"learnable_epsilon": True}, id="learnable-eps"),
    ],
)  # fmt: skip
def test_nmn_parameter_order(kwargs):
    """Same parameters() order as YatNMN, so optimizer states transfer too."""
    pytest.importorskip("nmn.torch")
    from nmn.torch.nmn import YatNMN

    ref = [n for n, _ in YatNMN(IN, OUT, **kwargs).named_parameters()]
    ours = [n for n, _ in YatLinear(IN, OUT, **kwargs).named_parameters()]
    assert ours == ref


NMN_ATTRIBUTES = (
    "use_bias", "use_alpha", "constant_bias", "constant_alpha", "scalar_bias", "softplus_bias", "spherical",
    "weight_normalized", "tie_kernel_bank", "kernel_bank_size", "kernel_bank_id", "positive_init",
    "learnable_epsilon", "epsilon",
)  # fmt: skip
NMN_POSITIONAL = (4, 3, True, None, False, False, True, None, None, torch.float32, 1e-3, False, False, True)


def test_nmn_signature_positional_calls_and_attributes():
    """nmn's argument names in nmn's order (precision, ours, last): a positional call means
    the same here; the attributes nmn code reads exist with nmn's values."""
    pytest.importorskip("nmn.torch")
    import inspect

    from nmn.torch.nmn import YatNMN

    theirs = list(inspect.signature(YatNMN.__init__).parameters)
    ours = list(inspect.signature(YatLinear.__init__).parameters)
    assert ours == [*theirs, "precision"]
    shape = lambda f: [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]  # noqa: E731
    assert shape(YatLinear.reset_parameters) == shape(YatNMN.reset_parameters)
    torch.manual_seed(0)
    m = YatLinear(IN, OUT)
    weight, bias = m.weight.detach().clone(), m.bias.detach().clone()
    m.reset_parameters(initialize_kernel=False)
    assert torch.equal(m.weight, weight) and not torch.equal(m.bias, bias)
    ref, m = YatNMN(*NMN_POSITIONAL), YatLinear(*NMN_POSITIONAL)  # ..., spherical, positive_init
    assert m.positive_init and not m.lazy and m.weight.requires_grad and bool((m.weight >= 0).all())
    for kwargs in ({}, {"bias": False}, {"constant_bias": 0.5}, {"alpha": False},
                   {"alpha": False, "constant_alpha": True}, {"scalar_bias": True}):  # fmt: skip
        ref, m = YatNMN(IN, OUT, **kwargs), YatLinear(IN, OUT, **kwargs)
        for name in NMN_ATTRIBUTES:
            assert getattr(m, name) == getattr(ref, name), (kwargs, name)


@pytest.mark.parametrize("option", ["spherical", "weight_normalized", "tie_kernel_bank"])
def test_unsupported_nmn_options_are_refused(option):
    assert getattr(YatLinear(IN, OUT, **{option: False}), option) is False
    with pytest.raises(NotImplementedError, match=f"YatLinear: {option}=True"):
        YatLinear(IN, OUT, **{option: True})


@pytest.mark.parametrize(
    ("epsilon", "param_dtype"),
    [(1e39, torch.float32), (1e-45, torch.float32), (1e-300, torch.bfloat16), (1e-320, torch.float64)],
)
def test_learnable_epsilon_outside_its_dtype_is_refused(epsilon, param_dtype):
    """softplus^-1 of it would overflow, or be a subnormal eps whose gradient vanishes."""
    with pytest.raises(ValueError, match=re.escape(f"epsilon={epsilon} is outside the normal range")):
        YatLinear(IN, OUT, epsilon=epsilon, learnable_epsilon=True, param_dtype=param_dtype)
    assert YatLinear(IN, OUT, epsilon=epsilon, param_dtype=param_dtype).epsilon == epsilon  # a constant


def test_nmn_parity_constant_bias_in_param_dtype():
    """A constant bias is stored like a parameter: nmn rounds it to param_dtype first."""
    pytest.importorskip("nmn.torch")
    from nmn.torch.nmn import YatNMN

    torch.manual_seed(0)
    ref = YatNMN(IN, OUT, constant_bias=0.3, param_dtype=torch.bfloat16)
    ours = YatLinear(IN, OUT, constant_bias=0.3, param_dtype=torch.bfloat16)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = draw(3, 5, IN, device="cpu", dtype=torch.bfloat16)
    assert torch.equal(ours.effective_bias(torch.float32, x.device), torch.full((OUT,), 0.30078125))
    assert_close(ours(x), ref(x).double(), torch.bfloat16, reduction=IN, what="y vs nmn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("op", ["linear", "conv2d"])
def test_forward_and_backward_replay_from_a_cuda_graph(op: str) -> None:
    """A training step of the ops captured as a CUDA graph (torch.compile's reduce-overhead
    mode and the harness's timing rely on it) and replayed on new inputs matches the oracle:
    no host sync, no allocation outside the graph's pool, no kernel left out of the capture."""
    from oracle import yat_conv2d_ref

    from yat_triton import yat_conv2d, yat_linear

    gen = torch.Generator().manual_seed(7)
    if op == "linear":
        shapes, out_shape = ((40, 24), (36, 24), (36,)), (40, 36)
        sums = {"y": 24, "dx": 36, "dW": 40, "db": 40}  # terms each value sums
        fn = lambda x, w, b: yat_linear(x, w, b, eps=1e-3, precision="ieee")  # noqa: E731
        ref = lambda x, w, b: yat_dense_ref(x, w, b, None, 1e-3)  # noqa: E731
    else:
        shapes, out_shape = ((2, 8, 6, 6), (12, 8, 3, 3), (12,)), (2, 12, 6, 6)
        sums = {"y": 8 * 9, "dx": 12 * 9, "dW": 2 * 36, "db": 2 * 36}
        fn = lambda x, w, b: yat_conv2d(x, w, b, padding=1, eps=1e-3, precision="ieee")  # noqa: E731
        ref = lambda x, w, b: yat_conv2d_ref(x, w, b, None, 1e-3, padding=1)  # noqa: E731
    static = [torch.randn(s, generator=gen).cuda().requires_grad_() for s in shapes]
    g_static = torch.randn(out_shape, generator=gen).cuda()

    def step() -> tuple[Tensor, ...]:
        y = fn(*static)
        return (y, *torch.autograd.grad(y, static, g_static))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up: compiles and caches outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step()
    for _ in range(2):  # new data in the static inputs, then replay
        with torch.no_grad():
            for t in static:
                t.copy_(torch.randn(t.shape, generator=gen))
            g_static.copy_(torch.randn(out_shape, generator=gen))
        graph.replay()
        torch.cuda.synchronize()
        leaves = [to_oracle(t, requires_grad=True) for t in static]
        y_ref = ref(*leaves)
        grads_ref = torch.autograd.grad(y_ref, leaves, to_oracle(g_static))
        assert_close(outs[0], y_ref, torch.float32, reduction=sums["y"], what=f"{op} y (replayed)")
        for name, got, want in zip(("dx", "dW", "db"), outs[1:], grads_ref, strict=True):
            assert_close(got, want, torch.float32, reduction=sums[name], what=f"{op} {name} (replayed)")


def test_repr_and_nmn_attributes():
    """The repr shows every option that changes the layer (as YatConv2d's does), and the
    attributes nmn's layers carry are there: YatNMN's DEFAULT_CONSTANT_ALPHA, the conv
    layers' mask (None, and not in the state_dict, as nmn's without a mask)."""
    import math

    from yat_triton import YatConv1d, YatConv2d

    plain = repr(YatLinear(16, 8))
    assert plain == (
        "YatLinear(in_features=16, out_features=8, bias=True, alpha=True, constant_alpha=None, "
        "epsilon=1e-05, learnable_epsilon=False, param_dtype=torch.float32)"
    )
    full = repr(
        YatLinear(16, 8, constant_bias=0.5, softplus_bias=True, dtype=torch.float64, precision="ieee")
    )
    assert "constant_bias=0.5" in full and "dtype=torch.float64" in full and "precision=ieee" in full
    assert "softplus_bias" not in full  # a constant bias has no parameter to softplus
    assert "softplus_bias=True, scalar_bias=True" in repr(
        YatLinear(16, 8, softplus_bias=True, scalar_bias=True)
    )
    assert YatLinear.DEFAULT_CONSTANT_ALPHA == math.sqrt(2.0)
    assert YatLinear(4, 2, constant_alpha=True)._constant_alpha_value == math.sqrt(2.0)
    for layer in (YatConv2d(3, 4, 3), YatConv1d(3, 4, 3)):
        assert layer.mask is None and "mask" not in layer.state_dict()
