"""Host time of one ⵟ layer call: what Python spends before the GPU has the kernels.

    python -m autotune.hostcost [--reps N] [--tile TILE] [--json]

Tiny problems (dense 64x128 -> 96, conv 2x16x8x8 -> 32 with a 3x3 filter), so that the
device keeps ahead of the host: the wall time per call of a loop of calls, synchronized
once at the end, is the host's. Each op is timed in inference (`fwd`, no gradient) and
training (`fwd+bwd`, every gradient), on both routes of `yat_triton._autograd`: `eager`
(the launchers inside an autograd.Function, what an eager call takes) and `registered`
(the custom ops, what traced code and torch.func run).

On a GPU the kernels launch for real, so Triton's launch cost is in the times, and the
standard layers (linear+relu, conv+relu) are timed the same way. Without one, every kernel
launch is a no-op (`KernelCall.run` stubbed): the times are the launchers' Python alone,
and the standard layers are left out (they would compute on the CPU).

`--tile` (as `autotune.inspect --config` writes one, e.g. 128x128x32:8:3:tma) forces that
tile on every launch of both ops, fitted to each as a tuned tile is (one that cannot fit a
launch leaves it on its default, as there: in fp32, the CPU's dtype, 128x128x64 with 4
stages does not fit sm_90's shared memory). Without a GPU, this is how the TMA paths'
planning (descriptors, alignment checks) is timed, which the interpreter's default tiles
never take.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from unittest import mock

import torch

# Without a GPU the launchers run under the interpreter's settings (decided at Triton's import)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
from tabulate import tabulate  # noqa: E402

from autotune.inspect import TILE_FORMAT, parse_tile  # noqa: E402
from autotune.timing import on_gpu  # noqa: E402
from yat_triton import yat_conv2d, yat_linear  # noqa: E402
from yat_triton._autograd import registered_ops_only  # noqa: E402
from yat_triton._launch import KernelCall  # noqa: E402
from yat_triton.tuning import forced_config  # noqa: E402

ROUTES = {"eager": contextlib.nullcontext, "registered": registered_ops_only}


def per_call_us(fn: Callable[[], object], reps: int) -> float:
    """The fastest of 7 loops of `reps` calls, as wall time per call (µs), synchronized at
    the end of each loop: the host's cost is a floor that noise (other processes, a shared
    machine) only adds to."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(max(3, reps // 10)):
        fn()
    sync()
    best = math.inf
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) / reps * 1e6)
    return best


def problems(
    device: str,
) -> Iterator[tuple[str, Callable[..., torch.Tensor], Callable[..., torch.Tensor], tuple]]:
    """(op, the ⵟ call, its standard layer, the tensors) per op, bf16 on a GPU, fp32 otherwise."""
    dtype = torch.bfloat16 if on_gpu() else torch.float32
    gen = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype).requires_grad_()

    yield (
        "dense",
        yat_linear,
        lambda x, w, b: F.relu(F.linear(x, w, b)),
        (draw(64, 128), draw(96, 128), draw(96)),
    )
    x = draw(2, 16, 8, 8).detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = (x, draw(32, 16, 3, 3), draw(32))
    yield (
        "conv2d",
        lambda x, w, b: yat_conv2d(x, w, b, padding=1),
        lambda x, w, b: F.relu(F.conv2d(x, w, b, padding=1)),
        conv,
    )


def modes(
    layer: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...]
) -> list[tuple[str, Callable]]:
    """The inference call (no gradient) and the training call (forward, every gradient)."""

    def infer() -> object:
        with torch.no_grad():
            return layer(*tensors)

    g = torch.ones_like(infer())

    def train() -> object:
        return torch.autograd.grad(layer(*tensors), tensors, g)

    return [("fwd", infer), ("fwd+bwd", train)]


def measure(reps: int) -> list[dict[str, object]]:
    """Every (op, mode, provider) row: µs per call."""
    rows = []
    for op, ours, standard, tensors in problems("cuda" if on_gpu() else "cpu"):
        for route, context in ROUTES.items():
            with context():
                for mode, fn in modes(ours, tensors):
                    us = per_call_us(fn, reps)
                    rows.append({"op": op, "mode": mode, "provider": f"yat_triton ({route})", "us": us})
        if on_gpu():
            name = "linear+relu" if op == "dense" else "conv+relu"
            for mode, fn in modes(standard, tensors):
                rows.append({"op": op, "mode": mode, "provider": name, "us": per_call_us(fn, reps)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="calls per timed loop (default 200)")
    parser.add_argument(
        "--tile",
        type=parse_tile,
        help=f"force this tile ({TILE_FORMAT}) on every launch, fitted to it (default: tuned or heuristic)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line (instead of the table)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps: {args.reps} is not a whole number >= 1")
    with contextlib.ExitStack() as stack:
        if not on_gpu():  # the launchers' Python alone: no interpreted kernels
            stack.enter_context(mock.patch.object(KernelCall, "run", lambda self: None))
        if args.tile is not None:
            for op in ("dense", "conv2d"):
                for mode in ("fwd", "bwd"):
                    stack.enter_context(forced_config(op, mode, args.tile))
        rows = measure(args.reps)
    tile = "tuned or heuristic" if args.tile is None else f"{args.tile.name} forced"
    for r in rows:
        r["tiles"] = tile
    if args.json:
        print("\n".join(json.dumps(r) for r in rows))
        return 0
    where = (
        f"{torch.cuda.get_device_name()}: kernels launched"
        if on_gpu()
        else "no GPU: kernel launches stubbed out, the launchers' Python alone"
    )
    print(f"host time per call, {where} (torch {torch.__version__}; tiles: {tile})")
    table = [[r["op"], r["mode"], r["provider"], f"{r['us']:.1f}"] for r in rows]
    print(tabulate(table, headers=["op", "mode", "provider", "µs per call"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
