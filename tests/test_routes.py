"""The two routes of a ⵟ call (`yat_triton._autograd`): an eager call runs the launchers
through an autograd.Function, without the dispatcher; torch.compile, torch.func, dispatch
modes and `registered_ops_only()` take the registered custom ops. Each route is checked
against the float64 oracle with the other one made to fail, so that the check also shows
which route ran."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import pytest
import test_conv
import test_dense
import torch
from oracle import to_oracle, yat_dense_ref
from tolerances import assert_close

import yat_triton.conv as conv
import yat_triton.dense as dense
from yat_triton import yat_conv2d, yat_linear
from yat_triton._autograd import YatOp, registered_ops_only

GEO = test_conv.OPTION_GEO  # 3x3, padding 1: the conv kernels, not the dense route of a 1x1


def fails(route: str):  # noqa: ANN201 - a stand-in for the route that must not run
    def call(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the {route} ran")

    return call


def cut(monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    """Make `route` ("registered ops" or "eager launchers") fail for both ops."""
    for module, name in ((dense, "DENSE"), (conv, "CONV2D")):
        op: YatOp = getattr(module, name)
        if route == "registered ops":
            op = dataclasses.replace(op, fwd_op=fails(route), bwd_op=fails(route))
        else:
            op = dataclasses.replace(op, fwd=fails(route), bwd=fails(route))
        monkeypatch.setattr(module, name, op)


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
    x, w = torch.randn(3, 4, 6, device=device), torch.randn(5, 6, device=device)
    with torch.no_grad():
        y = yat_linear(x, w)
    assert_close(y, yat_dense_ref(to_oracle(x), to_oracle(w)), torch.float32, reduction=6, what="y")
    assert y.grad_fn is None


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
def test_double_backward_is_refused_on_both_routes(op, route, device):
    """create_graph=True works on both routes; a second backward is refused by name."""
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


def test_vmap_takes_the_registered_ops(device, monkeypatch):
    """torch.func.vmap maps over the registered op (PyTorch's per-sample fallback): eager
    launchers would see batched tensors."""
    cut(monkeypatch, "eager launchers")
    x = torch.randn(3, 5, 8, device=device)
    w = torch.randn(4, 8, device=device)
    y = torch.func.vmap(lambda xi: yat_linear(xi, w))(x)
    assert_close(y, yat_dense_ref(to_oracle(x), to_oracle(w)), torch.float32, reduction=8, what="vmap y")


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
