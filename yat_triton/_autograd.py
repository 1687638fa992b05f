"""The autograd of the ⵟ ops, shared by dense and conv.

Both forward ops take (x, weight, bias, alpha, alpha_value, eps, eps_value, *extra, save)
and return (y, s, nx, nw); both backward ops take (grad, x, weight, bias, alpha,
alpha_value, eps, eps_value, s, nx, nw, *extra, needs) and return (dx, dW, db, dalpha, deps),
`extra` being the op's own non-tensor arguments in the same order.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

GRAD_SLOTS = (0, 1, 2, 3, 5)  # x, weight, bias, alpha, eps among the forward's inputs


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
        out: list[Tensor | None] = [None] * ctx.n_inputs
        for slot, needed, grad in zip(GRAD_SLOTS, needs, grads, strict=True):
            out[slot] = grad if needed else None
        return tuple(out)

    def no_double_backward(ctx: Any, *_grads: Tensor) -> tuple[None, ...]:
        raise RuntimeError(
            f"{caller}: its gradients are not differentiable (first order only): a second "
            "backward through them (create_graph=True then backward, gradgradcheck, gradient "
            "penalties) is not supported"
        )

    # The backward op's outputs are first-order gradients; differentiating them says so.
    bwd_op.register_autograd(no_double_backward, setup_context=lambda ctx, inputs, output: None)
    fwd_op.register_autograd(backward, setup_context=setup_context)
