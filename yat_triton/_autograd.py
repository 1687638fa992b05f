"""The autograd of the ⵟ ops, shared by dense and conv.

Both forward ops take (x, weight, bias, alpha, alpha_value, eps, eps_value, *extra, save)
and return (y, s, nx, nw); both backward ops take (grad, x, weight, bias, alpha,
alpha_value, eps, eps_value, s, nx, nw, *extra, needs) and return (dx, dW, db, dalpha, deps),
`extra` being the op's own non-tensor arguments in the same order.

Two routes to the same launchers: the registered custom ops (`register_yat_autograd`),
which torch.compile, export, fake tensors, dispatch modes and torch.func see, and, for a
plain eager call, `YatOp`'s autograd.Function that calls the launchers directly. The
dispatcher's custom-op machinery costs more host time per call than a launcher itself
(measured by `python -m autotune.hostcost`), and a small layer trained eagerly is bound
by host time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad
from torch import Tensor
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from yat_triton._launch import PLAIN_TYPES

GRAD_SLOTS = (0, 1, 2, 3, 5)  # x, weight, bias, alpha, eps among the forward's inputs


def _gradients(
    needs: list[bool], grads: tuple[Tensor, ...], n_inputs: int, offset: int = 0
) -> tuple[Tensor | None, ...]:
    """The backward's return: each needed gradient in its input's slot, None elsewhere."""
    out: list[Tensor | None] = [None] * n_inputs
    for slot, needed, grad in zip(GRAD_SLOTS, needs, grads, strict=True):
        out[offset + slot] = grad if needed else None
    return tuple(out)


def register_yat_autograd(fwd_op: Any, bwd_op: Any, caller: str) -> None:
    """Register `bwd_op` as the backward of `fwd_op` (a torch.library custom op)."""

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        x, weight, bias, alpha, alpha_value, eps, eps_value, *extra, save = inputs
        _, s, nx, nw = output
        ctx.save_for_backward(x, weight, bias, alpha, eps, s, nx, nw)
        ctx.scalars, ctx.extra, ctx.saved_s, ctx.n_inputs = (alpha_value, eps_value), extra, save, len(inputs)
        ctx.mark_non_differentiable(s, nx, nw)

    def backward(ctx: Any, grad_y: Tensor, *_unused: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.saved_s:
            raise RuntimeError(
                f"{fwd_op} ran with save_for_backward=False; call it with "
                f"save_for_backward=True ({caller} does so whenever grad mode needs it)"
            )
        x, weight, bias, alpha, eps, s, nx, nw = ctx.saved_tensors
        alpha_value, eps_value = ctx.scalars
        needs = [ctx.needs_input_grad[i] for i in GRAD_SLOTS]
        grads = bwd_op(
            grad_y, x, weight, bias, alpha, alpha_value, eps, eps_value, s, nx, nw, *ctx.extra, needs
        )
        return _gradients(needs, grads, ctx.n_inputs)

    def no_double_backward(ctx: Any, *_grads: Tensor) -> tuple[None, ...]:
        raise RuntimeError(
            f"{caller}: its gradients are not differentiable (first order only): a second "
            "backward through them (create_graph=True then backward, gradgradcheck, gradient "
            "penalties) is not supported"
        )

    # The backward op's outputs are first-order gradients; differentiating them says so.
    bwd_op.register_autograd(no_double_backward, setup_context=lambda ctx, inputs, output: None)
    fwd_op.register_autograd(backward, setup_context=setup_context)


# private torch helpers, with what to assume where a torch version lacks them
_interpreters = getattr(torch._C._functorch, "peek_interpreter_stack", lambda: None)
_legacy_batched = getattr(torch._C._functorch, "is_legacy_batchedtensor", lambda t: False)


class _Routes(threading.local):
    forced = 0  # depth of registered_ops_only blocks open in this thread


_ROUTES = _Routes()


@contextlib.contextmanager
def registered_ops_only() -> Iterator[None]:
    """Inside the block, in this thread, every call takes the registered custom ops, as
    traced code does: to test and time that route eagerly (`autotune.hostcost`)."""
    _ROUTES.forced += 1
    try:
        yield
    finally:
        _ROUTES.forced -= 1


def eager(*tensors: Tensor | None) -> bool:
    """Whether a call may skip the dispatcher: plain eager PyTorch on plain tensors.
    torch.compile's trace (checked first, and folded to a constant there, so the trace never
    reaches the other checks), torch.jit.trace, a dispatch mode (fake tensors, make_fx,
    opcheck, FlopCounterMode), a torch.func transform (vmap, grad), batched gradients
    (`is_grads_batched`, jacobian(vectorize=True)) and tensor subclasses take the registered
    ops."""
    if torch.compiler.is_compiling() or _ROUTES.forced or torch.jit.is_tracing():
        return False
    if is_in_torch_dispatch_mode() or _interpreters() is not None:
        return False
    return all(t is None or (type(t) in PLAIN_TYPES and not _legacy_batched(t)) for t in tensors)


def refuse_forward_ad(caller: str, *tensors: Tensor | None) -> None:
    """Forward-mode AD has no rule here: a dual input is refused by name instead of giving a
    tangent-less output (a cheap check: a module global, unless a dual level is open)."""
    if getattr(forward_ad, "_current_level", 0) >= 0 and any(
        t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors
    ):
        raise NotImplementedError(
            f"{caller}: forward-mode AD (torch.autograd.forward_ad, torch.func.jvp) is not supported; "
            "use reverse mode (backward / torch.autograd.grad)"
        )


def _op_form(value: Any) -> Any:
    """A registered op's schema takes int[] where the launchers take tuples."""
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class YatOp:
    """A ⵟ layer's forward, by the cheapest route that is correct for the call: the
    launchers themselves when `eager` allows (an autograd.Function around them where a
    gradient is needed), the registered custom ops otherwise."""

    fwd_op: Any
    bwd_op: Any
    fwd: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]]
    bwd: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor, Tensor]]
    caller: str  # the public function, for messages

    def __call__(
        self, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Tensor | None, alpha_value: float,
        eps: Tensor | None, eps_value: float, *extra: Any,
    ) -> Tensor:  # fmt: skip
        """y of the forward; s is saved for the backward where a gradient can be asked for.
        torch.jit.trace fixes that choice in its graph as a constant, so a traced call always
        saves: its graph then serves calls with and without grad (trace's own check reruns
        the function under no_grad and compares the graphs)."""
        args = (x, weight, bias, alpha, alpha_value, eps, eps_value)
        tensors = (x, weight, bias, alpha, eps)
        refuse_forward_ad(self.caller, *tensors)
        save = torch.jit.is_tracing() or (
            torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        )
        if not eager(*tensors):
            return self.fwd_op(*args, *map(_op_form, extra), save)[0]
        if not save:
            return self.fwd(*args, *extra, False)[0]
        return _EagerFunction.apply(self, extra, *args)


