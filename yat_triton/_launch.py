"""Launch plumbing shared by the op families: backend choice, dtype facts, offset widths."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import triton
from torch import Tensor
from torch._subclasses.fake_tensor import is_fake
from torch._subclasses.functional_tensor import FunctionalTensor
from torch.library import wrap_triton
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from kernels._common import EPS_FAST_MIN, FINITE_MAX, HAS_PDL, INTERPRETING, SM90_SMS, WS_CONSUMER_GROUPS
from yat_triton._checks import AUTOCAST_DEVICES

INT32_MAX = 2**31 - 1


def use_triton(t: Tensor) -> bool:
    """Triton kernels run on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1.

    Anything else (CPU without the interpreter, other devices) takes the plain-PyTorch
    path: the same math and the same saved tensors, written with torch ops.
    """
    return t.device.type == "cuda" or (INTERPRETING and t.device.type == "cpu")


def without_autocast(t: Tensor) -> contextlib.AbstractContextManager[object]:
    """Autocast off on t's device: the plain-PyTorch path computes in the dtypes it chose
    (fp32 accumulation, as the kernels do) even when it runs inside an autocast region,
    e.g. an op called there directly. The public functions cast the operands first."""
    if t.device.type in AUTOCAST_DEVICES:
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp64 for fp64 io, fp32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def out_max(dtype: torch.dtype) -> float:
    """OUT_MAX constexpr: the finite range the store saturates to (0.0: no saturation)."""
    return FINITE_MAX.get(str(dtype).removeprefix("torch."), 0.0)


def upcast_operands(dtype: torch.dtype) -> bool:
    """The interpreter's tl.dot multiplies bf16 bit patterns: upcast there only."""
    return INTERPRETING and dtype == torch.bfloat16


def fast_quotient(dtype: torch.dtype, eps: Tensor | None, eps_value: float) -> bool:
    """FAST_RCP constexpr of the forward epilogues and of the backward's prep and near-pair
    kernels (`div_plus_eps`): fp32 accumulation and eps a number >= EPS_FAST_MIN. A tensor
    eps (a learnable one) is known to the kernel only: those kernels divide, as they do
    for a tinier (or symbolic) eps."""
    return (
        dtype != torch.float64
        and eps is None
        and isinstance(eps_value, (float, int))
        and eps_value >= EPS_FAST_MIN
    )


def _dense(t: Tensor) -> bool:
    """t's elements fill its span without gaps or overlap: contiguous, or channels_last (4-D)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def needs_int64(*tensors: Tensor) -> bool:
    """True when some element of some tensor lies past 2^31 - 1 elements from its base
    (the largest offset, sum of (size - 1) * |stride|, is what must fit in int32)."""
    for t in tensors:
        n = t.numel()
        if n == 0:
            continue
        if type(n) is int and n <= INT32_MAX + 1 and _dense(t):  # reach n - 1 (no symbolic
            continue  # sizes here: the sum below guards the one comparison)
        reach = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride(), strict=True))
        if reach > INT32_MAX:
            return True
    return False


def k_major_if_huge(t: Tensor, k_dim: int) -> Tensor:
    """t, or a contiguous copy of it when its K stride would overflow the int32 pointer
    steps of a main loop (BLOCK_K * stride_k, BLOCK_K <= 512: the GEMMs take up to 256,
    the row-norm pass 512): only views with more than ~4M rows between consecutive K
    elements (huge transposed inputs) pay the copy."""
    return t.contiguous() if abs(t.stride(k_dim)) > INT32_MAX // 512 else t


# Plain tensors: no subclass (`_autograd.eager`). They are fake or functional only inside a
# C++ wrapper (functionalization, functorch transforms), which two C calls tell (`_real`);
# any other type asks is_fake.
PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_is_functional = torch._is_functional_tensor
_is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _real(t: Tensor) -> bool:
    """t is neither fake nor a functional wrapper. A plain tensor that no C++ wrapper holds
    is answered by two C calls: `is_fake` (Python, ~3.5 µs a tensor on a 2-core CPU) would
    say False for it, and every launch asks this of every tensor it passes."""
    if type(t) in PLAIN_TYPES and not (_is_functional(t) or _is_functorch_wrapped(t)):
        return True
    return not (is_fake(t) or isinstance(t, FunctionalTensor))


def tracing(*tensors: Tensor) -> bool:
    """True while torch.compile / AOT dispatch / fake-tensor propagation runs the launcher
    (its tensors are fake or functional wrappers, not real data)."""
    return not all(map(_real, tensors))


_TMA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def tma_ready(*operands: Tensor) -> bool:
    """Whether operands (2-D or more) can be read through host-side TMA descriptors.

    TMA needs a contiguous last dimension, 16-byte aligned bases and outer strides, and (on
    a GPU) sm_90 or newer. Each outer stride must also step past the dimensions inside it
    (no broadcast, no overlapping rows). torch.library's graph tracing does not carry host
    descriptors through `triton_op` (it would capture fake data), so traced calls answer
    False too.
    """
    if tracing(*operands):
        return False
    for t in operands:
        shape, stride = t.shape, t.stride()
        if t.dtype not in _TMA_DTYPES or len(shape) < 2 or 0 in shape or stride[-1] != 1:
            return False
        elem = t.element_size()
        for d in range(len(shape) - 1):
            if shape[d] > 1 and stride[d] < stride[d + 1] * shape[d + 1]:
                return False
            if (stride[d] * elem) % 16:
                return False
        if t.data_ptr() % 16:
            return False
        device = t.device
        if device.type == "cuda" and _cuda_props(_index(device)).major < 9:
            return False
    return True


@functools.cache
def _cuda_props(index: int) -> Any:
    return torch.cuda.get_device_properties(index)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def device_sms(device: torch.device) -> int:
    """The SMs of a CUDA device; elsewhere (the interpreter, meta tensors planned for a
    static compile) an H200's."""
    return _cuda_props(_index(device)).multi_processor_count if device.type == "cuda" else SM90_SMS


