"""Validation at the public boundary: the right exception type, and a message that names the
argument at fault (and, where it applies, what was expected and what was given)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from yat_triton import YatLinear, yat_conv2d, yat_linear


@pytest.fixture
def xw(device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=gen).to(device)
    w = torch.randn(5, 6, generator=gen).to(device)
    return x, w


def other_device(device: str) -> str:
    """A device the inputs are not on: the CPU on a CUDA machine, else the meta device."""
    return "cpu" if device == "cuda" else "meta"


def test_mismatched_k(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"x has K=6 .*weight expects K=7"):
        yat_linear(x, torch.zeros(5, 7, device=x.device))


@pytest.mark.parametrize("shape", [(5,), (5, 6, 1)], ids=["1d", "3d"])
def test_weight_not_2d(xw, shape):
    x, _ = xw
    with pytest.raises(ValueError, match=r"weight must have shape \(N, K\), got shape"):
        yat_linear(x, torch.zeros(shape, device=x.device))


def test_x_zero_dim(xw):
    _, w = xw
    with pytest.raises(ValueError, match=r"x must have at least one dimension"):
        yat_linear(torch.tensor(1.0, device=w.device), w)


@pytest.mark.parametrize("shape", [(4,), (5, 1), (1,)], ids=["short", "2d", "scalar-like"])
def test_wrong_bias_shape(xw, shape):
    x, w = xw
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got shape"):
        yat_linear(x, w, torch.zeros(shape, device=x.device))


def test_mixed_dtypes(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"weight has dtype torch.float16 but x has dtype torch.float32"):
        yat_linear(x, w.half())


def test_bias_dtype_mismatch(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"bias has dtype torch.bfloat16 but x has dtype torch.float32"):
        yat_linear(x, w, torch.zeros(5, dtype=torch.bfloat16, device=x.device))


def test_weight_on_other_device(xw, device):
    x, w = xw
    other = other_device(device)
    with pytest.raises(ValueError, match=rf"weight is on {other}.* but x is on {device}"):
        yat_linear(x, w.to(other))


def test_bias_on_other_device(xw, device):
    x, w = xw
    other = other_device(device)
    with pytest.raises(ValueError, match=rf"bias is on {other}.* but x is on {device}"):
        yat_linear(x, w, torch.zeros(5, device=other))


@pytest.mark.parametrize("name", ["alpha", "eps"])
def test_scalar_tensor_on_other_device(xw, device, name):
    x, w = xw
    t = torch.ones(1, device=other_device(device))
    with pytest.raises(ValueError, match=rf"{name} is on .* but x is on {device}"):
        yat_linear(x, w, **{name: t})


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool], ids=str)
def test_integer_x(xw, dtype):
    x, w = xw
    with pytest.raises(TypeError, match=r"x must have a floating dtype .*got torch\."):
        yat_linear(x.to(dtype), w)


def test_integer_weight(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"weight must have a floating dtype"):
        yat_linear(x, w.to(torch.int64))


def test_complex_x(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"x must have a floating dtype"):
        yat_linear(x.to(torch.complex64), w)


@pytest.mark.parametrize("eps", [0.0, -1e-5, -1], ids=["zero", "negative", "negative-int"])
def test_eps_not_positive(xw, eps):
    x, w = xw
    with pytest.raises(ValueError, match=r"eps must be > 0, got"):
        yat_linear(x, w, eps=eps)


@pytest.mark.parametrize("eps", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_eps_not_finite(xw, eps):
    x, w = xw
    with pytest.raises(ValueError, match=r"eps must be finite, got"):
        yat_linear(x, w, eps=eps)


@pytest.mark.parametrize("eps", [0.0, -1.0, math.nan, math.inf], ids=["zero", "negative", "nan", "inf"])
def test_eps_tensor_not_positive(xw, eps):
    """A CPU eps tensor is checked like a number. A GPU one is not read by the host (a sync
    each call): the kernels turn it into NaN, so y is NaN, never a plausible wrong value."""
    from yat_triton.conv import conv2d_fwd
    from yat_triton.dense import dense_fwd, use_triton

    x, w = xw
    bad = torch.tensor([eps], device=x.device)
    if x.is_cuda:
        assert torch.isnan(yat_linear(x, w, eps=bad)).all()
    else:
        with pytest.raises(ValueError, match=r"eps must hold a finite value > 0, got tensor\("):
            yat_linear(x, w, eps=bad)
        with pytest.raises(ValueError, match=r"eps must hold a finite value > 0"):
            yat_conv2d(x[None, None], w[:2, None, None, :3], eps=bad)
    if use_triton(x):  # the kernels as the GPU path launches them
        assert torch.isnan(dense_fwd(x, w, None, None, 1.0, bad, 1.0, "ieee", True)[0]).all()
        xc, wc = x[None, None], w[:2, None, None, :3].contiguous()
        y = conv2d_fwd(xc, wc, None, None, 1.0, bad, 1.0, (1, 1), (0, 0, 0, 0), (1, 1), 1, "ieee", False)[0]
        assert y.numel() and torch.isnan(y).all()


@pytest.mark.parametrize("op", ["yat_linear", "yat_conv2d"])
def test_double_backward_is_refused_by_name(xw, op):
    """First-order gradients with create_graph=True are fine; differentiating them again
    says what is unsupported instead of asking for an autograd registration."""
    x, w = (t.detach().requires_grad_() for t in xw)
    if op == "yat_linear":
        y = yat_linear(x, w)
    else:
        x = x[None, None].detach().requires_grad_()
        y = yat_conv2d(x, w[:2, None, None, :3])
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert torch.isfinite(gx).all()
    with pytest.raises(RuntimeError, match=f"{op}: its gradients are not differentiable .first order only"):
        gx.sum().backward()


@pytest.mark.parametrize("alpha", [math.nan, math.inf], ids=["nan", "inf"])
def test_alpha_not_finite(xw, alpha):
    x, w = xw
    with pytest.raises(ValueError, match=r"alpha must be finite, got"):
        yat_linear(x, w, alpha=alpha)


@pytest.mark.parametrize("name", ["alpha", "eps"])
def test_scalar_tensor_with_two_elements(xw, name):
    x, w = xw
    t = torch.ones(2, device=x.device)
    with pytest.raises(ValueError, match=rf"{name} must be a one-element tensor, got shape \(2,\)"):
        yat_linear(x, w, **{name: t})


@pytest.mark.parametrize("name", ["alpha", "eps"])
@pytest.mark.parametrize("value", ["1.0", True, [1.0]], ids=["str", "bool", "list"])
def test_scalar_of_wrong_type(xw, name, value):
    x, w = xw
    with pytest.raises(TypeError, match=rf"{name} must be a float or a one-element tensor"):
        yat_linear(x, w, **{name: value})


@pytest.mark.parametrize("name", ["alpha", "eps"])
def test_scalar_tensor_integer(xw, name):
    x, w = xw
    with pytest.raises(TypeError, match=rf"{name} must have a floating dtype"):
        yat_linear(x, w, **{name: torch.ones(1, dtype=torch.int64, device=x.device)})


@pytest.mark.parametrize("precision", ["fp8", "TF32", "highest", 1], ids=str)
def test_bad_precision(xw, precision):
    x, w = xw
    with pytest.raises(ValueError, match=r"precision must be None, 'ieee' or 'tf32', got"):
        yat_linear(x, w, precision=precision)


@pytest.mark.parametrize("x", [[[1.0, 2.0]], 3.0, None], ids=["list", "float", "none"])
def test_non_tensor_x(x, device):
    w = torch.zeros(3, 2, device=device)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got"):
        yat_linear(x, w)


def test_non_tensor_weight(xw):
    x, _ = xw
    with pytest.raises(TypeError, match=r"weight must be a torch.Tensor, got list"):
        yat_linear(x, [[0.0] * 6])


def test_non_tensor_bias(xw):
    x, w = xw
    with pytest.raises(TypeError, match=r"bias must be a torch.Tensor, got list"):
        yat_linear(x, w, [0.0] * 5)


# ---------------------------------------------------------------------------------------
# YatLinear


@pytest.mark.parametrize("epsilon", [0.0, -1e-5, math.nan, math.inf], ids=["zero", "neg", "nan", "inf"])
def test_yatlinear_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match=r"epsilon must be finite and > 0, got"):
        YatLinear(4, 3, epsilon=epsilon)


def test_yatlinear_bad_precision():
    with pytest.raises(ValueError, match=r"precision must be None, 'ieee' or 'tf32', got 'fp8'"):
        YatLinear(4, 3, precision="fp8")


def test_yatlinear_negative_features():
    with pytest.raises(ValueError, match=r"in_features must be >= 0, got -1"):
        YatLinear(-1, 3)
    with pytest.raises(ValueError, match=r"out_features must be >= 0, got -2"):
        YatLinear(3, -2)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"in_features": 2.5}, TypeError, r"in_features must be an int, got 2.5"),
        ({"out_features": "3"}, TypeError, r"out_features must be an int, got '3'"),
        ({"in_features": None}, TypeError, r"in_features must be an int, got None"),
        ({"param_dtype": torch.int32}, TypeError, r"param_dtype must be None or a floating dtype.*int32"),
        ({"dtype": torch.complex64}, TypeError, r"dtype must be None or a floating dtype.*complex64"),
        ({"constant_bias": math.nan}, ValueError, r"constant_bias must be finite, got nan"),
        ({"constant_alpha": math.inf}, ValueError, r"constant_alpha must be finite, got inf"),
        ({"constant_alpha": "x"}, TypeError, r"constant_alpha must be a finite number, got 'x'"),
        ({"epsilon": "a"}, TypeError, r"epsilon must be a finite number, got 'a'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_module_constructor_arguments(kwargs, exc, match):
    """Wrong types and values name the argument at construction, in both module families."""
    from yat_triton import YatConv2d

    linear = {"in_features": 4, "out_features": 3} | kwargs
    with pytest.raises(exc, match=match):
        YatLinear(**linear)
    renamed = {k.replace("_features", "_channels"): v for k, v in linear.items()}
    with pytest.raises(exc, match=match.replace("_features", "_channels")):
        YatConv2d(kernel_size=3, **renamed)


@pytest.mark.parametrize("kernel_size", [0, (3, 0), 2.0], ids=["zero", "zero-width", "float"])
def test_conv_module_kernel_size(kernel_size):
    from yat_triton import YatConv1d, YatConv2d

    exc, match = (TypeError, "kernel_size must be an int") if kernel_size == 2.0 else (ValueError, ">= 1")
    with pytest.raises(exc, match=match):
        YatConv2d(4, 4, kernel_size)
    if not isinstance(kernel_size, tuple):
        with pytest.raises(exc, match=match):
            YatConv1d(4, 4, kernel_size)


def test_module_input_not_a_tensor():
    from yat_triton import YatConv2d

    with pytest.raises(TypeError, match=r"YatLinear: input must be a torch.Tensor, got list"):
        YatLinear(4, 3)([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match=r"YatConv2d: input must be a torch.Tensor, got list"):
        YatConv2d(1, 2, 1)([[[1.0]]])


def test_convert_needs_a_module():
    from yat_triton import convert

    with pytest.raises(TypeError, match=r"convert: model must be an nn.Module, got NoneType"):
        convert(None)


@pytest.mark.parametrize("k", [(0, 3), (3, 0)], ids=["kH0", "kW0"])
def test_conv_kernel_size_zero(k, device):
    """A weight with no taps is refused (the interpreter used to give a larger, all-zero
    output), in 1-D too."""
    from yat_triton import yat_conv1d

    with pytest.raises(ValueError, match=r"weight's kernel size \(kH, kW\) must be >= 1, got shape \(3, 4, "):
        yat_conv2d(torch.randn(1, 4, 6, 6, device=device), torch.randn(3, 4, *k, device=device))
    with pytest.raises(ValueError, match=r"weight's kernel size \(k\) must be >= 1"):
        yat_conv1d(torch.randn(1, 3, 7, device=device), torch.randn(4, 3, 0, device=device))


@pytest.mark.filterwarnings(
    "ignore:Sparse CSR tensor support is in beta", "ignore:The PyTorch API of nested tensors"
)
def test_sparse_and_nested_tensors_are_refused(xw):
    x, w = xw
    with pytest.raises(
        TypeError, match=r"weight must be a dense \(strided\) tensor, got layout torch.sparse_coo"
    ):
        yat_linear(x, w.to_sparse())
    with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor, got layout torch.sparse_csr"):
        yat_linear(x.to_sparse_csr(), w)
    nested = torch.nested.nested_tensor([x[:2], x[:3]])
    with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor, got a nested tensor"):
        yat_linear(nested, w)


def test_out_of_range_numbers_name_their_argument(xw):
    x, w = xw
    with pytest.raises(ValueError, match=r"eps must be finite, got 1000.* \(too large for a float\)"):
        yat_linear(x, w, eps=10**400)
    xc, wc = torch.randn(1, 2, 5, 5, device=x.device), torch.randn(3, 2, 3, 3, device=x.device)
    for name in ("stride", "padding", "dilation"):
        with pytest.raises(
            ValueError, match=rf"{name} must be at most 2\*\*31 - 1, got 18446744073709551616"
        ):
            yat_conv2d(xc, wc, **{name: 2**64})


def test_yatlinear_wrong_input_features(device):
    m = YatLinear(4, 3, device=device)
    with pytest.raises(ValueError, match=r"x has K=5 .*weight expects K=4"):
        m(torch.zeros(2, 5, device=device))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"eps": 1e-46}, "eps=.*below float32"), ({"alpha": 1e39}, "alpha=.*overflows float32")],
    ids=["eps-underflow", "alpha-overflow"],
)
def test_scalars_outside_float32_range(kwargs, match, device):
    """Python floats reach the kernels as float32: out-of-range values are refused, not
    silently turned into 0 or inf (float64 inputs use float64 scalars and accept them)."""
    x, w = torch.randn(2, 3, device=device), torch.randn(4, 3, device=device)
    with pytest.raises(ValueError, match=match):
        yat_linear(x, w, **kwargs)
    y = yat_linear(x.double(), w.double(), **kwargs)
    assert y.dtype == torch.float64


@pytest.mark.parametrize(
    ("value", "dtype", "match"),
    [(1e-50, torch.float64, "is below float32"), (1e300, torch.float64, "overflows float32"),
     (1e-40, torch.float32, "is below float32")],
    ids=["fp64-underflow", "fp64-overflow", "fp32-subnormal"],
)  # fmt: skip
def test_cpu_eps_tensor_outside_float32_range(value, dtype, match):
    """A CPU eps tensor is checked like a number: a value the kernels' float32 scalar would
    turn into 0 or inf (every output NaN) is refused, naming eps; float64 io takes it."""
    eps = torch.tensor([value], dtype=dtype)
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=rf"eps=tensor\(\S+, dtype={dtype}\) {match}"):
        yat_linear(x, w, eps=eps)
    with pytest.raises(ValueError, match=match):
        yat_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 2, 2), eps=eps)
    if dtype == torch.float64:
        assert torch.isfinite(yat_linear(x.double(), w.double(), eps=eps)).all()


def test_numpy_numbers_are_taken_as_numbers(device):
    """NumPy scalars (what array code hands over) work where Python numbers do: alpha and
    eps as np.float32, stride / padding / dilation / groups as np.int64; against the oracle."""
    np = pytest.importorskip("numpy")
    from oracle import yat_conv2d_ref
    from tolerances import assert_close

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 7, 6, generator=gen).to(device)
    w = torch.randn(6, 2, 3, 3, generator=gen).to(device)
    y = yat_conv2d(x, w, None, np.int64(2), (np.int64(1), 2), np.int64(1), np.int64(2),
                   alpha=np.float32(1.5), eps=np.float32(0.25))  # fmt: skip
    ref = yat_conv2d_ref(x, w, None, alpha=1.5, eps=0.25, stride=2, padding=(1, 2), groups=2)
    assert_close(y, ref, torch.float32, reduction=18, what="y")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # Triton's own spellings of "on" turn the interpreter on here too
        (
            "import os; os.environ['TRITON_INTERPRET'] = 'true'\n"
            "from kernels._common import INTERPRETING; print(INTERPRETING)",
            "True",
        ),
        (
            "import os; os.environ['TRITON_INTERPRET'] = 'off'\n"
            "from kernels._common import INTERPRETING; print(INTERPRETING)",
            "False",
        ),
        # set after triton was imported: named at import, not a puzzle at the first call
        (
            "import os, triton; os.environ['TRITON_INTERPRET'] = '1'\n"
            "try:\n    import yat_triton\nexcept ImportError as e:\n    print(e)",
            "TRITON_INTERPRET is set, but triton was imported before it was set, so Triton built its own "
            "functions for the GPU; set TRITON_INTERPRET=1 before the first import of triton",
        ),
    ],
    ids=["true", "off", "after-triton"],
)
def test_triton_interpret_is_read_as_triton_reads_it(code: str, expected: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == expected, (done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("setting", "route"),
    [("0", "plain PyTorch on the CPU (TRITON_INTERPRET is off)"), (None, "Triton interpreter on the CPU")],
    ids=["interpret-off", "unset"],
)
def test_demo_names_the_route_it_runs(setting: str | None, route: str) -> None:
    """`python -m yat_triton.demo` as the README gives it (nothing set) runs the kernels
    through the interpreter on a CPU; with TRITON_INTERPRET=0 the plain-PyTorch path (on a
    GPU, the CUDA kernels either way); it says which, and prints every dtype's errors
    against its float64 reference."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        route = "CUDA kernels"  # whatever TRITON_INTERPRET says, the CUDA tensors take the kernels
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    if setting is not None:
        env["TRITON_INTERPRET"] = setting
    done = subprocess.run([sys.executable, "-m", "yat_triton.demo"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert route in lines[0], lines[0]
    # each dtype's fwd, dx and dW errors, held to its rounding (the demo's shapes: K = 96)
    bounds = {"torch.float32": 1e-5, "torch.float16": 4e-3, "torch.bfloat16": 4e-2}
    seen = {}
    for ln in lines:
        if "max rel. error" in ln:
            seen[ln.split()[0]] = [float(e) for e in re.findall(r"\d\.\de-\d+", ln)]
    assert set(seen) == set(bounds) and all(len(e) == 3 for e in seen.values()), done.stdout
    assert all(max(seen[d]) < bound for d, bound in bounds.items()), done.stdout


def test_demo_reference_is_the_oracle() -> None:
    """The demo's float64 reference is the layer's math: it agrees with tests/oracle.py."""
    from oracle import yat_dense_ref

    from yat_triton.demo import reference

    gen = torch.Generator().manual_seed(5)
    x, w, b = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in ((7, 9), (4, 9), (4,)))
    alpha = torch.tensor(1.7, dtype=torch.float64)
    assert torch.allclose(reference(x, w, b, alpha, 0.01), yat_dense_ref(x, w, b, alpha, 0.01), rtol=1e-12)


def test_readme_snippets_run() -> None:
    """The README's Use snippets run as written on a machine without a GPU (the plain
    PyTorch route: the interpreter would take minutes at these sizes)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    code = "\n".join(blocks) + "\nprint(tuple(y.shape), y.is_contiguous(memory_format=torch.channels_last))\n"
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "(32, 128, 28, 28) True"  # as the snippet's comment says
