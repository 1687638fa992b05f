"""Static kernel inspection: compile a planned launch for Hopper (sm_90) without a GPU and
read its resource use from the cubin: registers, spills (stack frame), shared memory, and
whether the wgmma tensor-core path (HGMMA) is used.

The compile sees the same specialization as a real launch of the target shape: pointers and
ints divisible by 16 carry `tt.divisibility` attributes, ints equal to 1 become constants.
Without them the same kernel shows false spills (GPU.md).

    python -m autotune.inspect --dtype bfloat16 --shape 4096 4096 4096

`--mutations` reports, per kernel, the tensors torch.compile's mutation analysis (what
`triton_op` tracing runs on each launch) takes for outputs: an input it takes for one is
written back after the call, and a parameter that requires grad cannot be (the compiled
backward fails), which only a GPU would otherwise show.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

try:  # the launch's own binder and knobs (Triton 3.4 on)
    from triton import knobs
    from triton.runtime.jit import create_function_from_signature
except ImportError:  # pragma: no cover - an older Triton
    knobs = create_function_from_signature = None

from autotune.args import positive_int
from kernels._common import INTERPRETING, TileConfig
from kernels.dense import broken_in_loop_norms
from yat_triton._launch import KernelCall, programs_per_sm
from yat_triton.tuning import config_from_dict


@dataclass
class KernelReport:
    """What the sm_90 compile of one kernel call produced."""

    kernel: str
    registers: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    hgmma: int
    tma: bool
    compile_s: float
    programs_per_sm: int = 1  # resident at once (registers, shared memory, threads)
    warps: int = 0  # as launched: warp specialization adds a producer and consumer warps
    asked_warps: int = 0  # the call's num_warps
    loop_step: int = 0  # SASS instructions of one main-loop step (`sass_shape`)
    after_loop: int = 0  # SASS instructions after the main loop: the epilogue (`sass_shape`)
    wgmma_serialized: str | None = ""  # ptxas's reason if it serialized the wgmma; None: unchecked
    # False: compiled without disassembling (`compile_sm90(disassemble=False)`): the spill
    # counts and the SASS shape are unknown (0), `hgmma` counts the PTX's wgmma instructions
    disassembled: bool = True

    @property
    def warp_specialized(self) -> bool:
        """More warps than the call asked for: Triton's warp specialization split the
        kernel into a producer warpgroup and consumer warpgroups (trading registers through
        setmaxnreg; `registers` is then the launch's even share)."""
        return self.warps > self.asked_warps

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0 or self.spill_stores > 0 or self.spill_loads > 0

    def line(self) -> str:
        spills = (
            f"spill stores/loads {self.spill_stores}/{self.spill_loads}"
            if self.disassembled
            else "spill stores/loads not counted (not disassembled)"
        )
        mma = "HGMMA instructions" if self.disassembled else "wgmma instructions (PTX)"
        return (
            f"{self.kernel}: {self.registers} registers, stack {self.stack_bytes} B, "
            f"{spills}, shared "
            f"{self.shared_bytes} B, {mma} {self.hgmma}, TMA {self.tma}, "
            f"{self.programs_per_sm} programs/SM, {self.warps} warps"
            f"{' (warp-specialized)' if self.warp_specialized else ''}"
            + (
                f", SASS a main-loop step {self.loop_step}, after the loop {self.after_loop}"
                if self.hgmma and self.disassembled
                else ""
            )
            + f", compile {self.compile_s:.1f} s"
            + (f"; WGMMA SERIALIZED: {self.wgmma_serialized}" if self.wgmma_serialized else "")
            + ("; wgmma serialization unchecked (ptxas -v failed)" if self.wgmma_serialized is None else "")
        )


def _nvidia_bin(tool: str) -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool)


# An H200's (and H100's) target, as its driver reports it
SM90 = GPUTarget("cuda", 90, 32)


def static_compile_args(call: KernelCall, fp64_scalars: bool = False) -> tuple[ASTSource, dict[str, object]]:
    """(source, options) of the sm_90 compile that a GPU launch of `call` makes: its
    arguments specialized by Triton's own binder (types, 16-divisibility, ints equal to 1),
    and the launch's compile options (`KernelCall.compile_kwargs`: warps, stages,
    launch_pdl) with the ones Triton's launch adds, so that the compile has the launch's key
    in Triton's cache: the sweep's static prune compiles its tiles on the host's cores, and
    the warmup and the timed launch on the GPU load them from there.
    `fp64_scalars`: the compile of a launch that torch.compile traced: float arguments typed
    fp64, as it passes them (torch 2.11's inductor; a launch types them fp32), and no
    launch_pdl (a traced launch goes without it, `yat_triton._launch.launch`)."""
    fn = call.kernel
    if INTERPRETING:
        raise RuntimeError(
            "static compilation needs compiled kernels, but TRITON_INTERPRET=1 made them "
            "interpreted; run `python -m autotune.inspect` in a process without it"
        )
    if create_function_from_signature is None or not hasattr(fn, "_pack_args"):
        raise RuntimeError(
            f"static compilation needs Triton's launch binder (3.4 on), not {triton.__version__}"
        )
    backend = make_backend(SM90)
    kwargs: dict[str, object] = {**call.compile_kwargs(), "debug": fn.debug or knobs.runtime.debug}
    if fp64_scalars:
        kwargs.pop("launch_pdl", None)
    fields = {f.name for f in dataclasses.fields(backend.parse_options({}))}
    for name in ("instrumentation_mode", "fpsan_homomorphic_casts"):  # as JITFunction.run
        if name in fields and hasattr(knobs.compilation, name):
            kwargs[name] = getattr(knobs.compilation, name)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*call.args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    if fp64_scalars:
        signature = {
            k: "fp64" if isinstance(bound[k], float) and t == "fp32" else t for k, t in signature.items()
        }
    return ASTSource(fn, signature, constexprs, attrs), dict(options.__dict__)


