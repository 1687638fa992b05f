"""Pieces shared by every kernel family: tile configs, program ordering, dtype limits."""

from __future__ import annotations

import os
from collections import deque
from dataclasses import asdict, dataclass, replace

import triton
import triton.language as tl

# Triton decides at decoration time whether `@triton.jit` builds a compiled kernel or an
# interpreted one, so this must be read when this module is imported, as Triton reads it
# (its knob takes 1, true, on, yes in any case; older Tritons without knobs took only "1").
_knobs = getattr(triton, "knobs", None)
INTERPRETING: bool = (
    bool(_knobs.runtime.interpret) if _knobs is not None else os.environ.get("TRITON_INTERPRET", "0") == "1"
)
if INTERPRETING and type(getattr(tl.standard, "cdiv", None)).__name__ == "JITFunction":
    # Triton's own jit functions were built, compiled, when triton was imported: an
    # interpreted kernel calling them fails with "Cannot call @triton.jit'd outside of the
    # scope of a kernel" at its first launch
    raise ImportError(
        "TRITON_INTERPRET is set, but triton was imported before it was set, so Triton built its "
        "own functions for the GPU; set TRITON_INTERPRET=1 before the first import of triton"
    )
_INTERPRETING = tl.constexpr(INTERPRETING)  # for kernels: jit code reads constexpr globals only

# Grid dependency control (programmatic dependent launch, sm_90+): Triton 3.3 and newer. An
# older Triton gets no-ops here, and HAS_PDL tells the launchers never to ask for it.
try:
    from triton.backends.nvidia.compiler import CUDAOptions
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

    HAS_PDL = "launch_pdl" in CUDAOptions.__dataclass_fields__
except ImportError:  # pragma: no cover (an older Triton)
    HAS_PDL = False

if not HAS_PDL:  # pragma: no cover

    @triton.jit
    def gdc_wait():  # noqa: D103
        pass

    @triton.jit
    def gdc_launch_dependents():  # noqa: D103
        pass


# A loop's trip count known positive (tl.assume, Triton 3.3 on; an older one: nothing). A
# main loop with a runtime trip count gets a zero-trip path; the compiler may sink the
# accumulator's zero fill into it, onto the block where the pipelined wgmma are waited for,
# and ptxas then serializes every wgmma of the kernel (info C7515, "non wgmma instructions
# defining accumulator registers of a wgmma between start and end of the pipeline stage"):
# the conv's TMA forward as inference runs it, every tile and ResNet-50 3x3 layer (Triton
# 3.6, `python -m autotune.inspect --op conv2d --conv 64 256 14 256 3 --config
# 128x128x64:8:4:e2:tma`), which the H200 sweep's static prune then left out.
if hasattr(tl, "assume"):

    @triton.jit
    def assume_positive(n):
        """Tell the compiler n > 0 (see above)."""
        tl.assume(n > 0)

else:  # pragma: no cover (an older Triton)

    @triton.jit
    def assume_positive(n):  # noqa: D103
        pass


