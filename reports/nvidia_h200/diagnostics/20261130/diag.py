"""GPU diagnostics (ad hoc): localise the conv dx error and the in-loop-norm forward error."""

import contextlib
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

OUT = os.environ.get("OUT", "/tmp/diagout")
os.makedirs(OUT, exist_ok=True)
T0 = time.time()
from kernels._common import TileConfig
from yat_triton import _launch as L
from yat_triton import conv as C
from yat_triton import dense as D
from yat_triton.tuning import forced_config

dev = os.environ.get("DIAG_DEV", "cuda")
QUICK = dev == "cpu"
if QUICK:
    torch.cuda.synchronize = lambda: None
PATCH = {}  # kernel name -> dict of kwarg overrides, or "skip"
RECORD = None  # list to append (name, kwargs, [tensor clones]) to
orig_run = L.KernelCall.run


def run(self):
    name = getattr(self.kernel, "__name__", None) or getattr(
        getattr(self.kernel, "fn", None), "__name__", str(self.kernel)
    )
    p = PATCH.get(name)
    if p == "skip":
        return
    if p:
        self = L.KernelCall(self.kernel, self.grid, self.args, {**self.kwargs, **p}, self.persistent_tiles)
    orig_run(self)
    if RECORD is not None:
        torch.cuda.synchronize()
        RECORD.append(
            (
                name,
                {k: v for k, v in self.kwargs.items()},
                self.grid,
                [a.detach().cpu().clone() if isinstance(a, torch.Tensor) else a for a in self.args],
            )
        )


L.KernelCall.run = run


def ref_conv(x, w, b, eps, alpha=None, stride=1, pad=1):
    """fp64 on the GPU: y = alpha (conv + b)^2 / (max(||p||^2 + ||w||^2 - 2 conv, 0) + eps)."""
    s = F.conv2d(x, w, None, stride, pad)
    u = s + b[None, :, None, None]
    pn = F.conv2d(x * x, torch.ones_like(w[:1]), None, stride, pad)
    wn = (w * w).sum((1, 2, 3))[None, :, None, None]
    d = (pn + wn - 2 * s).clamp(min=0)
    y = u * u / (d + eps)
    return y if alpha is None else alpha * y


def rel(a, r):
    a = a.double()
    r = r.double()
    return ((a - r).abs().max() / r.abs().max().clamp(min=1e-30)).item()


def pattern(dx, rdx):
    e = (dx.double() - rdx).abs()
    scale = rdx.abs().max()
    bad = e > 0.03 * scale
    B, Cc, H, W = e.shape
    per_pix = bad.any(1)  # B,H,W
    ih = torch.arange(H, device=e.device)[:, None].expand(H, W)
    iw = torch.arange(W, device=e.device)[None, :].expand(H, W)
    border = (ih == 0) | (ih == H - 1) | (iw == 0) | (iw == W - 1)
    nb = int(per_pix[:, border].sum())
    ni = int(per_pix[:, ~border].sum())
    per_c = bad.any(0).any(-1).any(-1).nonzero().flatten().tolist()
    rows = per_pix.any(0).any(1).nonzero().flatten().tolist()
    cols = per_pix.any(0).any(0).nonzero().flatten().tolist()
    return f"bad elems {int(bad.sum())}/{bad.numel()} bad pixels border {nb} interior {ni}; channels {per_c[:12]}{'...' if len(per_c) > 12 else ''} ({len(per_c)}); rows {rows[:16]} cols {cols[:16]}"


def conv_case(tag, B, Cc, H, dtype, patch=None, record=False, precision=None, cfg=None):
    global PATCH, RECORD
    gen = torch.Generator(device=dev).manual_seed(1)
    x = torch.randn(B, Cc, H, H, generator=gen, device=dev)
    w = torch.randn(Cc, Cc, 3, 3, generator=gen, device=dev) / math.sqrt(Cc * 9)
    b = 0.1 * torch.randn(Cc, generator=gen, device=dev)
    g = torch.randn(B, Cc, H, H, generator=gen, device=dev)
    xd, wd, bd = (t.double().requires_grad_() for t in (x, w, b))
    yr = ref_conv(xd, wd, bd, 1e-5)
    rdx, rdw, rdb = torch.autograd.grad(yr, (xd, wd, bd), g.to(dtype).double())
    xs, ws, bs = (t.to(dtype).requires_grad_() for t in (x, w, b))
    PATCH = patch or {}
    RECORD = [] if record else None
    try:
        ctx = forced_config("conv2d", "bwd", cfg) if cfg else contextlib.nullcontext()
        with ctx:
            y = C.yat_conv2d(xs, ws, bs, 1, 1, precision=precision)
            dx, dw, db = torch.autograd.grad(y, (xs, ws, bs), g.to(dtype))
        torch.cuda.synchronize()
        print(
            f"[conv {tag}] {dtype} B{B} C{Cc} H{H}: y {rel(y, yr):.3g} dx {rel(dx, rdx):.3g} dw {rel(dw, rdw):.3g} db {rel(db, rdb):.3g}",
            flush=True,
        )
        print(f"   dx {pattern(dx, rdx)}", flush=True)
        if record:
            torch.save(
                dict(
                    x=x.cpu(),
                    w=w.cpu(),
                    b=b.cpu(),
                    g=g.cpu(),
                    dtype=str(dtype),
                    y=y.detach().cpu(),
                    dx=dx.cpu(),
                    dw=dw.cpu(),
                    db=db.cpu(),
                    rdx=rdx.cpu(),
                    rdw=rdw.cpu(),
                    calls=RECORD,
                ),
                f"{OUT}/conv_{tag}.pt",
            )
    except Exception as e:
        print(f"[conv {tag}] FAILED: {type(e).__name__}: {str(e)[:600]}", flush=True)
    PATCH = {}
    RECORD = None