def persistent_programs(device: torch.device, tiles: int) -> int:
    """Planned grid of a persistent kernel: one program per SM, no more than there are
    tiles (`KernelCall.run` raises it to every program an SM can hold at once, see
    `resident_programs`). Under the interpreter, two, so that the tests see programs
    walking several tiles."""
    if device.type == "cuda":
        return max(1, min(tiles, _cuda_props(_index(device)).multi_processor_count))
    return max(1, min(tiles, 2))


# Programmatic dependent launch of the forward GEMMs after their norm pass (Hopper and newer):
# YAT_TRITON_PDL=0 turns it off (launches then wait for the pass to end, as any other); a
# Triton without it (before 3.3: `kernels._common.HAS_PDL`) never has it.
PDL = HAS_PDL and os.environ.get("YAT_TRITON_PDL", "1").strip() != "0"
# Norm-pass programs an SM while it overlaps a GEMM, or None: one a row tile, the pass's
# usual grid. None (the default) keeps the pass's bandwidth: its programs fill the SMs and
# the GEMM's programs start as they drain (the overlap takes the launch gap and the pass's
# tail). 1 would leave room for a GEMM program from the start (a 4-warp pass program of
# 78 registers a thread is 10K of the SM's 64K, beside an 8-warp GEMM program of up to 208,
# sm_90 compiles with Triton 3.6 of the bf16 forwards: `python -m autotune.inspect`), but
# one program an SM keeps few loads in flight: the pass could outlast the GEMM's first tile,
# whose epilogue waits for it. The breakdown times both (`autotune.breakdown`, "-pdl1"
# phases) before a GPU run decides.
OVERLAP_NORM_PROGRAMS_PER_SM: int | None = None


_FORCED_OVERLAP: list[bool] = []  # `forced_overlap`'s answers, innermost last


@contextlib.contextmanager
def forced_overlap(on: bool) -> Iterator[None]:
    """Inside the block, `overlap_norm_pass` answers `on` for any device (untraced operands):
    the static compiles planning meta tensors as a GPU would, the breakdown's forwards
    without the overlap, tests planning CPU tensors as on a GPU."""
    _FORCED_OVERLAP.append(on)
    try:
        yield
    finally:
        _FORCED_OVERLAP.pop()


def overlap_norm_pass(device: torch.device, *operands: Tensor) -> bool:
    """Whether a forward GEMM on `device` overlaps the norm pass before it: the pass lets it
    launch at once (`row_sqnorm_kernel`'s EARLY_LAUNCH; grid: `norm_pass_programs`), and
    the GEMM, launched with programmatic dependent launch
    (`KernelCall.pdl`), runs its main loop, which reads nothing the pass writes (x and W;
    a conv's weight operand, written by a call before the pass), while the pass reads,
    and waits for the pass's norms (`gdc_wait`, GDC_WAIT) before its epilogue.
    Hopper (sm_90) or newer, PDL not turned off (`PDL`), never under the interpreter, and
    never while `operands` are traced: a traced launch gets no PDL, and torch.compile's
    mutation analysis would take the wait for a write to every input (`forced_overlap`
    aside)."""
    if tracing(*operands):
        return False
    if _FORCED_OVERLAP:
        return _FORCED_OVERLAP[-1]
    return PDL and not INTERPRETING and device.type == "cuda" and _cuda_props(_index(device)).major >= 9


