"""Kernel variants and config spaces: every forward variant against the oracle, the prune
filter, the heuristic default, and the static sm_90 check of the default bf16 tile."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import triton
import triton.language as tl
from children import compiled_child
from oracle import yat_dense_ref
from tolerances import assert_close

from autotune import search
from kernels._common import (
    SM90_SMEM_BYTES,
    TileConfig,
    divmod_magic,
    fast_div,
    fits_sm90,
    pipelined_smem_bytes,
)
from kernels.conv import conv_config_space, prune_conv_configs
from kernels.dense import IN_LOOP_NORMS_16BIT, dense_config_space, dense_default_config, prune_dense_configs
from yat_triton.dense import dense_fwd, plan_bwd_gemm

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = [
    TileConfig(32, 64, 32, 4, 4, 2),
    TileConfig(32, 64, 32, 1, 4, 2, epilogue_split=2),
    TileConfig(16, 128, 16, 2, 4, 2, epilogue_split=4),
    TileConfig(32, 32, 16, 8, 4, 2, norms_in_loop=True),
    TileConfig(16, 64, 64, 8, 4, 4, norms_in_loop=True),  # fp32 small batch default (K partials of 8)
]


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_forward_variants_match_oracle(cfg: TileConfig, dtype: torch.dtype, device: str) -> None:
    """Each variant writes y, the saved s and both norm vectors correctly on ragged edges."""
    gen = torch.Generator().manual_seed(7)
    M, N, K = 37, 100, 70
    x = torch.randn(M, K, generator=gen).to(dtype)
    w = torch.randn(N, K, generator=gen).to(dtype)
    b = torch.randn(N, generator=gen).to(dtype)
    y, s, nx, nw = dense_fwd(
        x.to(device), w.to(device), b.to(device), None, 1.5, None, 1e-3, "ieee", True, cfg
    )
    assert_close(y, yat_dense_ref(x, w, b, 1.5, 1e-3), dtype, reduction=K, what="y")
    xd, wd = x.double(), w.double()
    assert_close(s, xd @ wd.t(), torch.float32, reduction=K, what="saved s")
    assert_close(nx, (xd * xd).sum(1), torch.float32, reduction=K, what="||x||^2")
    assert_close(nw, (wd * wd).sum(1), torch.float32, reduction=K, what="||w||^2")


def run_and_check_forward(
    calls: list, outs: tuple, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> None:
    """Run a planned training forward (alpha 1.5, eps 1e-3) and check y, the saved s and
    both norm vectors against the oracle."""
    for call in calls:
        call.run()
    y, s, nx, nw = outs
    x, w, b = x.cpu(), w.cpu(), b.cpu()
    K = x.shape[1]
    assert_close(y, yat_dense_ref(x, w, b, 1.5, 1e-3), x.dtype, reduction=K, what="y")
    assert_close(s, x.double() @ w.double().t(), torch.float32, reduction=K, what="saved s")
    assert_close(nx, (x.double() ** 2).sum(1), torch.float32, reduction=K, what="||x||^2")
    assert_close(nw, (w.double() ** 2).sum(1), torch.float32, reduction=K, what="||w||^2")


@pytest.mark.parametrize("split", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("N", [100, 104])
@pytest.mark.parametrize("x_norms_in_loop", [False, True], ids=["norm-pass", "x-norms-in-loop"])
def test_tma_persistent_forward_matches_oracle(
    split: int, dtype: torch.dtype, N: int, x_norms_in_loop: bool, device: str
) -> None:
    """The persistent TMA kernel: ragged M and N edges (zero-filled boxes, clipped stores),
    12-13 tiles walked by fewer programs (interpreter: 2), bias, saved s and norms; the
    launcher really chose it, TMA stores exactly when y's and s's rows are 16-byte aligned,
    and with in-loop x norms the norm pass covers W only."""
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(11)
    M, K = 37, 72  # K * 2 bytes and K * 4 bytes are multiples of 16: TMA-ready rows
    x, w, b = (torch.randn(*shape, generator=gen).to(dtype).to(device) for shape in ((M, K), (N, K), (N,)))
    cfg = TileConfig(16, 32, 32, 2, 4, 2, epilogue_split=split, norms_in_loop=x_norms_in_loop, tma=True)
    (y, s, nx, nw), calls = plan_dense_fwd(x, w, b, None, 1.5, None, 1e-3, "ieee", True, cfg)
    assert calls[-1].kernel.fn.__name__ == "yat_dense_fwd_tma_kernel"
    assert calls[-1].kwargs["TMA_STORE"] == (N * x.element_size() % 16 == 0)
    assert calls[-1].kwargs["X_NORMS_IN_LOOP"] == x_norms_in_loop
    tiles = triton.cdiv(M, 16) * triton.cdiv(N, 32)
    assert calls[-1].persistent_tiles == tiles
    if device == "cpu":  # the interpreter's two programs walk all the tiles
        assert calls[-1].grid == (2,) and calls[-1].launch_grid() == (2,), "not persistent"
    assert calls[0].args[4:6] == ((N, 0) if x_norms_in_loop else (M, N)), "rows of the norm pass"
    run_and_check_forward(calls, (y, s, nx, nw), x, w, b)


@pytest.mark.parametrize("case", ["row-stride-not-16B", "transposed-x", "offset-base", "in-loop-norms"])
def test_tma_config_falls_back_to_the_pointer_kernel(case: str, device: str) -> None:
    """Operands TMA cannot read (rows not 16-byte aligned, K not contiguous, a base off
    16 bytes) run the pointer kernel with the same tile (in-loop norms included: both
    norms in its loop then), with the same result."""
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(12)
    K = 70 if case in ("row-stride-not-16B", "in-loop-norms") else 72
    x, w = torch.randn(37, K + 1, generator=gen)[:, :K], torch.randn(20, K, generator=gen)
    if case == "transposed-x":
        x = x.t().contiguous().t()
    x, w = x.to(device), w.to(device)  # (the strided views stay strided: they are not dense)
    if case == "offset-base":  # sliced on the device: a copy there would start aligned
        x = torch.randn(37 * K + 1, generator=gen).to(device)[1:].view(37, K)
    assert case != "row-stride-not-16B" or x.stride(0) * 4 % 16
    cfg = TileConfig(16, 32, 16, 2, 4, 2, norms_in_loop=case == "in-loop-norms", tma=True)
    (y, _, _, _), calls = plan_dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", False, cfg)
    assert calls[-1].kernel.fn.__name__ == "yat_dense_fwd_kernel"
    for call in calls:
        call.run()
    assert_close(y, yat_dense_ref(x.cpu(), w.cpu(), None, None, 1e-3), torch.float32, reduction=K, what="y")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
def test_row_norms_of_two_matrices_in_one_launch(dtype: torch.dtype, device: str) -> None:
    """One launch: rows of a (strided view) then of b, each against float64."""
    from yat_triton.dense import plan_row_sqnorms

    gen = torch.Generator().manual_seed(13)
    a = torch.randn(70, 37, generator=gen).to(dtype).t()  # (37, 70), K not contiguous
    b = torch.randn(21, 70, generator=gen).to(dtype)
    (na, nb), calls = plan_row_sqnorms(a.to(device), b.to(device))
    assert len(calls) == 1
    for call in calls:
        call.run()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert_close(na, (a.double() ** 2).sum(1), acc, reduction=70, what="||a||^2")
    assert_close(nb, (b.double() ** 2).sum(1), acc, reduction=70, what="||b||^2")


def test_programs_per_sm() -> None:
    """Occupancy of a compiled kernel on sm_90 (64K registers allocated 256 a warp, 228 KB
    of shared memory with 1 KB reserved a program, 2048 threads)."""
    from yat_triton._launch import programs_per_sm

    # the bf16 128x128x64 TMA forward on 4 stages (123 registers, 155,680 B): shared-bound
    assert programs_per_sm(123, 155680, 8) == 1
    assert programs_per_sm(123, 90000, 8) == 2  # the same on 2 stages
    assert programs_per_sm(130, 90000, 8) == 1  # 136 registers a thread: 15 warps' worth
    assert programs_per_sm(128, 110000, 8) == 2
    assert programs_per_sm(128, 116000, 8) == 1  # 2 x (116,000 + 1,024) B > 228 KB
    assert programs_per_sm(64, 20000, 4) == 4  # capped (registers allow 8, threads 16)
    assert programs_per_sm(64, 20000, 4, cap=16) == 8
    assert programs_per_sm(255, 0, 8) == 1 and programs_per_sm(255, 0, 16) == 1


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="occupancy is read from a kernel compiled for a GPU"
)
def test_persistent_kernels_fill_every_resident_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU a persistent launch holds as many programs as the SMs hold at once: the
    count read from the compiled kernel agrees with the CUDA driver's occupancy query, a
    small tile gets more than one per SM, that grid is the one launched, and the result
    is the oracle's."""
    import ctypes

    import yat_triton._launch as launch_mod
    from yat_triton._launch import _cuda_props, resident_programs
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2048, 32, generator=gen).to("cuda", torch.bfloat16)
    w = torch.randn(1088, 32, generator=gen).to("cuda", torch.bfloat16)
    cfg = TileConfig(64, 64, 32, 8, 4, 2, tma=True)
    (y, _, _, _), calls = plan_dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", False, cfg)
    call = calls[-1]
    assert call.kernel.fn.__name__ == "yat_dense_fwd_tma_kernel" and call.persistent_tiles == 32 * 17
    sms = _cuda_props(torch.cuda.current_device()).multi_processor_count
    per_sm = resident_programs(call, x.device)
    assert per_sm >= 2, "a 64x64 bf16 tile on 4 warps and 2 stages fits several programs an SM"
    compiled = call.kernel.warmup(*call.args, grid=call.grid, **call.kwargs)
    compiled._init_handles()
    blocks = ctypes.c_int()
    err = ctypes.CDLL("libcuda.so.1").cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(blocks), ctypes.c_void_p(compiled.function), 32 * 4,
        ctypes.c_size_t(compiled.metadata.shared),
    )  # fmt: skip
    assert err == 0 and per_sm == min(4, blocks.value), (per_sm, blocks.value)
    launched: list[tuple[int, ...]] = []
    real = launch_mod.launch

    def record(kernel: object, grid: tuple[int, ...], *args: object, **kwargs: object) -> None:
        launched.append(grid)
        real(kernel, grid, *args, **kwargs)

    monkeypatch.setattr(launch_mod, "launch", record)
    for c in calls:
        c.run()
    assert launched[-1] == (min(call.persistent_tiles, sms * per_sm),)
    assert_close(y, yat_dense_ref(x.cpu(), w.cpu(), None, None, 1e-3), torch.bfloat16, reduction=32, what="y")