# Largest finite value per io dtype name: the saturating cast clamps to +-this.
FINITE_MAX: dict[str, float] = {
    "float16": 65504.0,
    "bfloat16": 3.3895313892515355e38,
}


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for host code: `triton.cdiv` is a constexpr function, a few µs a host
    call, and a conv's forward and backward plan some thirty of them a call."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (0 for n = 0), as `triton.next_power_of_2`, for host
    code without its constexpr-function wrapper (a few µs a host call)."""
    n -= 1
    for shift in (1, 2, 4, 8, 16, 32):
        n |= n >> shift
    return n + 1


# Hopper (sm_90) limits used to prune configs before any GPU time is spent.
SM90_SMEM_BYTES = 232448  # opt-in dynamic shared memory per block on H100/H200
SM90_MAX_THREADS = 1024
# Consumer warpgroups of a warp-specialized kernel (Triton's Hopper pass), each num_warps wide
WS_CONSUMER_GROUPS = 2


@dataclass(frozen=True)
class TileConfig:
    """One launch configuration of a GEMM-like kernel.

    `norms_in_loop` and `epilogue_split` only matter for the forwards: True sums ||x||^2
    and ||w||^2 inside the main loop, False reads them from a cheap separate pass (the
    conv: the patch norms in the loop, or summed over the taps from a pass of pixel norms;
    ||w||^2 always from its pass); the epilogue runs on `epilogue_split` column slices of
    the tile (fewer live registers).
    `warp_specialize` (with `tma`, the dense kernels only): a producer warpgroup feeds two
    consumer warpgroups (`yat_dense_fwd_tma_kernel`, `yat_dense_bwd_gemm_tma_kernel`;
    `warp_specialize_problem` says which tiles compile). Other kernels ignore it.
    `tma` selects the kernels that load their operands through TMA descriptors: the dense
    forward's and backward GEMMs' persistent kernels (resident programs on every SM), and the conv
    forward's stride-1 kernel (boxes of x, see `yat_conv_fwd_tma_kernel`). They need
    K-contiguous, 16-byte aligned operands, and fall back to the pointer kernel with the
    same tile otherwise. With `tma`, `norms_in_loop` sums ||x||^2 only (||w||^2 from the
    norm pass, the epilogue splittable).
    `split_tail` (ungrouped conv forwards, norms from the pass, and input gradients): the
    tiles of a last partial wave are each shared by a few programs, each running part of
    the main loop (`tail_split`); elsewhere, and where no split pays, the plain grid.
    """

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    norms_in_loop: bool = False
    epilogue_split: int = 1
    tma: bool = False
    warp_specialize: bool = False
    split_tail: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """The fields, `warp_specialize` and `split_tail` only when set: a tile without them
        is written as before the fields existed (results databases and winners files resume
        and match)."""
        d = asdict(self)
        for name in ("warp_specialize", "split_tail"):
            if not d[name]:
                del d[name]
        return d

    def launch_options(self) -> dict[str, int]:
        """The tile's constexprs and launch options every GEMM-like kernel takes."""
        return dict(
            BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k, GROUP_M=self.group_m,
            num_warps=self.num_warps, num_stages=self.num_stages,
        )  # fmt: skip

    @property
    def consumer_warps(self) -> int:
        """Warps holding the accumulator: num_warps, or, warp-specialized, num_warps in each
        of two consumer warpgroups (Triton's Hopper pass; a producer warpgroup comes on top)."""
        return self.num_warps * (WS_CONSUMER_GROUPS if self.warp_specialize else 1)

    def unspecialized(self) -> TileConfig:
        """The tile without warp specialization, on the warps its consumer warpgroups had
        (what a kernel or path without it runs: the pointer kernels, the conv's, a tile
        clipped below 128 rows, 32-bit io)."""
        if not self.warp_specialize:
            return self
        return replace(self, warp_specialize=False, num_warps=self.consumer_warps)

    def warp_specialize_problem(self) -> str | None:
        """Why this warp-specialized tile cannot compile on Hopper (Triton 3.6's pass), or
        None: it needs the persistent TMA kernels, 4-warp consumers of one 64-row half each,
        an unsplit epilogue and norms from the norm pass (`kernels.dense.dense_config_space`)."""
        if not self.warp_specialize:
            return None
        if not self.tma:
            return "warp_specialize needs tma (the persistent TMA kernels)"
        if (self.block_m, self.num_warps, self.epilogue_split, self.norms_in_loop) != (128, 4, 1, False):
            return (
                "warp_specialize needs block_m 128, num_warps 4, epilogue_split 1 and "
                "norms_in_loop false (what Triton's Hopper warp specialization compiles)"
            )
        return None

    @property
    def name(self) -> str:
        flags = (
            ("_nil", self.norms_in_loop), ("_tma", self.tma), ("_ws", self.warp_specialize),
            ("_sk", self.split_tail),
        )  # fmt: skip
        tag = "".join(name for name, on in flags if on)
        split = f"e{self.epilogue_split}" if self.epilogue_split != 1 else ""
        return (
            f"m{self.block_m}n{self.block_n}k{self.block_k}g{self.group_m}"
            f"w{self.num_warps}s{self.num_stages}{split}{tag}"
        )


