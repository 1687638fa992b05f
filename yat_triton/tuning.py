"""Config choice for the launchers: the tuned winners where a shape has been tuned, else the
heuristic default that lives next to each kernel.

Winners are data: one pretty-printed JSON file per GPU model, `yat_triton/tuned/<slug>.json`
(slug: `gpu_slug`, the device name lowercased, each run of other characters one "_"), written by
`autotune.export` from the results database:

    {"format": "yat-triton-winners", "version": 1, "gpu": "NVIDIA H200",
     "torch": ..., "triton": ..., "commit": ..., "created": ...,
     "entries": [{"op": "dense", "mode": "fwd", "dtype": "bfloat16",
                  "shape": {"M": 4096, "N": 4096, "K": 4096},
                  "config": {TileConfig fields}, "median_ms": 0.21, "tflops": 650.0}, ...]}

An entry's "config" is null where the kernels' built-in default tiles won at that shape (the
sweep's first backward row, the op on its defaults): a lookup that lands there keeps them.

Which file: the one given to `use_tuned_configs(path)`, else $YAT_TRITON_CONFIGS, else the
file of the GPU model the launch's tensors are on. Nothing is tuned on the CPU or under the
Triton interpreter.

Which entry: among those of the same op, mode and dtype, the nearest shape, with distance
sum over the dims both shapes name of |log2((query + 1) / (tuned + 1))| (ties: the first in
the file).
The tile is then fitted to the launch's GEMM as the config-space prune does (oversized tiles
clipped to the next power of two of their dimension), so a tile tuned on a large shape stays
sound on a small one. Shapes are those of the layer, as the results database records them:

    dense   {"M", "N", "K"}: x (M, K), weight (N, K). mode "fwd": the forward kernel;
            mode "bwd": both backward GEMMs (dx and dW), each fitted to its own dims (the
            sweep times backward tiles in its "bwd" or "fwd+bwd" mode; either is exported
            as "bwd", the tile's own mode).
    conv2d  {"B", "C_in", "H", "W", "C_out", "k", "stride", "padding", "groups"}, the sweep's
            dims (autotune/sweep.py) plus groups: k, stride and padding are the larger of
            their height and width values (a conv1d's own; square convs otherwise). Mode
            "fwd": the forward implicit GEMM; mode "bwd": the dgrad and the wgrad kernels.

A dim that only one side names does not count; the + 1 makes a padding of 0 as far from 1
as 1 is from 3 (and an entry the nearest to its own shape).

Files are read once per process (per file and device), at the first lookup that needs them;
`use_tuned_configs(...)` makes the next lookup read them again (e.g. after a new export).

Failures never crash a launch: a missing default file is silent (no winners yet for this
GPU); a corrupt, unreadable, foreign-format, wrong-version or other-GPU file, or a user
file that does not exist, costs one `TunedConfigWarning` per file per process and leaves the
defaults in charge; entries with invalid fields are skipped under that same one warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from kernels._common import INTERPRETING, TileConfig
from kernels.conv import conv_default_config, prune_conv_configs
from kernels.dense import dense_default_config, prune_dense_configs

__all__ = [
    "ENV_VAR",
    "FORMAT",
    "TUNED_DIR",
    "VERSION",
    "TunedConfigWarning",
    "TunedEntry",
    "config_from_dict",
    "conv_shape",
    "current_gpu",
    "default_tiles_only",
    "gpu_slug",
    "parse_entry",
    "pick_conv_config",
    "pick_dense_config",
    "tuned_config",
    "use_tuned_configs",
    "winners_filename",
]

FORMAT = "yat-triton-winners"
VERSION = 1
ENV_VAR = "YAT_TRITON_CONFIGS"
TUNED_DIR = Path(__file__).resolve().parent / "tuned"

OPS = ("dense", "conv2d")
MODES = ("fwd", "bwd")  # the kernels' modes: a "fwd+bwd" sweep row tunes the "bwd" tile
DTYPES = ("float16", "bfloat16", "float32", "float64")
_MAX_PICKS = 4096  # memoized lookups kept before the memo starts over (dynamic batch sizes)

Shape = Mapping[str, int]
V = TypeVar("V")


class TunedConfigWarning(UserWarning):
    """A winners file could not be used (in whole or in part); the defaults stand in."""


@dataclass(frozen=True)
class TunedEntry:
    """One winner: the best config measured for (op, mode, dtype, shape)."""

    op: str
    mode: str
    dtype: str
    shape: tuple[tuple[str, int], ...]  # dims in the file's order
    config: TileConfig | None  # None: the built-in default tiles won here


def gpu_slug(gpu: str) -> str:
    """A GPU model's name for files and folders: lowercased, each run of other characters one
    "_", none at either end: "NVIDIA H200" -> "nvidia_h200"."""
    return re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_") or "unknown"


def winners_filename(gpu: str) -> str:
    """The winners file name of a GPU model: "NVIDIA H200" -> "nvidia_h200.json"."""
    return gpu_slug(gpu) + ".json"


def current_gpu(device: torch.device | str | int | None = None) -> str | None:
    """The name of CUDA `device` (a torch.device, "cuda:1", an index; None: the current one),
    or None where nothing is tuned (no CUDA, the interpreter, a CPU device). A launch runs on
    its tensors' device, which need not be the current one: the launchers pass it."""
    if INTERPRETING or not torch.cuda.is_available():
        return None
    if device is not None:
        if not isinstance(device, torch.device):  # a launcher's is one already (the hot path)
            device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        if device.type != "cuda":
            return None
    return torch.cuda.get_device_name(device)


