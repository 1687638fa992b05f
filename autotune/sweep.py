"""The sweep: the tile configs a search picks (`autotune.search`: guided by default, or
every config of the search space) and every baseline, per problem, each checked against a
float64 reference before its time counts, written row by row to the results database (so
an interrupted sweep resumes where it stopped).

Providers (SPEC.md section 5): `yat_triton` (one row per tile config: of the forward
kernel in fwd mode, of the backward kernels in bwd and fwd+bwd modes, where the first row,
config "", is the op on its default tiles), `linear+relu`,
`addmm_relu`, `conv+relu` (cuDNN, channels_last, benchmark mode), `eager_ref` (the ⵟ layer
in plain PyTorch, fp32 math as nmn), `compiled_ref` (torch.compile of it, max-autotune
unless told otherwise; GPU only) and `nmn` where installed. Baseline rows record the TF32
settings as their config. Every provider is timed alike (`autotune.timing`: do_bench of the
call captured as a CUDA graph, L2 flushed; a row says how it was timed).

The check compares everything a config computes: y in fwd mode, also as training runs the
forward (saving s for backward); dx, dW and db in the backward modes, each against its
float64 reference. The sweep runs without the winners files (`default_tiles_only`): a row
measures its own tile, or the defaults, never an earlier export.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import signal
import subprocess
import threading
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
import triton

from autotune import search as tile_search
from autotune.db import FWD_NOTE, SHAPE_KEYS, Result, ResultsDB, Run, canonical_json, shard
from autotune.inspect import StaticCompile
from autotune.timing import ContextLost, bench_stream, context_lost, time_call
from kernels._common import (
    INTERPRETING,
    SM90_SMEM_BYTES,
    SM90_SMS,
    TileConfig,
    fits_sm90,
    rank_configs,
    tail_split,
)
from kernels.conv import (
    conv_config_space,
    conv_default_config,
    implicit_gemm_grid,
    prune_conv_configs,
    tma_conv_tile,
    tma_wgrad_tile,
)
from kernels.dense import (
    dense_backward_ws_space,
    dense_config_space,
    dense_default_config,
    prune_dense_configs,
)
from yat_triton._launch import WarpSpecializationFallback
from yat_triton.tuning import default_tiles_only

SUITES_DIR = Path(__file__).parent / "suites"
OPS = ("dense", "conv2d")
MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES = ("bfloat16", "float16", "float32")
# Relative-to-max error a config's output may have against the float64 reference (each
# output against its own largest value: y; or dx, dW and db).
CHECK_TOL = {"float32": 1e-4, "tf32": 2e-2, "float16": 5e-3, "bfloat16": 3e-2}
EPS = 1e-3
OUTPUT_NAMES = {"fwd": ("y",), "bwd": ("dx", "dW", "db")}

Outputs = torch.Tensor | tuple[torch.Tensor, ...]  # what a provider's callable returns
T = TypeVar("T")
R = TypeVar("R")


def load_suite(name_or_path: str) -> dict[str, list[dict[str, int]]]:
    """A shape suite: a name under autotune/suites/ ("quick", "core", "decode") or a TOML file path.

    The file holds [[dense]] tables (M, N, K) and [[conv2d]] tables (B, C_in, H, W, C_out,
    k, stride, padding); anything else is refused with the file and the entry named.
    """
    builtin = SUITES_DIR / f"{name_or_path}.toml"
    path = builtin if builtin.exists() else Path(name_or_path)
    if not path.is_file():
        names = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
        raise ValueError(f"suite {name_or_path!r} is neither one of {names} nor a file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"suite file {path} is not valid TOML: {e}") from e
    suite: dict[str, list[dict[str, int]]] = {}
    for op, entries in data.items():
        if op not in SHAPE_KEYS:
            raise ValueError(f"suite file {path}: unknown table [[{op}]] (known: {list(SHAPE_KEYS)})")
        if not isinstance(entries, list):
            raise ValueError(f"suite file {path}: {op} must be an array of tables [[{op}]], got {entries!r}")
        for i, entry in enumerate(entries):
            keys = SHAPE_KEYS[op]
            if not isinstance(entry, dict):
                raise ValueError(f"suite file {path}: [[{op}]] entry {i} must be a table, got {entry!r}")
            if set(entry) != set(keys) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry.values()
            ):
                raise ValueError(
                    f"suite file {path}: [[{op}]] entry {i} must have exactly the non-negative "
                    f"integer keys {keys}, got {entry}"
                )
            problem = _shape_problem(op, entry)
            if problem:
                raise ValueError(f"suite file {path}: [[{op}]] entry {i} {entry}: {problem}")
            if entry in entries[:i]:  # a sweep measures a shape once: counted twice, it is not
                raise ValueError(
                    f"suite file {path}: [[{op}]] entry {i} {entry} repeats entry {entries.index(entry)}"
                )
        suite[op] = [{k: e[k] for k in SHAPE_KEYS[op]} for e in entries]
    if not any(suite.values()):
        raise ValueError(f"suite file {path} holds no shapes (add [[dense]] or [[conv2d]] tables)")
    return suite


def _shape_problem(op: str, shape: dict[str, int]) -> str:
    """Why a suite shape cannot be measured, or "": every dim at least 1 (padding 0), and a
    conv's kernel fits its padded input."""
    small = [k for k, v in shape.items() if v < (0 if k == "padding" else 1)]
    if small:
        return f"{', '.join(small)} must be at least 1"
    if op == "conv2d":
        for side in ("H", "W"):
            if shape[side] + 2 * shape["padding"] < shape["k"]:
                k, p = shape["k"], shape["padding"]
                return f"the {k}x{k} kernel does not fit {side}={shape[side]} padded by {p}"
    return ""


@dataclass(frozen=True)
class Env:
    """Where the measurements come from: recorded on every row."""

    gpu: str
    driver: str
    torch: str
    triton: str
    commit: str
    representative: bool


COMMIT_VAR = "YAT_TRITON_COMMIT"


def project_commit(root: Path) -> str:
    """The commit the measured code comes from: git's HEAD, with "-dirty" when tracked files
    differ from it; where the checkout has no git history (a copied working tree, as on a
    lent GPU machine, or an installed package), $YAT_TRITON_COMMIT, which the caller sets
    from its own checkout. A git repository that merely contains `root` is not its history."""
    top = _run(["git", "rev-parse", "--show-toplevel"], root)
    head = _run(["git", "rev-parse", "--short=12", "HEAD"], root) if top else ""
    if not head or Path(top).resolve() != root.resolve():
        return os.environ.get(COMMIT_VAR, "").strip() or "unknown"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return f"{head}-dirty" if dirty else head


def environment() -> Env:
    root = Path(__file__).resolve().parents[1]
    commit = project_commit(root)
    if torch.cuda.is_available() and not INTERPRETING:
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], root)
        gpu = torch.cuda.get_device_name()
        return Env(gpu, driver.splitlines()[0] if driver else "unknown", torch.__version__,
                   triton.__version__, commit, True)  # fmt: skip
    return Env("cpu (Triton interpreter)", "", torch.__version__, triton.__version__, commit, False)