def dense_case(tag, M, N, K, cfg, patch=None, dtype=torch.bfloat16):
    global PATCH
    gen = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(M, K, generator=gen, device=dev) / math.sqrt(K)
    w = torch.randn(N, K, generator=gen, device=dev) / math.sqrt(K)
    b = 0.1 * torch.randn(N, generator=gen, device=dev)
    xd, wd, bd = x.to(dtype).double(), w.to(dtype).double(), b.to(dtype).double()
    s = xd @ wd.t()
    u = s + bd
    nx = (xd * xd).sum(1, keepdim=True)
    nw = (wd * wd).sum(1)[None]
    yr = u * u / ((nx + nw - 2 * s).clamp(min=0) + 1e-5)
    PATCH = patch or {}
    try:
        with torch.no_grad(), forced_config("dense", "fwd", cfg):
            y = D.yat_linear(x.to(dtype), w.to(dtype), b.to(dtype))
        torch.cuda.synchronize()
        e = (y.double() - yr).abs() / yr.abs().max()
        badr = (e > 0.03).any(1).nonzero().flatten()
        badc = (e > 0.03).any(0).nonzero().flatten()
        print(
            f"[dense {tag}] {cfg.name if hasattr(cfg, 'name') else cfg} M{M} N{N} K{K}: y {e.max().item():.3g} bad rows {len(badr)} {badr[:10].tolist()} bad cols {len(badc)} {badc[:10].tolist()}",
            flush=True,
        )
    except Exception as e:
        print(f"[dense {tag}] FAILED: {type(e).__name__}: {str(e)[:600]}", flush=True)
    PATCH = {}


part = sys.argv[1]
if part == "conv":
    DG = "yat_conv_dgrad_kernel"
    conv_case("base", 2, 64, 12, torch.bfloat16, record=True)
    conv_case("fp32", 2, 64, 12, torch.float32, precision="ieee", record=True)
    if QUICK:
        sys.exit(0)
    conv_case("nonear", 2, 64, 12, torch.bfloat16, patch={"yat_conv_bwd_near_kernel": "skip"})
    conv_case("nofastdiv", 2, 64, 12, torch.bfloat16, patch={DG: dict(FAST_DIV=False)})
    conv_case("stages1", 2, 64, 12, torch.bfloat16, patch={DG: dict(num_stages=1)})
    conv_case("upcast", 2, 64, 12, torch.bfloat16, patch={DG: dict(UPCAST=True)})
    conv_case("notunit", 2, 64, 12, torch.bfloat16, patch={DG: dict(UNIT_STRIDE=False)})
    conv_case("noevenk", 2, 64, 12, torch.bfloat16, patch={DG: dict(EVEN_K=False)})
    conv_case("big", 8, 64, 56, torch.bfloat16)
    conv_case("big-fp32", 8, 64, 56, torch.float32, precision="ieee")
elif part == "nil":
    for cfg in (
        TileConfig(128, 128, 64, 8, 8, 4, norms_in_loop=True),
        TileConfig(64, 64, 64, 8, 4, 4, norms_in_loop=True),
        TileConfig(128, 128, 64, 8, 8, 4),
    ):
        dense_case("base", *((128, 128, 128) if QUICK else (512, 512, 1024)), cfg)
    if QUICK:
        sys.exit(0)
    cfg = TileConfig(128, 128, 64, 8, 8, 4, norms_in_loop=True)
    dense_case("stages1", 512, 512, 1024, cfg, patch={"yat_dense_fwd_kernel": dict(num_stages=1)})
    dense_case("upcast", 512, 512, 1024, cfg, patch={"yat_dense_fwd_kernel": dict(UPCAST=True)})
    dense_case("fp32", 512, 512, 1024, cfg, dtype=torch.float32)
    dense_case("fp16", 512, 512, 1024, cfg, dtype=torch.float16)
    gen = torch.Generator(device=dev).manual_seed(3)
    x = torch.randn(8, 64, 56, 56, generator=gen, device=dev)
    w = torch.randn(64, 64, 3, 3, generator=gen, device=dev) / 24
    b = 0.1 * torch.randn(64, generator=gen, device=dev)
    yr = ref_conv(x.bfloat16().double(), w.bfloat16().double(), b.bfloat16().double(), 1e-5)
    for cfg in (TileConfig(128, 64, 64, 8, 8, 4, norms_in_loop=True), TileConfig(128, 64, 64, 8, 8, 4)):
        try:
            with torch.no_grad(), forced_config("conv2d", "fwd", cfg):
                y = C.yat_conv2d(x.bfloat16(), w.bfloat16(), b.bfloat16(), 1, 1)
            print(f"[conv fwd] {cfg.name}: y {rel(y, yr):.3g}", flush=True)
        except Exception as e:
            print(f"[conv fwd] {cfg.name} FAILED: {type(e).__name__}: {str(e)[:600]}", flush=True)
print(f"part {part} done in {time.time() - T0:.1f} s", flush=True)