@dataclass(frozen=True)
class StaticCompile:
    """The sm_90 compile of one kernel call as plain data (`static_compile_args`'s source and
    options, the kernel named by its module and name), so that a worker process can make it
    (Triton's front end, the AST's code generation, is Python and holds the GIL: threads on
    many cores wait for each other there). `key`: the compile's identity within one Triton
    (source, specialization, options), as Triton's cache keys it."""

    module: str
    name: str
    signature: dict[str, str]
    constexprs: dict[object, object]
    attrs: dict[object, object]
    options: dict[str, object]
    asked_warps: int
    key: str

    @classmethod
    def of(cls, call: KernelCall) -> StaticCompile:
        src, options = static_compile_args(call)
        fn = call.kernel
        key = src.hash() + json.dumps(options, sort_keys=True, default=repr)
        return cls(fn.fn.__module__, fn.__name__, dict(src.signature), dict(src.constants), dict(src.attrs),
                   options, call.kwargs.get("num_warps", 4), key)  # fmt: skip

    def lean_report(self) -> KernelReport:
        """Compile (or load from Triton's cache) and report as `compile_sm90(disassemble=False)`."""
        fn = getattr(importlib.import_module(self.module), self.name)
        t0 = time.perf_counter()
        try:
            src = ASTSource(fn, self.signature, self.constexprs, self.attrs)
            compiled = triton.compile(src, target=SM90, options=dict(self.options))
        except Exception as e:  # noqa: BLE001 - whatever the compiler raises, named in one line
            raise CompileFailure(self.name, e) from e
        return _lean_report(self.name, self.asked_warps, compiled, time.perf_counter() - t0)


_SASS_LINE = re.compile(r"\s+/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;")
_SASS_LABEL = re.compile(r"(\.L_x_\d+):")
_BACK_BRANCH = re.compile(r"\bBRA\s+`\((\.L_x_\d+)\)")


def sass_shape(sass: str) -> tuple[int, int]:
    """(loop_step, after_loop): static SASS instruction counts of a kernel (NOPs left out).

    loop_step: the body of the smallest loop (a backward branch to a label) holding an
    HGMMA: the instructions each warp issues per main-loop step. after_loop: those laid out
    after both that loop and the last HGMMA (a pipelined loop's drained MMAs come after
    it), up to the branch to itself that closes the code: the epilogue. A persistent
    kernel whose tile and K loops Triton fused into one shows that loop as the step, its
    conditional epilogue included, and little after it. Both 0 without HGMMA. Counted in
    the layout, not as executed: a branch's untaken side counts, a loop's repeats do not.
    What a step costs against its MMAs is for the GPU to measure; these counts show what a
    change removed."""
    labels: dict[str, int] = {}
    ins: list[str] = []
    for line in sass.splitlines():
        label = _SASS_LABEL.match(line)
        if label:
            labels[label.group(1)] = len(ins)
            continue
        m = _SASS_LINE.match(line)
        if m and not m.group(1).endswith("NOP"):
            ins.append(m.group(1))
    mma = [i for i, text in enumerate(ins) if "HGMMA" in text]
    if not mma:
        return 0, 0
    loops = []  # (body length, index of the back-branch)
    for i, text in enumerate(ins):
        back = _BACK_BRANCH.search(text)
        if back and labels.get(back.group(1), i + 1) <= i:
            start = labels[back.group(1)]
            if any(start <= j <= i for j in mma):
                loops.append((i - start + 1, i))
    end = len(ins)
    trap = _BACK_BRANCH.search(ins[-1])
    if trap and labels.get(trap.group(1)) == end - 1:
        end -= 1  # the branch to itself that closes the code
    step, loop_end = min(loops, default=(0, -1))
    return step, end - max(mma[-1], loop_end) - 1


def _ptxas() -> str:
    """The ptxas Triton assembles sm_90 code with (Triton 3.9 ships a newer one next to the
    older `bin/ptxas`, which cannot read its PTX)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:
        return _nvidia_bin("ptxas")
    return get_ptxas(90).path


def wgmma_serialization(ptxas_notes: str) -> str:
    """ptxas's reason, in its verbose notes, for serializing a kernel's wgmma instructions
    (info C7515), or "": serialized, each MMA waits for the one before it, and the main
    loop loses the tensor cores' overlap with everything else."""
    m = re.search(r"wgmma\.mma_async instructions are serialized due to (.*?) in the function", ptxas_notes)
    return m.group(1) if m else ""


def _serialized_wgmma(ptx: str) -> str | None:
    """`wgmma_serialization` of the PTX, assembled once more with ptxas's verbose notes
    (Triton assembles without them); None when that assembly fails."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "kernel.ptx", Path(tmp) / "kernel.cubin"
        src.write_text(ptx)
        target = re.search(r"^\.target\s+(\w+)", ptx, re.MULTILINE)
        arch = target.group(1) if target else "sm_90a"
        done = subprocess.run(
            [_ptxas(), f"-arch={arch}", "-v", str(src), "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
    return wgmma_serialization(done.stderr) if done.returncode == 0 else None


def _usage_field(usage: str, name: str) -> int:
    """One number of cuobjdump's resource usage (REG, STACK, SHARED, ...); 0 if absent."""
    m = re.search(rf"{name}:(\d+)", usage)
    return int(m.group(1)) if m else 0