def pipelined_smem_bytes(
    cfg: TileConfig, elem_bytes: int, *, tma_staging: bool = True, backward: bool = False
) -> int:
    """Shared memory of a main loop pipelined over `num_stages` A(BMxBK) + B(BKxBN) buffers.

    Matches what Triton allocates on Hopper (a bf16 128x128x64 tile, 3 stages: 96 KB). The
    persistent TMA kernels keep their pipeline buffers alive through the epilogue (the next
    tile's copies are in flight), so the epilogue gets its own staging buffers: the forward's
    TMA stores of a y slice and an fp32 s slice, BM*BN*(2+4)/split bytes (sm_90 compiles of
    the bf16 forward saving s: +24 KB for 128x128 in 4 slices, +48 KB for 128x256 in 4). The
    `backward` GEMMs (pointer stores) stage at most a 128x128 io-dtype tile (sm_90 compiles,
    Triton 3.6, bf16, 4096^3: 32 KB for 128x128, 128x256 and 256x128 tiles, 16 KB for
    64x256 and 256x64, 8 KB for 128x64, 64x128 and 64x64; 128x256x64 with 3 stages, 180,248 B
    in all, 4 stages 229,408 B: both fit, and both were pruned by the forward's bound). When the
    warpgroups split the columns (more warpgroups than 64-row blocks: 64xN on 8 warps), the
    split epilogue first converts the whole fp32 tile: BM*BN*4 + BM*BN*2/split + 16 KB
    (64x256 in 4 slices saving s: +88 KB, 254 KB in all with 4 stages: too much).
    `tma_staging=False`: a TMA kernel without that staging (the conv forwards', which are
    not persistent: their TMA stores reuse the drained pipeline's buffers; sm_90 compiles,
    bf16, saving s: no more shared memory for the 128x64 and 128x128 tiles, 16 KB more for
    the pointer kernel's 64x64x64 on 4 warps; the GPU sweep's compile-based prune decides).
    A warp-specialized kernel stores through pointers, but its consumers stage the
    epilogue's layout changes in shared memory: the forward BM*BN*4 bytes when it saves s
    (BM*BN without; the model takes the training forward's), a `backward` GEMM
    BM*BN*elem_bytes/2 (sm_90 compiles, bf16, 128x64 to 128x256 tiles, 2-5 stages: within
    250 B of that).
    """
    main = cfg.num_stages * (cfg.block_m + cfg.block_n) * cfg.block_k * elem_bytes
    if cfg.warp_specialize:
        main += cfg.block_m * cfg.block_n * (elem_bytes // 2 if backward else 4)
    elif cfg.tma and tma_staging and backward:
        main += min(cfg.block_m * cfg.block_n, 128 * 128) * elem_bytes
    elif cfg.tma and tma_staging:
        tile = cfg.block_m * cfg.block_n
        if max(1, cfg.num_warps // 4) > cfg.block_m // 64:
            main += tile * 4 + tile * 2 // cfg.epilogue_split + 16384
        else:
            main += tile * 6 // cfg.epilogue_split
    if cfg.tma:
        main += 2048  # mbarriers and alignment (measured: 32 B to 1 KB)
    return main


def fits_sm90(cfg: TileConfig, elem_bytes: int, *, tma_staging: bool = True, backward: bool = False) -> bool:
    """Static prune: shared memory within the opt-in limit, accumulator not absurd
    (`tma_staging`, `backward`: as `pipelined_smem_bytes` takes them).

    An fp32 accumulator tile needs BM*BN/(32*num_warps) registers per thread; above ~128
    it leaves no room for the epilogue and spills (255 registers is the hard cap). A
    warp-specialized tile spreads it over its consumer warps (`consumer_warps`).
    """
    if 32 * cfg.num_warps > SM90_MAX_THREADS:
        return False
    acc_regs = cfg.block_m * cfg.block_n // (32 * cfg.consumer_warps)
    if acc_regs > 128:
        return False
    smem = pipelined_smem_bytes(cfg, elem_bytes, tma_staging=tma_staging, backward=backward)
    return smem <= SM90_SMEM_BYTES


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a linear program id to (pid_m, pid_n) in GROUP_M-row bands.

    Consecutive programs walk down a band of GROUP_M row tiles before moving right, so the
    B tiles they share stay in L2 (the classic Triton matmul swizzle).
    """
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_pid_n
    group = pid // width
    first_m = group * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows
    return pid_m, pid_n


def divmod_magic(d: int) -> tuple[int, int]:
    """(m, p) such that n // d == (n * (m mod 2^32)) >> p for every 0 <= n < 2^31 (d >= 1;
    d < 1, for dims of empty problems that launch nothing, is taken as 1): p = 31 +
    ceil(log2 d) and m = ceil(2^p / d) < 2^32, returned as the int32 with its bits (2^31
    and up wrap to negatives; `fast_div` reads them back as uint32). torch.compile cannot
    pass a kernel an int argument past the int32 range (torch 2.11's inductor fails on
    one, 2^31 itself: the magic of every power of two). With e = m - 2^p / d in [0, 1),
    n m / 2^p = n / d + n e / 2^p, and n e / 2^p < n / 2^p < 1 / d never carries past the
    next multiple of 1 / d."""
    d = max(d, 1)
    p = 31 + (d - 1).bit_length()
    m = -(-(1 << p) // d)
    return m - (1 << 32) if m >= 1 << 31 else m, p


@triton.jit
def fast_div(n, d, m, p, FAST: tl.constexpr):
    """n // d. FAST (int32 0 <= n < 2^31, (m, p) = divmod_magic(d), m's int32 bits read as
    uint32): one 32x32->64-bit multiply and a shift where a division by a runtime int32
    takes a dozen instructions or more; otherwise (offsets past 2^31, symbolic sizes
    without magic numbers) n // d."""
    if FAST:
        wide = tl.cast(tl.cast(n, tl.uint32), tl.uint64) * tl.cast(tl.cast(m, tl.uint32), tl.uint64)
        return tl.cast(wide >> p, tl.int32)
    else:
        return n // d