class _EagerFunction(torch.autograd.Function):
    """The forward and backward launchers without the dispatcher, for eager calls (`YatOp`).
    Saves what the registered op's autograd saves; a backward that builds a graph
    (create_graph=True) runs the registered backward op, whose own backward refuses a
    second order with the same error as the op route."""

    @staticmethod
    def forward(ctx: Any, op: YatOp, extra: tuple[Any, ...], *args: Any) -> Tensor:
        x, weight, bias, alpha, alpha_value, eps, eps_value = args
        y, s, nx, nw = op.fwd(*args, *extra, True)
        ctx.save_for_backward(x, weight, bias, alpha, eps, s, nx, nw)
        ctx.op, ctx.extra, ctx.scalars = op, extra, (alpha_value, eps_value)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, bias, alpha, eps, s, nx, nw = ctx.saved_tensors
        alpha_value, eps_value = ctx.scalars
        needs = [ctx.needs_input_grad[2 + i] for i in GRAD_SLOTS]
        args = (grad_y, x, weight, bias, alpha, alpha_value, eps, eps_value, s, nx, nw)
        # create_graph: the op route, which refuses a second order; batched gradients and
        # the like: the op route, which the dispatcher maps over
        if torch.is_grad_enabled() or not eager(grad_y):
            grads = ctx.op.bwd_op(*args, *map(_op_form, ctx.extra), needs)
        else:
            grads = ctx.op.bwd(*args, *ctx.extra, needs)
        return _gradients(needs, grads, 2 + 7, offset=2)
