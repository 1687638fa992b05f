"""Where the time of one ⵟ op goes: every kernel a forward and a backward launch, timed on
its own, next to the whole launcher call and the standard layer it replaces.

    python -m autotune.breakdown [--dtype bfloat16] [--dense M N K] [--conv B C_IN HW C_OUT K] [--tma]
                                 [--more-conv B C_IN HW C_OUT K ...] [--small M]

For each op: the forward as training runs it (s saved for backward) and the backward with
every gradient; per kernel its grid, median time and share of the phase. "launcher" is the
whole call (kernels, torch glue such as partial-sum reductions, launch gaps); the references
are cuBLAS `x @ W^T`, `linear+relu`, and cuDNN's conv alone and `conv+relu` (channels_last)
at the same shape. Phase "fwd-gemm" (every op, after the references, or for a conv layer
after its split-tail phases): the inference forward's GEMM kernel again with GEMM_ONLY,
storing its accumulator without the ⵟ math (`gemm_only_lines`): what that math (norms
summed in the kernel, the epilogue) costs, and the GEMM's own speed against cuBLAS's and
cuDNN's; with --tma, ops "dense-tma-wide" and "dense-tma-k128" (16-bit io): the inference
forward and its GEMM alone on other tile shapes (PROBE_TILES).
Phase "fwd-infer": the dense forward as inference runs it (nothing saved for backward).
On a GPU whose forwards overlap their norm pass (`yat_triton._launch.overlap_norm_pass`):
"fwd-infer-nopdl" (dense), "fwd-nopdl" (dense-tma, conv2d), the same calls without it;
"fwd-infer-pdl1", "fwd-pdl1", with it on one pass program an SM (`pass_beside_gemm`).
Phase "bwd-prep": the backward's elementwise (prep) kernel again at other blocks (PREP_BLOCKS);
"fwd-normpass": the forward's row-norm pass again at other blocks (NORM_BLOCKS);
"fwd-maxnreg": the dense forward kernel again under register caps (FWD_MAXNREG); "fwd-store":
the conv forward kernel again storing through pointers where it stores by TMA; with --tma,
op "dense-tma-ws": the forward and the backward on warp-specialized tiles
(`dense_ws_lines`; the newest compiler path, after every other phase of the 4096^3 and conv
problems). Order: the dense op's and the --conv layer's core phases, each --more-conv
layer's (another conv layer, its lines named by its shape), then the first two groups'
extras (`PARTS`: the "-nopdl" and "-pdl1" phases, "dense-tma-xnorms", "fwd-nchw-w",
"fwd-norms", "fwd-store", the register caps, the prep and norm-pass blocks, variants an
earlier run measured), so that a time cap cuts those first. For each conv layer whose
default tile's grid leaves a partial last wave, phases "fwd-plain" and "fwd-split": that
tile's forward without and with `split_tail` (and "bwd-plain", "bwd-split" where the input
gradient's grid does, `split_lines`); last, op "dense-small": a small batch's inference
forward, its norms both ways (16-bit io: from the pass only, `broken_in_loop_norms`),
next to linear+relu (`small_batch_lines`, --small; no SPEC target depends on it).
First of all, op "memory": a device copy (`copy_line`), whose bytes over its time are the
memory bandwidth the report's roofline draws as its memory roof.
On a GPU times come from `autotune.timing` (do_bench of the call captured as a CUDA graph,
median, L2 flushed; per phase also the whole call as an eager loop runs it); without one
the kernels run once through the Triton interpreter and the times are NOT REPRESENTATIVE.
A phase that raises is left out (`left_out`: said on stderr, exit status 1) and the rest
measured; a failure that lost the CUDA context stops the run (exit status 3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import torch

# Without a GPU the kernels run through the interpreter, which Triton decides when it is
# first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402
from tabulate import tabulate  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402

from autotune.args import positive_int  # noqa: E402
from autotune.inspect import add_conv_argument, gemm_only_call  # noqa: E402
from autotune.report import GEMM_ONLY_SUFFIX, GEMM_REFS, copy_bandwidth  # noqa: E402
from autotune.sweep import environment  # noqa: E402
from autotune.timing import (  # noqa: E402
    ContextLost,
    back_to_back_ms,
    bench_stream,
    context_lost,
    replay_back_to_back_ms,
    time_call,
)
from kernels._common import INTERPRETING, TileConfig, pair_per_sm  # noqa: E402
from kernels.dense import broken_in_loop_norms  # noqa: E402
from yat_triton._launch import KernelCall, WarpSpecializationFallback, recording  # noqa: E402

REPRESENTATIVE = torch.cuda.is_available() and not INTERPRETING


@dataclass
class Line:
    """One timed item: a kernel of a phase ("fwd", "bwd"), the whole launcher call, or a
    standard layer ("ref"). gpu / dtype / shape are filled in by `main`."""

    op: str
    phase: str
    what: str
    grid: str
    us: float
    share: float | None = None
    gpu: str = ""
    dtype: str = ""
    shape: str = ""


def time_us(fn: Callable[[], object]) -> float:
    """Median microseconds (`autotune.timing.time_call`: on a GPU the call captured as a CUDA
    graph; one wall-clock run otherwise)."""
    return time_call(fn).median_ms * 1e3


def call_line(op: str, phase: str, what: str, call: KernelCall) -> Line:
    """One recorded kernel launch timed on its own, with the grid it launches."""
    return Line(op, phase, what, "x".join(map(str, call.launch_grid())), time_us(call.run))


# Exit status of a breakdown stopped by a lost CUDA context (`ContextLost`).
CONTEXT_LOST_EXIT = 3
_FAILED: list[str] = []  # the phases of this run that raised and were left out (main's status)


def _context_probe(e: Exception) -> str:
    """`autotune.timing.context_lost` after the failure `e`, where CUDA is in use ("" for an
    out-of-memory error, which leaves the context working)."""
    if isinstance(e, torch.OutOfMemoryError) or not (
        torch.cuda.is_available() and torch.cuda.is_initialized()
    ):
        return ""
    return context_lost("cuda")


def left_out(what: str, e: Exception) -> list[Line]:
    """A phase (or group of phases) that raised: no lines, said on stderr and in main's exit
    status, so that the phases after it are still measured (a TMA variant failing on its
    first hardware run costs its own lines, not the conv's); `ContextLost` where the
    failure lost the CUDA context."""
    reason = f"{type(e).__name__}: {e}"[:500]
    lost = _context_probe(e)
    if lost:
        raise ContextLost(f"{what} failed and lost the CUDA context ({reason}; a probe then: {lost[:200]})")
    print(f"breakdown: {what}: not timed ({reason})", file=sys.stderr, flush=True)
    _FAILED.append(what)
    return []


def guarded(what: str, measure: Callable[[], list[Line]]) -> list[Line]:
    """measure(), or, where it raises, no lines (`left_out`; a warp-specialization fallback
    is raised as it is, for `dense_ws_lines`)."""
    try:
        return measure()
    except WarpSpecializationFallback:
        raise
    except Exception as e:  # noqa: BLE001 - said and counted by left_out
        return left_out(what, e)


def phase_lines(op: str, phase: str, launcher: Callable[[], object]) -> list[Line]:
    """`measure_phase`, guarded (`guarded`)."""
    return guarded(f"{op} {phase}", lambda: measure_phase(op, phase, launcher))


def without_overlap(launcher: Callable[[], object]) -> Callable[[], object]:
    """`launcher` with its forward GEMM launched after its norm pass ends, as any launch
    (no programmatic dependent launch: `yat_triton._launch.overlap_norm_pass`), for the
    "-nopdl" phases: their whole call against the phase's own is what the overlap buys."""
    from yat_triton._launch import forced_overlap

    def run() -> object:
        with forced_overlap(False):
            return launcher()

    return run


def pass_beside_gemm(launcher: Callable[[], object]) -> Callable[[], object]:
    """`launcher` with its overlapped norm pass on one program an SM
    (`yat_triton._launch.OVERLAP_NORM_PROGRAMS_PER_SM` = 1), which leaves the GEMM's programs
    room from the start: the "-pdl1" phases."""
    import yat_triton._launch as launch_mod

    def run() -> object:
        with mock.patch.object(launch_mod, "OVERLAP_NORM_PROGRAMS_PER_SM", 1):
            return launcher()

    return run


def overlaps(device: str) -> bool:
    """Whether the forwards on `device` overlap their norm pass (the "-nopdl" phases are
    timed only there: elsewhere they would repeat their phase)."""
    from yat_triton._launch import overlap_norm_pass

    return overlap_norm_pass(torch.device(device))


def measure_phase(op: str, phase: str, launcher: Callable[[], object]) -> list[Line]:
    """Run the launcher once recording its kernels, then time each kernel and the whole
    call (graph replays, L2 flushed), and the whole call in two loops of calls back to back
    (`autotune.timing.back_to_back_ms`, L2 as warm in both): eagerly, and as its graph's
    replay (on a GPU). "launcher (eager, back to back)" minus "launcher (graph, back to
    back)" is what the host's launching adds where it cannot keep ahead of the GPU."""
    with recording() as calls:
        launcher()
    lines = [
        call_line(op, phase, getattr(c.kernel, "__name__", None) or c.kernel.fn.__name__, c) for c in calls
    ]
    total = time_us(launcher)
    for line in lines:
        line.share = line.us / total if total else None
    out = [*lines, Line(op, phase, "launcher (whole call)", "-", total, 1.0)]
    for how, ms in (("eager", back_to_back_ms(launcher)), ("graph", replay_back_to_back_ms(launcher))):
        if ms is not None:
            us, what = ms * 1e3, f"launcher ({how}, back to back)"
            out.append(Line(op, phase, what, "-", us, us / total if total else None))
    return out


# Elementwise-pass blocks (BLOCK_M, BLOCK_N, num_warps) timed next to the shipped one
# (`kernels.dense.elementwise_block`, 64x64 on 8 warps): the previous default, smaller and
# taller 4- and 8-warp blocks, and a wider one, so that one GPU run shows which block takes
# the pass nearest the copy bandwidth (the H200's lines in reports/nvidia_h200/runs/
# 20261130T145636Z/breakdown.txt: the shipped block well short of the "memory" line's
# bandwidth for the bytes it moves, g, s and gs).
PREP_BLOCKS = ((64, 128, 8), (32, 64, 4), (64, 64, 4), (128, 64, 8), (32, 128, 4))


def prep_block_lines(op: str, backward: Callable[[], object]) -> list[Line]:
    """The backward's prep kernel re-planned at each of PREP_BLOCKS (the launchers' block
    choice patched for one call of `backward`, which runs the whole backward at that block)
    and timed on its own: phase "bwd-prep" lines "yat_dense_bwd_prep_kernel @ BMxBN/Ww",
    no share (the shipped block's time is the "bwd" phase's prep line)."""
    import yat_triton.conv as conv
    import yat_triton.dense as dense

    out = []
    for bm, bn, warps in PREP_BLOCKS:
        block = lambda *a, bm=bm, bn=bn, warps=warps, **k: (bm, bn, warps)  # noqa: E731
        with (
            mock.patch.object(dense, "elementwise_block", block),
            mock.patch.object(conv, "elementwise_block", block),
            recording() as calls,
        ):
            backward()
        name = "yat_dense_bwd_prep_kernel"
        what = f"{name} @ {bm}x{bn}/{warps}w"
        out += [call_line(op, "bwd-prep", what, c) for c in calls if c.kernel.fn.__name__ == name]
    return out


# Row-norm pass blocks (BLOCK_R, BLOCK_K, warps) timed besides the shipped one
# (`norm_pass_block`: 8x512 on 4 warps in bf16, 8 KB a step): 4 and 16 KB a step, 8 warps.
NORM_BLOCKS = ((4, 512, 4), (16, 512, 8), (32, 256, 8))


def norm_block_lines(op: str, forward: Callable[[], object]) -> list[Line]:
    """The forward's row-norm pass re-planned at each of NORM_BLOCKS (the launcher's block
    choice patched for one call of `forward`) and timed on its own: phase "fwd-normpass"
    lines "row_sqnorm_kernel @ RxK/Ww" (the shipped block's time is the "fwd" phase's)."""
    import yat_triton.dense as dense

    out = []
    for br, bk, warps in NORM_BLOCKS:
        block = lambda *a, br=br, bk=bk, warps=warps, **k: (br, bk, warps)  # noqa: E731
        with mock.patch.object(dense, "norm_pass_block", block), recording() as calls:
            forward()
        name = "row_sqnorm_kernel"
        what = f"{name} @ {br}x{bk}/{warps}w"
        out += [call_line(op, "fwd-normpass", what, c) for c in calls if c.kernel.fn.__name__ == name]
    return out


# Register caps timed on the training forward's kernel: 128 lets a 256-thread program whose
# compile takes 129-136 registers (the 128x128 pointer forward saving s takes 130) share an
# SM with a second one, if its shared memory allows (`python -m autotune.inspect --maxnreg`;
# the shipped forward's kernel is capped, whichever it is: on the TMA one, ~155 KB of shared
# memory, one program an SM either way).
FWD_MAXNREG = (128,)


def maxnreg_lines(op: str, forward: Callable[[], object], kernels: tuple[str, ...]) -> list[Line]:
    """The launch of `kernels` (the forward kernel, whichever variant the shipped tile runs)
    in one call of `forward`, timed again under each FWD_MAXNREG cap (Triton's `maxnreg`
    option): phase "fwd-maxnreg", lines "KERNEL @ maxnreg=N"."""
    with recording() as calls:
        forward()
    out = []
    for cap in FWD_MAXNREG:
        for c in calls:
            kernel = c.kernel.fn.__name__
            if kernel in kernels:
                capped = dataclasses.replace(c, kwargs={**c.kwargs, "maxnreg": cap})
                out.append(call_line(op, "fwd-maxnreg", f"{kernel} @ maxnreg={cap}", capped))
    return out


def pointer_store_lines(op: str, forward: Callable[[], object]) -> list[Line]:
    """The launches of one call of `forward` that store y (and s) by TMA (TMA_STORE) timed
    again storing through pointers, the tensors behind the descriptors handed over in
    their place: phase "fwd-store", lines "KERNEL @ pointer stores" (the same tile; the
    shipped store is the "fwd" phase's line)."""
    with recording() as calls:
        forward()
    out = []
    for c in calls:
        if c.kwargs.get("TMA_STORE"):
            outputs = [c.kernel.arg_names.index(name) for name in ("y_ptr", "s_ptr")]
            args = tuple(
                a.base if i in outputs and isinstance(a, TensorDescriptor) else a
                for i, a in enumerate(c.args)
            )
            plain = dataclasses.replace(c, args=args, kwargs={**c.kwargs, "TMA_STORE": False})
            out.append(call_line(op, "fwd-store", f"{c.kernel.fn.__name__} @ pointer stores", plain))
    return out


# TMA forward tiles whose inference forward and GEMM alone the breakdown times besides the
# shipped one (16-bit io; bf16 inference, Triton 3.6, `python -m autotune.inspect --config
# ...`, no spills): "dense-tma-wide", cuBLAS's tile shape for large Hopper GEMMs, two
# warpgroups of 64x256 (half the shared-memory reads a product of a 64x128 wgmma's; 190
# registers, 163,864 B); "dense-tma-k128", 128-deep steps: the pipelined TMA loop syncs the
# CTA 4 times a step (`BAR.SYNC` around the copies' issue) whatever the step's depth, half as
# often a product as at 64 (109 registers, 204,824 B)
PROBE_TILES = {
    "dense-tma-wide": TileConfig(128, 256, 64, 8, 8, 3, epilogue_split=4, tma=True),
    "dense-tma-k128": TileConfig(128, 128, 128, 8, 8, 3, epilogue_split=4, tma=True),
}


def gemm_only_lines(op: str, forward: Callable[[], object]) -> list[Line]:
    """The forward kernel of one call of `forward` timed again with GEMM_ONLY (`fwd_store`:
    the same arguments, the accumulator stored without the ⵟ math, its vector loads and the
    norms summed in the kernel; a persistent kernel's grid planned again for that compile)
    and nothing saved for backward (one output, as cuBLAS's matmul and cuDNN's conv store):
    phase "fwd-gemm", lines "KERNEL @ gemm only". Against the inference forward's kernel
    line it is what the ⵟ math costs; against the matmul or the conv alone (the "ref"
    lines) what the GEMM itself does."""
    with recording() as calls:
        forward()
    return [  # (the forward kernels are those taking the flag)
        call_line(op, "fwd-gemm", f"{c.kernel.fn.__name__}{GEMM_ONLY_SUFFIX}", gemm_only_call(c))
        for c in calls
        if "GEMM_ONLY" in c.kwargs
    ]


def ref_line(op: str, what: str, fn: Callable[[], object]) -> Line:
    """A standard layer's timing at the same shape, for comparison."""
    return Line(op, "ref", what, "-", time_us(fn))


COPY_WHAT = "device copy (read + write)"


def copy_line(mib: int, device: str) -> Line:
    """`dst.copy_(src)` of `mib` MiB, timed like every kernel: op "memory", phase "ref",
    shape "bytes=N" with N the bytes read plus written (`autotune.report.copy_bandwidth`)."""
    n = mib << 20

    def timed() -> float:  # the buffers die with this scope
        src = torch.ones(n, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        return time_us(lambda: dst.copy_(src))

    us = timed()
    if device == "cuda":
        torch.cuda.empty_cache()  # the phases after it capture graphs in pools of their own
    return Line("memory", "ref", COPY_WHAT, "-", us, dtype="uint8", shape=f"bytes={2 * n}")


def dense_inputs(
    M: int, N: int, K: int, dtype: torch.dtype, device: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[object, ...], torch.Tensor]:
    """x (M, K), W (N, K), the forward's (bias (N,), alpha, alpha_value, eps, eps_value) and
    an upstream gradient (M, N), drawn from one seed."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=gen).to(device=device, dtype=dtype)
    w = (torch.randn(N, K, generator=gen) / K**0.5).to(device=device, dtype=dtype)
    b = torch.randn(N, generator=gen).to(device=device, dtype=dtype)
    g = torch.randn(M, N, generator=gen).to(device=device, dtype=dtype)
    return x, w, (b, None, 1.0, None, 1e-5), g


@dataclass
class DenseProblem:
    """The dense problem every dense phase times: x (M, K), W (N, K), the forward's (bias,
    alpha, alpha_value, eps, eps_value) and precision, and the backward's upstream gradient
    g with the shipped training forward's saved s and norms."""

    x: torch.Tensor
    w: torch.Tensor
    args: tuple[object, ...]
    prec: str
    g: torch.Tensor
    saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @classmethod
    @functools.cache
    def make(cls, M: int, N: int, K: int, dtype: torch.dtype, device: str) -> DenseProblem:
        """Made once per problem (the dense phases and the warp-specialized ones share it)."""
        from yat_triton.dense import dense_fwd

        x, w, args, g = dense_inputs(M, N, K, dtype, device)
        _, s, nx, nw = dense_fwd(x, w, *args, "ieee", True)
        return cls(x, w, args, "ieee", g, (s, nx, nw))

    def forward(self) -> object:
        """The forward as training runs it (saving s)."""
        from yat_triton.dense import dense_fwd

        return dense_fwd(self.x, self.w, *self.args, self.prec, True)

    def infer(self) -> object:
        """The forward as inference runs it (nothing saved)."""
        from yat_triton.dense import dense_fwd

        return dense_fwd(self.x, self.w, *self.args, self.prec, False)

    def backward(self) -> object:
        """The backward with dx, dW and db."""
        from yat_triton.dense import dense_bwd

        needs = [True, True, True, False, False]
        return dense_bwd(self.g, self.x, self.w, *self.args, *self.saved, self.prec, needs)


# a group's phases: "core" (what the targets and the newest levers need), "extra" (variants
# an earlier run measured already: the overlap's, the norms', the blocks', the caps'), "all"
PARTS = ("all", "core", "extra")


def dense_lines(
    M: int, N: int, K: int, dtype: torch.dtype, device: str, *, tma: bool = False, part: str = "all"
) -> Iterator[list[Line]]:
    """The dense op at its shipped tile, then the standard layers; with `tma`, also the same
    tile on the persistent TMA kernels (forced for forward and backward: op "dense-tma"; where
    the shipped forward runs the TMA kernel, its pointer twin instead: op "dense-pointer") and
    the TMA forward summing ||x||^2 in its loop ("dense-tma-xnorms"; its backward is the
    same as dense-tma's, so it is not timed again), and the inference forward on that TMA
    tile at fewer stages, where two of its programs then pair up on an SM ("dense-tma"
    "fwd-infer-pair", `pair_per_sm`) and, in 16-bit io, on each of PROBE_TILES (its op: the
    inference forward and its GEMM alone); after the references, the shipped inference
    forward's GEMM alone ("fwd-gemm", `gemm_only_lines`); the register-capped forward kernel, the
    prep-block and the norm-pass-block lines last. Yields the
    lines phase by phase, the most wanted first (a time cap keeps what was measured); `part`
    (PARTS): "core" leaves out the "-nopdl" and "-pdl1" phases, "dense-tma-xnorms", the
    register caps, the prep blocks and the norm-pass blocks, "extra" yields only those."""
    from yat_triton.dense import pick_dense_config
    from yat_triton.tuning import forced_config

    p = DenseProblem.make(M, N, K, dtype, device)
    x, w, b, g = p.x, p.w, p.args[0], p.g

    def op_lines(
        op: str, tile: TileConfig | None, backward_too: bool, forward_too: bool = True
    ) -> Iterator[list[Line]]:
        with contextlib.ExitStack() as forced:
            if tile is not None:
                forced.enter_context(forced_config("dense", "fwd", tile))
                forced.enter_context(forced_config("dense", "bwd", tile))
            if forward_too:
                yield phase_lines(op, "fwd", p.forward)
            if backward_too:
                yield phase_lines(op, "bwd", p.backward)

    core, extra = part != "extra", part != "core"
    if core:
        yield from op_lines("dense", None, backward_too=True)
        # the inference forward (nothing saved: no fp32 s to store), what the training one's
        # extra output costs next to linear+relu
        yield phase_lines("dense", "fwd-infer", p.infer)
    if extra and overlaps(device):  # without the norm pass's overlap, and with its pass beside it
        yield phase_lines("dense", "fwd-infer-nopdl", without_overlap(p.infer))
        yield phase_lines("dense", "fwd-infer-pdl1", pass_beside_gemm(p.infer))
    if core:
        xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
        y = F.relu(F.linear(xg, wg, bg))
        yield [
            ref_line("dense", GEMM_REFS["dense"], lambda: x @ w.t()),
            ref_line("dense", "linear+relu fwd", lambda: F.relu(F.linear(x, w, b))),
            ref_line(
                "dense", "linear+relu bwd", lambda: torch.autograd.grad(y, (xg, wg, bg), g, retain_graph=True)
            ),
        ]
        # the inference forward's GEMM alone against the matmul above: what the ⵟ math costs
        yield guarded("dense fwd-gemm", lambda: gemm_only_lines("dense", p.infer))
    if tma:
        shipped = pick_dense_config(M, N, K, dtype)
        plain = dataclasses.replace(shipped, tma=True, norms_in_loop=False)  # (a small batch's
        # default sums norms in its loop). A shipped forward on the TMA kernel already (the
        # default of a 16-bit forward that fills the GPU): its pointer twin instead ("dense-pointer")
        if core:
            yield from op_lines("dense-tma", plain, backward_too=True, forward_too=plain != shipped)
            if shipped.tma:
                twin = dataclasses.replace(plain, tma=False)
                yield from op_lines("dense-pointer", twin, backward_too=False)
        if extra and overlaps(device):
            with forced_config("dense", "fwd", plain):
                yield phase_lines("dense-tma", "fwd-nopdl", without_overlap(p.forward))
                yield phase_lines("dense-tma", "fwd-pdl1", pass_beside_gemm(p.forward))
        if extra:
            xnorms = dataclasses.replace(shipped, tma=True, norms_in_loop=True)
            yield from op_lines("dense-tma-xnorms", xnorms, backward_too=False)
        # the inference forward on the same tile with the most stages at which two programs
        # pair up on an SM (`kernels._common.pair_per_sm`), where the tile does not already
        pair = next(
            (
                t
                for t in (dataclasses.replace(plain, num_stages=n) for n in range(plain.num_stages, 1, -1))
                if pair_per_sm(t, dtype.itemsize)
            ),
            None,
        )
        if core and pair is not None and pair != plain:
            with forced_config("dense", "fwd", pair):
                yield phase_lines("dense-tma", "fwd-infer-pair", p.infer)
        # other tile shapes' inference forward and GEMM alone, where the shipped tile is another
        for name, probe in PROBE_TILES.items() if core and dtype.itemsize == 2 else ():
            if probe != shipped:
                with forced_config("dense", "fwd", probe):
                    yield phase_lines(name, "fwd-infer", p.infer)
                    yield guarded(f"{name} fwd-gemm", lambda name=name: gemm_only_lines(name, p.infer))
    if extra:
        forward_kernels = ("yat_dense_fwd_kernel", "yat_dense_fwd_tma_kernel")
        yield guarded("dense fwd-maxnreg", lambda: maxnreg_lines("dense", p.forward, forward_kernels))
        yield guarded("dense bwd-prep", lambda: prep_block_lines("dense", p.backward))
        yield guarded("dense fwd-normpass", lambda: norm_block_lines("dense", p.forward))


def small_batch_lines(M: int, N: int, K: int, dtype: torch.dtype, device: str) -> Iterator[list[Line]]:
    """Op "dense-small", last: the inference forward (nothing saved) of an M-row batch through
    the dense layer, on its shipped tile ("fwd"), on the same tile with the norms the other
    way ("fwd-norms": the norm pass where the tile sums them in its loop, or the reverse, but
    for 16-bit io, `broken_in_loop_norms`),
    then `x @ W^T` and `linear+relu` at that shape: what the small-batch rules of
    `dense_default_config` buy, measured. Lines carry their own shape (MxNxK)."""
    from yat_triton.dense import dense_fwd, pick_dense_config
    from yat_triton.tuning import forced_config

    # not DenseProblem: its training forward would cost this inference-only phase a compile
    x, w, args, _ = dense_inputs(M, N, K, dtype, device)
    b = args[0]
    shipped = pick_dense_config(M, N, K, dtype)
    other = dataclasses.replace(
        shipped,
        norms_in_loop=not shipped.norms_in_loop,
        epilogue_split=1 if not shipped.norms_in_loop else max(1, shipped.block_n // 32),
    )

    def infer() -> object:
        return dense_fwd(x, w, *args, "ieee", False)

    shape = f"{M}x{N}x{K}"

    def shaped(lines: list[Line]) -> list[Line]:
        for line in lines:
            line.shape = shape
        return lines

    yield shaped(phase_lines("dense-small", "fwd", infer))
    if not broken_in_loop_norms(other, x.element_size()):  # (16-bit io: the pass only)
        with forced_config("dense", "fwd", other):
            yield shaped(phase_lines("dense-small", "fwd-norms", infer))
    yield shaped([
        ref_line("dense-small", GEMM_REFS["dense"], lambda: x @ w.t()),
        ref_line("dense-small", "linear+relu fwd", lambda: F.relu(F.linear(x, w, b))),
    ])  # fmt: skip


def dense_ws_lines(M: int, N: int, K: int, dtype: torch.dtype, device: str) -> Iterator[list[Line]]:
    """Op "dense-tma-ws": the training forward on the best-ranked warp-specialized forward
    tile of the problem (`autotune.sweep.config_space`), and the backward on the
    best-ranked warp-specialized backward tile (`autotune.sweep.backward_tiles`): last of
    the breakdown, as Triton's Hopper warp specialization is the newest compiler path (the
    GPU script's canary has checked it first). A tile that cannot compile warp-specialized
    here ends the op's lines (`WarpSpecializationFallback`, said on stderr) rather than
    being timed as another."""
    from autotune.sweep import backward_tiles, config_space
    from yat_triton.tuning import forced_config

    shape = {"M": M, "N": N, "K": K}
    kept, _ = config_space("dense", shape, dtype.itemsize)
    fwd = next((c for c in kept if c.warp_specialize), None)
    ws_bwd = dtype != torch.float16  # fp16's backward GEMMs run the pointer kernel (fp32 gs)
    bwd_tiles = backward_tiles("dense", shape, kept, dtype.itemsize, warp_specialize=ws_bwd)
    bwd = next((c for c in bwd_tiles if c.warp_specialize), None)
    if fwd is None and bwd is None:
        return
    p = DenseProblem.make(M, N, K, dtype, device)
    for mode, tile, run in (("fwd", fwd, p.forward), ("bwd", bwd, p.backward)):
        if tile is None:
            continue
        try:
            with warnings.catch_warnings(), forced_config("dense", mode, tile):
                warnings.simplefilter("error", WarpSpecializationFallback)
                lines = phase_lines("dense-tma-ws", mode, run)
        except WarpSpecializationFallback as e:
            print(f"dense-tma-ws {mode} {tile.name}: not timed: {e}", file=sys.stderr)
            return
        yield lines


def conv_lines(
    B: int,
    C_in: int,
    HW: int,
    C_out: int,
    k: int,
    dtype: torch.dtype,
    device: str,
    *,
    tma: bool = False,
    part: str = "all",
) -> Iterator[list[Line]]:
    """The conv op at its shipped tiles: the forward and the backward, cuDNN's conv+relu
    and conv alone (input and weight channels_last, as a channels_last model's), the
    inference forward ("fwd-infer", what the sweep's fwd rows time); with `tma`, the
    forward and the backward with the same tiles on the conv's TMA kernels (op
    "conv2d-tma", stride 1: the forward, and the backward's input and weight gradients
    where their fitted tiles take them); the split-tail phases (`split_lines`); the
    inference forward's GEMM alone ("fwd-gemm", `gemm_only_lines`). Then the extras: the
    forward without and beside its pixel-norm pass's overlap ("fwd-nopdl", "fwd-pdl1", a
    GPU's), the forward of an NCHW weight, which it copies to its K order on the way
    ("fwd-nchw-w", `yat_conv_weight_prep_kernel`), the forward with its patch norms the
    other way ("fwd-norms": the pixel-norm pass for an in-loop tile, or the reverse), on
    the shipped tile's kernel and, with `tma`, on the TMA one ("conv2d-tma") where that is
    another (not the pointer kernel's in-loop norms of 16-bit io, `broken_in_loop_norms`),
    the forward's pointer-store variant and the prep-block lines. Yields phase by phase,
    as `dense_lines`; `part` (PARTS): "core" the phases before the extras, "extra" those."""
    from yat_triton.conv import conv2d_bwd, conv2d_fwd, pick_conv_config
    from yat_triton.tuning import conv_shape, forced_config

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(B, C_in, HW, HW, generator=gen).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w_nchw = torch.randn(C_out, C_in, k, k, generator=gen) / (C_in * k * k) ** 0.5
    w_nchw = w_nchw.to(device=device, dtype=dtype)
    # a channels_last model's weight, as the sweep's (and cuDNN's below)
    w = w_nchw.contiguous(memory_format=torch.channels_last)
    b = torch.randn(C_out, generator=gen).to(device=device, dtype=dtype)
    p = k // 2
    geo = ((1, 1), (p, p, p, p), (1, 1), 1)
    args = (b, None, 1.0, None, 1e-5)

    def forward(weight: torch.Tensor = w) -> object:  # as training runs it (saving s)
        return conv2d_fwd(x, weight, *args, *geo, "ieee", True)

    core, extra = part != "extra", part != "core"
    if core:
        yield phase_lines("conv2d", "fwd", forward)
    y, s, nx, nw = forward()
    g = (
        torch.randn(y.shape, generator=gen)
        .to(device=device, dtype=dtype)
        .contiguous(memory_format=torch.channels_last)
    )
    needs = [True, True, True, False, False]

    def backward() -> object:
        return conv2d_bwd(g, x, w, *args, s, nx, nw, *geo, "ieee", needs)

    def infer() -> object:  # nothing saved: the forward the sweep's fwd rows (and targets) time
        return conv2d_fwd(x, w, *args, *geo, "ieee", False)

    problem = conv_shape(x.shape, w.shape, (1, 1), (p, p, p, p), 1)
    shipped = pick_conv_config(B * HW * HW, C_out, C_in, dtype, "fwd", problem=problem)
    if core:
        yield phase_lines("conv2d", "bwd", backward)
        xg, wg, bg = (t.detach().requires_grad_() for t in (x, w, b))
        yr = F.relu(F.conv2d(xg, wg, bg, 1, p))
        yield [
            ref_line("conv2d", "conv+relu fwd", lambda: F.relu(F.conv2d(x, w, b, 1, p))),
            ref_line(
                "conv2d", "conv+relu bwd", lambda: torch.autograd.grad(yr, (xg, wg, bg), g, retain_graph=True)
            ),
            ref_line("conv2d", GEMM_REFS["conv2d"], lambda: F.conv2d(x, w, None, 1, p)),
        ]
        yield phase_lines("conv2d", "fwd-infer", infer)
        if tma:
            yield from conv_tma_lines(forward, backward, shipped, B * HW * HW, C_in, C_out, dtype, problem)
        yield from split_lines(forward, backward, B, HW, C_in, C_out, k, dtype, device, tma=tma)
        yield guarded("conv2d fwd-gemm", lambda: gemm_only_lines("conv2d", infer))
    if not extra:
        return
    if overlaps(device):  # the forward without the pixel-norm pass's overlap, and beside it
        yield phase_lines("conv2d", "fwd-nopdl", without_overlap(forward))
        yield phase_lines("conv2d", "fwd-pdl1", pass_beside_gemm(forward))
    # an NCHW weight: the forward copies it to its K order (the weight prep kernel)
    yield phase_lines("conv2d", "fwd-nchw-w", lambda: forward(w_nchw))
    # the shipped kernel first (op "conv2d"), then, with `tma`, the TMA one if that is another
    for op, on_tma in [("conv2d", shipped.tma)] + ([("conv2d-tma", True)] if tma and not shipped.tma else []):
        other = dataclasses.replace(shipped, tma=on_tma, norms_in_loop=not shipped.norms_in_loop)
        if broken_in_loop_norms(other, x.element_size()):  # (16-bit io: on the TMA kernel only)
            continue
        with forced_config("conv2d", "fwd", other):
            yield phase_lines(op, "fwd-norms", forward)
    yield guarded("conv2d fwd-store", lambda: pointer_store_lines("conv2d", forward))
    yield guarded("conv2d bwd-prep", lambda: prep_block_lines("conv2d", backward))


def conv_tma_lines(
    forward: Callable[[], object],
    backward: Callable[[], object],
    shipped: TileConfig,
    M: int,
    C_in: int,
    C_out: int,
    dtype: torch.dtype,
    problem: object,
) -> Iterator[list[Line]]:
    """Op "conv2d-tma": the forward on the shipped tile's TMA twin, and the backward on the
    shipped input-gradient tile's (`conv_lines`)."""
    from yat_triton.conv import pick_conv_config
    from yat_triton.tuning import forced_config

    with forced_config("conv2d", "fwd", dataclasses.replace(shipped, tma=True)):
        yield phase_lines("conv2d-tma", "fwd", forward)
    bwd_tile = pick_conv_config(M, C_in, C_out, dtype, "bwd", problem=problem)
    with forced_config("conv2d", "bwd", dataclasses.replace(bwd_tile, tma=True)):
        yield phase_lines("conv2d-tma", "bwd", backward)


def split_lines(
    forward: Callable[[], object],
    backward: Callable[[], object],
    B: int,
    HW: int,
    C_in: int,
    C_out: int,
    k: int,
    dtype: torch.dtype,
    device: str,
    *,
    tma: bool,
) -> Iterator[list[Line]]:
    """Phases "fwd-plain" and "fwd-split": the forward on the layer's default tile (norms
    from the pass) without and with `split_tail`, on the pointer kernel (op "conv2d") and,
    with `tma`, on the TMA one ("conv2d-tma"), where this device's grid of that tile splits
    its tail (`kernels._common.tail_split`; elsewhere the two would be one forward); then
    "bwd-plain" and "bwd-split", the backward on its default tile likewise, where the
    input gradient's grid splits (the weight gradient ignores the flag)."""
    from kernels._common import tail_split
    from kernels.conv import conv_default_config, implicit_gemm_grid
    from yat_triton._launch import device_sms
    from yat_triton.tuning import forced_config

    tile = dataclasses.replace(
        conv_default_config(B * HW * HW, C_out, C_in, dtype.itemsize), norms_in_loop=False
    )
    bwd_tile = conv_default_config(B * HW * HW, C_in, C_out, dtype.itemsize)
    sms = device_sms(torch.device(device))
    kernels = [("conv2d", False)] + ([("conv2d-tma", True)] if tma else [])
    for mode, run, base, (n, kdim) in (
        ("fwd", forward, tile, (C_out, C_in)),
        (
            "bwd",
            backward,
            dataclasses.replace(bwd_tile, norms_in_loop=False, epilogue_split=1),
            (C_in, C_out),
        ),
    ):
        for op, on_tma in kernels:
            plain = dataclasses.replace(base, tma=on_tma)
            tiles, steps = implicit_gemm_grid(B, HW, HW, n, kdim, k * k, plain, on_tma)
            if tail_split(tiles, steps, sms)[1] == 1:
                continue
            for how, cfg in (("plain", plain), ("split", dataclasses.replace(plain, split_tail=True))):
                with forced_config("conv2d", mode, cfg):
                    yield phase_lines(op, f"{mode}-{how}", run)


def conv_label(B: int, C_in: int, HW: int, C_out: int, k: int) -> str:
    """A conv layer's shape as the breakdown's lines name it."""
    return f"B={B},C_in={C_in},HW={HW},C_out={C_out},k={k}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument(
        "--dense", nargs=3, type=positive_int, default=[4096, 4096, 4096], metavar=("M", "N", "K")
    )
    add_conv_argument(parser)
    parser.add_argument(
        "--tma",
        action="store_true",
        help="also the dense op on its persistent TMA kernels (x norms: both ways), and the "
        "conv forward and backward on their TMA kernels",
    )
    parser.add_argument(
        "--no-warp-specialize",
        action="store_true",
        help="with --tma, leave out the forward and backward on warp-specialized tiles (timed last "
        "otherwise)",
    )
    parser.add_argument(
        "--more-conv",
        nargs=5,
        type=positive_int,
        action="append",
        default=[],
        metavar=("B", "C_IN", "HW", "C_OUT", "K"),
        help="another conv2d layer (as --conv; repeatable), timed after the --conv layer: its "
        "forward, backward and references, with --tma its TMA kernels, and its split-tail phases",
    )
    parser.add_argument(
        "--small",
        type=int,
        default=16,
        metavar="M",
        help="the inference forward of an M-row batch through the --dense layer's N x K weight, "
        "norms both ways (16-bit: the pass only), next to linear+relu (op dense-small; default 16, "
        "0: left out)",
    )
    parser.add_argument(
        "--copy-mib",
        type=int,
        help="size of the device copy that measures the memory bandwidth (default: 1024 on a GPU, "
        "far above its L2; 16 without one)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line (instead of the table)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON lines to this file (for `report`)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    copy_mib = (1024 if REPRESENTATIVE else 16) if args.copy_mib is None else args.copy_mib
    if copy_mib < 1:
        parser.error(f"--copy-mib: {args.copy_mib} is not a whole number of MiB >= 1")
    if args.small < 0:
        parser.error(f"--small: {args.small} is not a number of rows >= 0")
    if args.json_out is not None and not args.json_out.parent.is_dir():  # before any measuring
        parser.error(f"--json-out: the folder {args.json_out.parent} does not exist")
    if args.dtype == "float32":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = (
            False  # ieee, as the ⵟ kernels
        )
    torch.backends.cudnn.benchmark = True
    gpu = environment().gpu
    lines: list[Line] = []

    def add(more: list[Line], shape: str) -> str:
        """Label the new lines (shape: of the group that measured them, where a line does
        not name its own) and rewrite --json-out with all so far: a time cap that stops the
        run still leaves every phase measured before it for the report."""
        for line in more:
            line.gpu, line.dtype = gpu, line.dtype or args.dtype
            line.shape = line.shape or shape
        lines.extend(more)
        text = "\n".join(json.dumps(asdict(line)) for line in lines) + "\n"
        if args.json_out:  # written aside, then renamed: a cap that lands mid-write keeps the last whole file
            part = args.json_out.with_name(args.json_out.name + ".part")
            part.write_text(text)
            os.replace(part, args.json_out)
        return text

    dense_shape = "x".join(map(str, args.dense))
    # (name, its lines phase by phase, their shape)
    phases: list[tuple[str, Callable[[], Iterator[list[Line]]], str]] = [
        # first: a cap that stops the run keeps it
        ("memory", lambda: iter([[copy_line(copy_mib, device)]]), ""),
        ("dense", lambda: dense_lines(*args.dense, dtype, device, tma=args.tma, part="core"), dense_shape),
        (
            "conv2d",
            lambda: conv_lines(*args.conv, dtype, device, tma=args.tma, part="core"),
            conv_label(*args.conv),
        ),
    ]
    for layer in args.more_conv:
        phases.append((
            f"conv2d {conv_label(*layer)}",
            functools.partial(conv_lines, *layer, dtype, device, tma=args.tma, part="core"),
            conv_label(*layer),
        ))  # fmt: skip
    # then the variants an earlier run measured already (`PARTS`), of the first layers only
    phases += [
        (
            "dense extras",
            lambda: dense_lines(*args.dense, dtype, device, tma=args.tma, part="extra"),
            dense_shape,
        ),
        (
            "conv2d extras",
            lambda: conv_lines(*args.conv, dtype, device, tma=args.tma, part="extra"),
            conv_label(*args.conv),
        ),
    ]
    if args.tma and not args.no_warp_specialize:  # the newest compiler path: late
        phases.append(("dense-tma-ws", lambda: dense_ws_lines(*args.dense, dtype, device), dense_shape))
    if args.small:  # the least wanted (no SPEC target): last
        phases.append((
            "dense-small", lambda: small_batch_lines(args.small, *args.dense[1:], dtype, device), dense_shape
        ))  # fmt: skip
    _FAILED.clear()
    text = ""
    try:
        with bench_stream():  # one capturable stream for the setup and every timed call
            for name, phase, shape in phases:
                try:
                    for more in phase():
                        text = add(more, shape)
                except ContextLost:
                    raise
                except Exception as e:  # noqa: BLE001 - a group's own code (inputs, references)
                    left_out(f"{name} (the rest of its phases)", e)
    except ContextLost as e:  # what was measured is printed (and in --json-out) all the same
        print(f"breakdown stopped: {e}; the lines measured before it follow", file=sys.stderr)
        _FAILED.append("every phase after that (the CUDA context was lost)")
        status = CONTEXT_LOST_EXIT
    else:
        status = 1 if _FAILED else 0
    if args.json:
        print(text, end="")
        return status
    if not REPRESENTATIVE:
        print("NOT REPRESENTATIVE: no GPU, kernels timed through the Triton interpreter")
    print(
        f"{device} {gpu if device == 'cuda' else ''} {args.dtype} "  # (no CUDA call: the context may be lost)
        f"dense {args.dense} conv {', '.join(map(str, [args.conv, *args.more_conv]))}"
    )
    table = [
        [
            ln.op,
            *([ln.shape] if args.more_conv else []),  # (where the conv layers are several)
            ln.phase,
            ln.what,
            ln.grid,
            f"{ln.us:.1f}",
            "-" if ln.share is None else f"{100 * ln.share:.0f}%",
        ]
        for ln in lines
    ]
    headers = ["op", *(["shape"] if args.more_conv else []), "phase", "kernel", "grid", "us", "share"]
    print(tabulate(table, headers=headers))
    bandwidth = copy_bandwidth(asdict(line) for line in lines)
    if bandwidth is not None:
        print(bandwidth[1])
    if _FAILED:
        print(f"not timed (see above): {', '.join(_FAILED)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