RCP_MIN = tl.constexpr(2.0**-126)  # the smallest normal fp32
EPS_FAST_MIN = 2.0**-124  # from here on, `div_plus_eps` may divide by d + eps with a reciprocal


@triton.jit
def rcp_ftz(x):
    """MUFU.RCP: 1 / x for fp32 x, to ~1 ulp, flushing subnormal inputs (to +-inf) and
    subnormal results (to +-0) (rcp.approx.ftz.f32). The interpreter (no inline PTX)
    emulates the flushing, so its tests catch a caller that lets x leave the normal range."""
    if _INTERPRETING:
        flushed = tl.abs(x) < RCP_MIN
        r = tl.where(flushed, tl.where(x < 0.0, -float("inf"), float("inf")), 1.0 / tl.where(flushed, 1.0, x))
        return tl.where(tl.abs(r) < RCP_MIN, r * 0.0, r)
    else:
        return tl.inline_asm_elementwise(
            "rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1
        )


@triton.jit
def div_plus_eps(a, d, eps, FAST: tl.constexpr):
    """a / (d + eps) for d >= 0 (or NaN) and eps > 0. FAST (fp32 and eps >= EPS_FAST_MIN,
    which the launcher checks: `fast_quotient`): 4 instructions instead of the 9 of
    div.full.f32, which `a / b` compiles to.

    div.full.f32 is MUFU.RCP of b and a multiply, plus two compares and four predicated
    multiplies that scale a and b by 1/4 when b > 2^126 (whose reciprocal would be
    subnormal, flushed) or by 2^24 when b is subnormal. Here b = d + eps >= eps >= 2^-124,
    so b / 4 = fma(d, 1/4, eps / 4) is normal (and below 2^126), and a * (rcp(b / 4) / 4)
    is bit for bit div.full's a * rcp(b) for b up to 2^124, powers of two scaling exactly;
    above, where 1/b is subnormal, it is 1/b rounded once, against div.full's rounding of
    a/4 * rcp(b/4).
    """
    if FAST:
        return a * (rcp_ftz(d * 0.25 + eps * 0.25) * 0.25)
    else:
        return a / (d + eps)


