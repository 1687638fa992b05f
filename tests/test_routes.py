"""The two routes of a ⵟ call (`yat_triton._autograd`): an eager call runs the launchers
through an autograd.Function, without the dispatcher; torch.compile, torch.func, dispatch
modes and `registered_ops_only()` take the registered custom ops. Each route is checked
against the float64 oracle with the other one made to fail, so that the check also shows
which route ran."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import warnings

import pytest
import test_conv
import test_dense
import torch
from oracle import to_oracle, yat_conv2d_ref, yat_dense_ref
from tolerances import assert_close

import yat_triton
import yat_triton.conv as conv
import yat_triton.dense as dense
from yat_triton import _autograd, yat_conv2d, yat_linear
from yat_triton._autograd import YatOp, registered_ops_only

GEO = test_conv.OPTION_GEO  # 3x3, padding 1: the conv kernels, not the dense route of a 1x1


def fails(route: str):  # noqa: ANN201 - a stand-in for the route that must not run
    def call(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the {route} ran")

    return call


CUTS = {
    "registered ops": ("fwd_op", "bwd_op"),
    "eager launchers": ("fwd", "bwd"),
    "registered forward": ("fwd_op",),
    "eager backward": ("bwd",),
}


def cut(monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    """Make `route` (a key of CUTS: what of YatOp it replaces) fail for both ops."""
    for module, name in ((dense, "DENSE"), (conv, "CONV2D")):
        op: YatOp = getattr(module, name)
        monkeypatch.setattr(module, name, dataclasses.replace(op, **{f: fails(route) for f in CUTS[route]}))


def check(op: str, dtype: torch.dtype, device: str, layer=None) -> None:  # noqa: ANN001
    """Forward and every gradient (bias, alpha and eps tensors) against the oracle."""
    if op == "dense":
        test_dense.check_against_oracle(
            test_dense.make_inputs((9,), 20, 24, dtype, device, seed=3), precision="ieee", layer=layer
        )
    else:
        test_conv.check_against_oracle(test_conv.make_inputs(GEO, dtype, device, seed=3), GEO, layer=layer)


OPS = ["dense", "conv2d"]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_eager_calls_skip_the_registered_ops(op, dtype, device, monkeypatch):
    cut(monkeypatch, "registered ops")
    check(op, dtype, device)
    with registered_ops_only(), pytest.raises(AssertionError, match="the registered ops ran"):
        check(op, dtype, device)


def test_inference_runs_the_launcher_alone(device, monkeypatch):
    """No gradient wanted: the forward launcher, no autograd.Function and no registered op."""
    cut(monkeypatch, "registered ops")
    monkeypatch.setattr(_autograd._EagerFunction, "apply", fails("autograd.Function"))
    x, w = torch.randn(3, 4, 6, device=device), torch.randn(5, 6, device=device)
    with torch.no_grad():
        y = yat_linear(x, w)
    assert_close(y, yat_dense_ref(to_oracle(x), to_oracle(w)), torch.float32, reduction=6, what="y")
    with pytest.raises(AssertionError, match="the autograd.Function ran"):
        yat_linear(x, w.requires_grad_())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_registered_ops_route(op, dtype, device, monkeypatch):
    cut(monkeypatch, "eager launchers")
    with registered_ops_only():
        check(op, dtype, device)
    with pytest.raises(AssertionError, match="the eager launchers ran"):
        check(op, dtype, device)


@pytest.mark.parametrize("route", ["eager", "registered ops"])
@pytest.mark.parametrize("op", OPS)
def test_double_backward_is_refused_on_both_routes(op, route, device, monkeypatch):
    """create_graph=True works on both routes (the eager one runs its backward through the
    registered backward op then); a second backward is refused by name."""
    cut(monkeypatch, "registered forward" if route == "eager" else "eager launchers")
    with registered_ops_only() if route == "registered ops" else contextlib.nullcontext():
        x = torch.randn(2, 4, 5, 6, device=device, requires_grad=True)
        if op == "dense":
            name, y = "yat_linear", yat_linear(x, torch.randn(3, 6, device=device))
        else:
            name, y = "yat_conv2d", yat_conv2d(x, torch.randn(2, 4, 3, 3, device=device), padding=1)
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    assert torch.isfinite(gx).all() and gx.requires_grad
    with pytest.raises(RuntimeError, match=f"{name}: its gradients are not differentiable .first order only"):
        gx.sum().backward()


def test_batched_gradients_take_the_registered_backward(device, monkeypatch):
    """is_grads_batched (also jacobian(vectorize=True), gradcheck's batched check) maps the
    backward over a batch of upstream gradients: the eager forward's backward hands those
    to the registered op, which the dispatcher maps over. Each row against the oracle."""
    cut(monkeypatch, "eager backward")
    x = torch.randn(3, 6, device=device, requires_grad=True)
    w = torch.randn(4, 6, device=device, requires_grad=True)
    y = yat_linear(x, w)
    v = torch.randn(5, *y.shape, device=device)
    gx, gw = torch.autograd.grad(y, (x, w), v, is_grads_batched=True, retain_graph=True)
    x64, w64 = to_oracle(x, requires_grad=True), to_oracle(w, requires_grad=True)
    y64 = yat_dense_ref(x64, w64)
    for i in range(5):
        rx, rw = torch.autograd.grad(y64, (x64, w64), to_oracle(v[i]), retain_graph=True)
        assert_close(gx[i], rx, torch.float32, reduction=4, what=f"dx[{i}]")
        assert_close(gw[i], rw, torch.float32, reduction=3, what=f"dW[{i}]")
    with pytest.raises(AssertionError, match="the eager backward ran"):  # unbatched: the eager one
        y.backward(v[0])


def test_jit_trace_records_the_registered_op(device, monkeypatch):
    """torch.jit.trace cannot see Triton launches: it records the registered op, whose graph
    then replays on new inputs."""
    cut(monkeypatch, "eager launchers")
    w = torch.randn(4, 6, device=device)
    # check_trace=False: its check reruns the function untraced, on the (cut) eager route
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
        traced = torch.jit.trace(
            lambda a: yat_linear(a, w), (torch.randn(3, 6, device=device),), check_trace=False
        )
    assert "yat_triton::dense_fwd" in str(traced.graph)
    x = torch.randn(5, 6, device=device)
    assert_close(traced(x), yat_dense_ref(to_oracle(x), to_oracle(w)), torch.float32, reduction=6, what="y")


@pytest.mark.parametrize("op", ["dense", "conv2d"])
def test_jit_trace_of_a_module_checks_and_trains(device, op):
    """A module traces with torch.jit.trace's own check on (it reruns the module under
    no_grad and compares the graphs), and a module traced under no_grad still trains: the
    traced graph saves for the backward whatever grad mode it was traced in."""
    torch.manual_seed(0)
    if op == "dense":
        layer, x = yat_triton.YatLinear(6, 4, device=device), torch.randn(3, 6, device=device)
    else:
        layer, x = (
            yat_triton.YatConv2d(3, 4, 3, padding=1, device=device),
            torch.randn(2, 3, 5, 5, device=device),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
        checked = torch.jit.trace(layer, (x,))
        with torch.no_grad():
            inference_traced = torch.jit.trace(layer, (x,))
    assert f"yat_triton::{op}_fwd" in str(checked.graph)
    w64, b64, x64 = to_oracle(layer.weight, requires_grad=True), to_oracle(layer.bias), to_oracle(x)
    if op == "dense":
        y64 = yat_dense_ref(x64, w64, b64, alpha=to_oracle(layer.alpha))
    else:
        y64 = yat_conv2d_ref(x64, w64, b64, padding=(1, 1), alpha=to_oracle(layer.alpha))
    (gw64,) = torch.autograd.grad(y64.sum(), w64)
    for traced in (checked, inference_traced):
        layer.zero_grad()
        y = traced(x)
        assert_close(y, y64, torch.float32, reduction=6 if op == "dense" else 27, what="y")
        y.sum().backward()
        assert_close(layer.weight.grad, gw64, torch.float32, reduction=3 * 8, what="dW")


def test_registered_ops_only_is_per_thread_and_nests():
    """The forced route holds in the thread that asked for it, for as long as its outermost
    block is open, whatever other threads enter and leave meanwhile."""
    assert yat_triton.registered_ops_only is registered_ops_only  # public
    seen: dict[str, bool] = {}
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with registered_ops_only():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b() -> None:
        a_in.wait(5)
        with registered_ops_only():
            b_in.set()
            a_out.wait(5)
            seen["b inside, after a left"] = _autograd.eager()
            with registered_ops_only():
                pass
            seen["b inside, after a nested block"] = _autograd.eager()
        seen["b after"] = _autograd.eager()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    a_in.wait(5)
    seen["main, while a is inside"] = _autograd.eager()
    for t in threads:
        t.join(10)
    assert seen == {"main, while a is inside": True, "b inside, after a left": False,
                    "b inside, after a nested block": False, "b after": True}  # fmt: skip
    assert _autograd.eager()


@pytest.mark.parametrize("op", OPS)
def test_forward_mode_ad_is_refused_by_name(op, device):
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(2, 4, 5, 6, device=device)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        name = "yat_linear" if op == "dense" else "yat_conv2d"
        with pytest.raises(NotImplementedError, match=f"{name}: forward-mode AD .* is not supported"):
            if op == "dense":
                yat_linear(dual, torch.randn(3, 6, device=device))
            else:
                yat_conv2d(dual, torch.randn(2, 4, 3, 3, device=device))
        assert yat_linear(x, torch.randn(3, 6, device=device)).shape == (2, 4, 5, 3)  # no tangent: fine


@pytest.mark.parametrize("route", ["eager", "registered ops"])
def test_pointwise_conv_output_takes_in_place_ops(route, device):
    """A 1x1 channels_last conv runs on the dense kernel; its y is the conv's own tensor,
    not a view of the dense output, so in-place ops on it work, gradients included."""
    x = torch.randn(2, 6, 3, 5, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 6, 1, 1, device=device, requires_grad=True)
    with registered_ops_only() if route == "registered ops" else contextlib.nullcontext():
        y = yat_conv2d(x, w)
    assert y.is_contiguous(memory_format=torch.channels_last) and y._base is None
    y.mul_(2.0)
    g = torch.randn_like(y)
    y.backward(g)
    x64, w64 = to_oracle(x, requires_grad=True), to_oracle(w, requires_grad=True)
    y64 = 2.0 * yat_conv2d_ref(x64, w64, None, None, 1e-5, 1, 0, 1, 1)
    rx, rw = torch.autograd.grad(y64, (x64, w64), to_oracle(g))
    assert_close(y, y64, torch.float32, reduction=6, what="y")
    assert_close(x.grad, rx, torch.float32, reduction=4, what="dx")
    assert_close(w.grad, rw, torch.float32, reduction=30, what="dW")


def test_vmap_takes_the_registered_ops(device, monkeypatch):
    """torch.func.vmap maps over the registered op (PyTorch's per-sample fallback): eager
    launchers would see batched tensors."""
    cut(monkeypatch, "eager launchers")
    x = torch.randn(3, 5, 8, device=device)
    w = torch.randn(4, 8, device=device)
    y = torch.func.vmap(lambda xi: yat_linear(xi, w))(x)
    assert_close(y, yat_dense_ref(to_oracle(x), to_oracle(w)), torch.float32, reduction=8, what="vmap y")


def test_vmap_over_an_eps_tensor(device):
    """vmap over eps (an ensemble of layers, each its own eps): the host check of a CPU eps
    tensor's value does not read a batched tensor (which it cannot)."""
    x, w = torch.randn(5, 8, device=device), torch.randn(4, 8, device=device)
    eps = torch.tensor([[0.5], [2.0]], device=device)
    y = torch.func.vmap(lambda e: yat_linear(x, w, eps=e))(eps)
    for i, e in enumerate((0.5, 2.0)):
        ref = yat_dense_ref(to_oracle(x), to_oracle(w), eps=e)
        assert_close(y[i], ref, torch.float32, reduction=8, what=f"vmap y (eps={e})")


@pytest.mark.parametrize("op", OPS)
def test_compile_traces_the_registered_ops(op, monkeypatch, request):
    """torch.compile (fullgraph, so a graph break fails) traces the registered ops, never the
    eager launchers: checked on the CPU's plain-PyTorch path (AOTAutograd with eager
    kernels), as the Triton kernels trace only on a GPU (test_dense / test_conv)."""
    request.getfixturevalue("torch_path_both")
    cut(monkeypatch, "eager launchers")
    torch._dynamo.reset()
    layer = torch.compile(yat_linear if op == "dense" else yat_conv2d, fullgraph=True, backend="aot_eager")
    check(op, torch.float32, "cpu", layer=layer)


@pytest.fixture
def torch_path_both(monkeypatch):  # noqa: ANN001, ANN201
    """The plain-PyTorch implementation for both ops (CPU tensors)."""
    monkeypatch.setattr(dense, "use_triton", lambda t: False)
    monkeypatch.setattr(conv, "use_triton", lambda t: False)


def test_hostcost_times_both_routes(capsys):  # noqa: ANN001
    """`yat-autotune hostcost`: per op and mode, each route's host time per call (on a CPU
    the launches are stubbed out and the standard layers left out); --reps 0 is refused."""
    from autotune import cli

    assert cli.main(["hostcost", "--reps", "2", "--json"]) == 0
    rows = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    providers = ["yat_triton (eager)", "yat_triton (registered)"]
    if torch.cuda.is_available():
        providers += ["linear+relu", "conv+relu"]
    assert {(r["op"], r["mode"]) for r in rows} == {(o, m) for o in OPS for m in ("fwd", "fwd+bwd")}
    assert {r["provider"] for r in rows} == set(providers) and all(r["us"] > 0 for r in rows)
    assert len(rows) == 4 * (2 + torch.cuda.is_available())
    with pytest.raises(SystemExit):
        cli.main(["hostcost", "--reps", "0"])
    assert "--reps: 0 is not a whole number >= 1" in capsys.readouterr().err


def test_hostcost_tile_takes_the_tma_paths(capsys, monkeypatch):  # noqa: ANN001
    """`hostcost --tile ...:tma` plans every op on that tile: the TMA kernels are the ones
    planned (the interpreter's default tiles never take them), and the rows say so."""
    from autotune import cli, hostcost
    from yat_triton._launch import recording

    planned: dict[str | None, set[str]] = {}

    def record(tile: str | None) -> None:
        def per_call_us(fn, reps):  # noqa: ANN001, ANN202
            with recording() as calls:
                fn()
            planned.setdefault(tile, set()).update(c.kernel.fn.__name__ for c in calls)
            return 1.0

        monkeypatch.setattr(hostcost, "per_call_us", per_call_us)
        args = ["hostcost", "--json"] + (["--tile", tile] if tile else [])
        assert cli.main(args) == 0

    record("128x128x32:8:3:tma")
    rows = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert {r["tiles"] for r in rows} == {"m128n128k32g8w8s3_tma forced"}
    tma = {"yat_dense_fwd_tma_kernel", "yat_dense_bwd_gemm_tma_kernel", "yat_conv_fwd_tma_kernel"}
    assert tma <= planned["128x128x32:8:3:tma"]
    if not torch.cuda.is_available():
        record(None)
        assert {r["tiles"] for r in map(json.loads, capsys.readouterr().out.splitlines())} == {
            "tuned or heuristic"
        }
        assert not tma & planned[None]
    with pytest.raises(SystemExit):
        cli.main(["hostcost", "--tile", "128x128"])
    assert "is not a tile" in capsys.readouterr().err
