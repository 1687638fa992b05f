"""How the harness times a call: on a GPU, `triton.testing.do_bench` (L2 flushed before
every run, median with 20th/80th percentiles) of the call captured as a CUDA graph.

Why a graph: do_bench of the plain call measures from the first kernel's launch to the
last's end, so where Python launches kernels more slowly than the GPU runs them (the ⵟ ops'
launchers, a ResNet-sized conv) it times the host, not the kernels, and every tile of the
sweep would measure alike. Replaying a captured graph launches every kernel of the call at
once, so the time is the device's: kernels and the gaps between them. Every provider is
timed the same way (cuBLAS, cuDNN, the references), so speedups compare like with like;
a call that cannot be captured is timed eagerly, and its row says so.

Capture runs on the current stream when it is not the default one (`bench_stream`): a
backward-mode call whose forward ran earlier must capture on the stream that forward used,
since autograd runs each backward kernel on its forward's stream.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import triton

from autotune.db import TIMINGS
from kernels._common import INTERPRETING

# GRAPH: do_bench of the captured graph's replay; EAGER: do_bench of the call itself
# (capture failed or was not asked for); WALL: one wall-clock run (no GPU, or the Triton
# interpreter: not representative).
GRAPH, EAGER, WALL = TIMINGS


def on_gpu() -> bool:
    """Whether calls run on a GPU (CUDA present and the Triton interpreter off)."""
    return torch.cuda.is_available() and not INTERPRETING


class ContextLost(RuntimeError):
    """A failure took the process's CUDA context with it (`context_lost`): nothing more can
    run on the GPU in this process, so the sweep or the breakdown stops there."""


def context_lost(device: str) -> str:
    """Why this process's CUDA context no longer works (a probe fails), or "". A kernel that
    faults (an illegal address, a trap) leaves the context unusable: every later CUDA call
    in the process fails with the same error (every later row of a sweep, which a resumed
    sweep would not measure again; every later test of a pytest process). Off a GPU, ""."""
    if device != "cuda":
        return ""
    try:
        torch.cuda.synchronize()
        torch.ones(1, device=device).add_(1).cpu()
    except Exception as e:  # noqa: BLE001 - any failure of the probe is the answer
        return f"{type(e).__name__}: {e}"
    return ""


@dataclass(frozen=True)
class Timing:
    """Milliseconds (median, 20th and 80th percentiles), how they were taken (TIMINGS), and
    why a call was timed eagerly after a failed capture ("" otherwise)."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    method: str
    note: str = ""


@contextlib.contextmanager
def bench_stream() -> Iterator[None]:
    """On a GPU, run the block on a fresh side stream (what capture needs); a no-op otherwise."""
    if not on_gpu():
        yield
        return
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        yield
    torch.cuda.current_stream().wait_stream(stream)


def capture(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """`fn` captured as a CUDA graph on the current stream (a side stream is used if the
    current one is the default), after one warm-up call there (compiles, cuDNN's algorithm
    search and the caches run before capture). Raises what the capture raised, after
    handing the capture's memory pool back (`_abandon_pool`), so that a failed capture
    does not break the ones after it."""
    with contextlib.ExitStack() as stack:
        if torch.cuda.current_stream() == torch.cuda.default_stream():
            stack.enter_context(bench_stream())
        stream = torch.cuda.current_stream()
        fn()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        pool = torch.cuda.graph_pool_handle()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                fn()
        except BaseException:
            _after_failed_capture(graph, pool)
            raise
        stream.synchronize()
    return graph


def _after_failed_capture(graph: torch.cuda.CUDAGraph, pool: tuple[int, int]) -> None:
    """Where a capture raised: if the capture itself ended (fn raised a Python error, out of
    memory, Ctrl-C), the graph owns its pool and releases it when freed, so releasing it
    here too would release it twice (an allocator assert in a destructor: the process
    aborts); if it did not end (an invalidated capture), nothing else will release it."""
    try:
        graph.pool()  # raises unless the capture ended
    except Exception:  # noqa: BLE001
        _abandon_pool(pool)


def _abandon_pool(pool: tuple[int, int]) -> None:
    """After a failed capture: PyTorch's capture_end raises before it tells the caching
    allocator that the capture is over, so the pool would stay "capturing" for the rest of
    the process (every later capture's empty_cache then fails an internal assert). End the
    allocation to it and release it, as PyTorch's own cudagraph trees do; a PyTorch without
    these hooks leaves it (the calls are private)."""
    device = torch.cuda.current_device()
    for name in ("_cuda_endAllocateToPool", "_cuda_releasePool"):
        hook = getattr(torch._C, name, None)
        if hook is not None:
            with contextlib.suppress(Exception):
                hook(device, pool)


def _wall_ms(fn: Callable[[], object]) -> float:
    """One call of `fn` by the wall clock, in milliseconds (off the GPU)."""
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _try_capture(fn: Callable[[], object]) -> tuple[torch.cuda.CUDAGraph | None, str]:
    """(`capture(fn)`, "") or, where the capture fails, (None, why)."""
    try:
        return capture(fn), ""
    except Exception as e:  # noqa: BLE001 - callers time the call another way, and say why
        torch.cuda.synchronize()
        return None, f"CUDA graph capture failed ({type(e).__name__}: {str(e)[:200]})"


def back_to_back_ms(fn: Callable[[], object], calls: int = 20) -> float:
    """Milliseconds a call of `fn` takes in a loop: `calls` calls launched back to back (no
    flush, no sync between them) between two events, the median of five such runs. Of an
    eager call, where the host launches more slowly than the GPU runs, this is the host's
    time (do_bench would hide up to its L2 flush's duration of it); compare it with the
    same loop over the call's graph replay (`replay_back_to_back_ms`), whose L2 is as warm.
    Off the GPU: one wall-clock call."""
    if not on_gpu():
        return _wall_ms(fn)
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / calls)
    return sorted(runs)[2]


def replay_back_to_back_ms(fn: Callable[[], object]) -> float | None:
    """`back_to_back_ms` of `fn` captured as a CUDA graph (its replay), or None where the
    capture fails or there is no GPU."""
    if not on_gpu():
        return None
    graph, _ = _try_capture(fn)
    return back_to_back_ms(graph.replay) if graph is not None else None


def time_call(fn: Callable[[], object], *, graph: bool = True) -> Timing:
    """Time `fn` (see the module docstring); `graph=False`: do_bench of the call itself (for
    calls that replay CUDA graphs of their own)."""
    if not on_gpu():
        ms = _wall_ms(fn)
        return Timing(ms, ms, ms, WALL)
    run, method, note = fn, EAGER, ""
    if graph:
        captured, why = _try_capture(fn)
        if captured is not None:
            run, method = captured.replay, GRAPH
        else:
            note = f"{why}; timed eagerly"
    med, p20, p80 = triton.testing.do_bench(run, quantiles=[0.5, 0.2, 0.8])
    return Timing(float(med), float(p20), float(p80), method, note)