def norm_pass_programs(device: torch.device, tiles: int) -> int:
    """Grid of a norm pass that a GEMM overlaps (`overlap_norm_pass`): one program a row tile,
    or with `OVERLAP_NORM_PROGRAMS_PER_SM` that many an SM, each walking its share of the
    row tiles (a device without SMs to count, as meta tensors planned for a static compile:
    an H200's)."""
    if OVERLAP_NORM_PROGRAMS_PER_SM is None:
        return tiles
    return max(1, min(tiles, OVERLAP_NORM_PROGRAMS_PER_SM * device_sms(device)))


def saturating_cast(y: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast with clamping to the dtype's finite range (NaN stays NaN)."""
    m = out_max(dtype)
    if m > 0:
        y = y.clamp(-m, m)
    return y.to(dtype)


def launch(kernel: object, grid: tuple[int, ...], *args: object, **kwargs: object) -> None:
    """Launch a Triton kernel; while a graph is being traced, through `wrap_triton`, so that
    torch.compile records it. A `launch_pdl` option (programmatic dependent launch,
    `KernelCall.compile_kwargs`) goes to a direct launch only: a traced one is recorded
    without it (the kernel's wait then returns at once).

    Eagerly (real tensors, no dispatch mode active) the kernel is called directly:
    `wrap_triton` outside a `triton_op` call would route every launch through the
    higher-order-op dispatcher, whose CPU cost (PyTorch measures ~1 ms) would dominate the
    launchers' time when they are called on their own (the autotune sweep, the breakdown).

    Under the interpreter an interpreted kernel cannot be recorded into a graph (recent
    torch's `wrap_triton` hands it back as it is, torch 2.11's refuses it), and it would
    read the data of fake tensors. Plain fake-tensor shape propagation (meta kernels,
    opcheck's fake-tensor test) only needs output shapes, so the launch is skipped there;
    graph tracing (torch.compile, AOT dispatch) would lose the kernel, so it is refused
    with an error instead of computing garbage; on real tensors it runs directly, also
    under a dispatch mode (opcheck's schema test).
    """
    tensors = [a for a in args if isinstance(a, Tensor)]
    if INTERPRETING:
        if any(isinstance(t, FunctionalTensor) for t in tensors):
            raise RuntimeError(
                "yat_triton ops cannot be traced by torch.compile / AOT dispatch under "
                "TRITON_INTERPRET=1 (interpreted kernels run eagerly and leave no graph "
                "node); call them eagerly on the CPU, or compile on a CUDA device"
            )
        if any(is_fake(t) for t in tensors):
            return
    if not INTERPRETING and (tracing(*tensors) or is_in_torch_dispatch_mode()):
        kwargs.pop("launch_pdl", None)
        wrap_triton(kernel)[grid](*args, **kwargs)
    else:
        kernel[grid](*args, **kwargs)  # type: ignore[index]


def programs_per_sm(
    n_regs: int,
    shared_bytes: int,
    num_warps: int,
    *,
    regs_per_sm: int = 65536,
    shared_per_sm: int = 233472,
    threads_per_sm: int = 2048,
    cap: int = 4,
) -> int:
    """How many programs of a compiled kernel an SM holds at once (sm_90 defaults: 64K
    registers, 228 KB of shared memory, 2048 threads), at most `cap` and at least 1.

    Registers are allocated per warp in blocks of 256 (8 a thread); every program also
    reserves 1 KB of shared memory for the system, and takes it in 128-byte units.
    """
    regs_per_warp = -(-max(n_regs, 1) * 32 // 256) * 256
    by_regs = (regs_per_sm // regs_per_warp) // num_warps
    by_shared = shared_per_sm // (-(-(shared_bytes + 1024) // 128) * 128)
    by_threads = threads_per_sm // (32 * num_warps)
    return max(1, min(cap, by_regs, by_shared, by_threads))


_RESIDENT: dict[tuple[Any, ...], int] = {}


def _arg_key(a: object) -> object:
    """What Triton specializes an argument on (so two launches that compile differently
    do not share an occupancy): a tensor's dtype and 16-byte alignment, an int's being 1,
    a multiple of 16, or past int32, a descriptor's dtype and box."""
    kind = type(a)
    if kind is int:  # most arguments: sizes and strides
        return (a == 1, a % 16 == 0, -(2**31) <= a < 2**31)
    if kind is float or kind is bool or a is None:
        return kind.__name__
    if isinstance(a, Tensor):
        return (a.dtype, a.data_ptr() % 16 == 0)
    if isinstance(a, int):  # an int subclass (not bool)
        return (a == 1, a % 16 == 0, -(2**31) <= a < 2**31)
    base = getattr(a, "base", None)  # a TMA descriptor
    if isinstance(base, Tensor):
        return (base.dtype, tuple(getattr(a, "block_shape", ())))
    return kind.__name__


def resident_programs(call: KernelCall, device: torch.device) -> int:
    """Programs of `call`'s compiled kernel an SM holds at once (`programs_per_sm` of its
    registers and shared memory), cached per kernel, constexprs and what Triton specializes
    the arguments on (`_arg_key`); 1 when the compiled kernel cannot be asked (its
    metadata is Triton's, read as the fused softmax tutorial does)."""
    key = (_index(device), *call.specialization)
    known = _RESIDENT.get(key)
    if known is not None:
        return known
    try:
        compiled = call.kernel.warmup(*call.args, grid=call.grid, **call.compile_kwargs())
        compiled._init_handles()
        props = _cuda_props(_index(device))
        warps = getattr(compiled.metadata, "num_warps", call.kwargs.get("num_warps", 4))  # + producer's
        known = programs_per_sm(
            compiled.n_regs, compiled.metadata.shared, warps,
            regs_per_sm=getattr(props, "regs_per_multiprocessor", 65536),
            shared_per_sm=getattr(props, "shared_memory_per_multiprocessor", 233472),
            threads_per_sm=getattr(props, "max_threads_per_multi_processor", 2048),
        )  # fmt: skip
    except Exception:  # noqa: BLE001 (an estimate: one program per SM is always right)
        known = 1
    _RESIDENT[key] = known
    return known


_WARP_SPECIALIZE_FAILED: dict[tuple[Any, ...], str] = {}  # why it does not compile, or ""


class WarpSpecializationFallback(RuntimeWarning):
    """A warp-specialized launch ran without warp specialization: this Triton cannot compile
    it (`unless_warp_specialization_fails`). The sweep and the breakdown raise it as an
    error, so that no timing is recorded under a tile it did not run as."""


def unless_warp_specialization_fails(call: KernelCall) -> KernelCall:
    """`call` (a kernel taking the WARP_SPECIALIZE constexpr), or, on a GPU where this Triton
    cannot compile it, the same launch without warp specialization (`unspecialized`), with
    a `WarpSpecializationFallback` warning each time. Triton's Hopper pass takes a narrow
    set of loops and changes between versions: 3.6 compiles the dense kernels'
    warp-specialized tiles, 3.9 fails them, so a winner tuned with one still runs with the
    other. The compile is tried once per kernel specialization (Triton caches it), when
    the call runs (`KernelCall.run`): planning and recording compile nothing, so the sweep
    still compiles its tiles in parallel first."""
    device = call.device()
    if not call.kwargs.get("WARP_SPECIALIZE") or INTERPRETING or device is None or device.type != "cuda":
        return call
    key = (_index(device), *call.specialization)
    if key not in _WARP_SPECIALIZE_FAILED:
        try:
            call.kernel.warmup(*call.args, grid=call.grid, **call.compile_kwargs())
            _WARP_SPECIALIZE_FAILED[key] = ""
        except Exception as e:  # noqa: BLE001 (any compile failure: run it unspecialized)
            _WARP_SPECIALIZE_FAILED[key] = f"{type(e).__name__}: {str(e)[:200]}"
    reason = _WARP_SPECIALIZE_FAILED[key]
    if not reason:
        return call
    warnings.warn(
        f"{call.kernel.fn.__name__}: warp specialization does not compile with Triton "
        f"{triton.__version__} here ({reason}); running the tile without it",
        WarpSpecializationFallback,
        stacklevel=2,
    )
    return unspecialized(call)


def unspecialized(call: KernelCall) -> KernelCall:
    """A warp-specialized launch without warp specialization: the same tile on the warps
    its two consumer warpgroups had, as `TileConfig.unspecialized` (on its own num_warps
    alone, a 128x128 tile saving s spills: Triton 3.9 sm_90 compile, 255 registers)."""
    warps = WS_CONSUMER_GROUPS * call.kwargs.get("num_warps", 4)
    return replace(call, kwargs={**call.kwargs, "WARP_SPECIALIZE": False, "num_warps": warps})


@dataclass
class KernelCall:
    """One planned kernel launch: what a launcher would run, kept as data so that the
    harness can also compile it ahead of time or for another target (autotune inspect).

    `persistent_tiles` (> 0): the kernel is persistent over that many tiles, planned with
    one program per SM; on a GPU, `run` launches as many programs as the SMs hold at once
    (`resident_programs`, never more than there are tiles), so that one program's epilogue
    overlaps another's main loop on the same SM, where registers and shared memory allow.
    `pdl`: launched with programmatic dependent launch, so that it may start while the call
    before it (a norm pass, `overlap_norm_pass`) still runs; the kernel waits for that call
    before it reads anything the call writes.
    """

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    persistent_tiles: int = 0
    pdl: bool = False

    @functools.cached_property
    def specialization(self) -> tuple[Any, ...]:
        """What one compile of the kernel is keyed on: the kernel, its constexprs and launch
        options, and what Triton specializes the arguments on (`_arg_key`); built once per
        call (the occupancy and the warp-specialization checks of one run both use it)."""
        return self.kernel, tuple(sorted(self.kwargs.items())), tuple(map(_arg_key, self.args))

    def compile_kwargs(self) -> dict[str, Any]:
        """The kwargs the kernel is launched and compiled with: its constexprs and options,
        and launch_pdl where `pdl` asks for it (a GPU's Triton with PDL). Warmups take them
        too: launch_pdl is part of Triton's compile key (a warmup without it would leave the
        launch a compile of its own, serial, where the sweep compiles its tiles in parallel
        first)."""
        if self.pdl and HAS_PDL and not INTERPRETING:
            return {**self.kwargs, "launch_pdl": True}
        return self.kwargs

    def tensors(self) -> Iterator[Tensor]:
        """The tensor args, a TMA descriptor standing for its tensor."""
        return (t for t in (getattr(a, "base", a) for a in self.args) if isinstance(t, Tensor))

    def device(self) -> torch.device | None:
        """The device of the first tensor (or TMA descriptor's tensor) among the args."""
        return next((t.device for t in self.tensors()), None)

    def launch_grid(self) -> tuple[int, ...]:
        """The grid `run` launches."""
        if self.persistent_tiles <= 0 or INTERPRETING:
            return self.grid
        device = self.device()
        if device is None or device.type != "cuda":
            return self.grid
        per_sm = resident_programs(self, device)
        return (max(1, min(self.persistent_tiles, self.grid[0] * per_sm)),)

    def run(self) -> None:
        with on_device(self):
            call = unless_warp_specialization_fails(self) if self.kwargs.get("WARP_SPECIALIZE") else self
            launch(call.kernel, call.launch_grid(), *call.args, **call.compile_kwargs())


def on_device(call: KernelCall) -> contextlib.AbstractContextManager[object]:
    """The launch's CUDA device made current around it. Triton compiles for, and launches on,
    the current device, whatever device the tensors are on: a layer on cuda:1 while cuda:0
    is current (a model spread over GPUs without torch.cuda.set_device) would otherwise run
    on cuda:0 against cuda:1's memory, an illegal address or wrong values. A no-op where
    the device is current already (the usual case), off CUDA, without a CUDA driver (fake
    CUDA tensors propagating shapes on a CPU host), and while a trace records the launch
    (torch.compile's generated code guards the device itself)."""
    device = call.device()
    if device is None or device.type != "cuda" or device.index is None or not torch.cuda.is_available():
        return contextlib.nullcontext()
    if device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    if tracing(*call.tensors()):
        return contextlib.nullcontext()
    return torch.cuda.device(device.index)


@contextlib.contextmanager
def recording() -> Iterator[list[KernelCall]]:
    """Every KernelCall the launchers run inside the block, in order, run and kept (the
    breakdown times them one by one; tests check which kernels and tiles ran)."""
    calls: list[KernelCall] = []
    original = KernelCall.run

    def run(self: KernelCall) -> None:
        calls.append(self)
        original(self)

    KernelCall.run = run  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        KernelCall.run = original  # type: ignore[method-assign]