def conv_shape(
    x_shape: Sequence[int], w_shape: Sequence[int], stride: Sequence[int], pads: Sequence[int], groups: int
) -> dict[str, int]:
    """The lookup shape of a conv2d of x (B, C_in, H, W) with weight (C_out, C_in/groups, kH, kW),
    stride (sh, sw) and padding (top, bottom, left, right)."""
    B, C_in, H, W = x_shape
    C_out, _, kH, kW = w_shape
    return {
        "B": B, "C_in": C_in, "H": H, "W": W, "C_out": C_out, "k": max(kH, kW),
        "stride": max(stride), "padding": max(pads), "groups": groups,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# Validation: what a winners file may hold (the exporter checks its output with the same).

_FIELDS = {f.name: f for f in dataclasses.fields(TileConfig)}
_REQUIRED = {name for name, f in _FIELDS.items() if f.default is dataclasses.MISSING}
_POW2_MIN = {"block_m": 16, "block_n": 16, "block_k": 16, "num_warps": 1, "epilogue_split": 1}
# Far above any tile that fits a GPU (1024 threads a program: 32 warps), so that a corrupt
# file's tile is refused here, not by the compiler at call time.
_MAX = {"block_m": 1024, "block_n": 1024, "block_k": 1024, "num_warps": 32, "num_stages": 16,
        "group_m": 2**16, "epilogue_split": 64}  # fmt: skip


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def config_from_dict(d: object) -> TileConfig:
    """A TileConfig from its fields (as `TileConfig.as_dict` writes them), or ValueError.

    Blocks are powers of two >= 16 (the MMA minimum), num_warps and epilogue_split powers of
    two, group_m and num_stages >= 1, all within `_MAX`, norms_in_loop, tma, warp_specialize and split_tail
    bools (warp_specialize only on a tile that compiles with it, `TileConfig.warp_specialize_problem`).
    """
    if not isinstance(d, dict):
        raise ValueError(f"config must be an object of TileConfig fields, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ValueError(f"config has unknown fields {unknown} (TileConfig has {list(_FIELDS)})")
    missing = sorted(_REQUIRED - set(d))
    if missing:
        raise ValueError(f"config lacks the fields {missing}")
    for name, value in d.items():
        if name in ("norms_in_loop", "tma", "warp_specialize", "split_tail"):
            if not isinstance(value, bool):
                raise ValueError(f"config.{name} must be true or false, got {value!r}")
        elif not _is_int(value) or value < _POW2_MIN.get(name, 1):
            raise ValueError(f"config.{name} must be an int >= {_POW2_MIN.get(name, 1)}, got {value!r}")
        elif name in _POW2_MIN and value & (value - 1):
            raise ValueError(f"config.{name} must be a power of two, got {value}")
        elif value > _MAX.get(name, value):
            raise ValueError(f"config.{name} must be at most {_MAX[name]}, got {value}")
    config = TileConfig(**d)
    problem = config.warp_specialize_problem()
    if problem:
        raise ValueError(f"config: {problem}")
    return config


def parse_entry(raw: object) -> TunedEntry:
    """One entry of a winners file, checked field by field, or ValueError naming the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"an entry must be an object, got {type(raw).__name__}")
    for name, allowed in (("op", OPS), ("mode", MODES), ("dtype", DTYPES)):
        if raw.get(name) not in allowed:
            raise ValueError(f"entry {name} must be one of {allowed}, got {raw.get(name)!r}")
    shape = raw.get("shape")
    if not isinstance(shape, dict) or not shape:
        raise ValueError(f"entry shape must be a non-empty object of dims, got {shape!r}")
    for dim, value in shape.items():
        if not _is_int(value) or not 0 <= value < 2**63:  # a tensor's dims fit int64
            raise ValueError(f"entry shape dim {dim!r} must be an int in [0, 2**63), got {value!r}")
    if "config" not in raw:
        raise ValueError("entry lacks its config (null for the default tiles)")
    config = None if raw["config"] is None else config_from_dict(raw["config"])
    return TunedEntry(raw["op"], raw["mode"], raw["dtype"], tuple(shape.items()), config)


# ---------------------------------------------------------------------------------------
# The tuned-config cache: the package's one piece of global mutable state.


class _Cache:
    def __init__(self) -> None:
        self.override: Path | None = None  # use_tuned_configs(path)
        self.files: dict[tuple[Path, str], tuple[TunedEntry, ...]] = {}  # (file, device) -> entries
        self.picks: dict[tuple[object, ...], TileConfig | None] = {}  # memoized lookups
        self.chosen: dict[tuple[object, ...], TileConfig] = {}  # memoized launcher picks
        self.warned: set[Path] = set()  # one warning per file per process
        self.forced: dict[tuple[str, str], TileConfig] = {}  # forced_config(...) blocks
        self.off = 0  # default_tiles_only() blocks open: every lookup answers None
        self.generation = 0  # bumped by forget(): a lookup begun before it stores nothing

    def forget(self) -> None:
        """Drop loaded files and lookups (not the warnings already given)."""
        self.generation += 1
        self.files.clear()
        self.picks.clear()
        self.chosen.clear()


_CACHE = _Cache()


def use_tuned_configs(path: str | os.PathLike[str] | None) -> None:
    """Take tuned configs from the winners file `path` from now on (over $YAT_TRITON_CONFIGS
    and the per-GPU default); None goes back to that default lookup. Either way, files are
    read again on next use. The file's "gpu" must be the device's name to be used."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"use_tuned_configs expects a path or None, got {type(path).__name__}")
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"use_tuned_configs: no winners file at {path}")
    # the file checked here is the one read later, whatever the working directory is then
    _CACHE.override = None if path is None else Path(path).absolute()
    _CACHE.forget()


def _warn(path: Path, message: str) -> None:
    if path not in _CACHE.warned:
        _CACHE.warned.add(path)
        warnings.warn(f"{path}: {message}; using the default configs", TunedConfigWarning, stacklevel=4)


def _winners_path(gpu: str) -> tuple[Path, bool]:
    """(file, named by the user) for this device."""
    if _CACHE.override is not None:
        return _CACHE.override, True
    env = _env_path()
    if env is not None:
        return env, True
    return TUNED_DIR / winners_filename(gpu), False


def _env_path() -> Path | None:
    """$YAT_TRITON_CONFIGS, a relative path taken from the working directory of the lookup."""
    env = os.environ.get(ENV_VAR)
    return Path(env).absolute() if env else None


def read_winners(path: str | os.PathLike[str]) -> tuple[str, tuple[TunedEntry, ...]]:
    """(gpu, usable entries) of a winners file, as the call-time lookup reads it, whatever
    the device; problems warn once, as there."""
    p = Path(path)
    try:
        gpu = json.loads(p.read_text(encoding="utf-8")).get("gpu", "")
    except (OSError, ValueError, AttributeError, RecursionError):
        gpu = ""
    return str(gpu), _load(p, str(gpu), True)


def _load(path: Path, gpu: str, named: bool) -> tuple[TunedEntry, ...]:
    """The usable entries of a winners file for device `gpu`; () and a warning if none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            _warn(path, "no such winners file")
        return ()
    except (OSError, UnicodeDecodeError) as e:
        _warn(path, f"unreadable winners file ({e})")
        return ()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, over-long ints, deep nesting
        _warn(path, f"not valid JSON ({e})")
        return ()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        _warn(path, f"not a winners file (format {found!r}, expected {FORMAT!r})")
        return ()
    version = data.get("version")
    if not _is_int(version) or version != VERSION:
        _warn(path, f"winners format version {version!r}, this code reads version {VERSION}")
        return ()
    if data.get("gpu") != gpu:
        _warn(path, f"winners tuned on {data.get('gpu')!r}, this device is {gpu!r}")
        return ()
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list):
        _warn(path, f"'entries' must be a list, got {type(raw_entries).__name__}")
        return ()
    entries, bad = [], []
    for i, raw in enumerate(raw_entries):
        try:
            entries.append(parse_entry(raw))
        except ValueError as e:
            bad.append(f"entry {i}: {e}")
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        _warn(path, f"skipped {len(bad)} of {len(raw_entries)} entries with invalid fields: {bad[0]}{more}")
    return tuple(entries)


def _distance(query: Shape, tuned: tuple[tuple[str, int], ...]) -> float | None:
    shared = [(query[dim], value) for dim, value in tuned if dim in query]
    if not shared:
        return None
    return sum(abs(math.log2((q + 1) / (t + 1))) for q, t in shared)


def _dtype_name(dtype: torch.dtype | str) -> str:
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


def tuned_config(
    op: str, mode: str, dtype: torch.dtype | str, shape: Shape, device: torch.device | str | int | None = None
) -> TileConfig | None:
    """The tuned config of the nearest tuned shape (see the module docstring), as stored in
    the winners file, or None: no CUDA device, interpreter, no usable file, no entry, or
    the nearest entry says the default tiles won there.

    Args:
        op: "dense" or "conv2d".
        mode: "fwd" (the forward kernel) or "bwd" (the backward kernels).
        dtype: io dtype, a torch.dtype or its name ("bfloat16").
        shape: the layer's dims, e.g. {"M": 4096, "N": 4096, "K": 4096}: ints (symbolic
            ones, as torch.compile traces dynamic shapes with, get None: no guard per size).
        device: the CUDA device the launch runs on (a torch.device, "cuda:1", an index;
            None: the current one); its model names the winners file.
    """
    if op not in OPS or mode not in MODES:
        raise ValueError(f"tuned_config: op must be in {OPS} and mode in {MODES}, got {op!r}, {mode!r}")
    if not isinstance(shape, Mapping) or not all(
        _is_int(v) or isinstance(v, torch.SymInt) for v in shape.values()
    ):
        raise TypeError(f"tuned_config: shape must map dim names to ints, got {shape!r}")
    if _CACHE.off or not all(_is_int(v) for v in shape.values()):
        return None  # default_tiles_only(); symbolic dims (torch.compile, dynamic shapes): the defaults
    gpu = current_gpu(device)
    if gpu is None:
        return None
    path, named = _winners_path(gpu)
    key = (path, gpu, op, mode, _dtype_name(dtype), tuple(shape.items()))
    if key in _CACHE.picks:
        return _CACHE.picks[key]
    generation = _CACHE.generation  # a use_tuned_configs() meanwhile: what this read is stale
    entries = _CACHE.files.get((path, gpu))
    if entries is None:
        entries = _load(path, gpu, named)
        if generation == _CACHE.generation:
            _CACHE.files[(path, gpu)] = entries
    best: TileConfig | None = None
    best_d = math.inf
    for e in entries:
        if (e.op, e.mode, e.dtype) == (op, mode, key[4]):
            d = _distance(shape, e.shape)
            if d is not None and d < best_d:
                best, best_d = e.config, d
    if generation == _CACHE.generation:
        _remember(_CACHE.picks, key, best)
    return best


def _remember(memo: dict[tuple[object, ...], V], key: tuple[object, ...], value: V) -> None:
    """memo[key] = value, the memo started over once it holds _MAX_PICKS entries."""
    if len(memo) >= _MAX_PICKS:
        memo.clear()
    memo[key] = value


# ---------------------------------------------------------------------------------------
# Launcher entries: tuned where tuned, else the kernel's heuristic default.


@contextlib.contextmanager
def default_tiles_only() -> Iterator[None]:
    """Inside the block no winners file is consulted: the launchers take their built-in
    default tiles (a `forced_config` still applies). The sweep measures under it, so that
    its rows, and the winners exported from them, do not depend on an earlier export."""
    _CACHE.off += 1
    try:
        yield
    finally:
        _CACHE.off -= 1


@contextlib.contextmanager
def forced_config(op: str, mode: str, config: TileConfig) -> Iterator[None]:
    """Inside the block every `op` launch of `mode` ("fwd" | "bwd") uses `config` (fitted
    to the launch): how the sweep times one backward tile through the registered op."""
    key = (op, mode)
    previous = _CACHE.forced.get(key)
    _CACHE.forced[key] = config
    try:
        yield
    finally:
        if previous is None:
            _CACHE.forced.pop(key, None)
        else:
            _CACHE.forced[key] = previous


def _pick_key(
    dims: tuple[object, ...], problem: Shape | None, device: torch.device | None, *args: object
) -> tuple[object, ...] | None:
    """The memo key of a launcher's pick: its dims, problem and other arguments, and what
    else the answer depends on (the device's winners file as `tuned_config` finds it, the
    forced and default-only blocks open, interpreter or not); None where a dim is symbolic
    (no memo: the lookup must not guard on sizes)."""
    if not all(type(d) is int for d in dims):
        return None
    if problem is not None and not all(type(d) is int for d in problem.values()):
        return None
    env = os.environ.get(ENV_VAR)  # the string, and for a relative one the directory it is read from
    state = (
        current_gpu(device), _CACHE.override, env, os.getcwd() if env and not os.path.isabs(env) else None,
        TUNED_DIR, INTERPRETING, _CACHE.off > 0, tuple(_CACHE.forced.items()),
    )  # fmt: skip
    return (dims, tuple(problem.items()) if problem is not None else None, *args, *state)


def _memoized(key: tuple[object, ...] | None, pick: Callable[[], TileConfig]) -> TileConfig:
    """pick(), remembered under key (a launcher asks the same few shapes over and over:
    the lookup, fitting and sm_90 checks cost ~20 µs a pick on a 2-core CPU)."""
    if key is None:
        return pick()
    known = _CACHE.chosen.get(key)
    if known is None:
        generation = _CACHE.generation
        known = pick()
        if generation == _CACHE.generation:
            _remember(_CACHE.chosen, key, known)
    return known


def pick_dense_config(
    M: int,
    N: int,
    K: int,
    dtype: torch.dtype,
    mode: str = "fwd",
    *,
    problem: Shape | None = None,
    override: TileConfig | None = None,
    device: torch.device | None = None,
) -> TileConfig:
    """Config for a dense GEMM-like launch of an (M, K) x (K, N) product in `dtype`.

    `problem` is the layer shape to look up ({"M", "N", "K"} of x (M, K), weight (N, K));
    without it, the launch's own (M, N, K). A backward GEMM passes its layer's shape.
    `override` (a 1x1 conv's own tile) comes first, fitted like the others; if it cannot
    fit, the forced / tuned / default choice follows. `device`: the tensors' (None: the
    current CUDA device), whose model's winners are looked up.
    """
    key = _pick_key((M, N, K), problem, device, "dense", dtype, mode, override)
    return _memoized(key, lambda: _pick_dense(M, N, K, dtype, mode, problem, override, device))


def _pick_dense(
    M: int,
    N: int,
    K: int,
    dtype: torch.dtype,
    mode: str,
    problem: Shape | None,
    override: TileConfig | None,
    device: torch.device | None,
) -> TileConfig:
    if override is not None:
        fitted = prune_dense_configs([override], M, N, K, dtype.itemsize, backward=mode == "bwd")
        if fitted:
            return fitted[0]
    tuned = _CACHE.forced.get(("dense", mode)) or tuned_config(
        "dense", mode, dtype, problem if problem is not None else {"M": M, "N": N, "K": K}, device
    )
    if tuned is not None:
        fitted = prune_dense_configs([tuned], M, N, K, dtype.itemsize, backward=mode == "bwd")
        if fitted:
            return fitted[0]
    return dense_default_config(M, N, K, dtype.itemsize, interpreting=INTERPRETING, backward=mode == "bwd")


def conv_override(
    mode: str, dtype: torch.dtype, problem: Shape, device: torch.device | None = None
) -> TileConfig | None:
    """The conv tile forced (sweep) or tuned for this conv problem, unfitted; None when
    neither: a 1x1 conv on the dense kernels then uses the dense tuning."""
    return _CACHE.forced.get(("conv2d", mode)) or tuned_config("conv2d", mode, dtype, problem, device)


def pick_conv_config(
    M: int,
    N: int,
    K: int,
    dtype: torch.dtype,
    mode: str = "fwd",
    *,
    problem: Shape | None = None,
    device: torch.device | None = None,
) -> TileConfig:
    """Config for a conv implicit GEMM (M, N, K as `conv_default_config` takes them).

    `problem` is the conv's lookup shape (`conv_shape(...)`); without it, {"M", "N", "K"} of
    the implicit GEMM, which only matches winners stored that way. `device`: as for
    `pick_dense_config`.
    """
    key = _pick_key((M, N, K), problem, device, "conv2d", dtype, mode)
    return _memoized(key, lambda: _pick_conv(M, N, K, dtype, mode, problem, device))


def _pick_conv(
    M: int, N: int, K: int, dtype: torch.dtype, mode: str, problem: Shape | None, device: torch.device | None
) -> TileConfig:
    tuned = conv_override(mode, dtype, problem if problem is not None else {"M": M, "N": N, "K": K}, device)
    if tuned is not None:
        fitted = prune_conv_configs([tuned], M, N, K, dtype.itemsize)
        if fitted:
            return fitted[0]
    return conv_default_config(M, N, K, dtype.itemsize, interpreting=INTERPRETING)