def _cubin_outputs(cubin: bytes, disassemble: bool) -> tuple[str, str]:
    """(cuobjdump's resource usage: REG, STACK, SHARED, ...; nvdisasm's SASS, or "" without
    `disassemble`) of a cubin, written once to a temporary file for both tools."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)

        def run(*cmd: str) -> str:
            return subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=True).stdout

        usage = run(_nvidia_bin("cuobjdump"), "--dump-resource-usage")
        return usage, run(_nvidia_bin("nvdisasm")) if disassemble else ""


def _resource_usage(cubin: bytes) -> tuple[int, int, int, int, bool, int, int, str]:
    """(registers, stack, static shared, HGMMA count, TMA used, STL, LDL, SASS text)."""
    usage, sass = _cubin_outputs(cubin, disassemble=True)

    def field(name: str) -> int:
        return _usage_field(usage, name)

    hgmma = len(re.findall(r"\bHGMMA\b", sass))
    tma = bool(re.search(r"\bUTMALDG\b|\bUBLKCP\b", sass))
    return (
        field("REG"), field("STACK"), field("SHARED"), hgmma, tma,
        sass.count("STL"), sass.count("LDL"), sass,
    )  # fmt: skip


class CompileFailure(RuntimeError):
    """A kernel that this Triton does not compile for sm_90 at the asked tile. `describe`
    names it in one line, with the compiler's first error line where the compiler's stderr
    was held (`_compiler_stderr`; its IR dump and the traceback are left out)."""

    def __init__(self, kernel: str, error: BaseException) -> None:
        self.kernel, self.error = kernel, error
        super().__init__(self.describe(""))

    def describe(self, diagnostics: str) -> str:
        found = [ln.split("error:", 1)[1].strip() for ln in diagnostics.splitlines() if "error:" in ln]
        first = (
            found[0] if found else (str(self.error).strip().splitlines() or [type(self.error).__name__])[0]
        )
        return (
            f"{self.kernel} does not compile for sm_90 with Triton {triton.__version__}: {first} "
            f"({type(self.error).__name__})"
        )


@contextlib.contextmanager
def _compiler_stderr() -> Iterator[Callable[[], str]]:
    """Hold what the compiler writes to file descriptor 2 (MLIR prints a failing pass's
    whole module there) and give it back as a string on request; it is written out again
    after the block unless the block failed, so warnings still show. It swaps the process's
    fd 2: for the single-threaded command line only (the sweep compiles in threads)."""
    sys.stderr.flush()
    saved = os.dup(2)
    kept: list[str] = []  # the text, once the block is over (readable after it)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)

        def text() -> str:
            if kept:
                return kept[0]
            held.seek(0)
            return held.read().decode(errors="replace")

        failed = False
        try:
            yield text
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            kept.append(text())
            if not failed:
                sys.stderr.write(kept[0])


def compile_sm90(
    call: KernelCall,
    *,
    dump_dir: Path | None = None,
    maxnreg: int | None = None,
    fp64_scalars: bool = False,
    disassemble: bool = True,
) -> KernelReport:
    """Compile one planned call for sm_90 and report its resources; optionally dump IRs.
    `maxnreg`: cap the registers a thread (ptxas), to see what a cap costs in spills.
    `fp64_scalars`: as `static_compile_args`. `disassemble=False` (the report the sweep's
    static prune reads, `StaticCompile.lean_report`): no SASS, so no nvdisasm run; the
    spills are then the stack frame alone (a spill always takes one), `hgmma` counts the
    PTX's wgmma instructions, the main-loop counts stay 0 and `dump_dir` is not written."""
    src, options = static_compile_args(call, fp64_scalars)
    if maxnreg:
        options["maxnreg"] = maxnreg
    t0 = time.perf_counter()
    try:
        compiled = triton.compile(src, target=SM90, options=options)
    except Exception as e:  # noqa: BLE001 - whatever the compiler raises, named in one line
        raise CompileFailure(call.kernel.__name__, e) from e
    elapsed = time.perf_counter() - t0
    if not disassemble:
        return _lean_report(call.kernel.__name__, call.kwargs.get("num_warps", 4), compiled, elapsed)
    regs, stack, shared_static, hgmma, tma, stl, ldl, sass = _resource_usage(compiled.asm["cubin"])
    if dump_dir is not None:  # TTIR, TTGIR, LLIR, PTX, cubin as Triton keeps them, and the SASS
        dump_dir.mkdir(parents=True, exist_ok=True)
        (dump_dir / f"{call.kernel.__name__}.sass").write_text(sass)
        for ext, text in compiled.asm.items():
            name = f"{call.kernel.__name__}.{ext}"
            if isinstance(text, bytes):
                (dump_dir / name).write_bytes(text)
            else:
                (dump_dir / name).write_text(text)
    # Dynamic shared memory (the pipelined buffers) is in the metadata, not the cubin.
    shared = max(shared_static, int(getattr(compiled.metadata, "shared", 0)))
    asked = call.kwargs.get("num_warps", 4)
    warps = int(getattr(compiled.metadata, "num_warps", asked))  # with the partitions' warps
    per_sm = programs_per_sm(regs, shared, warps)
    serialized = _serialized_wgmma(compiled.asm["ptx"]) if hgmma else ""
    return KernelReport(
        call.kernel.__name__, regs, stack, stl, ldl, shared, hgmma, tma, elapsed, per_sm, warps, asked,
        *sass_shape(sass), serialized,
    )  # fmt: skip


# a bulk copy from global to shared memory (SASS UTMALDG / UBLKCP), not a TMA store
# (Triton 3.6 writes shared::cluster, 3.9 shared::cta)
_PTX_TMA_LOAD = re.compile(r"\bcp\.async\.bulk(\.tensor\.\dd)?\.shared::(cluster|cta)\.global\b")