def test_tma_ready_rules() -> None:
    from yat_triton._launch import tma_ready

    ok = torch.empty(32, 64, dtype=torch.bfloat16)
    assert tma_ready(ok, ok)
    assert not tma_ready(ok.double())  # no fp64 TMA path
    assert not tma_ready(torch.empty(32, 7, dtype=torch.bfloat16))  # 14-byte rows
    assert not tma_ready(ok.t())  # K not contiguous
    assert not tma_ready(torch.empty(32, 0, dtype=torch.bfloat16))  # empty box
    assert not tma_ready(torch.empty(1, 64, dtype=torch.bfloat16).expand(32, 64))  # broadcast rows
    with torch._subclasses.FakeTensorMode():  # graph tracing: no host descriptors
        assert not tma_ready(torch.empty(32, 64, dtype=torch.bfloat16))
    # 4-D: the conv forward's (B, H, W, C) view of a channels_last x
    x = torch.empty(2, 64, 5, 7, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert tma_ready(x.permute(0, 2, 3, 1))
    assert not tma_ready(x.contiguous().permute(0, 2, 3, 1))  # NCHW: channels strided
    assert not tma_ready(x.permute(0, 2, 3, 1)[..., 1:])  # base 2 bytes off, 126-byte pixels
    assert tma_ready(x.permute(0, 2, 3, 1)[..., 8:])  # 16-byte aligned slice of the channels
    assert not tma_ready(x.permute(0, 3, 2, 1))  # (B, W, H, C): outer strides out of order
    broadcast = torch.empty(1, 5, 7, 64, dtype=torch.bfloat16).expand(2, 5, 7, 64)
    assert not tma_ready(broadcast)


def test_tracing_answers_as_is_fake_for_every_kind_of_tensor() -> None:
    """`tracing` answers plain tensors with two C calls: for every kind of tensor (fake,
    functional in C++ or Python, functorch-wrapped, wrapper subclasses, and wrappers of
    fakes) it must still say what `is_fake(t) or isinstance(t, FunctionalTensor)` says."""
    from torch._subclasses.fake_tensor import FakeTensorMode, is_fake
    from torch._subclasses.functional_tensor import FunctionalTensor, FunctionalTensorMode
    from torch.testing._internal.two_tensor import TwoTensor

    from yat_triton._launch import tracing

    seen: list[tuple[str, bool, bool]] = []

    def check(name: str, t: torch.Tensor) -> None:
        seen.append((name, tracing(t), is_fake(t) or isinstance(t, FunctionalTensor)))

    real = torch.randn(4, 3)
    with FakeTensorMode():
        fake = torch.empty(4, 3)
    check("plain", real)
    check("parameter", torch.nn.Parameter(real.clone()))
    check("fake", fake)
    check("C++ functional of a real tensor", torch._to_functional_tensor(real))
    check("C++ functional of a fake", torch._to_functional_tensor(fake))
    with FunctionalTensorMode():
        check("FunctionalTensor", FunctionalTensor.to_functional(real))
    torch.func.vmap(lambda t: (check("vmap-batched", t), t)[1])(real)
    torch.func.grad(lambda t: (check("grad-wrapped", t), t.sum())[1])(real)
    check("wrapper subclass of real tensors", TwoTensor(real, real.clone()))
    check("wrapper subclass of fakes", TwoTensor(fake, fake.clone()))
    with FakeTensorMode():
        torch.func.vmap(lambda t: (check("vmap-batched fake", t), t)[1])(torch.empty(4, 3))
    assert [(name, ours) for name, ours, _ in seen] == [(name, ref) for name, _, ref in seen]
    assert {name for name, _, ref in seen if ref} == {
        "fake", "C++ functional of a fake", "FunctionalTensor", "wrapper subclass of fakes",
        "vmap-batched fake",
    }  # fmt: skip


def test_needs_int64_at_the_int32_boundary() -> None:
    """The largest offset (sum of (size - 1) * |stride|) decides, for contiguous tensors
    (numel - 1) and strided ones alike (meta tensors: no memory)."""
    from yat_triton._launch import needs_int64

    def meta(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=torch.uint8, device="meta")

    assert not needs_int64(meta(2**31))  # offsets up to 2^31 - 1
    assert needs_int64(meta(2**31 + 1))
    assert needs_int64(meta(2, 2**30 + 1))  # contiguous 2-D past the boundary
    assert not needs_int64(meta(2**16, 2**15).t())  # transposed: the same offsets, 2^31 - 1
    assert needs_int64(meta(2**16 + 1, 2**15).t())
    assert not needs_int64(meta(1).expand(2**40))  # stride 0: one element
    assert needs_int64(meta(2**20, 2**12)[:, ::2])  # strided: reach (2^20-1)*2^12 + (2^11-1)*2
    assert not needs_int64(meta(0, 2**40 // 2**20), meta(3, 4))  # empty: nothing to reach
    assert needs_int64(meta(3, 4), meta(2**31 + 1))  # any tensor of several
    nhwc = torch.channels_last
    assert not needs_int64(meta(2**7, 2**8, 2**8, 2**8).contiguous(memory_format=nhwc))  # 2^31
    assert needs_int64(meta(2**7, 2**8, 2**8, 2**8 + 1).contiguous(memory_format=nhwc))
    assert needs_int64(meta(2**7, 2**8 + 1, 2**8, 2**8).contiguous(memory_format=nhwc).permute(0, 2, 3, 1))
    assert needs_int64(meta(2**7, 2**8, 2**8, 2**9)[..., ::2])  # 2^31 elements spread over 2^32


def test_rank_configs_orders_a_capped_sweep() -> None:
    """Ranking only reorders; for a big bf16 GEMM the first picks are wgmma-sized,
    128-byte K tiles, and the first dozen span several tile shapes, TMA and not."""
    from kernels._common import rank_configs

    kept = prune_dense_configs(dense_config_space(), 4096, 4096, 4096, 2)
    ranked = rank_configs(kept, 4096, 4096, 4096, 2)
    assert sorted(ranked, key=lambda c: c.name) == sorted(kept, key=lambda c: c.name)
    top = ranked[:12]
    assert top[0].block_m >= 128 and top[0].block_n >= 128 and top[0].block_k == 64
    assert len({(c.block_m, c.block_n) for c in top}) >= 4
    assert any(c.tma for c in top) and not all(c.tma for c in top)
    # what the H200 measured: the guided search's seeds hold a 128x256 TMA tile (the widest
    # pointer tile beat 128x128 there), and no TMA tile summing ||x||^2 in the loop comes
    # before its twin taking the norm pass (`NIL_TMA_FACTOR`)
    from autotune.search import SEEDS

    assert any(c.tma and c.block_m * c.block_n == 128 * 256 and not c.warp_specialize for c in ranked[:SEEDS])
    # and the persistent TMA tile whose programs pair up on an SM (sm_90, Triton 3.6: 2
    # programs of 109 registers and 106,520 B; with 4 stages or 128x256, one)
    from kernels._common import pair_per_sm

    pair = TileConfig(128, 128, 64, 8, 8, 3, epilogue_split=4, tma=True)
    assert pair_per_sm(pair, 2) and pair in ranked[:SEEDS]
    assert not pair_per_sm(replace(pair, num_stages=4), 2) and not pair_per_sm(replace(pair, block_n=256), 2)
    assert not pair_per_sm(replace(pair, tma=False), 2)  # (the pointer kernel is not persistent)
    at = {c: i for i, c in enumerate(ranked)}
    first_nil = next(c for c in ranked if c.tma and c.norms_in_loop)
    assert at[dataclasses.replace(first_nil, norms_in_loop=False)] < at[first_nil], first_nil.name
    # a small GEMM (64 tiles of 128x128 cannot fill 132 SMs) prefers smaller tiles first
    small = rank_configs(prune_dense_configs(dense_config_space(), 1024, 1024, 1024, 2), 1024, 1024, 1024, 2)
    assert small[0].block_m * small[0].block_n < 128 * 128
    # a ResNet-50 layer's conv: the first dozen time the patch norms both ways (16-bit io:
    # summed in the loop by TMA tiles only, `IN_LOOP_NORMS_16BIT`)
    from autotune.sweep import config_space

    layer = {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    conv_top = config_space("conv2d", layer, 2)[0][:12]
    assert {c.norms_in_loop for c in conv_top} == {True, False} and any(c.tma for c in conv_top)
    assert all(c.tma for c in conv_top if c.norms_in_loop)
    assert any(c.norms_in_loop and not c.tma for c in config_space("conv2d", layer, 4)[0][:12])  # fp32


CONV_VARIANTS = [  # patch norms from the pixel-norm pass, and summed in the loop
    tile
    for base in (
        TileConfig(32, 16, 16, 4, 4, 2),
        TileConfig(16, 32, 16, 1, 4, 2, epilogue_split=2),
        TileConfig(64, 64, 32, 8, 4, 2, epilogue_split=4),
    )
    for tile in (base, dataclasses.replace(base, norms_in_loop=True))
]


@pytest.mark.parametrize("cfg", CONV_VARIANTS, ids=lambda c: c.name)
def test_conv_forward_variants_match_oracle(cfg: TileConfig, device: str) -> None:
    """The implicit-GEMM forward with other tiles (ragged M, channels not a multiple of
    BLOCK_K, two groups) writes y, s and the patch norms correctly."""
    from oracle import yat_conv2d_ref

    from yat_triton.conv import plan_conv2d_fwd

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 6, 7, 5, generator=gen).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(10, 3, 3, 3, generator=gen), torch.randn(10, generator=gen)
    (y, s, nx, _), calls = plan_conv2d_fwd(
        x.to(device), w.to(device), b.to(device), None, 1.5, None, 1e-3, (2, 1), (1, 1, 0, 0),
        (1, 2), 2, "ieee", True, cfg,
    )  # fmt: skip
    for call in calls:
        call.run()
    ref = yat_conv2d_ref(x, w, b, 1.5, 1e-3, (2, 1), (1, 0), (1, 2), 2)
    assert_close(y, ref, torch.float32, reduction=27, what="y")
    s_ref = torch.nn.functional.conv2d(x.double(), w.double(), None, (2, 1), (1, 0), (1, 2), 2)
    assert_close(s, s_ref.permute(0, 2, 3, 1).reshape(-1, 10), torch.float32, reduction=27, what="s")
    assert nx.shape == (s.shape[0], 2)


def test_conv_config_space_is_pruned() -> None:
    from kernels.conv import conv_config_space, prune_conv_configs

    kept = prune_conv_configs(conv_config_space(), 64 * 56 * 56, 64, 64, 2)
    assert kept and all(c.block_k <= 64 and c.block_n <= 64 for c in kept)
    assert any(c.tma for c in kept) and not any(c.tma for c in conv_config_space(include_tma=False))
    # every tile both ways: the patch norms summed in the loop, and from the pixel-norm pass;
    # 16-bit io sums them in the loop on TMA tiles only (`IN_LOOP_NORMS_16BIT`)
    fp32 = prune_conv_configs(conv_config_space(), 64 * 56 * 56, 64, 64, 4)
    for tiles, kind in ((kept, "tma"), (fp32, "all")):
        for nil in (True, False):
            both = {dataclasses.replace(c, norms_in_loop=nil) for c in tiles if kind == "all" or c.tma}
            assert both == {c for c in tiles if c.norms_in_loop == nil and (kind == "all" or c.tma)}
    assert not any(c.norms_in_loop and not c.tma for c in kept)
    assert any(c.norms_in_loop and not c.tma for c in fp32)


def test_conv_tma_tiles_need_no_store_staging() -> None:
    """The conv's TMA forward stores through pointers: its tile takes the pointer kernel's
    shared memory (plus barriers), so tiles the dense TMA kernel's staging would overflow
    still fit (bf16 128x256x64, 4 stages: 192 KB of pipeline; the dense kernel's staging
    would add 96 KB)."""
    from kernels._common import SM90_SMEM_BYTES, fits_sm90, pipelined_smem_bytes
    from kernels.conv import prune_conv_configs

    cfg = TileConfig(128, 256, 64, 8, 8, 4, epilogue_split=2, tma=True)
    assert pipelined_smem_bytes(cfg, 2, tma_staging=False) == 4 * (128 + 256) * 64 * 2 + 2048
    assert fits_sm90(cfg, 2, tma_staging=False) and not fits_sm90(cfg, 2)
    assert pipelined_smem_bytes(cfg, 2) > SM90_SMEM_BYTES
    assert cfg in prune_conv_configs([cfg], 64 * 56 * 56, 256, 256, 2)
    assert cfg not in prune_dense_configs([cfg], 4096, 4096, 4096, 2)


def test_bwd_gemm_with_transposed_operand(device: str) -> None:
    """c = a @ b + 2 e v with a given as a transposed view (the dW case) and v given as 3
    partial rows of a stacked buffer (the prep pass's column partials), summed by the
    epilogue."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(40, 23, generator=gen)
    b, e = torch.randn(40, 19, generator=gen), torch.randn(23, 19, generator=gen)
    stacked = torch.randn(3, 2, 23, generator=gen)
    v = stacked.to(device)[:, 0]  # rows 46 apart
    c, calls = plan_bwd_gemm(
        a.to(device).t(), b.to(device), e.to(device), v, "ieee", TileConfig(16, 16, 16, 2, 4, 2)
    )  # fmt: skip
    assert calls[0].args[8:10] == (3, 46)
    for call in calls:
        call.run()
    expected = a.double().t() @ b.double() + 2 * e.double() * stacked[:, 0].double().sum(0)[:, None]
    assert_close(c, expected, torch.float32, reduction=40, what="c")


@pytest.mark.parametrize("a_t", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("b_t", [False, True], ids=["b", "bT"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bwd_gemm_tma_reads_either_major(a_t: bool, b_t: bool, dtype: torch.dtype, device: str) -> None:
    """The persistent TMA backward GEMM on row- or column-major operands (a column-major
    operand is read as boxes of its transpose), ragged edges, 2 programs for 12 tiles."""
    gen = torch.Generator().manual_seed(4)
    R, KD, C = 40, 48, 24
    a = torch.randn(KD, R, generator=gen).t() if a_t else torch.randn(R, KD, generator=gen)
    b = torch.randn(C, KD, generator=gen).t() if b_t else torch.randn(KD, C, generator=gen)
    e, v = torch.randn(R, C, generator=gen), torch.randn(2, R, generator=gen)  # two partial rows
    a, b, e = (t.to(dtype) for t in (a, b, e))
    c, calls = plan_bwd_gemm(
        a.to(device),
        b.to(device),
        e.to(device),
        v.to(device),
        "ieee",
        TileConfig(16, 16, 16, 2, 4, 2, tma=True),
    )
    (call,) = calls
    assert call.kernel.fn.__name__ == "yat_dense_bwd_gemm_tma_kernel"
    assert (call.kwargs["A_T"], call.kwargs["B_T"]) == (a_t, b_t)
    call.run()
    expected = a.double() @ b.double() + 2 * e.double() * v.double().sum(0)[:, None]
    assert_close(c, expected, dtype, reduction=KD, what="c")


def test_config_space_is_pruned() -> None:
    space = dense_config_space()
    assert len(set(space)) == len(space)
    kept = prune_dense_configs(space, 4096, 4096, 4096, 2)
    assert 0 < len(kept) < len(space)
    assert all(pipelined_smem_bytes(c, 2) <= SM90_SMEM_BYTES for c in kept)
    # a 256x256 fp32 accumulator on 4 warps needs 512 registers a thread: never kept
    assert not any(c.block_m * c.block_n // (32 * c.num_warps) > 128 for c in kept)
    small = prune_dense_configs(space, 5, 4096, 40, 2)
    assert small, "a tiny M must still leave configs (clipped to 16 rows)"
    assert all(c.block_m == 16 and c.block_k <= 64 for c in small)
    assert len(small) < len(kept)


def test_default_config_fits_shape() -> None:
    big = dense_default_config(4096, 4096, 4096, 2)
    assert (big.block_m, big.block_n, big.block_k) == (128, 128, 64)
    assert big.epilogue_split == 4 and not big.norms_in_loop
    tiny = dense_default_config(1, 3, 5, 2)
    assert (tiny.block_m, tiny.block_n, tiny.block_k) == (16, 16, 16)
    assert dense_default_config(4096, 4096, 4096, 4).block_k == 32


def test_default_16bit_forward_that_fills_the_gpu_takes_the_tma_kernel() -> None:
    """A 16-bit forward with at least one 128x128 tile an SM defaults to the persistent TMA
    kernel (the H200's bf16 rows: faster than the same tile on the pointer kernel at the
    three dense shapes measured); fp32, the backward GEMMs, other tiles and grids short of the SMs keep the
    pointer one."""
    from kernels._common import SM90_SMS

    assert dense_default_config(4096, 4096, 4096, 2) == TileConfig(
        128, 128, 64, 8, 8, 4, epilogue_split=4, tma=True
    )
    assert not dense_default_config(4096, 4096, 4096, 2, backward=True).tma
    assert dense_default_config(128 * SM90_SMS, 128, 512, 2).tma  # one tile an SM
    short = dense_default_config(128 * (SM90_SMS - 1), 128, 512, 2)  # (64-wide N tiles then)
    assert short.block_n == 64 and not short.tma
    assert not dense_default_config(128 * (SM90_SMS // 2 - 1), 256, 512, 2).tma
    assert not dense_default_config(4096, 4096, 4096, 2, interpreting=True).tma
    assert not dense_default_config(4096, 4096, 4096, 4).tma


def test_default_config_for_small_batches() -> None:
    """A grid short of one program per SM takes 64-wide N tiles; one row of programs of at
    most 64 rows sums the norms in the main loop (forward only, fp32 io: 16-bit io takes
    them from the norm pass, `IN_LOOP_NORMS_16BIT`), unsplit."""
    decode = dense_default_config(16, 4096, 4096, 2)
    assert (decode.block_m, decode.block_n, decode.block_k) == (16, 64, 64)
    assert not decode.norms_in_loop
    decode = dense_default_config(16, 4096, 4096, 4)
    assert (decode.block_m, decode.block_n, decode.block_k) == (16, 64, 32)
    assert decode.norms_in_loop and decode.epilogue_split == 1
    assert not dense_default_config(16, 4096, 4096, 4, backward=True).norms_in_loop
    assert dense_default_config(64, 4096, 4096, 4).norms_in_loop
    assert not dense_default_config(64, 4096, 4096, 2).norms_in_loop
    row128 = dense_default_config(128, 4096, 4096, 2)  # one row, but 128 rows: the norm pass
    assert row128.block_n == 64 and not row128.norms_in_loop
    assert dense_default_config(1024, 1024, 1024, 2).block_n == 64  # 64 tiles of 128: 128 of 64
    assert dense_default_config(2048, 2048, 2048, 2).block_n == 128  # 256 tiles: a full wave
    assert dense_default_config(16, 100, 4096, 2).block_n == 64  # never below 64 to fill the SMs


def test_no_pointer_tile_sums_16bit_norms_in_its_loop() -> None:
    """On an H200 (Triton 3.6) the pointer kernels' in-loop norms computed wrong x.w with
    16-bit io (reports/nvidia_h200/): neither the sweep's pruned spaces nor the defaults
    hold such a tile for fp16/bf16 on the GPU or the interpreter (which runs the GPU's
    choices); TMA tiles keep theirs (measured right), fp32 io keeps both."""
    from kernels.conv import conv_config_space, conv_default_config, prune_conv_configs

    assert not IN_LOOP_NORMS_16BIT
    for elem in (2, 4):
        dense = prune_dense_configs(dense_config_space(), 16, 4096, 4096, elem)
        conv = prune_conv_configs(conv_config_space(), 64 * 56 * 56, 64, 64, elem)
        for kept in (dense, conv):
            assert any(c.norms_in_loop and c.tma for c in kept)
            assert any(c.norms_in_loop and not c.tma for c in kept) == (elem == 4)
        for interp in (False, True):
            assert conv_default_config(4096, 64, 576, elem, interpreting=interp).norms_in_loop == (elem == 4)
        assert dense_default_config(16, 4096, 4096, elem).norms_in_loop == (elem == 4)
    assert conv_default_config(4096, 64, 576, 8).norms_in_loop  # fp64 (gradcheck)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_small_batch_default_runs_without_the_norm_pass(dtype: torch.dtype, device: str) -> None:
    """The GPU's fp32 default tile for a small batch plans the forward alone (no norm pass
    over W) and matches the oracle, saved norms included. 16-bit io's own default takes
    the norm pass, and so does that same tile planned for it (`broken_in_loop_norms`)."""
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(5)
    M, N, K = 5, 150, 200
    x, w, b = (torch.randn(*shape, generator=gen).to(dtype).to(device) for shape in ((M, K), (N, K), (N,)))
    cfg = dense_default_config(M, N, K, 4)
    assert cfg.norms_in_loop and cfg.block_n == 64
    in_loop = dtype == torch.float32
    assert dense_default_config(M, N, K, x.element_size()).norms_in_loop == in_loop
    outs, calls = plan_dense_fwd(x, w, b, None, 1.5, None, 1e-3, "ieee", True, cfg)
    norm_pass = [] if in_loop else ["row_sqnorm_kernel"]
    assert [c.kernel.fn.__name__ for c in calls] == [*norm_pass, "yat_dense_fwd_kernel"]
    assert calls[-1].kwargs["NORMS_IN_LOOP"] == in_loop
    run_and_check_forward(calls, outs, x, w, b)


def _nvidia_tools_present() -> bool:
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    return all((bin_dir / t).exists() for t in ("ptxas", "cuobjdump", "nvdisasm"))


def _inspect_all(*args: str) -> list[dict]:
    """The kernel reports of `python -m autotune.inspect ARGS --json`, in a child process:
    the static compile needs compiled (not interpreted) kernels, and this process may have
    TRITON_INTERPRET=1."""
    out = compiled_child("-m", "autotune.inspect", *args, "--json")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _inspect(*args: str) -> dict:
    """The last kernel report of `_inspect_all`."""
    return _inspect_all(*args)[-1]


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize(
    ("args", "kernel", "max_registers"),
    [
        # the default, the persistent TMA kernel, 128x128x64 in 4 epilogue slices: 150 registers
        (("--op", "dense", "--save"), "yat_dense_fwd_tma_kernel", 170),
        # its tile on the pointer kernel: 130 registers with Triton 3.9 (164 with an unsplit epilogue)
        (("--op", "dense", "--save", "--config", "128x128x64:8:4:e4"), "yat_dense_fwd_kernel", 150),
        # a ResNet-50 3x3 layer (64 channels, 56x56, batch 64), channels_last: 112 registers
        # with Triton 3.9 (219 with 4 warps)
        (("--op", "conv2d", "--save"), "yat_conv_fwd_kernel", 160),
    ],
    ids=["dense", "dense-pointer", "conv2d"],
)
def test_default_bf16_forward_uses_wgmma_without_spills(
    args: tuple[str, ...], kernel: str, max_registers: int
) -> None:
    """The static Hopper check of GPU.md, on any machine: HGMMA, no stack, fits sm_90."""
    fwd = _inspect("--dtype", "bfloat16", *args)
    assert fwd["kernel"] == kernel
    assert fwd["hgmma"] > 0, fwd
    assert fwd["stack_bytes"] == 0 and fwd["spill_stores"] == 0 and fwd["spill_loads"] == 0, fwd
    assert fwd["registers"] <= max_registers, fwd
    assert fwd["tma"] == kernel.endswith("_tma_kernel"), fwd
    assert 0 < fwd["shared_bytes"] <= SM90_SMEM_BYTES, fwd


def test_int64_offsets_path_and_trigger(device: str) -> None:
    """The INT64 code path computes the same result, and is chosen past 2^31 elements."""
    from yat_triton._launch import needs_int64
    from yat_triton.dense import plan_dense_fwd

    assert needs_int64(torch.empty((2**16, 2**15 + 1), device="meta"))
    assert not needs_int64(torch.empty((2**15, 2**16), device="meta"))
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(21, 40, generator=gen), torch.randn(30, 40, generator=gen)
    (y, s, nx, nw), calls = plan_dense_fwd(
        x.to(device), w.to(device), None, None, 1.0, None, 1e-3, "ieee", True
    )
    for call in calls:
        assert call.kwargs["INT64"] is False
        replace(call, kwargs={**call.kwargs, "INT64": True}).run()
    assert_close(y, yat_dense_ref(x, w, None, None, 1e-3), torch.float32, reduction=40, what="y")


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize(
    ("dtype", "fp64_scalars"),
    [("bfloat16", False), ("float16", False), ("float64", False), ("bfloat16", True)],
    ids=["bfloat16", "float16", "float64", "bfloat16-compiled"],
)
def test_every_kernel_compiles_for_sm90(dtype: str, fp64_scalars: bool) -> None:
    """Every kernel the dense and conv ops launch, forward and backward, compiles for
    Hopper; in bf16 none spills and the GEMM-like ones use wgmma (float64 is for gradcheck
    only: it must compile, speed does not matter). `fp64_scalars`: with alpha and eps
    typed fp64, as torch.compile passes them; on an H200 (torch 2.11, Triton 3.6) the
    conv's near-pair kernel then failed to compile (a loop-carried fp32 turned fp64) and
    the dense forward to lower to LLVM (an fp64 eps in the fp32 reciprocal's PTX) until the
    kernels cast them to the accumulation dtype."""
    args = ["-m", "autotune.inspect", "--all", "--dtype", dtype, "--json"]
    args += ["--fp64-scalars"] if fp64_scalars else []
    out = compiled_child(*args, timeout=600)
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    kernels = {r["kernel"] for r in reports}
    assert {
        "yat_dense_fwd_kernel", "yat_dense_bwd_prep_kernel", "yat_dense_bwd_gemm_kernel",
        "yat_dense_bwd_near_kernel", "yat_conv_fwd_kernel", "yat_conv_dgrad_kernel",
        "yat_conv_wgrad_kernel", "yat_conv_bwd_near_kernel",
    } <= kernels  # fmt: skip
    # the TMA kernels: none in fp64; fp16's backward GEMMs (and the conv's) read fp32 gs with
    # the pointer kernels
    tma_kernels = {
        "yat_dense_fwd_tma_kernel", "yat_dense_bwd_gemm_tma_kernel", "yat_conv_fwd_tma_kernel",
        "yat_conv_dgrad_tma_kernel", "yat_conv_wgrad_tma_kernel",
    }  # fmt: skip
    expected = {
        "float64": set(), "float16": {"yat_dense_fwd_tma_kernel", "yat_conv_fwd_tma_kernel"},
    }.get(dtype, tma_kernels)  # fmt: skip
    assert kernels & tma_kernels == expected
    # both conv forwards also with the patch norms from the pixel-norm pass (no fp64 TMA)
    passes = {r["kernel"] for r in reports if r["op"] == "conv2d pass"}
    if dtype in ("bfloat16", "float16"):  # its pointer kernel never sums them in its loop
        assert not [r for r in reports if r["op"] == "conv2d fwd" and r["kernel"] == "yat_conv_fwd_kernel"]
    assert passes == ({"yat_conv_fwd_kernel"} | (expected & {"yat_conv_fwd_tma_kernel"}) if dtype != "float64"
                      else set()), passes  # fmt: skip
    for r in reports:
        assert r["tma"] == (r["kernel"] in tma_kernels), r
    if dtype == "bfloat16":
        for r in reports:
            assert r["stack_bytes"] == 0 and r["spill_stores"] == 0, r
            assert r["wgmma_serialized"] == "", r  # checked ("", not None) and not serialized
            if "gemm" in r["kernel"] or r["kernel"].endswith(("fwd_kernel", "grad_kernel", "tma_kernel")):
                assert r["hgmma"] > 0, r
        # the forwards as inference runs them too: the conv's TMA one serialized its wgmma
        # there alone (`assume_positive`)
        assert {"dense infer", "conv2d infer"} <= {r["op"] for r in reports}


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
def test_inspect_dumps_every_stage(tmp_path: Path) -> None:
    """Through the `yat-autotune inspect` command, which must not turn the interpreter on
    without a GPU (the static compile needs compiled kernels)."""
    compiled_child("-m", "autotune", "inspect", "--shape", "256", "256", "256", "--dump", str(tmp_path))
    stages = {p.suffix for p in tmp_path.glob("yat_dense_fwd_kernel.*")}
    assert {".ttir", ".ttgir", ".llir", ".ptx", ".cubin", ".sass"} <= stages
    assert "HGMMA" in (tmp_path / "yat_dense_fwd_kernel.sass").read_text()


# What each kernel writes: torch.compile's mutation analysis must take these, and only
# these, for its outputs (a read input taken for one is written back after the call, and
# an input that requires grad, e.g. a bias, makes the compiled backward fail).
KERNEL_OUTPUTS = {
    "row_sqnorm_kernel": {"out_a_ptr", "out_b_ptr"},
    "yat_dense_fwd_kernel": {"y_ptr", "s_ptr", "nx_ptr", "nw_ptr"},  # norms: in-loop tiles
    "yat_dense_bwd_prep_kernel": {"gs_ptr", "row_gd_ptr", "col_ptr", "part_alpha_ptr", "part_eps_ptr",
                                  "tile_near_ptr"},
    "yat_dense_bwd_gemm_kernel": {"c_ptr"},
    "yat_dense_bwd_near_kernel": {"dx_ptr", "dw_ptr"},
    "yat_conv_weight_prep_kernel": {"wk_ptr", "nw_ptr"},
    "yat_conv_fwd_kernel": {"y_ptr", "s_ptr", "nx_ptr", "ws_ptr", "cnt_ptr"},  # (a split tail's)
    "yat_conv_dgrad_kernel": {"dx_ptr", "ws_ptr", "cnt_ptr"},  # (a split tail's)
    "yat_conv_wgrad_kernel": {"part_ptr"},
    "yat_conv_bwd_near_kernel": {"dx_ptr", "dw_ptr"},
    "yat_conv_wgrad_finish_kernel": {"dw_ptr", "db_ptr"},
}  # fmt: skip


def test_torch_compile_takes_only_outputs_for_outputs() -> None:
    """`python -m autotune.inspect --mutations` runs torch.compile's mutation analysis on
    every kernel as traced calls launch it (compiled kernels, sm_90 TTIR, no GPU needed):
    each reports only what it writes. The conv near-pair pass once reported its read-only
    inputs too (its store addresses depended on a helper's results that took pointers),
    and compiled training with a conv bias failed on the GPU."""
    out = compiled_child("-m", "autotune.inspect", "--mutations", "--dtype", "bfloat16", "--json")
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert {r["kernel"] for r in reports} == set(KERNEL_OUTPUTS)
    for r in reports:
        assert r["outputs"] and set(r["outputs"]) <= KERNEL_OUTPUTS[r["kernel"]], r


def test_inspect_parses_tiles_and_names_the_format() -> None:
    from autotune.inspect import TILE_FORMAT, parse_tile

    assert parse_tile("128x128x64:8:4:e2:tma") == TileConfig(
        128, 128, 64, 8, 8, 4, epilogue_split=2, tma=True
    )
    assert parse_tile("64x64x32:4:3:nil") == TileConfig(64, 64, 32, 8, 4, 3, norms_in_loop=True)
    for bad in ("128x128:8:4", "128x128x64:8:4:foo", "96x128x64:8:4", "128x128x64:8:4:e2:e4", "axbxc:8:4"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(TILE_FORMAT)):
            parse_tile(bad)


def test_wgmma_serialization_reads_ptxas_notes() -> None:
    """The reason of ptxas's C7515 note (as ptxas 12.8 wrote it for the conv wgrad kernel
    before its loop was made to run at least once), and "" without one."""
    from autotune.inspect import wgmma_serialization

    notes = (
        "ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are "
        "serialized due to non wgmma instructions defining accumulator registers of a wgmma "
        "between start and end of the pipeline stage in the function 'yat_conv_wgrad_kernel'\n"
        "ptxas info    : Used 74 registers, used 1 barriers\n"
    )
    assert wgmma_serialization(notes) == (
        "non wgmma instructions defining accumulator registers of a wgmma between start and end "
        "of the pipeline stage"
    )
    assert wgmma_serialization(notes.splitlines()[1]) == ""


def test_sass_shape_counts_the_mma_loop_and_the_epilogue() -> None:
    """`sass_shape` on hand-laid SASS listings: the smallest loop holding an HGMMA (not the
    address loop before it, not the outer loop), and what follows both it and the last
    HGMMA up to the closing self-branch, NOPs left out."""
    from autotune.inspect import sass_shape

    def sass(*listing: str) -> str:
        return "\n".join(
            line if line.startswith(".L") else f"        /*{16 * n:04x}*/                   {line} ;"
            for n, line in enumerate(listing)
        )

    head = (
        "MOV R1, c[0x0][0x28]",
        ".L_x_0:", "IADD3 R2, R2, 0x1, RZ", "@P0 BRA `(.L_x_0)",  # a loop without MMA
        ".L_x_1:", "LDS R4, [R3]",
        ".L_x_2:", "LDGSTS [R5], [R6.64]", "HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24",
        "NOP", "IADD3 R7, R7, 0x1, RZ", "@P1 BRA `(.L_x_2)",  # the main-loop step: 4
    )  # fmt: skip
    tail = (
        "FMUL R8, R24, R24",
        "MUFU.RCP R9, R8",
        "STG.E [R10.64], R9",
        "EXIT",
        ".L_x_3:",
        "BRA `(.L_x_3)",
        "NOP",
    )
    # the outer loop's latch and 4 epilogue instructions follow the main loop
    assert sass_shape(sass(*head, "@P2 BRA `(.L_x_1)", *tail)) == (4, 5)
    # a drained MMA after the loop: the epilogue starts after it
    drained = ("HGMMA.64x64x16.F32.BF16 R24, gdesc[UR8], R24, gsb0", "WARPGROUP.DEPBAR.LE gsb0, 0x0")
    assert sass_shape(sass(*head, *drained, *tail)) == (4, 5)
    assert sass_shape(sass(*head, *tail).replace("HGMMA", "HMMA")) == (0, 0)


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize(
    ("args", "kernel"),
    [
        (("--op", "dense", "--save", "--config", "128x128x64:8:4:e4"), "yat_dense_fwd_kernel"),
        (("--op", "dense", "--save"), "yat_dense_fwd_tma_kernel"),  # (the default)
        (("--op", "conv2d", "--save"), "yat_conv_fwd_kernel"),
        (("--op", "conv2d", "--save", "--config", "128x64x64:8:4:e2:tma"), "yat_conv_fwd_tma_kernel"),
    ],
    ids=["dense", "dense-tma", "conv2d", "conv2d-tma"],
)
def test_forward_epilogue_divides_by_a_bare_reciprocal(
    args: tuple[str, ...], kernel: str, tmp_path: Path
) -> None:
    """With eps a number >= 2^-124 the forward epilogues divide by q with MUFU.RCP alone
    (`div_plus_eps`): none of div.full.f32's range checks (|q| against 2^126 and the
    smallest normal) is left in the SASS."""
    compiled_child("-m", "autotune.inspect", "--dtype", "bfloat16", *args, "--dump", str(tmp_path))
    sass = (tmp_path / f"{kernel}.sass").read_text()
    assert "MUFU.RCP" in sass
    assert "8.50705917302346158658e+37" not in sass and "1.175494350822287508e-38" not in sass


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
def test_inspect_caps_registers() -> None:
    """--maxnreg 128: the bf16 forward saving s on a 128x128 tile, 8 warps, 3 stages, fits
    128 registers a thread, so two programs share an SM (96 KB of shared memory each)."""
    out = compiled_child("-m", "autotune.inspect", "--shape", "512", "512", "512", "--save",
                         "--config", "128x128x64:8:3:e4", "--maxnreg", "128", "--json")  # fmt: skip
    fwd = [json.loads(line) for line in out.splitlines() if "yat_dense_fwd_kernel" in line][0]
    assert fwd["registers"] <= 128 and fwd["programs_per_sm"] == 2, fwd


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize(
    "args",
    [["--shape", "512", "512", "512", "--config", "128x128x64:8:3:e4:tma"],
     ["--op", "conv2d", "--conv", "2", "64", "8", "64", "3", "--config", "128x64x64:8:3:e2"]],
    ids=["dense-tma", "conv-pointer"],
)  # fmt: skip
def test_inspect_compiles_the_forward_as_its_gemm_alone(args: list[str]) -> None:
    """--gemm-only compiles the forward kernel storing its accumulator without the ⵟ math
    (the breakdown's fwd-gemm lines): the same shared memory, fewer registers and far fewer
    SASS instructions; the other kernels of the call (the norm passes) as they are. Not
    with --save (a GEMM alone saves nothing)."""
    plain, alone = (_inspect_all("--dtype", "bfloat16", *args, *more) for more in ([], ["--gemm-only"]))
    assert [r["kernel"] for r in plain] == [r["kernel"] for r in alone]
    untimed = [[{**r, "compile_s": 0} for r in reports[:-1]] for reports in (plain, alone)]
    assert untimed[0] == untimed[1]  # (the norm passes)
    fwd, gemm = plain[-1], alone[-1]
    assert gemm["shared_bytes"] == fwd["shared_bytes"] and gemm["registers"] < fwd["registers"], (fwd, gemm)
    assert gemm["loop_step"] + gemm["after_loop"] < (fwd["loop_step"] + fwd["after_loop"]) / 2, (fwd, gemm)
    with pytest.raises(AssertionError, match="--gemm-only: a forward's kernel"):
        compiled_child("-m", "autotune.inspect", *args, "--gemm-only", "--save")


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
def test_inspect_times_the_sweeps_static_prune(tmp_path: Path) -> None:
    """--prune SUITE checks each problem's first stage of tiles as a GPU sweep's static prune
    does, with no GPU: the bwd and fwd+bwd problems check the same backward tiles, so there
    are fewer distinct compiles than calls checked; some tiles fit, 9 a problem in the end
    (the refills: `test_inspect_prune_checks_the_next_seeds_in_place_of_those_pruned`)."""
    suite = tmp_path / "one.toml"
    suite.write_text("[[dense]]\nM = 256\nN = 256\nK = 256\n")
    line = compiled_child("-m", "autotune.inspect", "--prune", str(suite), "--processes", "0").strip()
    m = re.fullmatch(
        r"static prune, suite .*one\.toml, bfloat16: 3 problems, (\d+) tiles, (\d+) calls checked in \d+ "
        r"batches \(\d+ compiling\), (\d+) distinct compiles, (\d+) tiles pruned; [\d.]+ s on threads "
        r"\(\d+ cores\)",
        line,
    )
    assert m, line
    tiles, calls, distinct, pruned = map(int, m.groups())
    assert 3 < tiles <= calls and 0 < distinct < calls and pruned < tiles, line
    assert tiles - pruned == 3 * (1 + search.SEEDS), line


def test_inspect_prune_checks_the_next_seeds_in_place_of_those_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--prune drives each problem's first stage as the sweep does: a seed pruned in the first
    batch makes the search check the next ranked tile in its place (a batch of one, checked
    after the first, with one more ahead of need). The sm_90 verdicts stubbed: the first seed
    of each first batch drops."""
    from autotune import inspect as inspect_cli
    from autotune import sweep

    sizes: list[int] = []

    def reasons(self, checked):  # noqa: ANN001, ANN202
        sizes.append(len(checked))
        first_batch = len(checked) == 1 + search.SEEDS
        return ["stub" if first_batch and i == 1 else None for i in range(len(checked))]

    monkeypatch.setattr(sweep.StaticPrune, "reasons", reasons)
    suite = tmp_path / "one.toml"
    suite.write_text("[[dense]]\nM = 256\nN = 256\nK = 256\n")
    line = inspect_cli.prune_cost(str(suite), "bfloat16", 0)
    assert sizes == [1 + search.SEEDS, 2] * 3, sizes
    assert (
        ": 3 problems, 30 tiles, " in line
        and " in 6 batches (0 compiling), " in line
        and ", 3 tiles pruned; " in line
    ), line


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--no-sass"], "--no-sass: with --all only"),
     (["--backward", "--gemm-only"], "--gemm-only: a forward's kernel"),
     (["--processes", "2"], "--processes: a number >= 0, with --prune (got 2)"),
     (["--prune", "quick", "--processes", "-1"], "--processes: a number >= 0, with --prune (got -1)"),
     (["--prune", "nosuch"], "--prune: suite 'nosuch' is neither one of"),
     (["--prune", "quick", "--all", "--config", "64x64x32:4:2"], "--prune: a suite's problems, in "
      "--dtype alone (not --all, --config)"),
     (["--prune", "quick", "--dtype", "float64"], "--prune: --dtype one of the sweep's")],
)  # fmt: skip
def test_inspect_refuses_options_out_of_place(capsys, argv: list[str], message: str) -> None:  # noqa: ANN001
    """The static prune's lean compile (--no-sass) is for --all; a GEMM-only compile is a
    forward's; worker processes are --prune's, which takes a suite: elsewhere each option is
    refused by name before anything compiles."""
    from autotune.inspect import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize(
    "op, problem, kernels",
    [
        ("conv2d", ["--conv", "2", "64", "8", "64", "3"],
         {"yat_conv_dgrad_tma_kernel", "yat_conv_wgrad_tma_kernel"}),
        ("dense", ["--shape", "256", "256", "256"], {"yat_dense_bwd_gemm_tma_kernel"}),
    ],
    ids=["conv2d", "dense"],
)  # fmt: skip
def test_inspect_compiles_the_backward_at_a_tile(op, problem, kernels) -> None:
    """--backward compiles the op's backward kernels with --config forced as the backward
    tile: a `tma` one runs the TMA GEMMs (wgmma, no spills), every other kernel compiled too."""
    out = compiled_child("-m", "autotune.inspect", "--op", op, *problem, "--backward",
                         "--config", "64x32x32:4:3:tma", "--json")  # fmt: skip
    reports = {r["kernel"]: r for r in map(json.loads, out.splitlines())}
    assert kernels <= set(reports) and "yat_dense_bwd_prep_kernel" in reports, sorted(reports)
    for name in kernels:
        r = reports[name]
        assert r["tma"] and r["hgmma"] > 0 and r["spill_stores"] == 0 and r["wgmma_serialized"] == "", r


def test_tma_stores_fall_back_when_their_staging_does_not_fit() -> None:
    """A TMA tile whose store staging next to its pipeline exceeds sm_90 shared memory when
    saving s (64x256 on 8 warps, 4 stages) keeps TMA loads but stores through pointers."""
    from yat_triton.dense import plan_dense_fwd

    x, w = torch.empty(256, 512, dtype=torch.bfloat16), torch.empty(512, 512, dtype=torch.bfloat16)
    cfg = TileConfig(64, 256, 64, 8, 8, 4, epilogue_split=4, tma=True)
    assert pipelined_smem_bytes(cfg, 2) > SM90_SMEM_BYTES
    for save, tma_store in ((False, True), (True, False)):
        _, calls = plan_dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", save, cfg)
        assert calls[-1].kernel.fn.__name__ == "yat_dense_fwd_tma_kernel"
        assert calls[-1].kwargs["TMA_STORE"] is tma_store


def test_host_cdiv_and_next_pow2_match_triton() -> None:
    """The launchers' plain host helpers agree with triton.cdiv / triton.next_power_of_2
    (whose constexpr-function wrappers cost microseconds a host call)."""
    from kernels._common import cdiv, next_pow2

    for n in [*range(0, 70), 1000, 4096, 4097, 2**31 - 1, 2**40 + 3]:
        assert next_pow2(n) == triton.next_power_of_2(n), n
    for a in range(0, 50):
        for b in range(1, 9):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)