def _run(cmd: list[str], cwd: Path) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def flops(op: str, shape: dict[str, int], mode: str) -> float:
    """SPEC section 5: forward 2 MNK (conv: 2 B OH OW C_out C_in k^2); backward twice that."""
    if op == "dense":
        fwd = 2.0 * shape["M"] * shape["N"] * shape["K"]
    else:
        oh = (shape["H"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
        ow = (shape["W"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
        fwd = 2.0 * shape["B"] * oh * ow * shape["C_out"] * shape["C_in"] * shape["k"] ** 2
    return fwd * {"fwd": 1, "bwd": 2, "fwd+bwd": 3}[mode]


# ---------------------------------------------------------------------------------------
# Problems: inputs, providers, the float64 reference


class Problem:
    """One (op, shape, dtype, mode): its inputs and a callable per provider."""

    def __init__(self, op: str, shape: dict[str, int], dtype: str, mode: str, device: str) -> None:
        self.op, self.shape, self.dtype_name, self.mode = op, shape, dtype, mode
        dt = getattr(torch, dtype)
        self.dtype = dt
        # drawn where they are used: a 2-core CPU drew the largest core problem's in ~2 s (ad
        # hoc timing), a GPU takes milliseconds (other values than a CPU's, as deterministic);
        # "meta": shapes alone, for planning (`autotune.inspect --prune`)
        gen = torch.Generator(device=device).manual_seed(0) if device != "meta" else None

        def randn(*size: int) -> torch.Tensor:
            return torch.randn(*size, generator=gen, device=device)

        if op == "dense":
            M, N, K = shape["M"], shape["N"], shape["K"]
            x = randn(M, K) / math.sqrt(K)
            w = randn(N, K) / math.sqrt(K)
        else:
            B, C, H, W, F_, k = (shape[n] for n in ("B", "C_in", "H", "W", "C_out", "k"))
            x = randn(B, C, H, W)
            w = randn(F_, C, k, k) / math.sqrt(C * k * k)
        b = 0.1 * randn(w.shape[0])
        self.x = x.to(dt)  # drawn on `device` already
        if op == "conv2d":  # a channels_last model (`model.to(memory_format=channels_last)`):
            # input and weight alike, for every provider (cuDNN and yat_triton would each
            # transpose an NCHW weight on every call)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
            w = w.contiguous(memory_format=torch.channels_last)
        # in bwd modes the weights are trained too: every provider computes dx, dW and db
        self.w = w.to(dt).requires_grad_(mode != "fwd")
        self.b = b.to(dt).requires_grad_(mode != "fwd")
        self.g = randn(*self._out_shape()).to(dtype=dt)
        self.precision = "tf32" if dt == torch.float32 and not fma_dot(dtype) else "ieee"
        self.compile_mode = "max-autotune"
        # backward modes: the forward's tile (None: its default), `fastest_fwd_tile`
        self.fwd_tile: TileConfig | None = None

    def _out_shape(self) -> tuple[int, ...]:
        if self.op == "dense":
            return (self.shape["M"], self.shape["N"])
        s = self.shape
        oh = (s["H"] + 2 * s["padding"] - s["k"]) // s["stride"] + 1
        ow = (s["W"] + 2 * s["padding"] - s["k"]) // s["stride"] + 1
        return (s["B"], s["C_out"], oh, ow)

    # --- the ⵟ op itself ----------------------------------------------------------------

    def yat(self, config: TileConfig | None) -> Callable[[], Outputs]:
        """The measured callable; its return value is what the check compares."""
        from yat_triton.conv import conv2d_fwd
        from yat_triton.dense import dense_fwd

        s = self.shape
        if self.mode == "fwd":
            if self.op == "dense":
                return lambda: dense_fwd(
                    self.x, self.w, self.b, None, 1.0, None, EPS, self.precision, False, config
                )[0]
            p, st = s["padding"], s["stride"]
            return lambda: conv2d_fwd_cfg(
                conv2d_fwd, self.x, self.w, self.b, (st, st), (p, p, p, p), self.precision, config
            )

        return self._autograd(self.yat_layer())

    def yat_layer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The ⵟ layer as autograd sees it (backward modes): x -> y through the registered op."""
        from yat_triton.conv import yat_conv2d
        from yat_triton.dense import yat_linear

        s = self.shape

        def layer(x: torch.Tensor) -> torch.Tensor:
            if self.op == "dense":
                return yat_linear(x, self.w, self.b, eps=EPS, precision=self.precision)
            return yat_conv2d(x, self.w, self.b, s["stride"], s["padding"], eps=EPS, precision=self.precision)

        return layer

    def saved_bytes(self, layer: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Bytes one forward of `layer` keeps for its backward in output-sized tensors.

        SPEC section 6 counts output-sized tensors saved beyond what `linear+relu` saves:
        every tensor autograd packs (torch.autograd.graph.saved_tensors_hooks) counts once
        per storage, except the input and parameters (alive anyway) and tensors under half
        the output's elements (norm vectors, scalars).
        """
        out_numel = math.prod(self._out_shape())
        alive = {t.untyped_storage().data_ptr() for t in (self.x, self.w, self.b)}
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in alive and 2 * t.numel() >= out_numel:
                kept[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(self.x.detach().requires_grad_())
        return float(sum(kept.values()))

    def fwd_for_training(self, config: TileConfig) -> Callable[[], Outputs]:
        """The forward with `config` as training runs it (saving s for backward): a tile the
        inference sweep picks must also fit (registers, shared memory) when it stores s."""
        from yat_triton.conv import conv2d_fwd
        from yat_triton.dense import dense_fwd

        if self.op == "dense":
            return lambda: dense_fwd(
                self.x, self.w, self.b, None, 1.0, None, EPS, self.precision, True, config
            )[0]
        p, st = self.shape["padding"], self.shape["stride"]
        return lambda: conv2d_fwd_cfg(
            conv2d_fwd, self.x, self.w, self.b, (st, st), (p, p, p, p), self.precision, config, save=True
        )

    def yat_with(self, config: TileConfig | None) -> Callable[[], Outputs]:
        """fwd: the forward kernel with `config`; bwd modes: the op with its backward kernels
        forced to `config` (None: its default tiles, the sweep running `default_tiles_only`)
        and its forward to `fwd_tile` where set."""
        if self.mode == "fwd" or (config is None and self.fwd_tile is None):
            return self.yat(config)
        from yat_triton.tuning import forced_config

        fn = self.yat(None)
        forced = {"bwd": config, "fwd": self.fwd_tile}

        def run() -> Outputs:
            with contextlib.ExitStack() as stack:
                for mode, tile in forced.items():
                    if tile is not None:
                        stack.enter_context(forced_config(self.op, mode, tile))
                return fn()

        return run

    def _autograd(
        self, layer: Callable[[torch.Tensor], torch.Tensor], params: tuple[torch.Tensor, ...] | None = None
    ) -> Callable[[], Outputs]:
        """bwd: the backward (dx and the parameters' gradients) of a forward run outside the
        timing (on the first call, which the sweep makes before timing: building the callable
        costs nothing, so providers already measured are skipped for free); fwd+bwd: both.
        Returns (dx, dW, db), the values checked; `params`: the layer's own (weight, bias)."""
        x = self.x.detach().requires_grad_()
        leaves = (x, *(params if params is not None else (self.w, self.b)))
        if self.mode == "bwd":
            graph: list[torch.Tensor] = []

            def backward() -> Outputs:
                if not graph:
                    graph.append(layer(x))
                return torch.autograd.grad(graph[0], leaves, self.g, retain_graph=True)

            return backward
        return lambda: torch.autograd.grad(layer(x), leaves, self.g)

    # --- the float64 reference --------------------------------------------------------

    def reference(self) -> tuple[torch.Tensor, ...]:
        """(y,) (fwd) or (dx, dW, db) (bwd modes) in float64, expanded distance as SPEC, on
        the inputs' device: float64 GEMMs and convolutions are IEEE on a GPU too, and there
        they take milliseconds where a CPU takes seconds to a minute (8192^3)."""
        grads = self.mode != "fwd"
        x = self.x.detach().to(torch.float64).requires_grad_(grads)
        w = self.w.detach().to(torch.float64).requires_grad_(grads)
        b = self.b.detach().to(torch.float64).requires_grad_(grads)
        y = _yat_math(self.op, x, w, b, self.shape)
        if self.mode == "fwd":
            return (y.detach(),)
        return torch.autograd.grad(y, (x, w, b), self.g.to(torch.float64))

    # --- baselines -----------------------------------------------------------------------

    def baselines(
        self,
    ) -> Iterator[
        tuple[str, Callable[[], torch.Tensor], bool, Callable[[torch.Tensor], torch.Tensor] | None]
    ]:
        """(provider, callable, whether its output computes the ⵟ layer and can be checked,
        the layer whose saved tensors are measured in backward modes, or None)."""
        s = self.shape
        if self.op == "dense":

            def linear_relu(x: torch.Tensor) -> torch.Tensor:
                return torch.relu(F.linear(x, self.w, self.b))

            yield "linear+relu", self._timed(linear_relu), False, linear_relu
            if hasattr(torch, "_addmm_activation") and self.mode == "fwd":  # it has no autograd
                yield (
                    "addmm_relu",
                    self._timed(lambda x: torch._addmm_activation(self.b, x, self.w.t())),
                    False,
                    None,
                )
        else:
            torch.backends.cudnn.benchmark = True

            def conv_relu(x: torch.Tensor) -> torch.Tensor:
                return torch.relu(F.conv2d(x, self.w, self.b, s["stride"], s["padding"]))

            yield "conv+relu", self._timed(conv_relu), False, conv_relu

        def eager(x: torch.Tensor) -> torch.Tensor:
            y = _yat_math(self.op, x.float(), self.w.float(), self.b.float(), s)
            return y.to(self.dtype)

        yield "eager_ref", self._timed(eager), True, None
        if self.x.is_cuda and not INTERPRETING and self.compile_mode != "none":
            # One compiled graph per problem, static shapes: without the reset, every problem
            # recompiles the same code object, and past dynamo's recompile limit (8) it would
            # silently run eager, which would flatter the ⵟ kernels.
            torch._dynamo.reset()
            compiled = torch.compile(eager, mode=self.compile_mode, dynamic=False)
            yield "compiled_ref", self._timed(compiled), True, None
        try:
            import nmn.torch  # noqa: F401
        except ImportError:
            return
        module = self._nmn_layer()
        yield "nmn", self._timed(module, (module.weight, module.bias)), True, None

    def _timed(
        self, layer: Callable[[torch.Tensor], torch.Tensor], params: tuple[torch.Tensor, ...] | None = None
    ) -> Callable[[], Outputs]:
        if self.mode == "fwd":
            return lambda: layer(self.x)
        return self._autograd(layer, params)

    def _nmn_layer(self) -> torch.nn.Module:
        from nmn.torch.layers import YatConv2D
        from nmn.torch.nmn import YatNMN

        s = self.shape
        if self.op == "dense":
            m = YatNMN(s["K"], s["N"], alpha=False, epsilon=EPS)
        else:
            m = YatConv2D(
                s["C_in"], s["C_out"], s["k"], s["stride"], s["padding"], use_alpha=False, epsilon=EPS
            )
        m.load_state_dict(
            {"weight": self.w.detach().float().cpu(), "bias": self.b.detach().float().cpu()}, strict=False
        )
        return m.to(device=self.x.device, dtype=self.dtype)


def conv2d_fwd_cfg(
    conv2d_fwd: Callable[..., tuple[torch.Tensor, ...]],
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    stride: tuple[int, int],
    pads: tuple[int, int, int, int],
    precision: str,
    config: TileConfig | None,
    *,
    save: bool = False,
) -> torch.Tensor:
    """The conv forward with an explicit tile (the launcher's plan takes it); `save`: as
    training runs it, storing s for backward."""
    from yat_triton.conv import _conv_fwd_torch, plan_conv2d_fwd
    from yat_triton.dense import use_triton

    if not use_triton(x):
        return _conv_fwd_torch(x, w, b, None, 1.0, None, EPS, stride, pads, (1, 1), 1, save)[0]
    (y, *_), calls = plan_conv2d_fwd(
        x, w, b, None, 1.0, None, EPS, stride, pads, (1, 1), 1, precision, save, config
    )
    for call in calls:
        call.run()
    return y


def _yat_math(
    op: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, shape: dict[str, int]
) -> torch.Tensor:
    """The ⵟ layer in plain PyTorch ops with the expanded, clamped distance."""
    if op == "dense":
        s = x @ w.t()
        d = (x * x).sum(-1, keepdim=True) + (w * w).sum(-1) - 2.0 * s
    else:
        st, p, k = shape["stride"], shape["padding"], shape["k"]
        s = F.conv2d(x, w, None, st, p)
        ones = torch.ones((1, x.shape[1], k, k), dtype=x.dtype, device=x.device)
        d = F.conv2d(x * x, ones, None, st, p) + (w * w).sum((1, 2, 3))[None, :, None, None] - 2.0 * s
        b = b[None, :, None, None]
    u = s + b
    return u * u / (d.clamp_min(0.0) + EPS)


# ---------------------------------------------------------------------------------------
# The sweep


def gemm_dims(op: str, shape: dict[str, int]) -> tuple[int, int, int]:
    """(M, N, K) of the problem's GEMM view: dense as given; conv: output positions,
    filters, channels (a K tile never spans two taps)."""
    if op == "dense":
        return shape["M"], shape["N"], shape["K"]
    oh = (shape["H"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
    ow = (shape["W"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
    return shape["B"] * oh * ow, shape["C_out"], shape["C_in"]


def config_space(
    op: str, shape: dict[str, int], elem_bytes: int, *, warp_specialize: bool = True
) -> tuple[list[TileConfig], list[TileConfig]]:
    """(kept, pruned): configs fitted to the problem, most promising first (`rank_configs`,
    so that `--max-configs` keeps the likely winners), and those that cannot fit on sm_90.
    `warp_specialize=False` leaves the warp-specialized forwards out of the space (the
    conv's own space has none)."""
    M, N, K = gemm_dims(op, shape)
    dense = op == "dense" or pointwise(op, shape)  # a 1x1 conv runs on the dense kernels
    if dense:
        space = dense_config_space(include_warp_specialize=warp_specialize)
        kept = prune_dense_configs(space, M, N, K, elem_bytes)
    else:  # TMA tiles only where the conv's TMA kernel takes them (the launcher runs the
        # others on the pointer kernel: they would repeat a pointer tile under another name)
        stride = (shape["stride"], shape["stride"])
        space = conv_config_space(include_tma=stride == (1, 1))
        kept = [
            c
            for c in prune_conv_configs(space, M, N, K, elem_bytes)
            if not c.tma or tma_conv_tile(c, K, stride)
        ]
        kept += split_twins(kept, shape)
    pruned = [c for c in space if not fits_sm90(c, elem_bytes, tma_staging=dense)]
    taps, pixels = (0, 0) if dense else (shape["k"] ** 2, shape["B"] * shape["H"] * shape["W"])
    ranked = rank_configs(kept, M, N, K, elem_bytes, conv_taps=taps, conv_pixels=pixels)
    return ranked, pruned


def split_twins(
    kept: list[TileConfig], shape: dict[str, int], *, dgrad_tma: Callable[[TileConfig], bool] | None = None
) -> list[TileConfig]:
    """The `split_tail` twins of a conv forward's fitted tiles that take the patch norms
    from the pass, where an H200's grid splits its tail (`tail_split` on SM90_SMS: elsewhere
    a twin would repeat its tile under another name). With `dgrad_tma` (whether a backward
    tile's input gradient runs the TMA kernel): the backward tiles' twins, where the input
    gradient's grid (input pixels by channels, steps of taps and filter blocks) splits."""
    M, N, K = gemm_dims("conv2d", shape)
    oh_ow = M // shape["B"]
    ow = (shape["W"] + 2 * shape["padding"] - shape["k"]) // shape["stride"] + 1
    twins = []
    for c in kept:
        if c.norms_in_loop or c.split_tail:
            continue
        if dgrad_tma is None:
            grid = implicit_gemm_grid(shape["B"], oh_ow // ow, ow, N, K, shape["k"] ** 2, c, c.tma)
        else:
            grid = implicit_gemm_grid(
                shape["B"], shape["H"], shape["W"], K, N, shape["k"] ** 2, c, dgrad_tma(c)
            )
        if tail_split(*grid, SM90_SMS)[1] > 1:
            twins.append(dataclasses.replace(c, split_tail=True))
    return twins


def backward_tiles(
    op: str,
    shape: dict[str, int],
    kept: list[TileConfig],
    elem_bytes: int,
    *,
    warp_specialize: bool = True,
    tma: bool = True,
) -> list[TileConfig]:
    """The backward kernels' tiles, ranked: the forward's tiles less the forward-only
    norms_in_loop, epilogue split and warp specialization, with tma selecting the dense
    backward's persistent TMA GEMMs (the dense ones fitted as backward GEMMs; a conv's are
    its forward's `kept` ones); and the dense backward's own warp-specialized TMA
    tiles (`dense_backward_ws_space`, unless `warp_specialize=False`). A conv's backward
    takes the pointer tiles and, where its TMA input gradient or TMA weight gradient runs
    them (stride 1, and a K tile dividing the filters, `tma_conv_tile`, or column tiles
    dividing the channels, `tma_wgrad_tile`), their TMA twins; other TMA tiles would repeat
    the pointer ones. `tma=False` (fp16, whose fp32 gs keeps both ops' backward GEMMs on the
    pointer kernels): no TMA tiles."""
    conv = op == "conv2d" and not pointwise(op, shape)
    M, N, K = gemm_dims(op, shape)
    if conv:
        tiles = [
            c
            for c in kept
            if c.epilogue_split == 1 and not (c.norms_in_loop or c.warp_specialize or c.tma or c.split_tail)
        ]
    else:  # fitted as backward GEMMs, whose TMA tiles stage less than the forward's epilogue
        # (128x256x64 with 3 or 4 stages fits them, not the forward saving s)
        plain = (
            dataclasses.replace(c, epilogue_split=1, norms_in_loop=False)
            for c in dense_config_space(include_warp_specialize=False)
        )
        tiles = prune_dense_configs(list(dict.fromkeys(plain)), M, N, K, elem_bytes, backward=True)
        tiles = [c for c in tiles if tma or not c.tma]
    if conv and tma:  # (groups: 1 in a suite) the input gradient's K walks the filters,
        # the weight gradient's columns the channels of each tap
        stride = (shape["stride"], shape["stride"])
        twins = (dataclasses.replace(c, tma=True) for c in tiles)
        tiles += [c for c in twins if tma_conv_tile(c, N, stride) or tma_wgrad_tile(c, K, stride)]
    if conv:  # the input gradient's split tail: its grid of input pixels and channels
        stride = (shape["stride"], shape["stride"])
        tiles += split_twins(tiles, shape, dgrad_tma=lambda c: tma and tma_conv_tile(c, N, stride))
    if warp_specialize and not conv:  # (those the problem leaves unspecialized repeat others)
        ws = prune_dense_configs(dense_backward_ws_space(), M, N, K, elem_bytes, backward=True)
        tiles += [c for c in ws if c.warp_specialize and c not in tiles]
    taps = shape["k"] ** 2 if conv else 0
    return rank_configs(tiles, M, N, K, elem_bytes, backward=True, split_taps=taps)


def pointwise(op: str, shape: dict[str, int]) -> bool:
    """A conv problem that yat_triton runs on the dense kernels (1x1, stride 1, no padding;
    the sweep's inputs are channels_last and ungrouped)."""
    return op == "conv2d" and shape["k"] == 1 and shape["stride"] == 1 and shape["padding"] == 0


def default_config(op: str, shape: dict[str, int], elem_bytes: int) -> TileConfig:
    M, N, K = gemm_dims(op, shape)
    if op == "dense" or pointwise(op, shape):
        return dense_default_config(M, N, K, elem_bytes, interpreting=INTERPRETING)
    return conv_default_config(M, N, K, elem_bytes, interpreting=INTERPRETING)


def _status_of(e: BaseException) -> str:
    name = type(e).__name__
    if "OutOfResources" in name:
        return "out_of_resources"
    if "Compil" in name:
        return "compile_error"
    return "error"


# Exit status of `yat-autotune sweep` where its process cannot go on (the CUDA context lost,
# a row that never finished): that row is recorded as an error, and the same command, in a
# fresh process, resumes after it (gpu.sh restarts the sweep while its cap allows).
RESTART_EXIT = 3
# Seconds a row may run on a GPU before the watchdog calls it hung (`Watchdog`). A ⵟ tile's
# kernels (in fwd mode, the forward as training runs it too; the default tiles' too) are
# compiled before its row, in parallel; the row runs the call, checks it and times it (~1 s
# at the core suite's largest shapes), and compiles what a recording missed (a dense
# fwd+bwd: 6 kernels, seconds each). compiled_ref is not watched: its max-autotune compile
# takes minutes where it must.
HANG_AFTER_S = 90.0
UNWATCHED = ("compiled_ref",)


class Watchdog:
    """Ends the sweep's process where a row has run `limit` seconds. A kernel that never
    finishes (a deadlock) blocks the host in a CUDA call that no signal interrupts: a time
    cap would kill the process with that row unrecorded, and every resumed sweep would run
    it again, and hang again. Here the row is recorded as an error, and the run's record
    (`run_record`) added, from this thread's own connection to the database; then the
    process exits with RESTART_EXIT (`exit`: os._exit, which no blocked thread delays).
    The same command resumes after that row. The row is written after its watched run
    (`_run_task`), so the watchdog never overwrites a stored result."""

    def __init__(
        self,
        db_path: Path,
        limit: float,
        run_record: Callable[[], Run],
        exit: Callable[[int], object] = os._exit,  # noqa: A002 - the process's exit
    ) -> None:
        self.path, self.limit, self.run_record, self.exit = db_path, limit, run_record, exit
        self._lock = threading.Lock()
        self._row: tuple[float, Callable[[str], Result]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sweep watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watching(self, hung_row: Callable[[str], Result]) -> Iterator[None]:
        """The block is one row's run: `hung_row(reason)` is that row as an error."""
        with self._lock:
            self._row = (time.monotonic(), hung_row)
        try:
            yield
        finally:
            with self._lock:  # a row that ends while the watchdog records it waits for the exit
                self._row = None

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.limit / 4)):
            with self._lock:
                row = self._row
                if row is not None and time.monotonic() - row[0] > self.limit:
                    self._fire(row[1])
                    return

    def _fire(self, hung_row: Callable[[str], Result]) -> None:
        """Record the row and the run, say so, and end the process: with RESTART_EXIT where
        the row is stored (a fresh process resumes after it), else with 1 (a fresh one
        would run it, and hang, again). The exit comes whatever fails before it."""
        status, reason = 1, f"hung: no result after {self.limit:g} s"
        try:
            reason += "; the sweep's process was ended (a kernel that never finishes blocks the host)"
            row = hung_row(reason)
            with ResultsDB(self.path) as db:
                db.add(row)
                record = self.run_record()
                db.add_run(dataclasses.replace(record, rows_added=record.rows_added + 1))  # and its row
            status = RESTART_EXIT
            what = f"{row.op} {row.mode} {row.dtype} {row.shape} {row.provider} {row.config or '(defaults)'}"
            print(f"\nstopped: {what}: {reason}; recorded as an error. Run the same command to resume "
                  "after it.", flush=True)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the process must end all the same
            with contextlib.suppress(Exception):
                print(f"\nstopped: a row {reason}; NOT recorded ({type(e).__name__}: {e}).", flush=True)
        finally:
            self.exit(status)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Task:
    op: str
    shape: dict[str, int]
    dtype: str
    mode: str


def tasks(
    suite: dict[str, list[dict[str, int]]],
    ops: list[str],
    modes: list[str],
    dtypes: list[str],
    shard_spec: str | None = None,
) -> list[Task]:
    """Every (op, shape, dtype, mode), the ops interleaved by shape (first dense shape, first
    conv shape, second dense shape, ...): a run stopped early has measured both ops, starting
    with the first shape the suite lists for each. `shard_spec` ("i/n"): this share of them."""
    shapes = {op: suite.get(op, []) for op in ops}
    depth = max((len(v) for v in shapes.values()), default=0)
    every = [
        Task(op, shapes[op][i], dtype, mode)
        for i in range(depth)
        for op in ops
        if i < len(shapes[op])
        for dtype in dtypes
        for mode in modes
    ]
    return shard(every, shard_spec) if shard_spec else every


def run_sweep(
    db: ResultsDB,
    suite: dict[str, list[dict[str, int]]],
    *,
    ops: list[str],
    modes: list[str],
    dtypes: list[str],
    shard_spec: str | None = None,
    max_configs: int | None = None,
    progress: bool = True,
    compile_mode: str = "max-autotune",
    suite_name: str = "",
    warp_specialize: bool = True,
    search: str = "guided",
    hang_after: float | None = None,
) -> dict[str, int]:
    """Run every (task, provider) and the tiles each task's search picks, where not yet in
    `db`; returns counts by status.
    `warp_specialize=False`: no warp-specialized tiles, forward or backward (`config_space`,
    `backward_tiles`). `search`: which tiles a problem times (`autotune.search`: "guided",
    or "exhaustive"), `max_configs` capping them. `hang_after` (seconds): a `Watchdog`
    ends the process where a row (compiled_ref's excepted) runs longer.

    The run itself (suite, options, start and end, tasks finished) is recorded in the
    database's runs table, also when stopped by Ctrl-C / SIGINT (which is then raised
    again, after the record), by a lost CUDA context (`ContextLost`, raised again
    likewise) or by the watchdog: the report reads how long a whole suite took, compile
    included, from it.
    """
    env = environment()
    device = "cuda" if env.representative else "cpu"
    if search not in tile_search.SEARCHES:
        raise ValueError(f"search must be one of {tile_search.SEARCHES}, got {search!r}")
    todo = tasks(suite, ops, modes, dtypes, shard_spec)
    after_bwd = fwd_bwd_after_bwd(modes, shard_spec)
    counts: dict[str, int] = {}
    spent: dict[str, float] = {}
    bar = _progress(todo, progress)
    best: dict[str, float] = {}
    started, finished = time.time(), 0
    stopped: BaseException | None = None
    said = ""
    args = (
        f"ops={','.join(ops)} modes={','.join(modes)} dtypes={','.join(dtypes)} max_configs={max_configs} "
        f"compile_mode={compile_mode} search={search}"
    )
    if not warp_specialize:
        args += " warp_specialize=off"
    if shard_spec:
        args += f" shard={shard_spec}"

    def run_record() -> Run:  # what the run did so far (`finished`, `counts`: as they are now)
        return Run(suite_name or "?", args, env.gpu, env.commit, started, time.time(), len(todo), finished,
                   sum(counts.values()))  # fmt: skip

    watchdog = Watchdog(db.path, hang_after, run_record) if hang_after else None
    prune = StaticPrune(compile_processes() if env.representative else 0)
    # kept up to date after every task: a process killed outright (SIGKILL, a crash) still
    # leaves its time up to the last task it finished
    db.add_run(run_record())
    try:
        for i, task in enumerate(bar):
            label = f"{task.op} {task.mode} {task.dtype} {canonical_json(task.shape)}"
            bar.set_description(label)
            # the next task's first compiles, started on the prune's workers once this one's
            # first check is done, run while this one times its tiles
            then = (
                functools.partial(start_first_batch, prune, db, todo[i + 1], env, search=search,
                                  warp_specialize=warp_specialize, max_configs=max_configs,
                                  after_bwd=after_bwd)
                if i + 1 < len(todo) else None
            )  # fmt: skip
            # a task's calls, forward and backward, on one capturable stream; no winners file
            with bench_stream(), default_tiles_only():
                for result in _run_task(
                    db,
                    task,
                    env,
                    device,
                    max_configs,
                    compile_mode,
                    warp_specialize,
                    search,
                    spent,
                    after_bwd=after_bwd,
                    watchdog=watchdog,
                    prune=prune,
                    then=then,
                ):
                    counts[result.status] = counts.get(result.status, 0) + 1
                    if result.provider == "yat_triton" and result.status == "ok" and result.median_ms:
                        best[label] = min(best.get(label, math.inf), result.median_ms)
                        bar.set_postfix_str(f"best {best[label]:.4g} ms")
            finished += 1
            db.add_run(run_record())
    except KeyboardInterrupt as e:
        stopped = e
        said = f"\nstopped; {sum(counts.values())} rows saved this run. Run the same command to resume."
    except ContextLost as e:
        counts["error"] = counts.get("error", 0) + 1  # its row
        said = (
            f"\nstopped: {e}\nThat row is recorded as an error; every later CUDA call of this process "
            f"would fail. {sum(counts.values())} rows saved this run, that one included. Run the same "
            "command to resume in a fresh process, after that row."
        )
        stopped = e
    finally:
        prune.close()
        if watchdog is not None:
            watchdog.close()
    # the run's record first: a stop that also closed the output (the log's tee, killed with
    # the process group) must not lose it to a broken pipe
    record = run_record()
    db.add_run(record)
    with contextlib.suppress(BrokenPipeError):
        if stopped is not None:
            bar.close()
            print(said)
        if spent:
            print(spent_line(spent, record.ended - started))
        if prune.verdicts:
            print(prune.describe())
    if stopped is not None:
        raise stopped
    return counts


SETUP_FAILED = "setup failed (the inputs or the float64 reference)"


def baseline_config(provider: str, settings: dict[str, bool], compile_mode: str) -> str:
    """A baseline row's config: the TF32 settings, and for compiled_ref also the
    torch.compile mode, so that a sweep in another mode measures it again instead of taking
    the stored row for its own."""
    if provider != "compiled_ref":
        return canonical_json(settings)
    return canonical_json({**settings, "compile_mode": compile_mode})


def spent_line(spent: dict[str, float], total: float) -> str:
    """Where a sweep's wall time went, largest first: each provider's rows (checks and
    timing; compiled_ref's torch.compile included), the ⵟ tiles' compile-based prune and
    compile, and the setup (inputs, the float64 reference)."""
    parts = ", ".join(f"{what} {sec:.0f} s" for what, sec in sorted(spent.items(), key=lambda kv: -kv[1]))
    return f"sweep time: {total:.0f} s ({parts}; the rest: the unfit tiles' rows, progress)"


class _Lines:
    """Progress as plain lines, where tqdm is not installed (e.g. an offline GPU machine)."""

    def __init__(self, items: list[Task], enabled: bool) -> None:
        self.items, self.enabled, self.text = items, enabled, ""

    def __iter__(self) -> Iterator[Task]:
        for i, item in enumerate(self.items, 1):
            yield item
            if self.enabled:
                print(f"[{i}/{len(self.items)}] {self.text}", flush=True)

    def set_description(self, text: str) -> None:
        self.text = text

    def set_postfix_str(self, text: str) -> None:
        self.text = f"{self.text.split(' | ')[0]} | {text}"

    def close(self) -> None:
        pass


def _progress(items: list[Task], enabled: bool) -> object:
    """A tqdm bar showing what is being tried and the best time so far, or plain lines."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(items, enabled)
    return tqdm(items, disable=not enabled, unit="problem", dynamic_ncols=True)


def _run_task(
    db: ResultsDB,
    task: Task,
    env: Env,
    device: str,
    max_configs: int | None,
    compile_mode: str,
    warp_specialize: bool = True,
    search: str = "guided",
    spent: dict[str, float] | None = None,
    *,
    after_bwd: bool = False,
    watchdog: Watchdog | None = None,
    prune: StaticPrune | None = None,
    then: Callable[[], object] | None = None,
) -> Iterator[Result]:
    """The rows of one task, each written to `db` as it is made. `spent` adds up the wall
    seconds by what they went to (`spent_line`). `after_bwd`: this run swept the problem's
    bwd mode before its fwd+bwd mode (`fwd_bwd_after_bwd`). `watchdog`: watches each row
    but compiled_ref's. `prune`: the run's static prune (a task's own, on threads, if None).
    `then`: called once on a GPU, after the task's first static check (the sweep starts
    the next task's compiles there, `start_first_batch`, to run while this one times).
    A row whose failure loses the CUDA context (`context_lost`) is recorded, then
    `ContextLost` is raised."""
    spent = {} if spent is None else spent
    prune = StaticPrune() if prune is None else prune

    @contextlib.contextmanager
    def clock(what: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            spent[what] = spent.get(what, 0.0) + time.perf_counter() - t0

    shape_json = canonical_json(task.shape)
    flop = flops(task.op, task.shape, task.mode)

    def make_row(provider: str, config: str, status: str, **kw: object) -> Result:
        return Result(
            op=task.op, mode=task.mode, provider=provider, dtype=task.dtype, shape=shape_json,
            config=config, status=status, reason=str(kw.pop("reason", "")),
            gpu=env.gpu, driver=env.driver, torch=env.torch, triton=env.triton,
            commit=env.commit, representative=env.representative, **kw,
        )  # fmt: skip

    def row(provider: str, config: str, status: str, **kw: object) -> Result:
        r = make_row(provider, config, status, **kw)
        db.add(r)
        return r

    def key(provider: str, config: str) -> tuple[str, ...]:
        return (task.op, task.mode, provider, task.dtype, shape_json, config, env.gpu)

    def done(provider: str, config: str) -> bool:
        return db.has(key(provider, config))

    # A problem that cannot be set up is one error row, under the key of the op on its
    # default tiles (the first row of a backward mode): a later setup that succeeds removes
    # it, so that the defaults are measured then.
    try:
        with clock("setup"):
            problem = Problem(task.op, task.shape, task.dtype, task.mode, device)
            ref = problem.reference()
    except Exception as e:  # noqa: BLE001 - e.g. a shape too large for memory: recorded, the sweep goes on
        reason = f"{SETUP_FAILED}: {type(e).__name__}: {e}"
        yield row("yat_triton", "", "error", reason=reason[:500])
        return
    db.remove_if(key("yat_triton", ""), SETUP_FAILED)
    if task.mode == "fwd+bwd":  # (bwd mode's forward runs outside the timing: its default)
        problem.fwd_tile = fastest_fwd_tile(db, task, env, warp_specialize)
    # the forward an ok row of a backward mode ran on, said in its reason
    fwd_note = f"{FWD_NOTE}{problem.fwd_tile.name}" if problem.fwd_tile is not None else ""
    names = OUTPUT_NAMES["fwd" if task.mode == "fwd" else "bwd"]
    tol = CHECK_TOL["tf32" if problem.precision == "tf32" else task.dtype]

    def error(*outputs: Outputs) -> tuple[float, str]:
        """The largest relative-to-max error over the outputs of each call, and what it
        was; inf where an output is missing or not finite."""
        worst, what = 0.0, ""
        for out in outputs:
            outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
            for name, o, r in zip(names, outs, ref, strict=True):
                if o is None:
                    return math.inf, f"{name} missing"
                o = o.detach().to(torch.float64)
                if not bool(torch.isfinite(o).all()):
                    return math.inf, f"{name} not finite"
                e = float((o - r).abs().max()) / (float(r.abs().max()) or 1.0) if r.numel() else 0.0
                if e > worst or not what:
                    worst, what = e, name
        return worst, what

    def measure(
        provider: str,
        config: str,
        fn: Callable[[], Outputs],
        check: bool,
        layer: Callable[[torch.Tensor], torch.Tensor] | None = None,
        training: Callable[[], Outputs] | None = None,
    ) -> Result:
        """The provider's row, written to `db` after the watched run (a wait for the database,
        held by another sweep into the same file, is not the row's run time; a row the
        watchdog records is never one already stored)."""
        watched = (
            watchdog.watching(lambda reason: make_row(provider, config, "error", reason=reason))
            if watchdog is not None and provider not in UNWATCHED
            else contextlib.nullcontext()
        )
        with clock(provider):
            with watched:
                result, failure = run_and_time(provider, config, fn, check, layer, training)
            lost = context_lost(device) if failure is not None else ""
            if lost:  # the sweep cannot go on in this process
                why = f"lost the CUDA context: {failure}"
                result = dataclasses.replace(result, status="error", reason=why[:500])
            db.add(result)
        if lost:
            raise ContextLost(
                f"{task.op} {task.mode} {task.dtype} {shape_json} {provider} {config or '(defaults)'} "
                f"failed and lost the CUDA context ({failure[:300]}; a probe then: {lost[:200]})"
            )
        return result

    def run_and_time(
        provider: str,
        config: str,
        fn: Callable[[], Outputs],
        check: bool,
        layer: Callable[[torch.Tensor], torch.Tensor] | None,
        training: Callable[[], Outputs] | None,
    ) -> tuple[Result, str | None]:
        """The row (not yet written), and what the run raised where that may have faulted a
        kernel (the caller probes the context once the exception and its frames are gone:
        probing amid the failed call's tensors could itself run out of memory), else None."""
        try:
            saved = problem.saved_bytes(layer) if layer is not None and task.mode != "fwd" else None
            out = fn()  # a warp-specialized tile that ran unspecialized raises (not its row)
            err, what = error(out, *([training()] if training is not None else [])) if check else (None, "")
            correct = None if err is None else bool(err <= tol)
            if correct is False:
                why = f"max rel error {err:.3g} > {tol:g} ({what})"
                return make_row(provider, config, "wrong", reason=why, correct=False, max_rel_err=err), None
            own_graphs = own_cuda_graphs(provider, compile_mode)
            t = time_call(fn, graph=not own_graphs)
            if own_graphs and t.method == "eager":
                t = dataclasses.replace(t, note=own_graphs)
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the sweep goes on
            reason = f"{type(e).__name__}: {e}"
            # out of memory leaves the context working (and a probe amid it could fail too)
            fault = None if isinstance(e, torch.OutOfMemoryError) else reason
            return make_row(provider, config, _status_of(e), reason=reason[:500]), fault
        note = "; ".join(n for n in (t.note, fwd_note if provider == "yat_triton" else "") if n)
        return make_row(provider, config, "ok", median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                        tflops=flop / (t.median_ms * 1e-3) / 1e12, correct=correct, max_rel_err=err,
                        saved_bytes=saved, timing=t.method, reason=note), None  # fmt: skip

    # The standard layers first, the ⵟ configs next, the ⵟ references (eager, compiled,
    # nmn) last: a run stopped by a time cap still leaves every problem it reached with
    # the comparison that matters most, and torch.compile's minutes of compiling the
    # reference come after the ⵟ kernels. The baselines' TF32 settings (SPEC section 5:
    # stated) are recorded as their config.
    tf32_settings = {
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": task.op == "conv2d",
    }
    problem.compile_mode = compile_mode
    references = []
    for provider, fn, check, layer in problem.baselines():
        cfg = baseline_config(provider, tf32_settings, compile_mode)
        if done(provider, cfg):
            continue
        if provider in STANDARD_LAYERS:
            yield measure(provider, cfg, fn, check, layer)
        else:
            references.append((provider, cfg, fn, check, layer))

    first, ranked, pruned = task_tiles(task, warp_specialize)
    # (hundreds a problem: one transaction, one lookup of what is stored)
    stored = {k.config for k in db.done_keys(task.op, task.mode, task.dtype, "yat_triton", gpu=env.gpu)
              if k.shape == shape_json}  # fmt: skip
    unfit = [
        make_row("yat_triton", key, "pruned", reason="shared memory or registers exceed sm_90")
        for key in (canonical_json(cfg.as_dict()) for cfg in pruned)
        if key not in stored
    ]
    db.add_many(unfit)
    yield from unfit

    def key_of(cfg: TileConfig | None) -> str:
        return "" if cfg is None else canonical_json(cfg.as_dict())

    tiles = {key_of(c): c for c in (*first, *ranked) if c is not None}
    next_task = [then] if then is not None else []  # (called once)

    def time_tiles(batch: tile_search.Batch) -> Iterator[Result]:
        pending = [c for c in batch if not done("yat_triton", key_of(c))]
        if env.representative:
            # Static prune: a tile whose kernels spill or overflow shared memory (the forward
            # also as training runs it) cannot win. The launches are recorded one config at a
            # time (backward tiles are forced through process-wide state), then compiled for
            # sm_90 and for this GPU on the host's cores; timing stays one by one.
            # The tiles the search would propose next in place of dropped ones are checked
            # along (`search.Batch.ahead`): their verdicts wait in `prune`, their rows for
            # the batch that proposes them.
            ahead = [c for c in batch.ahead if not done("yat_triton", key_of(c))]
            with clock("yat_triton static prune"):
                recorded = [_record(problem, c) for c in pending + ahead]
                training = [_record_training(problem, c) for c in pending + ahead]
                checked = [swept_calls(r + t, task.mode) for r, t in zip(recorded, training, strict=True)]
                reasons = prune.reasons(checked)[: len(pending)]
                del recorded[len(pending) :], training[len(pending) :]
                if next_task:
                    next_task.pop()()
            for cfg, reason in zip(pending, reasons, strict=True):
                if reason:
                    yield row("yat_triton", key_of(cfg), "pruned", reason=reason)
            keep = [not reason for reason in reasons]
            with clock("yat_triton compile"):
                # what each kept row runs: in fwd mode also the forward as training runs it;
                # the op on its defaults (never pruned, so not recorded above) too
                runs = [
                    r + t if c is not None else _recorded(lambda: problem.yat_with(None))
                    for c, r, t, k in zip(pending, recorded, training, keep, strict=True)
                    if k
                ]
                _parallel(_warm, runs)
            pending = [c for c, k in zip(pending, keep, strict=True) if k]
        for cfg in pending:  # the op on its defaults (cfg None, backward modes) also has its saved bytes
            layer = problem.yat_layer() if cfg is None else None
            # fwd mode: y is checked as inference and as training runs the forward (saving s)
            training = problem.fwd_for_training(cfg) if cfg is not None and task.mode == "fwd" else None
            with warnings.catch_warnings():
                warnings.simplefilter("error", WarpSpecializationFallback)
                result = measure("yat_triton", key_of(cfg), problem.yat_with(cfg), True, layer, training)
            yield result

    def times(mode: str) -> dict[TileConfig, float]:
        """The median ms of every correct tile of this problem timed in `mode` so far."""
        rows = db.query(task.op, mode, task.dtype, provider="yat_triton", status="ok", gpu=env.gpu)
        return {
            tiles[r.config]: r.median_ms
            for r in rows
            if r.shape == shape_json and r.correct and r.median_ms is not None and r.config in tiles
        }

    def dropped() -> set[TileConfig]:
        """The tiles of this problem and mode the static prune dropped, this run or earlier."""
        rows = db.query(task.op, task.mode, task.dtype, provider="yat_triton", status="pruned", gpu=env.gpu)
        return {tiles[r.config] for r in rows if r.shape == shape_json and r.config in tiles}

    if search == "exhaustive":
        batches = tile_search.exhaustive(first, ranked, max_configs, dropped)
    elif task.mode == "fwd+bwd" and after_bwd and (bwd := times("bwd")):
        batches = tile_search.from_bwd(first, bwd, max_configs)
    else:
        batches = tile_search.guided(first, ranked, lambda: times(task.mode), max_configs, dropped=dropped)
    for batch in batches:  # each batch timed before the search proposes the next
        yield from time_tiles(batch)

    with clock("yat_triton static prune"):
        prune.settle()  # (the baselines are not timed beside the next task's compiles)
    for provider, cfg, fn, check, layer in references:
        yield measure(provider, cfg, fn, check, layer)


def start_first_batch(
    prune: StaticPrune,
    db: ResultsDB,
    task: Task,
    env: Env,
    *,
    warp_specialize: bool,
    search: str,
    max_configs: int | None,
    after_bwd: bool,
) -> int:
    """Start the static prune's compiles of `task`'s first batch of the guided search (the
    tiles it ships with and the seeds, not yet in `db`) on the prune's workers
    (`StaticPrune.start`); how many compiles started. The sweep calls it for the next task
    while it times the current one, so that the next task's first check finds its verdicts
    (or waits for the rest) instead of compiling then. 0 for an exhaustive search or a
    fwd+bwd task taking bwd's tiles (not known before bwd ends); a failure to plan starts
    nothing (the task's own check sees to it). The problem is recorded on meta tensors,
    whose compiles are the GPU's where the meta planning matches it (the conv's tail split
    plans for an H200's 132 SMs: on a GPU with another count some compiles started so go
    unused, and the task checks its own). Ad hoc, on 2 cores (a loop over the core suite's
    bf16 first batches on 2 worker processes, each task's timing a 2 s sleep, Triton 3.6,
    empty cache): the sweep waited 64.1 s for the prune without this, 42.2 s with it, for
    the same 181 compiles (46.0 s with the workers at the lowest priority and deferring to
    the batch checked now)."""
    if search != "guided" or (task.mode == "fwd+bwd" and after_bwd):
        return 0
    try:
        first, ranked, _ = task_tiles(task, warp_specialize)
        key = (task.op, task.mode, "yat_triton", task.dtype, canonical_json(task.shape))
        tiles = [
            c for c in next(tile_search.guided(first, ranked, dict, max_configs))
            if c is not None and not db.has((*key, canonical_json(c.as_dict()), env.gpu))
        ]  # fmt: skip
        problem = Problem(task.op, task.shape, task.dtype, task.mode, "meta")
        return prune.start([checked_calls(problem, c) for c in tiles])
    except Exception:  # noqa: BLE001 - an optimization: the task checks its own tiles
        return 0


def fastest_fwd_tile(db: ResultsDB, task: Task, env: Env, warp_specialize: bool = True) -> TileConfig | None:
    """The fastest correct yat_triton tile of `task`'s problem in fwd mode in `db`, this
    run's or an earlier one's with this GPU model and Triton version, or None. fwd+bwd runs
    its forward on it: the winners file ships the fwd and bwd winners together, so fwd+bwd
    measures the op as it runs tuned (its default forward tile can be far slower than the
    tuned one). Rows whose config this code does not read as a tile are passed over, and
    warp-specialized tiles where `warp_specialize` is off (a run that leaves them out)."""
    from autotune.export import tile_fields
    from yat_triton.tuning import config_from_dict

    shape = canonical_json(task.shape)
    rows = sorted(
        (
            r
            for r in db.query(task.op, "fwd", task.dtype, provider="yat_triton", status="ok", gpu=env.gpu)
            if r.shape == shape and r.triton == env.triton and r.correct and r.median_ms is not None
        ),
        key=lambda r: r.median_ms,
    )
    for r in rows:
        try:
            tile = config_from_dict(tile_fields(json.loads(r.config)))
        except (ValueError, TypeError, AttributeError):  # "" (a default row) or another spelling
            continue
        if warp_specialize or not tile.warp_specialize:
            return tile
    return None


def fwd_bwd_after_bwd(modes: list[str], shard_spec: str | None) -> bool:
    """Whether a run's fwd+bwd tasks take the bwd search's fastest tiles (`search.from_bwd`):
    where the same process sweeps each problem's bwd mode first (listed before fwd+bwd, no
    shard), so that what it finds there is complete, and the same on a rerun."""
    return (
        "bwd" in modes
        and "fwd+bwd" in modes
        and modes.index("bwd") < modes.index("fwd+bwd")
        and not shard_spec
    )


def task_tiles(
    task: Task, warp_specialize: bool = True
) -> tuple[list[TileConfig | None], list[TileConfig], list[TileConfig]]:
    """(first, ranked, unfit) of a task: what its search times first (fwd: the default tile;
    the backward modes: None, the op as it ships), the fitted tiles of its mode's kernels
    best first, and the tiles that cannot fit on sm_90 (on an FMA dot, `fma_dot`: those
    `fma_spills` too)."""
    elem = getattr(torch, task.dtype).itemsize
    fma = fma_dot(task.dtype)
    kept, pruned = config_space(task.op, task.shape, elem, warp_specialize=warp_specialize)  # best first
    if task.mode == "fwd":
        fit = [c for c in kept if not (fma and fma_spills(c))]
        return [default_config(task.op, task.shape, elem)], fit, pruned + [c for c in kept if c not in fit]
    # run through the registered op with tuning.forced_config; fp16's backward GEMMs run the
    # pointer kernels (fp32 gs): no warp-specialized tiles, no TMA ones (they would repeat
    # their pointer twins under another name); nor do an FMA dot's
    plain = task.dtype == "float16" or fma
    ranked = backward_tiles(task.op, task.shape, kept, elem, warp_specialize=warp_specialize and not plain,
                            tma=not plain)  # fmt: skip
    fit = [c for c in ranked if not (fma and fma_spills(c, dense_bwd_gemm=task.op == "dense"))]
    # (the dense backward's tiles are fitted as backward GEMMs: some the forward cannot take
    # are theirs, and must not be recorded as pruned under this mode's key before they run)
    fitted = set(fit)
    return [None], fit, [c for c in pruned if c not in fitted] + [c for c in ranked if c not in fitted]


def fma_dot(dtype: str) -> bool:
    """Whether `dtype`'s problems multiply on CUDA cores: fp32 at IEEE precision (PyTorch's
    default, TF32 off: `Problem.precision`), which Triton's dot computes with FMAs, its
    operands and accumulator in registers."""
    return dtype == "float32" and not torch.backends.cuda.matmul.allow_tf32


# Accumulator values a thread holds at most on an FMA dot without spilling (`fma_spills`)
FMA_ACC_MAX = 64
# ... and BLOCK_K times those values in the ⵟ kernels (all but the dense backward's GEMMs)
FMA_K_ACC_MAX = 2048


def fma_spills(c: TileConfig, *, dense_bwd_gemm: bool = False) -> bool:
    """A tile not to time on an FMA dot (`fma_dot`), whose spills the static prune would
    find at the cost of a compile each:
    - a TMA tile (the FMAs bound an FMA GEMM's time, not its loads, and its operands, staged
      for wgmma, are converted for them: statically, Triton 3.6, sm_90, 139 of the 143 TMA
      tiles of the core suite's fp32 first batches spill, an ad hoc count with this rule
      off, and so does a 64x64x32 4-warp dense tile, 255 registers and a stack frame where
      its pointer twin takes 164);
    - a tile with more than FMA_ACC_MAX accumulator values a thread (128x256 and 256x128 on
      8 warps, 128x128 on 4, each 128: all spill, Triton 3.6 and 3.9);
    - in the ⵟ kernels (the forward's, the conv backward's; not `dense_bwd_gemm`, the dense
      backward's GEMMs on a prepared gs, some of which fit), a tile of more than
      FMA_K_ACC_MAX for BLOCK_K times the accumulator values a thread (64 x 64, 128 x 32):
      an FMA dot holds a thread's rows of the x tile and columns of the w tile, BLOCK_K
      deep, in registers. Ad hoc, Triton 3.6 (the GPU machine's): all 66 such tiles of the
      core suite's fp32 first stages of the guided search spill, and 36 of 36 drawn at
      random from the rest of its fitted spaces (12 each of dense fwd, conv fwd, conv bwd);
      of the dense bwd GEMMs' 12 drawn, 7. (Triton 3.9 fits a 64x128x64 4-warp dense
      forward tile, 3.6 does not.)
    Left in the space, the first two made the static prune drop 223 of the 270 tiles of the
    core suite's fp32 first batches (`TRITON_CACHE_DIR=$(mktemp -d) python -m
    autotune.inspect --prune core --dtype float32 --processes 0` on 2 cores, before them:
    127.4 s); out of it, 120 of 270, in 83.2 s (both before the search checked more tiles in
    place of those pruned, `search.REFILL`)."""
    acc = c.block_m * c.block_n // (32 * c.num_warps)
    return c.tma or acc > FMA_ACC_MAX or (not dense_bwd_gemm and c.block_k * acc > FMA_K_ACC_MAX)


def plan(
    suite: dict[str, list[dict[str, int]]],
    *,
    ops: list[str],
    modes: list[str],
    dtypes: list[str],
    search: str = "guided",
    max_configs: int | None = None,
    warp_specialize: bool = True,
    shard_spec: str | None = None,
) -> list[tuple[Task, int, int, int]]:
    """Without running anything: per task (of the shard), the tiles that fit, the most its
    search times, and the most where each bwd search finds a correct tile (`search.most`)."""
    rows = []
    after_bwd = fwd_bwd_after_bwd(modes, shard_spec)
    for task in tasks(suite, ops, modes, dtypes, shard_spec):
        first, ranked, _ = task_tiles(task, warp_specialize)
        rows.append(
            (
                task,
                len(ranked),
                *tile_search.most(
                    search, first, ranked, max_configs, after_bwd=after_bwd and task.mode == "fwd+bwd"
                ),
            )
        )
    return rows


def _parallel(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """fn over items on the host's cores (compiles). A Ctrl-C / SIGINT (the GPU script's
    time cap) cancels the items not started instead of waiting for all of them, so that
    the sweep stops within the cap's grace period and records its run."""
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 4)
    try:
        out = list(pool.map(fn, items))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return out


def own_cuda_graphs(provider: str, compile_mode: str) -> str:
    """Why `provider` is timed eagerly, or "": compiled_ref in a torch.compile mode whose
    code replays CUDA graphs of its own (Inductor's cudagraph trees: "reduce-overhead",
    "max-autotune"), which a capture inside a capture would time wrongly or break."""
    if provider != "compiled_ref" or compile_mode == "none":
        return ""
    from torch._inductor import list_mode_options

    if list_mode_options(compile_mode).get("triton.cudagraphs"):
        return f"timed eagerly: torch.compile mode {compile_mode!r} replays CUDA graphs of its own"
    return ""


# The layers a ⵟ-layer replaces (and cuBLAS's fused form of one), measured before the ⵟ configs.
STANDARD_LAYERS = ("linear+relu", "addmm_relu", "conv+relu")

# Kernels whose launch does not depend on the swept tile (their spills are not its fault).
_TILE_INDEPENDENT = ("row_sqnorm", "prep", "near", "finish")
# The kernels a backward tile runs (the backward modes force it on these alone).
_BACKWARD_KERNELS = ("bwd", "dgrad", "wgrad")


def swept_calls(calls: list[object], mode: str) -> list[object]:
    """The recorded launches whose tile is the swept one: in the backward modes the
    backward's alone, since the forward they also record runs on its default tile (checking
    it again for every backward tile would cost a compile report each, and a default that
    spilled would prune every backward tile in its name)."""
    if mode == "fwd":
        return calls
    return [c for c in calls if any(tag in c.kernel.__name__ for tag in _BACKWARD_KERNELS)]


def _record(problem: Problem, config: TileConfig | None) -> list[object]:
    """The kernel launches one run of the problem with `config` plans (nothing runs)."""
    return _recorded(lambda: problem.yat_with(config)) if config is not None else []


def checked_calls(problem: Problem, config: TileConfig | None) -> list[object]:
    """What the static prune checks of `config`: the launches of a run with it (in fwd mode
    also of the forward as training runs it), its swept kernels' alone (`swept_calls`)."""
    return swept_calls(_record(problem, config) + _record_training(problem, config), problem.mode)


def _record_training(problem: Problem, config: TileConfig | None) -> list[object]:
    """fwd mode: the launches of the forward with `config` as training runs it (saving s),
    checked by the static prune but not timed; other modes run it already."""
    if config is None or problem.mode != "fwd":
        return []
    return _recorded(lambda: problem.fwd_for_training(config))


def _recorded(make: Callable[[], Callable[[], object]]) -> list[object]:
    """The launches the callable `make()` builds would run, recorded; [] if planning fails
    (the timed pass records the failure)."""
    from autotune.inspect import record_calls

    try:
        return record_calls(make())
    except Exception:  # noqa: BLE001
        return []


class StaticPrune:
    """The sweep's static prune over one run (`call_reason` for every recorded call, a tile
    taking its first call's reason). Each distinct compile (`StaticCompile.key`: source,
    specialization, options) is checked once a run: a tile at another shape that compiles
    the same, or a backward tile that the bwd and fwd+bwd problems both check, costs
    nothing the second time. Over the core suite's first stages of the guided search
    (seeds and refills: `python -m autotune.inspect --prune core --dtype bfloat16`, or
    float32) that is 528 calls to check in bf16, 183 of them distinct, and 960 in fp32, 240
    distinct (the refills' look-ahead included, `search.Batch`). Without this, a check whose
    compile Triton's cache holds would still cost a second ptxas run (for its serialization
    notes). The compiles run on the host's cores: threads, or `processes` worker processes
    (started for the first batch of MIN_JOBS_TO_SPAWN compiles or more, kept for the run),
    which Triton's Python front end does not serialize (`compile_processes`,
    `StaticCompile`). Where the workers fail (one dies, a job cannot reach them), the batch
    is checked again on threads, and so is the rest of the run.

    A sweep on workers must be started from an importable module or a script whose work
    sits under `if __name__ == "__main__":` (spawned workers import the parent's main
    script; `python -m autotune` and the `yat-autotune` command are)."""

    def __init__(self, processes: int = 0) -> None:
        self.processes = processes
        self.verdicts: dict[str, str | None] = {}  # StaticCompile.key: its reason or None
        self._pool: ProcessPoolExecutor | None = None
        self.spawned = 0  # worker processes started (0: none, every batch on threads)
        self.calls_checked = 0  # recorded calls that planned a compile, repeats included
        # StaticCompile.key: its compile started ahead (`start`), and the job
        self.started: dict[str, tuple[Future, StaticCompile]] = {}

    def reasons(self, checked: list[list[object]]) -> list[str | None]:
        """Why each tile's kernels (a list of recorded calls a tile) should not be timed, or None."""
        flat = [(i, _static_compile(call)) for i, calls in enumerate(checked) for call in calls]
        self.calls_checked += sum(job is not None for _, job in flat)
        todo = {job.key: job for _, job in flat if job is not None and job.key not in self.verdicts}
        early = {key: self.started.pop(key)[0] for key in list(todo) if key in self.started}
        fresh = [job for key, job in todo.items() if key not in early]
        # this batch first: compiles started ahead that no worker has taken wait for it
        later = self._defer() if fresh or not all(f.done() for f in early.values()) else []
        self.verdicts.update(zip((job.key for job in fresh), self._map(fresh), strict=True))
        self.verdicts.update(self._collect(early, todo))
        self._submit(later)
        out: list[str | None] = [None] * len(checked)
        for i, job in flat:
            out[i] = out[i] or (self.verdicts[job.key] if job is not None else None)
        return out

    @property
    def ran_on(self) -> str:
        """What the compiles ran on: threads, or the workers started (then threads, where they
        failed)."""
        if not self.spawned:
            return "threads"
        failed = self.processes < 2  # (a failure leaves the rest of the run on threads)
        return f"{self.spawned} worker processes" + (", then threads (they failed)" if failed else "")

    def describe(self) -> str:
        """What this prune checked, and on what (a sweep's closing lines)."""
        return f"static prune: {len(self.verdicts)} distinct sm_90 compiles checked, on {self.ran_on}"

    def start(self, checked: list[list[object]]) -> int:
        """Start the compiles of `checked` (as `reasons` takes them) that are not checked yet
        on the worker processes, and return at once, saying how many: a later `reasons` of
        the same calls waits for them instead of compiling again. The sweep starts the next
        problem's first batch so, to compile while it times the current one (the workers run
        at the lowest CPU priority, `_end_with_parent`: the sweep's process takes a core
        whenever it needs one). A `reasons` call goes first: what no worker has taken yet
        waits for its batch. Only where the workers run (an earlier batch started them): on
        threads, the compiles would take the sweep's own process from its timing."""
        if self._pool is None:
            return 0
        jobs = {job.key: job for calls in checked for call in calls
                if (job := _static_compile(call)) is not None and job.key not in self.verdicts
                and job.key not in self.started}  # fmt: skip
        return self._submit(list(jobs.values()))

    def settle(self) -> None:
        """Wait for the compiles started ahead (`start`) to end, so that what is timed next
        (the baselines) does not share the host's cores with them, and keep their verdicts
        (one that failed is left for a later `reasons` to check)."""
        if not self.started:
            return
        concurrent.futures.wait([future for future, _ in self.started.values()])
        for key, (future, _) in list(self.started.items()):
            del self.started[key]
            if not future.cancelled() and future.exception() is None:
                self.verdicts[key] = future.result()

    def _submit(self, jobs: list[StaticCompile]) -> int:
        """Start `jobs` on the workers (none where they are gone); how many started."""
        if self._pool is None:
            return 0
        try:
            for job in jobs:
                self.started[job.key] = (self._pool.submit(_verdict, job), job)
        except Exception:  # noqa: BLE001 - a broken pool: `reasons` checks them on threads
            self._fail()  # (forgets those started)
            return 0
        return len(jobs)

    def _defer(self) -> list[StaticCompile]:
        """Cancel the compiles started ahead that no worker has taken yet, so that a batch
        checked now goes first; their jobs, to start again after it."""
        out = []
        for key, (future, job) in list(self.started.items()):
            if future.cancel():
                del self.started[key]
                out.append(job)
        return out

    def _collect(self, early: dict[str, Future], todo: dict[str, StaticCompile]) -> dict[str, str | None]:
        """The verdicts of compiles `start`ed ahead; those whose worker failed (or which a
        failure cancelled) are checked again here, on threads."""
        out: dict[str, str | None] = {}
        again: list[str] = []
        for key, future in early.items():
            try:
                out[key] = future.result()
            except Exception:  # noqa: BLE001 - a dead worker, a cancelled compile
                self._fail()
                again.append(key)
            except BaseException:  # a stop (Ctrl-C, the GPU script's cap)
                self.close()
                raise
        out.update(zip(again, _parallel(_verdict, [todo[key] for key in again]), strict=True))
        return out

    def _fail(self) -> None:
        """The workers failed: stop them; the rest of the run checks on threads."""
        self.close()
        self.processes = 0

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers ([] on threads, or before the first compile)."""
        return [p.pid for p in (self._pool._processes or {}).values()] if self._pool is not None else []

    def _map(self, jobs: list[StaticCompile]) -> list[str | None]:
        if self.processes < 2 or len(jobs) < (2 if self._pool is not None else MIN_JOBS_TO_SPAWN):
            return _parallel(_verdict, jobs)
        if self._pool is None:
            # spawned, not forked: the sweep's process holds a CUDA context
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_end_with_parent, initargs=(os.getpid(),),
            )  # fmt: skip
            self.spawned = self.processes
        try:
            return list(self._pool.map(_verdict, jobs))
        except Exception:  # noqa: BLE001 - a dead worker, a job that cannot be sent: threads do it
            self._fail()
            return _parallel(_verdict, jobs)
        except BaseException:  # a stop (Ctrl-C, the GPU script's cap)
            self.close()
            raise

    def close(self) -> None:
        """Stop the worker processes, a compile running there included (their compiles not
        started are cancelled, and those started ahead forgotten: `reasons` checks them
        itself)."""
        if self._pool is not None:
            workers = list((self._pool._processes or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:  # (a compile running would hold the process's exit)
                with contextlib.suppress(OSError, ValueError):
                    worker.terminate()
            self._pool = None
        self.started.clear()


def _end_with_parent(parent: int) -> None:
    """A prune worker's start, at the lowest CPU priority. It ignores SIGINT (a Ctrl-C
    reaches the whole process group: the sweep stops its workers itself) and ends when the
    sweep's process has: one ended by os._exit (the watchdog, a lost CUDA context) never
    stops them, and they would stay, waiting for work and holding its output open (the GPU
    script's pipe to the sweep's log would never close)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the lowest CPU priority: the sweep's process, timing one task while the workers compile
    # the next (`StaticPrune.start`), takes a core from them whenever it needs one
    with contextlib.suppress(OSError):
        os.nice(19)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="prune worker's parent watch", daemon=True).start()


# Prune workers at most: each is an interpreter with torch and Triton (~0.5 GB)
MAX_COMPILE_PROCESSES = 32
# Compiles a batch needs before the prune starts its workers (each imports torch and Triton
# first, seconds): a sweep's first batch has more (the core suite's, an ad hoc count: 18 new
# compiles, its later first batches 0 to 18), a small sweep's (a few tiles, the tests' on a
# GPU) fewer
MIN_JOBS_TO_SPAWN = 8


def compile_processes() -> int:
    """Worker processes of a GPU sweep's static prune (`StaticPrune`): one a CPU this
    process may run on, at most MAX_COMPILE_PROCESSES. Triton's front end (the AST's code
    generation, Python) holds the GIL, so threads on many cores wait for each other there;
    processes do not. That gain is reasoned, not yet measured: on a 2-core host the two
    take about as long (`TRITON_CACHE_DIR=$(mktemp -d) python -m autotune.inspect --prune
    core --dtype bfloat16 [--processes 0]`, Triton 3.6, when it checked the first batches
    alone: 64.8 and 63.1 s on 2 processes, their start included; 69.6 and 64.7 s on
    threads); a GPU sweep's closing line gives
    its "static prune" seconds."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(MAX_COMPILE_PROCESSES, cpus)


def static_reasons(checked: list[list[object]]) -> list[str | None]:
    """`StaticPrune.reasons` of a prune of its own, on threads."""
    return StaticPrune().reasons(checked)


def _static_compile(call: object) -> StaticCompile | None:
    """The call's sm_90 compile, or None for a kernel whose launch does not depend on the
    tile, and for one that cannot be planned for a compile (the timed pass records that)."""
    if any(tag in call.kernel.__name__ for tag in _TILE_INDEPENDENT):
        return None
    try:
        return StaticCompile.of(call)
    except Exception:  # noqa: BLE001 - failures are recorded by the timed pass
        return None


def call_reason(call: object) -> str | None:
    """Why a tile's kernel call should not be timed (a stack frame, i.e. spills; more shared
    memory than an sm_90 block gets; wgmma that ptxas serialized, each MMA waiting for the
    one before), or None; None too for a kernel whose launch does not depend on the tile,
    and for one that fails to compile (the timed pass records that)."""
    job = _static_compile(call)
    return _verdict(job) if job is not None else None


def _verdict(job: StaticCompile) -> str | None:
    """`call_reason` of a planned compile (a worker process's task)."""
    try:
        report = job.lean_report()
    except Exception:  # noqa: BLE001 - compile errors are recorded by the timed pass
        return None
    if report.spills:
        registers, stack = report.registers, report.stack_bytes
        return f"{report.kernel} spills on sm_90 ({registers} registers, a {stack} B stack frame)"
    if report.shared_bytes > SM90_SMEM_BYTES:
        return f"{report.kernel} needs {report.shared_bytes} B of shared memory (sm_90: {SM90_SMEM_BYTES})"
    if report.wgmma_serialized:
        return f"{report.kernel}: ptxas serializes its wgmma ({report.wgmma_serialized})"
    return None


def _warm(calls: list[object]) -> None:
    """Compile recorded launches for this GPU without running them (Triton's warmup)."""
    for call in calls:
        try:
            call.kernel.warmup(*call.args, grid=call.grid, **call.compile_kwargs())
        except Exception:  # noqa: BLE001 - the timed pass records the failure
            pass