def _lean_report(kernel: str, asked: int, compiled: object, elapsed: float) -> KernelReport:
    """`compile_sm90`'s report without disassembling: registers, stack frame and static
    shared memory from cuobjdump's resource usage, wgmma and TMA from the PTX. `asked`: the
    call's num_warps."""
    usage, _ = _cubin_outputs(compiled.asm["cubin"], disassemble=False)  # type: ignore[attr-defined]
    ptx = compiled.asm["ptx"]  # type: ignore[attr-defined]

    def field(name: str) -> int:
        return _usage_field(usage, name)

    hgmma = len(re.findall(r"\bwgmma\.mma_async\b", ptx))
    shared = max(field("SHARED"), int(getattr(compiled.metadata, "shared", 0)))  # type: ignore[attr-defined]
    warps = int(getattr(compiled.metadata, "num_warps", asked))  # type: ignore[attr-defined]
    return KernelReport(
        kernel, field("REG"), field("STACK"), 0, 0, shared, hgmma,
        bool(_PTX_TMA_LOAD.search(ptx)), elapsed, programs_per_sm(field("REG"), shared, warps), warps, asked,
        wgmma_serialized=_serialized_wgmma(ptx) if hgmma else "", disassembled=False,
    )  # fmt: skip


@contextlib.contextmanager
def as_on_gpu() -> Iterator[None]:
    """Planners inside the block plan their meta tensors' launches as on an sm_90 GPU: a
    forward GEMM overlaps its norm pass where a GPU's would (`overlap_norm_pass`, on unless
    YAT_TRITON_PDL=0), so that its compile is the one a GPU runs."""
    from yat_triton._launch import PDL, forced_overlap

    with forced_overlap(PDL):
        yield


def inspect_dense_fwd(
    M: int, N: int, K: int, dtype: torch.dtype, config: TileConfig | None = None, **kw: object
) -> list[KernelReport]:
    """Compile the dense forward kernels of an (M,K)x(N,K) problem for sm_90 (meta tensors);
    `gemm_only` (in `kw`): the forward kernel as `gemm_only_call`."""
    from yat_triton.dense import plan_dense_fwd

    x = torch.empty((M, K), dtype=dtype, device="meta")
    w = torch.empty((N, K), dtype=dtype, device="meta")
    b = torch.empty((N,), dtype=dtype, device="meta")
    precision = "tf32" if dtype == torch.float32 else "ieee"
    with as_on_gpu():
        _, calls = plan_dense_fwd(
            x, w, b, None, 1.0, None, 1e-5, precision, bool(kw.get("save", False)), config
        )
    dump, cap = kw.get("dump_dir"), kw.get("maxnreg")
    if kw.get("gemm_only"):
        calls = list(map(gemm_only_call, calls))
    return [compile_sm90(c, dump_dir=Path(dump) if dump else None, maxnreg=cap) for c in calls]  # type: ignore[arg-type]


def gemm_only_call(call: KernelCall) -> KernelCall:
    """A forward kernel's `call` with GEMM_ONLY (`kernels.dense.fwd_store`: the accumulator
    stored without the ⵟ math) and nothing saved for backward (STORE_S off); a call of
    another kernel (one taking no GEMM_ONLY: the norm passes) as it is."""
    if "GEMM_ONLY" not in call.kwargs:
        return call
    return dataclasses.replace(call, kwargs={**call.kwargs, "GEMM_ONLY": True, "STORE_S": False})