@triton.jit
def upcast(a, ty: tl.constexpr):
    """a.to(ty), for bf16 -> fp32 two values a register at a time: the high half by a
    mask, the low by a shift (2 instructions a pair, where the generic conversion takes
    3: PRMT to extract the high half, then a shift)."""
    if a.dtype == tl.bfloat16 and ty == tl.float32 and not _INTERPRETING:
        return tl.inline_asm_elementwise(
            "{ shl.b32 $0, $2, 16; and.b32 $1, $2, 0xffff0000; }",
            "=r,=r,r",
            [a],
            dtype=tl.float32,
            is_pure=True,
            pack=2,
        )
    else:
        return a.to(ty)


@triton.jit
def saturate(y, OUT_MAX: tl.constexpr):
    """Clamp to the finite range of the output dtype (NaN stays NaN); OUT_MAX=0: no-op."""
    if OUT_MAX > 0:
        y = tl.clamp(y, -OUT_MAX, OUT_MAX, propagate_nan=tl.PropagateNan.ALL)
    return y


@triton.jit
def load_scalars(
    alpha_ptr,
    eps_ptr,
    alpha_value,
    eps_value,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    """(alpha, eps) in the accumulation dtype: read from their one-element tensors, or the
    scalar arguments when the launcher passed plain floats (see `scalars_from`)."""
    alpha_in = alpha_value
    eps_in = eps_value
    if ALPHA_FROM_PTR:
        alpha_in = tl.load(alpha_ptr)
    if EPS_FROM_PTR:
        eps_in = tl.load(eps_ptr)
    return scalars_from(alpha_in, eps_in, alpha_value, eps_value, ALPHA_FROM_PTR, EPS_FROM_PTR, IS_FP64)


@triton.jit
def scalars_from(
    alpha_in,
    eps_in,
    alpha_value,
    eps_value,
    ALPHA_FROM_PTR: tl.constexpr,
    EPS_FROM_PTR: tl.constexpr,
    IS_FP64: tl.constexpr,
):
    """`load_scalars` from values already loaded: no pointers in, so that a kernel whose
    store addresses depend on alpha or eps (the conv near-pair pass) loads them in its
    own body. torch.compile's mutation analysis follows a call's results back to all of
    its arguments: through a call taking the pointers, it would take them for outputs.

    An eps tensor on the GPU is not read by the host (that would stall it every call):
    one that is not finite and > 0 becomes NaN here, so every output it touches is NaN,
    never a plausible wrong value."""
    if IS_FP64:
        ty = tl.float64
    else:
        ty = tl.float32
    if ALPHA_FROM_PTR:
        alpha = alpha_in.to(ty)
    else:  # cast: torch.compile passes Python floats as fp64 arguments (a launch: fp32)
        alpha = tl.cast(alpha_value, ty)
    if EPS_FROM_PTR:
        eps = eps_in.to(ty)
        eps = tl.where((eps > 0) & (eps < float("inf")), eps, float("nan"))
    else:
        eps = tl.cast(eps_value, ty)
    return alpha, eps


# SMs of an H100 SXM / H200: the wave arithmetic of `rank_configs`.
SM90_SMS = 132
# Shared memory of an SM (sm_90: 228 KB, of which 1 KB a resident program is reserved) and
# its register file (64K 32-bit registers).
SM90_SM_SMEM_BYTES = 233472
SM90_SM_REGS = 65536
# A persistent TMA forward with two programs an SM (`pair_per_sm`) against the same tile
# alone: its score's factor (`rank_configs`). Unmeasured, a guess: one program's epilogue
# runs while the other's MMAs do, as a warp-specialized kernel's consumers ping-pong.
PAIR_FACTOR = 1.1


def pair_per_sm(cfg: TileConfig, elem_bytes: int) -> bool:
    """Whether two programs of the persistent TMA forward with this tile fit one SM as
    inference runs it (its epilogue's TMA stores stage y slices only): shared memory by
    `pipelined_smem_bytes` less the training forward's s staging, registers as the
    accumulator's BM*BN/threads plus ~48 (sm_90 compiles, Triton 3.6, bf16, 4096^3:
    128x128x64 on 8 warps with 3 stages, 109 registers and 106,520 B with 4 slices, 124
    and 114,712 B with 2; `python -m autotune.inspect --config 128x128x64:8:3:e4:tma`).
    The training forward stages s slices too (one program an SM at that tile, `--save`):
    the factor ranks the sweep's fwd tiles, which it times as inference runs them."""
    if not cfg.tma or cfg.warp_specialize:
        return False
    tile = cfg.block_m * cfg.block_n
    smem = pipelined_smem_bytes(cfg, elem_bytes) - tile * 4 // cfg.epilogue_split
    regs = tile // (32 * cfg.num_warps) + 48
    return 2 * (smem + 1024) <= SM90_SM_SMEM_BYTES and 2 * regs * 32 * cfg.num_warps <= SM90_SM_REGS


# A split forward's tail tiles (`tail_split`): at most this many parts a tile, each of at
# least this many main-loop steps, and only where the split saves a quarter of a wave.
MAX_SPLITS = 4
MIN_SPLIT_STEPS = 4
MAX_SPLIT_TAIL = 0.75
# A split tile's tail wave in `rank_configs`: its time over this (unmeasured, a guess at
# what the parts' partials' round trip through L2, the finishing parts' sums and the
# counters' fill add to half a tile's MMAs).
SPLIT_TAIL_FACTOR = 0.6


def tail_split(tiles: int, steps: int, sms: int) -> tuple[int, int]:
    """(dp_tiles, splits) of a forward grid of `tiles` output tiles, each a main loop of
    `steps` steps, on `sms` SMs, for a tile that sets `split_tail`.

    Counted in tile times of one SM (the MMAs of co-resident programs share it), the grid
    takes ceil(tiles / sms) waves, the last partial: a ResNet-50 14x14x256 layer at batch
    64, 196 tiles of 128x128 on 132 SMs, leaves 64 tiles, half the SMs idle for a whole
    tile time. Splitting each of the `tail = tiles % sms` last tiles into `splits` parts of
    steps / splits steps (fp32 partials, summed by the last part to finish, `_split_join`
    in kernels/conv.py) makes that wave ceil(tail * splits / sms) / splits tile times:
    64 tiles in 2 parts fill 128 SMs for half a tile time. Of splits in 2 .. MAX_SPLITS
    (parts of >= MIN_SPLIT_STEPS steps), the one that makes that wave shortest (the fewest
    parts on a tie), if it takes at most MAX_SPLIT_TAIL of a tile time (the partials'
    round trip through L2 and the counters' zero fill cost the rest); else (tiles, 1): the
    plain grid.
    """
    tail = tiles % max(sms, 1)
    best = (MAX_SPLIT_TAIL, 1)
    if tail:
        for splits in range(2, MAX_SPLITS + 1):
            if steps // splits < MIN_SPLIT_STEPS:
                break
            time = cdiv(tail * splits, sms) / splits
            if time < best[0] or (best[1] == 1 and time == best[0]):
                best = (time, splits)
    return (tiles, 1) if best[1] == 1 else (tiles - tail, best[1])


# The persistent TMA forward summing ||x||^2 from its x tiles, against the same tile taking
# the norm pass: its score's factor (`rank_configs`), from the H200's dense bf16 fwd rows in
# reports/nvidia_h200/results.db (the tile with in-loop x norms was the slower by far).
NIL_TMA_FACTOR = 0.75


def rank_configs(
    configs: list[TileConfig],
    M: int,
    N: int,
    K: int,
    elem_bytes: int,
    *,
    sms: int = SM90_SMS,
    conv_taps: int = 0,
    conv_pixels: int = 0,
    backward: bool = False,
    split_taps: int = 0,
) -> list[TileConfig]:
    """The configs ordered most promising first, by a static estimate, so that a sweep capped
    at a few configs (`--max-configs`) measures the likely winners. Only the order changes:
    the measurement decides.

    Estimate (each factor in (0, 1]): wave quantization (tiles / (waves * SMs)); lanes used
    on the M, N and K edges; operand bytes per MMA flop (BM*BN/(BM+BN) against a 128x256
    tile's, square-rooted: L2 absorbs part of it); pipeline depth ((stages-1)*BK >= 192
    keeps wgmma fed; a mild factor, to the power 0.15: on the H200 a 3-stage 128x256x64
    tile came within a few percent of the 4-stage one, reports/nvidia_h200/results.db,
    dense fwd+bwd rows); a K tile of one 128-byte swizzle row (BK=64 in 16-bit); accumulator
    registers per thread (> 64 leaves the epilogue little room), x-tile values a thread
    reads into registers when the kernel sums norms from the tile (`norms_in_loop`; > 32
    costs ~100 registers, see `conv_default_config`) and epilogue columns per slice (> 64
    costs registers, see `fwd_store`); the persistent TMA kernel gets a small bonus (its
    next tile's loads overlap the epilogue), and its in-loop x norms a penalty
    (`NIL_TMA_FACTOR`: measured slower than the norm pass they spare; the pointer kernel's
    in-loop norms, on one row of programs, the whole pass's time); a warp-specialized one
    another (its accumulator spread over two consumer warpgroups), and one whose programs
    fit an SM in pairs yet another (`PAIR_FACTOR`, `pair_per_sm`). `conv_taps`,
    `conv_pixels` (KH*KW and the input's B*H*W of a conv forward, K its channels): a tile
    that takes the patch norms from the pixel-norm pass is charged that pass (pixels*K
    values read at ~4.8 TB/s against the conv's 2*M*N*K*taps flops at ~790 TFLOP/s).

    A `split_tail` tile of a conv forward counts its tail's wave as `tail_split` splits it
    (over SPLIT_TAIL_FACTOR), its row tiles as the pointer kernel's (the TMA kernel's boxes
    can number more); a conv's `backward` tiles do the same given `split_taps` (its KH*KW;
    the forward's GEMM dims stand for the input gradient's, as they are where the conv
    keeps its size and has as many filters as channels, ResNet's 3x3 layers).

    `backward`: tiles of the backward GEMMs, whose plain epilogue (c = acc + 2 e v) has no
    slices and no norms: those factors are left out.

    The order is then made varied: each next pick maximizes score * 0.8^(picks already
    taken from its tile family (BM, BN, TMA, in-loop norms, warp specialization)), so the
    first dozen cover several tile shapes and, for the best shapes, a few stage counts and
    K tiles.
    """

    def score(c: TileConfig) -> float:
        tiles_m, tiles_n = -(-M // c.block_m), -(-N // c.block_n)
        tiles = tiles_m * tiles_n
        waves = float(-(-tiles // sms))
        if c.split_tail and (conv_taps or split_taps):  # the tail's parts (`tail_split`)
            dp, splits = tail_split(tiles, (conv_taps or split_taps) * -(-K // c.block_k), sms)
            if splits > 1:
                waves = dp // sms + cdiv((tiles - dp) * splits, sms) / splits / SPLIT_TAIL_FACTOR
        wave_eff = tiles / (waves * sms)
        fill = (M / (tiles_m * c.block_m)) * (N / (tiles_n * c.block_n))
        k_fill = K / (-(-K // c.block_k) * c.block_k)
        intensity = min(1.0, (c.block_m * c.block_n / (c.block_m + c.block_n)) / (128 * 256 / 384)) ** 0.5
        pipe = min(1.0, max(c.num_stages - 1, 0.5) * c.block_k / 192) ** 0.15
        swizzle = 1.0 if c.block_k * elem_bytes == 128 else 0.95
        acc_regs = c.block_m * c.block_n / (32 * c.consumer_warps)
        tile_regs = c.block_m * c.block_k / (32 * c.num_warps) if c.norms_in_loop else 0
        roomy = 128 if c.warp_specialize else 64  # consumers get the producer's registers (setmaxnreg)
        regs = (1.0 if acc_regs <= roomy else 0.85) * (1.0 if tile_regs <= 32 else 0.85)
        epi = 1.0 if backward or c.block_n // max(c.epilogue_split, 1) <= 64 else 0.9
        bonus = 1.05 if c.tma and not conv_taps else 1.0  # the conv's TMA kernel is not persistent
        if c.warp_specialize:  # a producer warpgroup keeps the MMAs fed (unmeasured: a guess
            bonus *= 1.1  # that keeps a few in a dozen picks; the sweep decides)
        elif c.tma and not conv_taps and not backward and pair_per_sm(c, elem_bytes):
            bonus *= PAIR_FACTOR
        if conv_taps and not backward:
            if not c.norms_in_loop:  # the pixel-norm pass: pixels*K*elem bytes against the conv
                pass_s = conv_pixels * K * elem_bytes / 4.8e12
                bonus *= 1.0 / (1.0 + pass_s / (2.0 * M * N * K * conv_taps / 790e12))
        elif c.tma and c.norms_in_loop and not backward:
            # spares the x norm pass, but reading the x tiles back from shared memory slows
            # the main loop more than that saves (H200: reports/nvidia_h200/results.db, the
            # dense bf16 fwd rows of m128n128k64g8w8s4e2_nil_tma and m128n128k64g8w8s4e2_tma)
            bonus *= NIL_TMA_FACTOR
        if c.norms_in_loop and not c.tma and not backward and tiles_m == 1 and not conv_taps:
            # one row of programs reads W once: the norm pass spared, (M + N) * K bytes,
            # costs as much as the GEMM's own read of them where that bounds it (small M)
            pass_s = (M + N) * K * elem_bytes / 4.8e12
            bonus *= 1.0 + pass_s / max(2.0 * M * N * K / 790e12, pass_s)
        return wave_eff * fill * k_fill * intensity * pipe * swizzle * regs * epi * bonus

    # stable: equal scores keep the space order
    scored = sorted(((score(c), c) for c in configs), key=lambda sc: sc[0], reverse=True)
    scores, left = [s for s, _ in scored], [c for _, c in scored]
    # each family's tiles in that order: a family's next pick is always its queue's head, so
    # a pick compares the heads alone (a few dozen families, not the whole space, whose scan
    # made ranking ~7x slower: an ad hoc timing of the fwd and bwd rankings of every core,
    # quick and decode task, 20.5 -> 3.0 s), the earliest in `left` on a tie, as a scan would
    queues: dict[tuple[int, int, bool, bool, bool], deque[int]] = {}
    for i, c in enumerate(left):
        family = (c.block_m, c.block_n, c.tma, c.norms_in_loop, c.warp_specialize)
        queues.setdefault(family, deque()).append(i)
    taken: dict[tuple[int, int, bool, bool, bool], int] = {}
    ranked: list[TileConfig] = []
    while queues:
        fam = max(queues, key=lambda f: (scores[queues[f][0]] * 0.8 ** taken.get(f, 0), -queues[f][0]))
        ranked.append(left[queues[fam].popleft()])
        if not queues[fam]:
            del queues[fam]
        taken[fam] = taken.get(fam, 0) + 1
    return ranked