# ---------------------------------------------------------------------------------------
# Warp-specialized forward tiles


WS_TILE = TileConfig(128, 64, 32, 2, 4, 2, tma=True, warp_specialize=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_warp_specialized_forward_matches_oracle(dtype: torch.dtype, device: str) -> None:
    """The warp-specialized TMA forward saving s for backward, with bias, on ragged edges
    (two row tiles, the second 22 rows; 2 column tiles): y, s and both norms against the
    oracle; it stores through pointers (the pass takes no TMA stores); fp32 runs the tile
    unspecialized. On a GPU this is the GPU script's canary: the 16-bit kernels must run
    warp-specialized, as the sweep will run them (no WarpSpecializationFallback: it would
    make every such row an error) and really split into a producer and two consumer
    warpgroups (3 x 4 warps); a failure, a hang or a wrong result keeps the
    warp-specialized tiles out of that run."""
    from yat_triton._launch import WarpSpecializationFallback
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(13)
    M, N, K = 150, 104, 72  # K * 2 and K * 4 bytes are multiples of 16: TMA-ready rows
    x, w, b = (torch.randn(*shape, generator=gen).to(dtype).to(device) for shape in ((M, K), (N, K), (N,)))
    (y, s, nx, nw), calls = plan_dense_fwd(x, w, b, None, 1.5, None, 1e-3, "ieee", True, WS_TILE)
    fwd = calls[-1]
    assert fwd.kernel.fn.__name__ == "yat_dense_fwd_tma_kernel"
    if dtype == torch.float32:  # 32-bit io runs the tile unspecialized, on its consumers' warps
        assert fwd.kwargs["WARP_SPECIALIZE"] is False and fwd.kwargs["num_warps"] == 8
    else:
        assert fwd.kwargs["WARP_SPECIALIZE"] is True and fwd.kwargs["TMA_STORE"] is False
        assert fwd.kwargs["EPILOGUE_SPLIT"] == 1 and fwd.kwargs["num_warps"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", WarpSpecializationFallback)
        run_and_check_forward(calls, (y, s, nx, nw), x, w, b)
    if device == "cuda" and dtype != torch.float32:  # (fp32 has no warp-specialized tiles)
        compiled = fwd.kernel.warmup(*fwd.args, grid=fwd.grid, **fwd.kwargs)
        assert compiled.metadata.num_warps == 12, "Triton did not warp-specialize the main loop"


def test_warp_specialized_tiles_in_the_space() -> None:
    """The dense space offers warp-specialized tiles only as Triton's Hopper pass compiles
    them (TMA, 128 rows, 4-warp consumers, unsplit, norms from the pass, 16-bit io), within
    sm_90's shared memory as they stage s (sm_90 compile, bf16 128x128x64 on 5 stages
    saving s: 229,712 B); a big GEMM's capped sweep tries some; the backward gets its own,
    up to 128x256 (its plain epilogue does not spill there); `warp_specialize=False`
    leaves them all out."""
    from autotune import sweep

    space = dense_config_space()
    ws = [c for c in space if c.warp_specialize]
    assert ws and all(c.warp_specialize_problem() is None for c in ws)
    assert {c.block_n for c in ws} == {64, 128} and all(c.consumer_warps == 8 for c in ws)
    assert not any(c.warp_specialize for c in dense_config_space(include_warp_specialize=False))
    five = TileConfig(128, 128, 64, 8, 4, 5, tma=True, warp_specialize=True)
    assert 229712 <= pipelined_smem_bytes(five, 2) <= SM90_SMEM_BYTES
    assert pipelined_smem_bytes(replace(five, block_k=128, num_stages=3), 2) > SM90_SMEM_BYTES
    big = {"M": 4096, "N": 4096, "K": 4096}
    kept, _ = sweep.config_space("dense", big, 2)
    assert any(c.warp_specialize for c in kept[:11])  # a capped sweep (12 with the default) tries some
    assert not any(c.warp_specialize for c in sweep.config_space("dense", big, 2, warp_specialize=False)[0])
    bwd = sweep.backward_tiles("dense", big, kept, 2)
    for tiles in (
        bwd,
        sweep.backward_tiles("dense", big, kept, 4),
        sweep.backward_tiles("dense", {**big, "M": 64}, kept, 2),
    ):
        assert len(set(tiles)) == len(tiles), "a tile twice in the backward's sweep"
    assert {c.block_n for c in bwd if c.warp_specialize} == {64, 128, 256}
    assert all(fits_sm90(c, 2, backward=True) for c in bwd)
    wide = TileConfig(128, 256, 64, 8, 4, 4, tma=True, warp_specialize=True)  # measured 229,608 B
    assert 229608 <= pipelined_smem_bytes(wide, 2, backward=True) <= SM90_SMEM_BYTES
    no_ws = sweep.backward_tiles("dense", big, kept, 2, warp_specialize=False)
    assert not any(c.warp_specialize for c in no_ws)
    # fp32 io: none (through FMA or TF32 the pass does not split the backward GEMMs cleanly)
    assert not any(c.warp_specialize for c in sweep.backward_tiles("dense", big, kept, 4))
    assert not any(c.warp_specialize for c in sweep.config_space("dense", big, 4)[0])
    # clipped below 128 rows a tile would not compile: a small M runs them unspecialized
    small = prune_dense_configs(ws, 64, 4096, 4096, 2)
    assert small and not any(c.warp_specialize for c in small) and {c.num_warps for c in small} == {8}
    assert not any(c.warp_specialize for c in conv_config_space())  # the conv kernels take none
    assert prune_conv_configs([WS_TILE], 4096, 64, 64, 2) == [
        replace(WS_TILE, warp_specialize=False, num_warps=8)
    ]


def test_warp_specialize_in_configs_files_and_names() -> None:
    """Written only when set (files of tiles without it read as before), named "_ws", and
    refused in a winners file on a tile the pass cannot compile."""
    from yat_triton.tuning import config_from_dict

    plain = TileConfig(128, 128, 64, 8, 4, 4, tma=True)
    assert "warp_specialize" not in plain.as_dict()
    ws = replace(plain, warp_specialize=True)
    assert ws.as_dict()["warp_specialize"] is True and ws.name.endswith("_tma_ws")
    assert config_from_dict(ws.as_dict()) == ws and config_from_dict(plain.as_dict()) == plain
    for bad in (
        {"tma": False},
        {"num_warps": 8},
        {"block_m": 64},
        {"epilogue_split": 2},
        {"norms_in_loop": True},
    ):
        with pytest.raises(ValueError, match="warp_specialize needs"):
            config_from_dict({**ws.as_dict(), **bad})
    with pytest.raises(ValueError, match="true or false"):
        config_from_dict({**ws.as_dict(), "warp_specialize": 1})


def test_warp_specialization_falls_back_where_it_does_not_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warp-specialized launch whose compile fails on the GPU (Triton 3.9's pass refuses
    what 3.6's compiles) runs without warp specialization on its consumers' 8 warps, with
    a WarpSpecializationFallback each time (the compile is tried once); one that compiles
    runs as it is; planning compiles nothing; off a GPU nothing is tried."""
    import yat_triton._launch as launch_mod
    from yat_triton._launch import KernelCall, WarpSpecializationFallback

    class Kernel:
        def __init__(self, fails: bool) -> None:
            self.fails, self.compiles = fails, 0
            self.fn = type("Fn", (), {"__name__": "k"})

        def warmup(self, *args: object, **kwargs: object) -> None:
            self.compiles += 1
            if self.fails:
                raise RuntimeError("PassManager::run failed")

    launched: list[tuple[object, dict]] = []
    monkeypatch.setattr(launch_mod, "INTERPRETING", False)
    monkeypatch.setattr(launch_mod, "launch", lambda k, grid, *a, **kw: launched.append((k, kw)))
    monkeypatch.setattr(KernelCall, "device", lambda self: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # the launch's device is current
    bad, good = Kernel(True), Kernel(False)
    call = KernelCall(bad, (1,), (3,), {"WARP_SPECIALIZE": True, "num_warps": 4})
    for _ in range(2):
        with pytest.warns(WarpSpecializationFallback, match="warp specialization does not compile"):
            call.run()
    assert [kw for _, kw in launched] == [{"WARP_SPECIALIZE": False, "num_warps": 8}] * 2
    assert bad.compiles == 1
    KernelCall(good, (1,), (3,), {"WARP_SPECIALIZE": True, "num_warps": 4}).run()
    assert launched[-1] == (good, {"WARP_SPECIALIZE": True, "num_warps": 4})
    KernelCall(bad, (1,), (4,), {"WARP_SPECIALIZE": False}).run()
    assert launched[-1] == (bad, {"WARP_SPECIALIZE": False}) and bad.compiles == 1
    monkeypatch.setattr(KernelCall, "device", lambda self: torch.device("cpu"))
    KernelCall(bad, (1,), (5,), {"WARP_SPECIALIZE": True, "num_warps": 4}).run()
    assert launched[-1][1]["WARP_SPECIALIZE"] is True and bad.compiles == 1


DIVISORS = [1, 2, 3, 7, 9, 49, 56, 64, 3136, 12544, 100_003, 2**20 + 7, 2**30, 2**31 - 1]


def test_divmod_magic_divides_every_int32():
    """(n * m) >> p == n // d over each divisor's edge cases and random dividends in
    [0, 2^31), the range `fast_div` promises; m is an int32 (a kernel argument torch.compile
    can pass), its bits read as uint32."""
    gen = torch.Generator().manual_seed(5)
    for d in DIVISORS + torch.randint(1, 2**31 - 1, (200,), generator=gen).tolist():
        m, p = divmod_magic(d)
        assert -(2**31) <= m < 2**31 and m != 0
        m %= 2**32
        q = d * ((2**31 - 1) // d)
        edges = [0, 1, d - 1, d, d + 1, q - 1, q, 2**31 - 2, 2**31 - 1]
        for n in edges + torch.randint(0, 2**31, (200,), generator=gen).tolist():
            if n >= 0:
                assert (n * m) >> p == n // d, (n, d, m, p)


@triton.jit
def _fast_div_kernel(n_ptr, q_ptr, d, m, p, N, FAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    n = tl.load(n_ptr + offs, mask=mask, other=0)
    tl.store(q_ptr + offs, fast_div(n, d, m, p, FAST), mask=mask)


def test_fast_div_in_a_kernel(device):
    """The kernels' division by a runtime int32 (conv position and tap decodes) gives the
    integer quotient, compiled (GPU) and interpreted, by multiply-and-shift and (FAST off)
    by division."""
    gen = torch.Generator().manual_seed(6)
    for d in DIVISORS:
        q = d * ((2**31 - 1) // d)
        n = torch.tensor([0, 1, d - 1, d, d + 1, q - 1, q, 2**31 - 1], dtype=torch.int64)
        n = torch.cat([n, torch.randint(0, 2**31, (56,), generator=gen)]).clamp(0, 2**31 - 1)
        for fast in (True, False):
            out = torch.empty(64, dtype=torch.int32, device=device)
            nd = n.to(device=device, dtype=torch.int32)
            _fast_div_kernel[(1,)](nd, out, d, *divmod_magic(d), 64, FAST=fast, BLOCK=64)
            assert torch.equal(out.cpu().long(), n // d), (d, fast)


def test_launch_makes_its_cuda_device_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton compiles for and launches on the current CUDA device, whatever device the
    tensors are on: a call for cuda:1 while cuda:0 is current runs (compile checks
    included) with cuda:1 made current, and cuda:0 is current again after it; a call for
    the current device switches nothing."""
    import yat_triton._launch as launch_mod
    from yat_triton._launch import KernelCall

    current = [0]
    switches: list[int] = []

    class Device:  # torch.cuda.device, on a machine without (or with one) GPU
        def __init__(self, index: int) -> None:
            self.index = index

        def __enter__(self) -> None:
            switches.append(self.index)
            self.previous, current[0] = current[0], self.index

        def __exit__(self, *exc: object) -> None:
            current[0] = self.previous

    ran_on: list[tuple[str, int]] = []

    class Kernel:
        fn = type("Fn", (), {"__name__": "k"})

        def warmup(self, *args: object, **kwargs: object) -> None:
            ran_on.append(("compile", current[0]))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(launch_mod, "INTERPRETING", False)
    monkeypatch.setattr(launch_mod, "launch", lambda k, grid, *a, **kw: ran_on.append(("launch", current[0])))
    monkeypatch.setattr(KernelCall, "device", lambda self: torch.device("cuda", 1))
    KernelCall(Kernel(), (1,), (7,), {"WARP_SPECIALIZE": True, "num_warps": 4}).run()
    assert ran_on == [("compile", 1), ("launch", 1)] and switches == [1] and current == [0]
    current[0] = 1
    KernelCall(Kernel(), (1,), (8,)).run()
    assert ran_on[-1] == ("launch", 1) and switches == [1]
    monkeypatch.setattr(KernelCall, "device", lambda self: torch.device("cpu"))
    KernelCall(Kernel(), (1,), (9,)).run()
    assert switches == [1]


def test_fake_cuda_tensors_propagate_shapes_anywhere():
    """Shape propagation with fake CUDA tensors (torch.export, meta-programming) plans the
    launches without touching a GPU: it works on a host without a CUDA driver too."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from yat_triton import yat_conv2d, yat_linear

    with FakeTensorMode():
        x, w = torch.empty(64, 32, device="cuda"), torch.empty(48, 32, device="cuda")
        assert yat_linear(x, w).shape == (64, 48)
        # channels_last already (a CPU build of torch cannot copy fake CUDA tensors)
        xc = torch.empty(2, 8, 8, 16, device="cuda").permute(0, 3, 1, 2)
        wc = torch.empty(24, 16, 3, 3, device="cuda")
        y = yat_conv2d(xc, wc, padding=1)
        assert y.shape == (2, 24, 8, 8) and y.device.type == "cuda"


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
@pytest.mark.parametrize("tile", ["128x256x64:8:4:tma", "64x256x64:8:3:tma", "128x64x64:4:4:tma"])
def test_backward_tma_tiles_fit_as_the_model_says(tile: str) -> None:
    """The backward GEMMs' TMA tiles, compiled for sm_90 as the forced backward tile (not
    replaced by the default: a tile the model prunes would be): their shared memory within
    sm_90's and within `pipelined_smem_bytes(backward=True)`, the bound the sweep prunes by
    (the widest, 128x256x64 with 4 stages, is within 3 KB of sm_90's limit)."""
    from autotune.inspect import parse_tile
    from kernels._common import SM90_SMEM_BYTES, pipelined_smem_bytes

    reports = _inspect_all("--dtype", "bfloat16", "--backward", "--config", tile)
    gemms = [r for r in reports if "gemm" in r["kernel"]]
    assert len(gemms) == 2 and all(r["kernel"] == "yat_dense_bwd_gemm_tma_kernel" for r in gemms), gemms
    bound = pipelined_smem_bytes(parse_tile(tile), 2, backward=True)
    assert bound <= SM90_SMEM_BYTES
    assert all(r["shared_bytes"] <= bound and r["spill_stores"] == 0 for r in gemms), (bound, gemms)


LAUNCH_KEYS = """
import json, sys, torch
import triton.compiler
from autotune.inspect import SM90, _driver_for_analysis, all_calls, as_on_gpu, static_compile_args

class Captured(Exception):
    pass

seen = []

def capture(src, target=None, options=None, **kw):
    seen.append((src, target, options))
    raise Captured

backend = triton.compiler.make_backend(SM90)

def key(src, options):
    return src.hash(), backend.parse_options(dict(options)).hash()

triton.compiler.compile = capture  # what a launch's compile gets, instead of compiling
dtype = getattr(torch, sys.argv[1])
with as_on_gpu():
    calls = all_calls(dtype)
with _driver_for_analysis():  # an sm_90 GPU's
    for label, call in calls:
        seen.clear()
        try:
            call.kernel.warmup(*call.args, grid=call.grid, **call.compile_kwargs())
        except Captured:
            pass
        src, target, options = seen[0]
        print(json.dumps({"op": label, "kernel": call.kernel.__name__, "pdl": call.pdl,
                          "same": key(*static_compile_args(call)) == key(src, options) and target == SM90,
                          "fp64_differs": key(*static_compile_args(call, True)) != key(src, options)}))
"""


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_static_compiles_are_the_launches(dtype: str) -> None:
    """The sm_90 compile of every kernel call (`static_compile_args`) is the one a launch of
    the call on an sm_90 GPU makes: Triton's launch, with its compile stopped and read,
    specializes the arguments and takes the options that the static compile does, so both
    share one key in Triton's cache (on an H200 the sweep's static prune compiled for sm_90,
    then every warmup compiled its tile again). The calls cover the forwards that overlap
    their norm pass (launch_pdl, an option of the compile) and those that do not, TMA and
    pointer kernels, backward and elementwise passes. With torch.compile's fp64 scalars the
    key differs wherever the call has a float argument."""
    out = compiled_child("-c", LAUNCH_KEYS, dtype, timeout=600)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(rows) > 15 and all(r["same"] for r in rows), [r for r in rows if not r["same"]]
    assert any(r["pdl"] for r in rows) and not all(r["pdl"] for r in rows)
    assert any(r["fp64_differs"] for r in rows)


WS_COMPILE = """
import dataclasses, json, torch
from autotune.inspect import compile_sm90
from kernels._common import TileConfig
from yat_triton._launch import unspecialized
from yat_triton.dense import plan_dense_fwd

x, w = (torch.empty(4096, 4096, dtype=torch.bfloat16, device="meta") for _ in range(2))
cfg = TileConfig(128, 128, 64, 8, 4, 4, tma=True, warp_specialize=True)
call = plan_dense_fwd(x, w, None, None, 1.0, None, 1e-5, "ieee", True, cfg)[1][-1]
for how, launch in (("ws", call), ("plain", unspecialized(call))):
    try:
        print(json.dumps({"how": how, **dataclasses.asdict(compile_sm90(launch))}))
    except Exception as e:
        print(json.dumps({"how": how, "error": f"{type(e).__name__}: {e}"[:300]}))
"""


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton wheel without ptxas/cuobjdump")
def test_warp_specialized_forward_compiles_for_sm90_or_runs_plain() -> None:
    """Statically, a 4096^3 bf16 forward saving s on a warp-specialized 128x128x64 tile:
    with a Triton whose Hopper pass takes it (3.6, the GPU machine's) it is split into a
    producer and two 4-warp consumer warpgroups, wgmma, no spills, within the shared
    memory `fits_sm90` plans; the launch the launcher falls back to where the pass refuses
    it (3.9) compiles with wgmma and no spills too."""
    out = compiled_child("-c", WS_COMPILE)
    reports = {r["how"]: r for r in map(json.loads, out.splitlines()[-2:])}
    ws, plain = reports["ws"], reports["plain"]
    if "error" in ws:
        assert "PassManager::run failed" in ws["error"], ws
    else:
        assert ws["warps"] == 12 and ws["asked_warps"] == 4, ws
        cfg = TileConfig(128, 128, 64, 8, 4, 4, tma=True, warp_specialize=True)
        assert 0 < ws["shared_bytes"] <= pipelined_smem_bytes(cfg, 2), ws
    for r in ([ws] if "error" not in ws else []) + [plain]:
        assert r["kernel"] == "yat_dense_fwd_tma_kernel" and r["hgmma"] > 0, r
        assert r["stack_bytes"] == 0 and r["spill_stores"] == 0, r
    assert plain["warps"] == plain["asked_warps"] == 8, plain


FAILING_COMPILE = """
import os, sys
import triton
import autotune.inspect as ins

def failing(*args, **kwargs):
    os.write(2, b'module {\\n  tt.func @k() {}\\n}\\nloc("k.py":3:4): error: invented failure\\n')
    raise RuntimeError("PassManager::run failed")

triton.compile = failing
sys.exit(ins.main(sys.argv[1:]))
"""


def test_inspect_names_a_compile_failure_in_one_line(capfd) -> None:  # noqa: ANN001
    """A tile the installed Triton does not compile ends `inspect` with one line naming the
    kernel and the compiler's error line, not the IR dump MLIR writes to fd 2 nor a
    traceback; with --all every kernel is still tried, its line saying it failed. Output a
    compile writes to fd 2 without failing (a warning) still shows."""
    from autotune.inspect import CompileFailure, _compiler_stderr

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    one = subprocess.run([sys.executable, "-c", FAILING_COMPILE, "--shape", "64", "64", "64", "--config",
                          "64x64x32:4:2"], env=env, capture_output=True, text=True)  # fmt: skip
    assert one.returncode == 1 and one.stdout == "", (one.stdout, one.stderr)
    version = re.escape(triton.__version__)
    last = one.stderr.strip().splitlines()[-1]  # after Triton's own import-time warnings, if any
    assert re.fullmatch(
        rf"autotune\.inspect: \w+_kernel does not compile for sm_90 with Triton {version}: "
        r"invented failure \(RuntimeError\)",
        last,
    ), one.stderr
    every = subprocess.run([sys.executable, "-c", FAILING_COMPILE, "--all", "--json"], env=env,
                           capture_output=True, text=True)  # fmt: skip
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert every.returncode == 1 and len(lines) > 10, (every.stdout, every.stderr)
    assert all("invented failure" in line["error"] for line in lines), every.stdout
    for err in (one.stderr, every.stderr):
        assert "module {" not in err and "Traceback" not in err

    failure = CompileFailure("k", RuntimeError("PassManager::run failed\nmore"))
    assert str(failure).endswith(": PassManager::run failed (RuntimeError)")
    assert failure.describe("no error line here") == str(failure)
    assert failure.describe("x\nloc(a): error: the reason\n").endswith(": the reason (RuntimeError)")
    with _compiler_stderr():
        os.write(2, b"a compiler warning\n")
    assert capfd.readouterr().err == "a compiler warning\n"
    with pytest.raises(ValueError), _compiler_stderr() as held:
        os.write(2, b"held back\n")
        assert held() == "held back\n"
        raise ValueError
    assert capfd.readouterr().err == "" and held() == "held back\n"  # readable after the block


def test_static_compiles_leave_stderr_alone_in_threads() -> None:
    """Static compiles run from thread pools (the sweep's prune, where it runs on threads):
    a compile failure there is a CompileFailure, and file descriptor 2 is never swapped
    (threads swapping it would leave it pointing at a deleted file)."""
    import threading
    from unittest import mock

    import autotune.inspect as ins

    before = os.fstat(2)

    together = threading.Barrier(8, timeout=30)

    def failing(*args: object, **kwargs: object) -> None:
        together.wait()  # every thread inside its compile at once, as in the pool
        raise RuntimeError("invented failure")

    call = mock.Mock()
    call.kernel.__name__ = "k"
    call.kwargs = {"num_warps": 4, "num_stages": 2}
    errors: list[BaseException] = []

    def compile_one() -> None:
        try:
            ins.compile_sm90(call)
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    with (
        mock.patch.object(ins, "static_compile_args", lambda c, fp64_scalars=False: (None, {})),
        mock.patch.object(ins.triton, "compile", failing),
    ):
        threads = [threading.Thread(target=compile_one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(errors) == 8 and all(isinstance(e, ins.CompileFailure) for e in errors)
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_in_loop_tma_tile_on_the_pointer_kernel(dtype: torch.dtype, device: str) -> None:
    """A TMA tile summing ||x||^2 in its loop that its operands put on the pointer kernel
    (K = 98: rows not 16-byte aligned in bf16 or fp32, no descriptor): 16-bit io takes the
    norm pass there (`broken_in_loop_norms`: such pointer tiles computed wrong on the
    H200), fp32 keeps its in-loop norms; both against the oracle."""
    from yat_triton.dense import plan_dense_fwd

    gen = torch.Generator().manual_seed(13)
    M, N, K = 20, 24, 98
    x, w, b = (torch.randn(*shape, generator=gen).to(dtype).to(device) for shape in ((M, K), (N, K), (N,)))
    cfg = TileConfig(16, 32, 32, 2, 4, 2, norms_in_loop=True, tma=True)
    outs, calls = plan_dense_fwd(x, w, b, None, 1.5, None, 1e-3, "ieee", True, cfg)
    names = [c.kernel.fn.__name__ for c in calls]
    assert names[-1] == "yat_dense_fwd_kernel"
    in_loop = dtype == torch.float32
    assert calls[-1].kwargs["NORMS_IN_LOOP"] == in_loop
    assert ("row_sqnorm_kernel" in names) != in_loop
    run_and_check_forward(calls, outs, x, w, b)


# ---------------------------------------------------------------------------------------
# Programmatic dependent launch: a forward GEMM overlaps the norm pass before it


def _planned_on_gpu(fn) -> list:  # noqa: ANN001
    """The launches `fn` plans on CPU tensors as a GPU would plan them (the forward GEMMs
    overlapping their norm pass: `overlap_norm_pass`), recorded, not run."""
    from unittest import mock

    from yat_triton._launch import KernelCall, forced_overlap

    calls: list = []
    with mock.patch.object(KernelCall, "run", lambda self: calls.append(self)), forced_overlap(True):
        fn()
    return calls


def _overlap_plans() -> dict[str, list]:
    """Forward plans of every kind: the dense op on the pointer and TMA kernels, norms from
    the pass or ||x||^2 from the TMA loop (fp32: the pointer kernel's in-loop norms too),
    the conv on both kernels with a channels_last or NCHW weight, a strided x, and a 1x1
    conv on the dense kernels."""
    from yat_triton.conv import conv2d_fwd
    from yat_triton.tuning import forced_config

    gen = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(*s, generator=gen) for s in ((40, 32), (24, 32), (24,)))
    x16, w16, b16 = (t.to(torch.bfloat16) for t in (x, w, b))
    args = (None, 1.0, None, 1e-3)
    plans: dict[str, list] = {}
    dense_tiles = {
        "pointer": TileConfig(32, 16, 16, 4, 4, 2),
        "tma": TileConfig(32, 16, 16, 4, 4, 2, tma=True),
        "tma-nil": TileConfig(32, 16, 16, 4, 4, 2, norms_in_loop=True, tma=True),
    }
    for name, tile in dense_tiles.items():
        plans[f"dense {name}"] = _planned_on_gpu(
            lambda tile=tile: dense_fwd(x16, w16, b16, *args, "ieee", True, tile)
        )
    plans["dense fp32 nil"] = _planned_on_gpu(
        lambda: dense_fwd(x, w, b, *args, "ieee", True, TileConfig(32, 16, 16, 4, 4, 2, norms_in_loop=True))
    )
    cl = torch.channels_last
    xc = torch.randn(2, 16, 6, 6, generator=gen).to(torch.bfloat16).contiguous(memory_format=cl)
    wc = torch.randn(8, 16, 3, 3, generator=gen).to(torch.bfloat16)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    tile = TileConfig(32, 16, 16, 4, 4, 2)
    conv_tiles = {"pointer": tile, "tma": replace(tile, tma=True)}
    for name, tile in conv_tiles.items():
        for layout, weight in (("nchw-w", wc), ("cl-w", wc.contiguous(memory_format=cl))):
            with forced_config("conv2d", "fwd", tile):
                plans[f"conv {name} {layout}"] = _planned_on_gpu(
                    lambda weight=weight: conv2d_fwd(xc, weight, None, *args, *geo, "ieee", True)
                )
    crop = xc[:, :, 1:, 1:]  # strided channels_last rows: the pass reads a copy
    plans["conv crop"] = _planned_on_gpu(lambda: conv2d_fwd(crop, wc, None, *args, *geo, "ieee", True))
    w1 = torch.randn(8, 16, 1, 1, generator=gen).to(torch.bfloat16)
    plans["conv 1x1"] = _planned_on_gpu(
        lambda: conv2d_fwd(xc, w1, None, *args, (1, 1), (0, 0, 0, 0), (1, 1), 1, "ieee", True)
    )
    # no pixels, but output positions from the padding: no pass, the weight prep right before
    # the GEMM (whose main loop reads what the prep writes)
    empty = torch.zeros(1, 16, 0, 4).to(torch.bfloat16)
    plans["conv no pixels"] = _planned_on_gpu(
        lambda: conv2d_fwd(empty, wc, None, *args, (1, 1), (2, 2, 2, 2), (1, 1), 1, "ieee", True)
    )
    return plans


def test_forward_gemms_overlap_their_norm_pass_and_nothing_else() -> None:
    """Planned as on a GPU, every forward whose GEMM follows a norm pass launches it with
    programmatic dependent launch (`KernelCall.pdl`), waiting for the norms in its epilogue
    (GDC_WAIT), right after that pass, which lets it launch early (EARLY_LAUNCH). The
    invariant that keeps it right: a dependent launch always directly follows such a pass,
    the only call whose outputs it may read before the pass ends; any other launch is an
    ordinary one. The pass's grid: one program a row tile, or with
    OVERLAP_NORM_PROGRAMS_PER_SM one program an SM (of an H200's 132 here, where the CPU
    tensors have none), walking the tiles."""
    import yat_triton._launch as launch_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch_mod, "OVERLAP_NORM_PROGRAMS_PER_SM", 1)
        one_an_sm = _planned_on_gpu(lambda: dense_fwd(
            torch.randn(4096, 16).to(torch.bfloat16), torch.randn(40, 16).to(torch.bfloat16),
            None, None, 1.0, None, 1e-3, "ieee", False, TileConfig(32, 16, 16, 4, 4, 2),
        ))  # fmt: skip
    norm = one_an_sm[0]
    tiles = -(-4096 // norm.kwargs["BLOCK_R"]) + -(-40 // norm.kwargs["BLOCK_R"])
    assert tiles > 132 and norm.grid == (132,) and one_an_sm[1].pdl
    plans = _overlap_plans()
    for name, calls in plans.items():
        names = [c.kernel.fn.__name__ for c in calls]
        for i, c in enumerate(calls):
            follower = calls[i + 1] if i + 1 < len(calls) else None
            assert bool(c.kwargs.get("GDC_WAIT")) == c.pdl, (name, names)
            assert bool(c.kwargs.get("EARLY_LAUNCH")) == bool(follower and follower.pdl), (name, names)
            if c.pdl:
                prev = calls[i - 1]
                assert i > 0 and prev.kernel.fn.__name__ == "row_sqnorm_kernel", (name, names)
                tiles = sum(-(-a.shape[0] // prev.kwargs["BLOCK_R"]) for a in prev.args[:2])
                assert prev.grid == (tiles if prev.args[0] is not prev.args[1] else tiles // 2,), name
    overlapped = {name for name, calls in plans.items() if any(c.pdl for c in calls)}
    # fp32's pointer kernel sums both norms in its loop, and an input without pixels has none
    # to sum: no pass, nothing to overlap
    assert overlapped == set(plans) - {"dense fp32 nil", "conv no pixels"}, overlapped
    assert [c.kernel.fn.__name__ for c in plans["conv no pixels"]] == [
        "yat_conv_weight_prep_kernel", "yat_conv_fwd_kernel"
    ]  # fmt: skip
    # off a GPU (the interpreter here) nothing overlaps
    from yat_triton._launch import KernelCall

    with pytest.MonkeyPatch.context() as mp:
        seen: list = []
        mp.setattr(KernelCall, "run", lambda self: seen.append(self))
        dense_fwd(torch.randn(40, 32), torch.randn(24, 32), None, None, 1.0, None, 1e-3, "ieee", False)
    assert seen and not any(c.pdl or c.kwargs.get("GDC_WAIT") for c in seen)


def test_norm_pass_programs_walk_every_row_tile(device: str) -> None:
    """The norm pass on fewer programs than row tiles (as when a GEMM overlaps it): each
    program walks tiles p, p + programs, ..., over both matrices, and every row's norm is
    the float64 sum of its squares."""
    from kernels.dense import row_sqnorm_kernel

    gen = torch.Generator().manual_seed(5)
    a = torch.randn(37, 24, generator=gen).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(21, 24, generator=gen).to(device=device, dtype=torch.bfloat16)[:, ::1]
    out_a = torch.full((37,), float("nan"), device=device)
    out_b = torch.full((21,), float("nan"), device=device)
    block_r = 4  # 10 + 6 tiles on 3 programs
    row_sqnorm_kernel[(3,)](
        a, b, out_a, out_b, 37, 21, 24, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        IS_FP64=False, INT64=False, EARLY_LAUNCH=False, BLOCK_R=block_r, BLOCK_K=16,
    )  # fmt: skip
    for m, out in ((a, out_a), (b, out_b)):
        ref = m.double().pow(2).sum(1)
        # (fp32 sums of 24 squares of bf16 values: within a few ulps of the float64 ones; a
        # row no program reached keeps its NaN)
        torch.testing.assert_close(out.cpu().double(), ref.cpu(), rtol=1e-6, atol=0.0)


def test_dependent_launch_reaches_triton_only_outside_a_trace() -> None:
    """A `KernelCall` with `pdl` asks Triton for programmatic dependent launch (launch_pdl) on
    a direct GPU launch; the interpreter and a traced launch (`wrap_triton`) get none, and a
    traced forward is planned without the overlap."""
    from unittest import mock

    import yat_triton._launch as launch_mod

    seen: list[dict] = []

    class Kernel:
        def __getitem__(self, grid: tuple[int, ...]):  # noqa: ANN204
            return lambda *args, **kwargs: seen.append(kwargs)

    t = torch.zeros(4)
    call = launch_mod.KernelCall(Kernel(), (1,), (t,), {"num_warps": 4}, pdl=True)
    plain = launch_mod.KernelCall(Kernel(), (1,), (t,), {"num_warps": 4})
    with mock.patch.object(launch_mod, "INTERPRETING", False):
        call.run()
        plain.run()
        with (
            mock.patch.object(launch_mod, "tracing", lambda *ts: True),
            mock.patch.object(launch_mod, "wrap_triton", lambda kernel: kernel),
        ):
            call.run()  # traced
    call.run()  # interpreting here
    direct = {"num_warps": 4, "launch_pdl": True} if launch_mod.HAS_PDL else {"num_warps": 4}
    assert seen == [direct] + [{"num_warps": 4}] * 3
    # the compile a warmup makes is the launch's (launch_pdl is part of Triton's key)
    with mock.patch.object(launch_mod, "INTERPRETING", False):
        assert call.compile_kwargs() == direct
    # planned while traced (fake tensors): no overlap, even where the GPU would overlap
    from torch._subclasses.fake_tensor import FakeTensorMode

    import yat_triton.dense as dense

    with FakeTensorMode() as fake:
        # (bf16: a tile taking the norm pass, which an untraced plan would overlap)
        x, w = (fake.from_tensor(torch.randn(*s).to(torch.bfloat16)) for s in ((40, 32), (24, 32)))
        with launch_mod.forced_overlap(True):
            _, calls = dense.plan_dense_fwd(x, w, None, None, 1.0, None, 1e-3, "ieee", False)
    assert [c.kernel.fn.__name__ for c in calls] == ["row_sqnorm_kernel", "yat_dense_fwd_kernel"]
    assert not any(c.pdl or c.kwargs.get("GDC_WAIT") or c.kwargs.get("EARLY_LAUNCH") for c in calls)


def test_overlapped_forwards_wait_for_the_norm_pass_on_sm90(tmp_path: Path) -> None:
    """The sm_90 compiles a GPU launches (`autotune.inspect`): the norm pass lets the GEMM
    launch (griddepcontrol.launch_dependents), and the dense forwards (pointer and TMA
    kernels) and the conv forward wait for it (griddepcontrol.wait) after their MMAs, before
    the epilogue reads the norms; with YAT_TRITON_PDL=0, neither."""

    def ptx(dump: Path, *args: str, pdl: str = "1") -> dict[str, str]:
        compiled_child(
            "-m", "autotune.inspect", "--dtype", "bfloat16", "--dump", str(dump), *args, timeout=600,
            env={"YAT_TRITON_PDL": pdl},
        )  # fmt: skip
        return {p.stem: p.read_text() for p in dump.glob("*.ptx")}

    dense = ["--shape", "256", "256", "256", "--config"]
    for label, args in {
        "pointer": [*dense, "128x128x64:8:3"],
        "tma": [*dense, "128x128x64:8:3:e2:tma"],
        "conv": ["--op", "conv2d", "--conv", "2", "64", "8", "64", "3", "--config", "64x64x64:4:3"],
    }.items():
        on = ptx(tmp_path / label, *args)
        gemm = next(k for k in on if k.startswith("yat_") and "fwd" in k)
        assert "griddepcontrol.launch_dependents" in on["row_sqnorm_kernel"], label
        body = on[gemm]
        assert "griddepcontrol.wait" in body, label
        # after the MMAs (the persistent kernel also has a path without them, for K = 0)
        assert body.rindex("griddepcontrol.wait") > body.index("mma"), label
        off = ptx(tmp_path / f"{label}-off", *args, pdl="0")
        assert not any("griddepcontrol" in text for text in off.values()), label


OVERLAP_CASES = [  # (op, tile, pass programs an SM): both ops, both kernels, both pass grids
    ("dense", TileConfig(128, 128, 64, 8, 8, 3, epilogue_split=2, tma=True), None),
    ("dense", TileConfig(128, 128, 64, 8, 8, 3), 1),
    ("conv2d", TileConfig(128, 64, 64, 8, 8, 3), None),
    ("conv2d", TileConfig(128, 64, 64, 8, 8, 3, tma=True), 1),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="programmatic dependent launch needs a GPU")
@pytest.mark.parametrize(("op", "tile", "per_sm"), OVERLAP_CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_overlapped_forward_matches_oracle_eagerly_and_in_a_cuda_graph(
    op: str, tile: TileConfig, per_sm: int | None
) -> None:
    """On the GPU (the script's PDL canary): bf16 forwards whose GEMM overlaps the norm pass
    (programmatic dependent launch; `per_sm`: OVERLAP_NORM_PROGRAMS_PER_SM), launched eagerly
    and replayed from a CUDA graph on new inputs, give bit for bit what the same forward
    gives launched after the pass ends (a GEMM that read a norm before the pass wrote it
    would differ), and match the float64 oracle on a slice of rows (images). Shapes whose
    pass reads much next to a small GEMM (a 16384x2048 x through 128 filters; 64 images of
    56x56x64 through 64 filters), where a missing wait would show."""
    from unittest import mock

    from oracle import yat_conv2d_ref

    import yat_triton._launch as launch_mod
    import yat_triton.conv as conv
    from yat_triton.tuning import forced_config

    if not launch_mod.overlap_norm_pass(torch.device("cuda")):
        pytest.skip("this GPU or run does not overlap (pre-Hopper, or YAT_TRITON_PDL=0)")
    gen = torch.Generator().manual_seed(11)
    bf16 = torch.bfloat16
    if op == "dense":
        shapes, sums, gemm = ((16384, 2048), (128, 2048), (128,)), 2048, "yat_dense_fwd"

        def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return dense_fwd(x, w, b, None, 1.0, None, 1e-3, "ieee", False, tile)[0]

        def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # 256 rows
            return yat_dense_ref(x[:256].double(), w.double(), b.double(), None, 1e-3)
    else:
        shapes, sums, gemm = ((64, 64, 56, 56), (64, 64, 3, 3), (64,)), 64 * 9, "yat_conv_fwd"
        geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)

        def run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            with forced_config("conv2d", "fwd", tile):
                return conv.conv2d_fwd(x, w, b, None, 1.0, None, 1e-3, *geo, "ieee", False)[0]

        def ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # 2 images
            return yat_conv2d_ref(x[:2].double(), w.double(), b.double(), None, 1e-3, padding=1)

    def draw() -> list[torch.Tensor]:
        ts = [
            (torch.randn(s, generator=gen) / (s[1] ** 0.5 if len(s) > 1 else 1)).to("cuda", bf16)
            for s in shapes
        ]
        if op == "conv2d":
            ts[:2] = [t.contiguous(memory_format=torch.channels_last) for t in ts[:2]]
        return ts

    def after_the_pass(*ts: torch.Tensor) -> torch.Tensor:
        with launch_mod.forced_overlap(False):
            return run(*ts)

    with mock.patch.object(launch_mod, "OVERLAP_NORM_PROGRAMS_PER_SM", per_sm):
        static = draw()
        with launch_mod.recording() as calls:
            y = run(*static)
        names = [c.kernel.fn.__name__ for c in calls]
        kernel = gemm + ("_tma_kernel" if tile.tma else "_kernel")
        assert names[-2:] == ["row_sqnorm_kernel", kernel] and calls[-1].pdl, names
        assert torch.equal(y, after_the_pass(*static)), f"{op}: y differs from the forward after the pass"
        assert_close(y[: 256 if op == "dense" else 2], ref(*static), bf16, reduction=sums, what=f"{op} y")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run(*static)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = run(*static)
        for _ in range(2):  # new inputs, then replay
            for t, new in zip(static, draw(), strict=True):
                t.copy_(new)
            graph.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, after_the_pass(*static)), f"{op}: a graph replay differs"
        assert_close(out[: 256 if op == "dense" else 2], ref(*static), bf16, reduction=sums, what=f"{op} y")


def test_tail_split_shares_a_last_partial_wave() -> None:
    """`tail_split`: the plain grid where the tiles fill whole waves, or where no split of
    the tail brings it to MAX_SPLIT_TAIL of a tile time; else the whole tiles first and the
    tail in the parts that finish it soonest (the fewest on a tie), each of at least
    MIN_SPLIT_STEPS steps."""
    from kernels._common import MAX_SPLIT_TAIL, MIN_SPLIT_STEPS, tail_split

    assert tail_split(264, 36, 132) == (264, 1)  # whole waves
    assert tail_split(196, 36, 132) == (132, 2)  # 64 tiles in 2 parts: half a tile time
    assert tail_split(392, 18, 132) == (392, 1)  # a tail of 128: nothing to gain
    assert tail_split(3, 36, 132) == (0, 4)  # 12 parts, a quarter of a tile time
    assert tail_split(3, 2 * MIN_SPLIT_STEPS + 1, 132) == (0, 2)  # parts of >= MIN_SPLIT_STEPS steps
    assert tail_split(3, 2 * MIN_SPLIT_STEPS - 1, 132) == (3, 1)
    assert tail_split(100, 36, 132) == (100, 1)  # 2 .. 4 parts: a whole tile time still
    for tiles in range(1, 400):
        dp, splits = tail_split(tiles, 36, 132)
        tail = tiles - dp
        if splits == 1:
            assert dp == tiles
        else:
            assert dp == tiles - tiles % 132 and tail > 0
            assert -(-tail * splits // 132) / splits <= MAX_SPLIT_TAIL


def test_split_tiles_are_named_and_stored_apart() -> None:
    """A `split_tail` tile: "_sk" in its name, the field written only when set (as
    warp_specialize), read back from a winners file's fields and from `inspect --config`."""
    from autotune.inspect import parse_tile
    from yat_triton.tuning import config_from_dict

    plain = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=2, tma=True)
    split = dataclasses.replace(plain, split_tail=True)
    assert split.name == plain.name + "_sk" == "m128n128k64g8w8s4e2_tma_sk"
    assert "split_tail" not in plain.as_dict() and split.as_dict()["split_tail"] is True
    assert config_from_dict(split.as_dict()) == split and config_from_dict(plain.as_dict()) == plain
    assert parse_tile("128x128x64:8:4:e2:tma:sk") == split