def inspect_conv2d_fwd(
    B: int,
    C_in: int,
    HW: int,
    C_out: int,
    k: int,
    dtype: torch.dtype,
    *,
    stride: int = 1,
    groups: int = 1,
    config: TileConfig | None = None,
    save: bool = False,
    dump_dir: str | None = None,
    maxnreg: int | None = None,
    gemm_only: bool = False,
) -> list[KernelReport]:
    """Compile the conv2d forward kernels (channels_last input, 'same'-style padding k//2)
    for sm_90 (meta tensors); `gemm_only`: the forward kernel as `gemm_only_call`."""
    from yat_triton.conv import plan_conv2d_fwd

    x = torch.empty((B, C_in, HW, HW), dtype=dtype, device="meta").to(memory_format=torch.channels_last)
    w = torch.empty((C_out, C_in // groups, k, k), dtype=dtype, device="meta")
    b = torch.empty((C_out,), dtype=dtype, device="meta")
    precision = "tf32" if dtype == torch.float32 else "ieee"
    p = k // 2
    with as_on_gpu():
        _, calls = plan_conv2d_fwd(
            x, w, b, None, 1.0, None, 1e-5, (stride, stride), (p, p, p, p), (1, 1), groups,
            precision, save, config,
        )  # fmt: skip
    if gemm_only:
        calls = list(map(gemm_only_call, calls))
    return [compile_sm90(c, dump_dir=Path(dump_dir) if dump_dir else None, maxnreg=maxnreg) for c in calls]


def inspect_backward(
    op: str,
    dtype: torch.dtype,
    *,
    shape: tuple[int, int, int] = (4096, 4096, 4096),
    conv: tuple[int, int, int, int, int] = (64, 64, 56, 64, 3),
    stride: int = 1,
    config: TileConfig | None = None,
    dump_dir: str | None = None,
    maxnreg: int | None = None,
) -> list[KernelReport]:
    """Compile every backward kernel of the dense problem `shape` (M, N, K) or of the conv2d
    problem `conv` (B, C_in, HW, C_out, k: channels_last, padding k//2) for sm_90 (meta
    tensors), with `config` forced as the backward tile (fitted to each GEMM, as a tuned
    one is) or the shipped ones."""
    import yat_triton.conv as yconv
    import yat_triton.dense as ydense
    from yat_triton.tuning import forced_config

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    precision = "tf32" if dtype == torch.float32 else "ieee"

    def meta(*size: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.empty(size, dtype=dt, device="meta")

    scalars = (None, 1.0, None, 1e-5)  # alpha, alpha_value, eps, eps_value
    if op == "dense":
        M, N, K = shape
        x, w = meta(M, K), meta(N, K)
        saved = (meta(M, N, dt=acc), meta(M, dt=acc), meta(N, dt=acc))

        def backward() -> object:
            return ydense.dense_bwd(meta(M, N), x, w, meta(N), *scalars, *saved, precision, [True] * 5)
    else:
        B, C_in, HW, C_out, k = conv
        cl = torch.channels_last
        x, w = meta(B, C_in, HW, HW).to(memory_format=cl), meta(C_out, C_in, k, k)
        p = k // 2
        OH = (HW + 2 * p - k) // stride + 1
        g = meta(B, C_out, OH, OH).to(memory_format=cl)
        M = B * OH * OH
        saved = (meta(M, C_out, dt=acc), meta(M, 1, dt=acc), meta(C_out, dt=acc))
        geo = ((stride, stride), (p, p, p, p), (1, 1), 1)

        def backward() -> object:
            return yconv.conv2d_bwd(g, x, w, meta(C_out), *scalars, *saved, *geo, precision, [True] * 5)

    if config is None:
        calls = record_calls(backward)
    else:
        with forced_config(op, "bwd", config):
            calls = record_calls(backward)
    return [compile_sm90(c, dump_dir=Path(dump_dir) if dump_dir else None, maxnreg=maxnreg) for c in calls]


class _Sm90Driver:
    """Stands in for Triton's active driver where there is no GPU: what torch's kernel
    analysis asks of it (the target it generates TTIR for, the device, the stream)."""

    def get_current_target(self) -> GPUTarget:
        return SM90

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0


@contextlib.contextmanager
def _driver_for_analysis() -> Iterator[None]:
    if torch.cuda.is_available():
        yield
        return
    config = triton.runtime.driver
    saved = config._active
    config.set_active(_Sm90Driver())
    try:
        yield
    finally:
        config._active = saved


def torch_compile_outputs(call: KernelCall) -> list[str]:
    """The tensor arguments of `call` that torch.compile's mutation analysis takes for
    outputs (torch._higher_order_ops.triton_kernel_wrap: identify_mutated_tensors, or in
    newer torch the writes of identify_accessed_tensors); all of them when the analysis
    fails (torch warns)."""
    import torch._higher_order_ops.triton_kernel_wrap as wrap

    names = list(inspect.signature(call.kernel.fn).parameters)
    kwargs = dict(zip(names, call.args, strict=False))
    kwargs.update({k: v for k, v in call.kwargs.items() if k in names})
    with _driver_for_analysis():
        if hasattr(wrap, "identify_mutated_tensors"):
            return list(wrap.identify_mutated_tensors(call.kernel, kwargs, {}))
        writes = wrap.identify_accessed_tensors(call.kernel, kwargs, {}).read_writes.writes
        return [w.name for w in writes if isinstance(kwargs.get(w.name), torch.Tensor)]


def record_calls(fn: Callable[[], object]) -> list[KernelCall]:
    """The kernel launches `fn` plans, recorded instead of run (meta tensors welcome).

    The launchers choose the Triton path for CUDA / interpreted CPU tensors only, so the
    choice is forced for the call, and they plan as on a GPU (`as_on_gpu`).
    """
    import yat_triton.conv as conv
    import yat_triton.dense as dense

    calls: list[KernelCall] = []
    with (
        mock.patch.object(KernelCall, "run", lambda self: calls.append(self)),
        mock.patch.object(dense, "use_triton", lambda t: True),
        mock.patch.object(conv, "use_triton", lambda t: True),
        as_on_gpu(),
    ):
        fn()
    return calls


def all_calls(dtype: torch.dtype) -> list[tuple[str, KernelCall]]:
    """Every kernel of the dense and conv2d ops, forward and backward (each default tile on
    the other kernel too: TMA, or pointer where the default runs TMA), at a large dense shape
    (4096^3) and a ResNet-50 3x3 layer (batch 64, 64 channels, 56x56, channels_last); the
    conv forwards with their patch norms the other way (labelled "conv2d pass" where they
    come from the pixel-norm pass; not 16-bit io's pointer kernel summing them in its loop,
    which is never launched: `broken_in_loop_norms`); and the forward of a 64-row batch
    through the 4096-wide layer ("dense small"), whose default tile sums the norms in its
    main loop in fp32 (`dense_default_config`); and the GEMM-like forwards as inference
    runs them ("dense infer", "conv2d infer": nothing saved, another compile of each); and
    both conv forwards and input gradients splitting their tail ("conv2d split": ResNet-50's
    14x14x256 layer, the forwards in training and in inference)."""
    import yat_triton.conv as conv
    import yat_triton.dense as dense

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    prec = "tf32" if dtype == torch.float32 else "ieee"

    def meta(*shape: int, dt: torch.dtype = dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dt, device="meta")

    out: list[tuple[str, KernelCall]] = []
    n = 4096
    x, w, b = meta(n, n), meta(n, n), meta(n)
    args = (b, None, 1.0, None, 1e-5)
    out += [("dense fwd", c) for c in record_calls(lambda: dense.dense_fwd(x, w, *args, prec, True))]

    def infer() -> list[KernelCall]:
        return record_calls(lambda: dense.dense_fwd(x, w, *args, prec, False))

    small = meta(64, n)
    out += [("dense small", c) for c in record_calls(lambda: dense.dense_fwd(small, w, *args, prec, True))]
    s, nx, nw = meta(n, n, dt=acc), meta(n, dt=acc), meta(n, dt=acc)
    bwd = record_calls(lambda: dense.dense_bwd(meta(n, n), x, w, *args, s, nx, nw, prec, [True] * 5))
    out += [("dense bwd", c) for c in bwd]
    if dtype != torch.float64:  # the default tiles on the other kernel (no fp64 TMA path): the
        # persistent TMA backward GEMMs, and the forward's twin (TMA, or where the default
        # runs the TMA kernel already, a 16-bit forward that fills the GPU, the pointer one)
        from yat_triton.tuning import forced_config

        fwd = dense.pick_dense_config(n, n, n, dtype)
        twin = dataclasses.replace(fwd, tma=not fwd.tma)
        tma = dataclasses.replace(dense.pick_dense_config(n, n, n, dtype, "bwd"), tma=True)
        with forced_config("dense", "fwd", twin), forced_config("dense", "bwd", tma):
            out += [
                ("dense fwd", c) for c in record_calls(lambda: dense.dense_fwd(x, w, *args, prec, True))[-1:]
            ]
            bwd = record_calls(lambda: dense.dense_bwd(meta(n, n), x, w, *args, s, nx, nw, prec, [True] * 5))
            out += [("dense bwd", c) for c in bwd if "gemm" in c.kernel.fn.__name__]
            out += [("dense infer", infer()[-1])]  # as inference runs it (nothing saved)
    out += [("dense infer", infer()[-1])]
    B, C, HW, k = 64, 64, 56, 3
    xc = meta(B, C, HW, HW).to(memory_format=torch.channels_last)
    wc, bc = meta(C, C, k, k), meta(C)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    cargs = (bc, None, 1.0, None, 1e-5)
    M = B * HW * HW
    ctile = conv.pick_conv_config(M, C, C, dtype)
    nil = ctile.norms_in_loop
    default = record_calls(lambda: conv.conv2d_fwd(xc, wc, *cargs, *geo, prec, True))
    out += [("conv2d pass" if c is default[-1] and not nil else "conv2d fwd", c) for c in default]
    if dtype != torch.float64:  # the conv's TMA forward, at the default tile; then both
        # forwards with the patch norms the other way ("conv2d pass": from the pixel-norm pass)
        from yat_triton.tuning import forced_config

        for tma, in_loop in ((True, nil), (False, not nil), (True, not nil)):
            label = "conv2d fwd" if in_loop else "conv2d pass"
            tile = dataclasses.replace(ctile, tma=tma, norms_in_loop=in_loop)
            if broken_in_loop_norms(tile, dtype.itemsize):  # never launched (16-bit io)
                continue
            with forced_config("conv2d", "fwd", tile):
                out += [
                    (label, c)
                    for c in record_calls(lambda: conv.conv2d_fwd(xc, wc, *cargs, *geo, prec, True))[-1:]
                ]
                if tma and not in_loop:  # as inference runs it (nothing saved)
                    out += [
                        ("conv2d infer", c)
                        for c in record_calls(lambda: conv.conv2d_fwd(xc, wc, *cargs, *geo, prec, False))[-1:]
                    ]
        # a split tail ("conv2d split", `tail_split`): ResNet-50's 14x14x256 layer, 196 tiles of
        # 128x128 on an H200, in training and in inference, on both kernels
        x14, w14, b14 = (
            meta(B, 256, 14, 14).to(memory_format=torch.channels_last),
            meta(256, 256, k, k),
            meta(256),
        )
        args14 = (b14, None, 1.0, None, 1e-5)
        g14 = meta(B, 256, 14, 14).to(memory_format=torch.channels_last)
        saved14 = (meta(B * 196, 256, dt=acc), meta(B * 196, 1, dt=acc), meta(256, dt=acc))
        for tma in (False, True):
            tile = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=2, tma=tma, split_tail=True)
            with forced_config("conv2d", "fwd", tile):
                for save in (True, False):
                    calls = record_calls(
                        lambda save=save: conv.conv2d_fwd(x14, w14, *args14, *geo, prec, save)
                    )
                    out += [("conv2d split", calls[-1])]
            # and its input gradient, split as well (fp16's gs is fp32: the pointer kernel)
            with forced_config("conv2d", "bwd", dataclasses.replace(tile, epilogue_split=1)):
                calls = record_calls(
                    lambda: conv.conv2d_bwd(g14, x14, w14, *args14, *saved14, *geo, prec, [True] * 5)
                )
            out += [("conv2d split", c) for c in calls if c.kernel.fn.__name__.startswith("yat_conv_dgrad")]
    M = B * HW * HW
    gc = meta(B, C, HW, HW).to(memory_format=torch.channels_last)

    def conv_bwd() -> list[KernelCall]:
        saved = (meta(M, C, dt=acc), meta(M, 1, dt=acc), meta(C, dt=acc))
        return record_calls(lambda: conv.conv2d_bwd(gc, xc, wc, *cargs, *saved, *geo, prec, [True] * 5))

    out += [("conv2d bwd", c) for c in conv_bwd()]
    if dtype not in (torch.float64, torch.float16):  # the TMA input and weight gradients
        from yat_triton.tuning import forced_config  # (fp16's gs is fp32: pointer kernels)

        # the input gradient's default tile (128x64x64), fitted to the weight gradient as
        # 64x64x64: one tap a column tile of these 64 channels
        ctma = dataclasses.replace(conv.pick_conv_config(B * HW * HW, C, C, dtype, "bwd"), tma=True)
        with forced_config("conv2d", "bwd", ctma):
            grads = [c for c in conv_bwd() if c.kernel.fn.__name__.endswith("grad_tma_kernel")]
            out += [("conv2d bwd", c) for c in grads]
    return out


def prune_cost(suite: str, dtype: str, processes: int) -> str:
    """The sweep's static prune of `suite`'s problems in `dtype` (`sweep.StaticPrune`, one
    run), timed: each problem's first stage of the guided search (the tile it ships with and
    the seeds, what a GPU sweep checks before timing anything, then the next ranked tiles in
    place of those pruned, which it checks after timing the first batch, with as many after
    them checked ahead, `search.Batch`; a fwd+bwd problem after its bwd one checks fewer),
    recorded on meta tensors, then checked as the sweep checks them, batch by batch. A
    line: problems, tiles proposed, calls checked and in how many batches (one after the
    other, each in parallel; those with a compile to run: the others found every verdict
    already known), distinct compiles, tiles pruned, wall seconds."""
    from autotune import search, sweep

    todo = sweep.tasks(sweep.load_suite(suite), list(sweep.OPS), list(sweep.MODES), [dtype], None)
    prune = sweep.StaticPrune(processes)
    tiles = pruned = checks = compiling = 0
    elapsed = 0.0  # the checks' (recording on meta tensors costs little, and is left out)
    try:
        for task in todo:
            first, ranked, _ = sweep.task_tiles(task)
            problem = sweep.Problem(task.op, task.shape, task.dtype, task.mode, "meta")
            dropped: set[TileConfig] = set()
            # nothing timed: the search stops after its first stage (seeds and refills)
            for batch in search.guided(first, ranked, dict, None, dropped=lambda d=dropped: d):
                # (as the sweep: `search.Batch`)
                checked = [sweep.checked_calls(problem, c) for c in batch + batch.ahead]
                t0, known = time.perf_counter(), len(prune.verdicts)
                reasons = prune.reasons(checked)[: len(batch)]
                elapsed += time.perf_counter() - t0
                checks += 1
                compiling += len(prune.verdicts) > known
                dropped.update(c for c, why in zip(batch, reasons, strict=True) if why and c is not None)
                tiles += len(batch)
                pruned += sum(why is not None for why in reasons)
    finally:
        prune.close()
    return (
        f"static prune, suite {suite}, {dtype}: {len(todo)} problems, {tiles} tiles, "
        f"{prune.calls_checked} calls checked in {checks} batches ({compiling} compiling), "
        f"{len(prune.verdicts)} distinct compiles, "
        f"{pruned} tiles pruned; {elapsed:.1f} s on {prune.ran_on} ({os.cpu_count()} cores)"
    )


def add_conv_argument(parser: argparse.ArgumentParser) -> None:
    """--conv B C_IN HW C_OUT K: a channels_last conv2d problem, stride 1, padding K//2."""
    parser.add_argument(
        "--conv",
        nargs=5,
        type=positive_int,
        default=[64, 64, 56, 64, 3],
        metavar=("B", "C_IN", "HW", "C_OUT", "K"),
        help="conv2d problem (channels_last, padding K//2; default: a ResNet-50 3x3 layer)",
    )


TILE_FORMAT = "BMxBNxBK:warps:stages[:eSPLIT][:nil][:tma][:ws][:sk]"


def parse_tile(text: str) -> TileConfig:
    """A tile as --config writes it (TILE_FORMAT, e.g. 128x128x64:8:4:e2:tma), group 8; an
    argparse error naming the format for anything else."""
    try:
        tile, warps, stages, *rest = text.split(":")
        bm, bn, bk = (int(v) for v in tile.split("x"))
        split = [int(r[1:]) for r in rest if r.startswith("e")]
        unknown = [r for r in rest if r not in ("nil", "tma", "ws", "sk") and not r.startswith("e")]
        if unknown or len(split) > 1:
            raise ValueError(f"unknown or repeated options {unknown or rest}")
        cfg = TileConfig(
            bm, bn, bk, 8, int(warps), int(stages), norms_in_loop="nil" in rest,
            epilogue_split=split[0] if split else 1, tma="tma" in rest, warp_specialize="ws" in rest,
            split_tail="sk" in rest,
        )  # fmt: skip
        config_from_dict(cfg.as_dict())  # powers of two, sizes, a warp-specializable tile
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tile {TILE_FORMAT}: {e}") from e
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="dense", choices=["dense", "conv2d"])
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32", "float64"])
    add_conv_argument(parser)
    parser.add_argument("--stride", type=positive_int, default=1, help="conv2d stride")
    parser.add_argument("--all", action="store_true", help="every kernel of both ops, forward and backward")
    parser.add_argument(
        "--shape", nargs=3, type=positive_int, default=[4096, 4096, 4096], metavar=("M", "N", "K")
    )
    parser.add_argument(
        "--config",
        type=parse_tile,
        help=(
            f"tile as {TILE_FORMAT} (e.g. 128x128x64:8:4:e2:tma, 128x256x64:4:3:tma:ws), default: heuristic"
        ),
    )
    parser.add_argument("--save", action="store_true", help="forward that saves s for backward")
    parser.add_argument(
        "--backward",
        action="store_true",
        help="the op's backward kernels instead of its forward (--config: the backward tile, "
        "fitted to each GEMM)",
    )
    parser.add_argument(
        "--maxnreg",
        type=positive_int,
        help="cap registers a thread (e.g. 128: two 8-warp programs an SM) to see the spills it costs",
    )
    parser.add_argument(
        "--fp64-scalars",
        action="store_true",
        help="with --all: float arguments typed fp64, as torch.compile passes them (a launch: fp32)",
    )
    parser.add_argument(
        "--gemm-only",
        action="store_true",
        help="the forward kernel storing its accumulator without the ⵟ math (GEMM_ONLY, the "
        "breakdown's fwd-gemm lines): what the ⵟ math costs in registers and instructions",
    )
    parser.add_argument(
        "--no-sass",
        action="store_true",
        help="with --all: compile as the sweep's static prune does, without disassembling "
        "(no spill counts, no SASS shape; `time` it against a run without, on an empty "
        "TRITON_CACHE_DIR, for what the disassembly costs)",
    )
    parser.add_argument(
        "--prune",
        metavar="SUITE",
        help="the sweep's static prune of SUITE's problems in --dtype (each one's first stage of "
        "the guided search: its seeds and those checked in place of the seeds pruned, as a GPU sweep "
        "checks them before timing; no GPU needed), timed: on an empty TRITON_CACHE_DIR, what a "
        "sweep's first run pays",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help="with --prune: worker processes (below 2: threads; default: one a core, as a GPU sweep)",
    )
    parser.add_argument("--dump", help="directory for TTIR/TTGIR/LLIR/PTX/cubin dumps")
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel")
    parser.add_argument(
        "--mutations",
        action="store_true",
        help="per kernel of --all (pointer variants: torch.compile runs those), the tensors "
        "torch.compile's mutation analysis takes for outputs",
    )
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.processes is not None and (args.prune is None or args.processes < 0):
        parser.error(f"--processes: a number >= 0, with --prune (got {args.processes})")
    if args.prune is not None:
        from autotune.sweep import DTYPES, load_suite

        others = [a.option_strings[0] for a in parser._actions
                  if a.dest not in ("help", "prune", "processes", "dtype")
                  and getattr(args, a.dest) != parser.get_default(a.dest)]  # fmt: skip
        if others:
            parser.error(f"--prune: a suite's problems, in --dtype alone (not {', '.join(others)})")
        if args.dtype not in DTYPES:
            parser.error(f"--prune: --dtype one of the sweep's {DTYPES}, not {args.dtype}")
        try:
            load_suite(args.prune)
        except ValueError as e:
            parser.error(f"--prune: {e}")
    if args.mutations:
        import yat_triton.conv as conv
        import yat_triton.dense as dense

        # traced calls never take host TMA descriptors (`tma_ready`): plan as they run
        with (
            mock.patch.object(dense, "tma_ready", lambda *t: False),
            mock.patch.object(conv, "tma_ready", lambda *t: False),
        ):
            calls = all_calls(dtype)
        seen = set()
        for label, call in calls:
            name = call.kernel.fn.__name__
            if (label, name) in seen:
                continue
            seen.add((label, name))
            outputs = torch_compile_outputs(call)
            print(json.dumps({"op": label, "kernel": name, "outputs": outputs}) if args.json
                  else f"{label:11s} {name}: {', '.join(outputs)}")  # fmt: skip
        return 0
    if args.no_sass and not args.all:
        parser.error("--no-sass: with --all only")
    if args.gemm_only and (args.backward or args.all or args.save):
        parser.error(
            "--gemm-only: a forward's kernel, as inference runs it (not with --backward, --all, --save)"
        )
    if INTERPRETING:  # the compiles below would fail on the first kernel
        parser.error("static compilation needs compiled kernels, but TRITON_INTERPRET=1 is set: unset it")
    if args.prune is not None:
        from autotune.sweep import compile_processes

        processes = compile_processes() if args.processes is None else args.processes
        print(prune_cost(args.prune, args.dtype, processes))
        return 0
    if args.all:
        failures = 0
        for label, call in all_calls(dtype):
            try:
                with _compiler_stderr() as diagnostics:
                    report = compile_sm90(call, fp64_scalars=args.fp64_scalars, disassemble=not args.no_sass)
            except CompileFailure as e:
                failures += 1
                why = e.describe(diagnostics())
                print(json.dumps({"op": label, "error": why}) if args.json else f"{label:11s} {why}")
                continue
            if args.json:
                print(json.dumps({"op": label, **dataclasses.asdict(report)}))
            else:
                print(f"{label:11s} {report.line()}")
        return 1 if failures else 0
    try:
        with _compiler_stderr() as diagnostics:
            reports = _inspect_one(args, dtype)
    except CompileFailure as e:
        print(f"autotune.inspect: {e.describe(diagnostics())}", file=sys.stderr)
        return 1
    for report in reports:
        print(json.dumps(dataclasses.asdict(report)) if args.json else report.line())
    return 0


def _inspect_one(args: argparse.Namespace, dtype: torch.dtype) -> list[KernelReport]:
    cfg = args.config
    if args.backward:
        reports = inspect_backward(
            args.op, dtype, shape=tuple(args.shape), conv=tuple(args.conv), stride=args.stride,
            config=cfg, dump_dir=args.dump, maxnreg=args.maxnreg,
        )  # fmt: skip
    elif args.op == "conv2d":
        B, C_in, HW, C_out, k = args.conv
        reports = inspect_conv2d_fwd(
            B, C_in, HW, C_out, k, dtype, stride=args.stride, config=cfg, save=args.save,
            dump_dir=args.dump, maxnreg=args.maxnreg, gemm_only=args.gemm_only,
        )  # fmt: skip
    else:
        M, N, K = args.shape
        reports = inspect_dense_fwd(
            M, N, K, dtype, cfg, save=args.save, dump_dir=args.dump, maxnreg=args.maxnreg,
            gemm_only=args.gemm_only,
        )  # fmt: skip
    return reports


if __name__ == "__main__":
    raise SystemExit(main())
