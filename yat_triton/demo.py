"""A ⵟ-layer forward and backward against a float64 reference, on whatever this machine has.

    python -m yat_triton.demo

On a machine without CUDA the Triton kernels run through the Triton interpreter, so the
numbers are correct but the timings are not meaningful (TRITON_INTERPRET=0 runs the
plain-PyTorch path instead). `python -m` imports the package, and with it Triton's setting,
before this module runs: where the interpreter is wanted but was not set, the demo starts
again in a fresh process with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os
import sys
import time

import torch

import yat_triton
from kernels._common import INTERPRETING


def reference(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, eps: float
) -> torch.Tensor:
    """float64, distance formed directly as sum_k (x_k - w_k)^2 (no cancellation)."""
    u = x @ w.t() + b
    d = ((x[:, None, :] - w[None, :, :]) ** 2).sum(-1)
    return alpha * u * u / (d + eps)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        mode = "CUDA kernels"
    elif INTERPRETING:
        mode = "Triton interpreter on the CPU"
    else:  # TRITON_INTERPRET=0 given: the CPU path
        mode = "plain PyTorch on the CPU (TRITON_INTERPRET is off)"
    print(f"yat_triton {yat_triton.__version__}: {mode}, torch {torch.__version__}")
    torch.manual_seed(0)
    M, K, N = 64, 96, 80
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        layer = yat_triton.YatLinear(K, N, device=device)
        x = torch.randn(M, K, device=device)
        xq = x.to(dtype).requires_grad_()
        t0 = time.perf_counter()
        y = layer(xq)
        g = torch.randn_like(y)
        y.backward(g)
        elapsed = time.perf_counter() - t0

        xr, wr = (t.detach().double().requires_grad_() for t in (xq, layer.weight))
        yr = reference(xr, wr, layer.bias.detach().double(), layer.alpha.detach().double(), layer.epsilon)
        yr.backward(g.double())
        print(
            f"  {str(dtype):15s} y {tuple(y.shape)}: max rel. error fwd {rel_err(y, yr):.1e}, "
            f"dx {rel_err(xq.grad, xr.grad):.1e}, dW {rel_err(layer.weight.grad, wr.grad):.1e}"
            f"  ({elapsed * 1e3:.0f} ms)"
        )


if __name__ == "__main__":
    if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "yat_triton.demo", *sys.argv[1:]], env)
    main()
