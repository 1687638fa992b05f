"""Render the results database as a performance report: one folder per GPU model.

    render_report("results.db", "reports")  # reports/nvidia_h200/README.md + PNGs, reports/README.md

Everything shown is read from the database (SPEC.md sections 5-6): the machine header, the
section 6 targets where the rows can decide them, the best correct `yat_triton` row per
problem against every baseline present (a line per problem, a table per op), the failed,
wrong and pruned configs, and the plots.
Problem sizes in GFLOP come from the rows themselves (TFLOP/s x median ms), so the report
counts flops exactly as the sweep did. A database measured without a GPU renders too, but
every page of it opens with a NOT REPRESENTATIVE banner.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from tabulate import tabulate

from autotune.db import FWD_NOTE, MODES, Result, ResultsDB, Run
from kernels._common import TileConfig

OURS = "yat_triton"
BASELINES = ("linear+relu", "addmm_relu", "conv+relu", "eager_ref", "compiled_ref", "nmn")
STANDARD = {"dense": "linear+relu", "conv2d": "conv+relu"}  # the layer a ⵟ-layer replaces
FAILED = ("wrong", "compile_error", "out_of_resources", "error")
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
BANNER = "> **NOT REPRESENTATIVE: measured without a GPU (Triton interpreter).** Timings below say nothing about kernel speed."  # noqa: E501

Problem = tuple[str, str, str, str]  # op, mode, dtype, shape (JSON)
INDEX_TITLE = "# Performance reports"


def slug(gpu: str) -> str:
    """The folder name of a GPU model: "NVIDIA H200" -> "nvidia_h200". The rule of
    `yat_triton.tuning.gpu_slug` (winners files), repeated here so that rendering a report
    does not import torch."""
    return re.sub(r"[^a-z0-9]+", "_", gpu.lower()).strip("_") or "unknown"


def check_output_folder(out: Path, purpose: str) -> None:
    """ValueError unless `out` is a folder, or can be made as one, to write into: checked
    before anything is written ("{out}: a file, not a folder {purpose}")."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "a file" if existing == out else f"under the file {existing}"
        raise ValueError(f"{out}: {what}, not a folder {purpose}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{out}: {existing} is not writable, not a folder {purpose}")


def check_folders(gpus: Iterable[str], out: Path) -> None:
    """ValueError where GPU names would share a report folder (and a winners file): two of
    `gpus` with one slug, or one whose folder under `out` already holds another GPU's report."""
    by_slug: dict[str, set[str]] = {}
    for gpu in gpus:
        by_slug.setdefault(slug(gpu), set()).add(gpu)
    for name, names in sorted(by_slug.items()):
        readme = out / name / "README.md"
        if readme.is_file():
            title = re.search(r"^# Performance report: (.*)$", readme.read_text(errors="replace"), re.M)
            if title and title.group(1) not in names:
                names = names | {title.group(1)}
        if len(names) > 1:
            raise ValueError(
                f"GPU names {sorted(names)} share the report folder {out / name} and winners file "
                f"{name}.json; rename one (its rows' gpu) before rendering: nothing written"
            )


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _tf(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _table(rows: list[list[object]], headers: list[str], empty: str = "None.") -> str:
    """A GitHub markdown table of already formatted cells (no re-parsing of numbers)."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) if rows else empty


def _gflop(r: Result) -> float | None:
    """The problem's GFLOP as the sweep counted it: TFLOP/s * ms = 1e12 * 1e-3 flop = GFLOP."""
    if r.tflops is None or r.median_ms is None:
        return None
    return r.tflops * r.median_ms


def _size(r: Result) -> float:
    """A row's problem size for ordering when it has no time: the product of its dims."""
    return float(math.prod(v for v in json.loads(r.shape).values() if v))


def _shape_label(shape: str) -> str:
    dims = json.loads(shape)
    if set(dims) == {"M", "N", "K"}:
        return f"{dims['M']}x{dims['N']}x{dims['K']}"
    return ",".join(f"{k}={v}" for k, v in dims.items())


def _bytes_moved(op: str, shape: str, dtype: str) -> int:
    """Forward-pass compulsory traffic: inputs, weights, bias and output, read or written once."""
    d = json.loads(shape)
    e = DTYPE_BYTES.get(dtype, 4)
    if op == "dense":
        return e * (d["M"] * d["K"] + d["N"] * d["K"] + d["N"] + d["M"] * d["N"])
    oh = (d["H"] + 2 * d["padding"] - d["k"]) // d["stride"] + 1
    ow = (d["W"] + 2 * d["padding"] - d["k"]) // d["stride"] + 1
    return e * (
        d["B"] * d["C_in"] * d["H"] * d["W"]
        + d["C_out"] * d["C_in"] * d["k"] ** 2
        + d["C_out"]
        + d["B"] * d["C_out"] * oh * ow
    )


def _plt():  # noqa: ANN202 - matplotlib.pyplot, imported late so the Agg backend is set first
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _side_by_side(ours: Result | None) -> Callable[[Result], tuple[float, float, str]]:
    """The sort key that picks a baseline row for the best yat_triton row `ours`: nearest in
    time, then fastest; without `ours`, the newest."""

    def key(r: Result) -> tuple[float, float, str]:
        when = abs(r.created - ours.created) if ours else -r.created
        return when, r.median_ms or 0.0, r.config

    return key


def _outcome(r: Result) -> str:
    """How a row that ran ended: "ok" (timed and correct), "wrong", "unchecked" (timed, no
    check recorded) or "failed" (compile error, out of resources, error)."""
    if r.status == "wrong" or (r.status == "ok" and r.correct is False):
        return "wrong"
    if r.status == "ok":  # timed: a median (an older file may hold an ok row without one)
        return "ok" if r.correct and r.median_ms is not None else "unchecked"
    return "failed"


class Gpu:
    """The rows of one GPU model and the views of them the report needs."""

    def __init__(self, gpu: str, rows: list[Result], runs: list[Run] | None = None) -> None:
        self.gpu, self.rows, self.runs = gpu, rows, runs or []
        self.representative = all(r.representative for r in rows)
        # SPEC section 6 sets its targets for the H200: judged on that GPU only
        self.judged = self.representative and re.search(r"\bH200\b", gpu.upper()) is not None  # not a GH200
        self.ok = [r for r in rows if r.status == "ok" and r.median_ms is not None]
        self.best: dict[Problem, Result] = {}
        for r in sorted(self.ok, key=lambda r: (r.median_ms, r.config)):
            if r.provider == OURS and r.correct:
                self.best.setdefault((r.op, r.mode, r.dtype, r.shape), r)
        # per problem, the yat_triton tiles the sweep's search ran (pruned ones never ran), and
        # how they ended
        self.outcomes: dict[Problem, Counter[str]] = {}
        for r in rows:
            if r.provider == OURS and r.status != "pruned":
                p = (r.op, r.mode, r.dtype, r.shape)
                self.outcomes.setdefault(p, Counter())[_outcome(r)] += 1
        self.tried = {p: sum(c.values()) for p, c in self.outcomes.items()}
        # Per problem and baseline, the row measured side by side with the best yat_triton row
        # (nearest in time: the sweep times a problem's tiles and baselines in one task), so a
        # later rerun with other settings (TF32, compile mode) does not swap in its rows; the
        # fastest among equals; without a yat_triton row, the newest.
        candidates: dict[tuple[Problem, str], list[Result]] = {}
        for r in self.ok:
            if r.provider != OURS and r.correct is not False:
                candidates.setdefault(((r.op, r.mode, r.dtype, r.shape), r.provider), []).append(r)
        self.baseline: dict[tuple[Problem, str], Result] = {}
        for (p, provider), found in candidates.items():
            self.baseline[(p, provider)] = min(found, key=_side_by_side(self.best.get(p)))
        # every problem with a row that ran (pruned tiles never did): the summary's lines
        self.problems = {(r.op, r.mode, r.dtype, r.shape) for r in rows if r.status != "pruned"}

    def speedup(self, p: Problem, provider: str) -> float | None:
        base, ours = self.baseline.get((p, provider)), self.best.get(p)
        if base is None or ours is None or not ours.median_ms:
            return None
        return base.median_ms / ours.median_ms

    def failed_tiles(self, p: Problem) -> str:
        """How a problem's tiles that ran ended, where none was correct: "18 wrong, 1 failed"."""
        c = self.outcomes.get(p, Counter())
        return ", ".join(f"{c[k]} {k}" for k in ("wrong", "failed", "unchecked") if c[k]) or "none ran"

    def no_best(self, p: Problem) -> str:
        """Why a problem has no best yat_triton row: "not measured" (no tile ran: a capped
        sweep times the baselines first) or "none correct (18 wrong, 1 failed)"."""
        return f"none correct ({self.failed_tiles(p)})" if p in self.outcomes else "not measured"


def _shape_order(shape: str) -> list[int]:
    """A shape's sizes in its own order (dense M, N, K; conv B, C_in, H, W, ...), for sorting."""
    return list(json.loads(shape).values())


def sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """By op, mode (fwd, bwd, fwd+bwd), dtype and shape (its sizes in the shape's order)."""
    order = {m: i for i, m in enumerate(MODES)}
    return sorted(problems, key=lambda p: (p[0], order.get(p[1], len(order)), p[1], p[2], _shape_order(p[3])))


def cuda_of(torch_version: str) -> str:
    """The CUDA a torch build names in its local version: "2.11.0+cu130" -> "13.0 (torch's
    build)", a CPU build ("+cpu") -> "none (CPU build)", anything else -> "-" (not said)."""
    m = re.search(r"\+cu(\d+)(\d)$", torch_version)
    if m:
        return f"{m[1]}.{m[2]} (torch's build)"
    return "none (CPU build)" if torch_version.endswith("+cpu") else "-"


def _header(g: Gpu, bandwidth: tuple[float, str] | None = None) -> str:
    def values(name: str) -> str:
        return ", ".join(sorted({str(getattr(r, name)) or "-" for r in g.rows}))

    span = (min(r.created for r in g.rows), max(r.created for r in g.rows))
    fmt = "%Y-%m-%d %H:%M UTC"
    table = [
        ["GPU", g.gpu],
        ["driver", values("driver")],
        ["CUDA", ", ".join(sorted({cuda_of(r.torch) for r in g.rows}))],
        ["torch", values("torch")],
        ["Triton", values("triton")],
        ["project commit(s)", values("commit")],
        ["rows measured", " to ".join(dict.fromkeys(time.strftime(fmt, time.gmtime(t)) for t in span))],
        ["yat_triton tiles", _row_counts([r for r in g.rows if r.provider == OURS], ours=True)],
        ["baseline rows", _row_counts([r for r in g.rows if r.provider != OURS], ours=False)],
        ["timing (rows)", _timing_summary(g)],
        *([["memory bandwidth", bandwidth[1]]] if bandwidth else []),
        ["representative", "yes" if g.representative else "NO (CPU, Triton interpreter)"],
    ]
    return _table(table, ["machine", ""])


def _row_counts(rows: list[Result], *, ours: bool) -> str:
    """How a provider group's rows ended: "94 correct, 2 wrong, 1 failed, 860 pruned (never
    ran: they cannot fit the GPU)"."""
    c = Counter("pruned" if r.status == "pruned" else _outcome(r) for r in rows)
    # the standard layers are not a ⵟ-layer: timed, never checked against its reference
    words = {"ok": "correct", "wrong": "wrong", "unchecked": "timed, unchecked" if ours else "timed",
             "failed": "failed"}  # fmt: skip
    said = [f"{c[k]} {w}" for k, w in words.items() if c[k]]
    if c["pruned"]:
        said.append(
            f"{c['pruned']} pruned (never ran: beyond the GPU's shared memory or registers, or spilling)"
        )  # noqa: E501
    return ", ".join(said) or "none"


def _timing_summary(g: Gpu) -> str:
    """How the ok rows were timed (autotune.timing), with the providers timed eagerly named:
    "40 as CUDA graph replays (do_bench), 2 as eager launches (do_bench: compiled_ref)"; "-"
    for files from before the column."""
    counts: dict[str, int] = {}
    eager: set[str] = set()
    for r in g.ok:
        if r.timing is not None:
            counts[r.timing] = counts.get(r.timing, 0) + 1
            if r.timing == "eager":
                eager.add(r.provider)
    words = {  # autotune.timing's methods
        "cuda-graph": "as CUDA graph replays (do_bench)",
        "eager": f"as eager launches (do_bench: {', '.join(sorted(eager))})",
        "wall": "by one wall-clock call (no GPU)",
    }
    return ", ".join(f"{counts[m]} {words.get(m, m)}" for m in sorted(counts)) or "-"


def config_label(config: str) -> str:
    """A config as a reader wants it: a tile by its short name (m128n128k64g8w8s4e4_tma:
    BLOCK_M/N/K, GROUP_M, warps, stages, epilogue slices, variant), "(default tiles)" for
    the op on its built-in defaults (the sweep's first backward row), other settings (the
    baselines' TF32 flags) as key=value."""
    if not config:
        return "(default tiles)"
    try:
        d = json.loads(config)
    except ValueError:
        return config
    if not isinstance(d, dict):
        return config
    try:
        return TileConfig(**d).name
    except TypeError:  # not a tile: the baselines' settings
        return " ".join(f"{k}={json.dumps(v)}" for k, v in d.items())


MIXED_TIMING = "†: the two rows were timed differently (`timing`: CUDA graph against eager)."


def speedup_label(x: float) -> str:
    """A speedup as the tables print it: two decimals, two significant digits below 0.01
    (an interpreted kernel against a compiled baseline)."""
    return f"{x:.2f}x" if x >= 0.01 else f"{x:.2g}x"


def _marks(ours: Result | None, base: Result | None) -> str:
    """The marks of a comparison: † timed differently, ‡ measured by different software."""
    return (" †" if _mixed(ours, base) else "") + (" ‡" if _mixed_software(ours, base) else "")


def _mark_notes(marks: Iterable[str]) -> str:
    """The footnotes of the marks used ("" for none)."""
    used = "".join(marks)
    notes = [note for mark, note in (("†", MIXED_TIMING), ("‡", MIXED_SOFTWARE)) if mark in used]
    return "".join("\n\n" + n for n in notes)


def _tile_cell(ours: Result | None) -> str:
    """The summary's tile of a best row; a backward mode's with the forward tile it ran on
    where its reason names one (`FWD_NOTE`)."""
    if ours is None:
        return "-"
    fwd = next(
        (n.removeprefix(FWD_NOTE) for n in (ours.reason or "").split("; ") if n.startswith(FWD_NOTE)), ""
    )
    return config_label(ours.config) + (f" (forward {fwd})" if fwd else "")


def _summary(g: Gpu) -> str:
    """Per op, one line per problem: the best correct yat_triton row (time, TFLOP/s, tile,
    tiles tried), then a column per baseline of the op, its speedup and time; below, the
    full table (every baseline's time and TFLOP/s, a line each), folded. A problem without
    a correct yat_triton row keeps its line, saying why, with the baselines' times."""
    if not g.problems:
        return "_Nothing measured: every row was pruned._"
    parts, marks = [], []
    for op in sorted({p[0] for p in g.problems}):
        problems = sorted_problems(p for p in g.problems if p[0] == op)
        present = [b for b in BASELINES if any((p, b) in g.baseline for p in problems)]
        table = []
        for p in problems:
            ours, cells = g.best.get(p), []
            for b in present:
                base, sp = g.baseline.get((p, b)), g.speedup(p, b)
                if base is None:
                    cells.append("-")
                elif sp is None:
                    cells.append(f"- ({_ms(base.median_ms)} ms)")
                else:
                    marks.append(_marks(ours, base))
                    cells.append(f"{speedup_label(sp)}{marks[-1]} ({_ms(base.median_ms)} ms)")
            table.append([
                *p[1:3], _shape_label(p[3]), _ms(ours.median_ms) if ours else g.no_best(p),
                _tf(ours.tflops if ours else None), *cells, _tile_cell(ours), g.tried.get(p, 0),
            ])  # fmt: skip
        headers = ["mode", "dtype", "shape", "yat_triton ms", "TFLOP/s", *(f"vs {b}" for b in present),
                   "yat_triton config", "tiles tried"]  # fmt: skip
        parts += [f"### {op}", "", _table(table, headers), ""]
    parts += [
        "<details><summary>Every baseline's time and TFLOP/s, a line each</summary>", "",
        _long_summary(g), "", "</details>",
    ]  # fmt: skip
    tf32 = _tf32_note(g)
    return "\n".join(parts) + _mark_notes(marks) + (f"\n\n{tf32}" if tf32 else "")


def _long_summary(g: Gpu) -> str:
    table = []
    for p in sorted_problems(g.problems):
        ours = g.best.get(p)
        for b in [b for b in BASELINES if (p, b) in g.baseline] or [None]:
            base = g.baseline.get((p, b)) if b else None
            sp = g.speedup(p, b) if b else None
            table.append([
                *p[:3], _shape_label(p[3]), _ms(ours.median_ms) if ours else g.no_best(p),
                _tf(ours.tflops if ours else None), b or "-", _ms(base.median_ms if base else None),
                _tf(base.tflops if base else None),
                "-" if sp is None else f"{speedup_label(sp)}{_marks(ours, base)}",
            ])  # fmt: skip
    headers = ["op", "mode", "dtype", "shape", "yat_triton ms", "yat_triton TFLOP/s", "baseline",
               "baseline ms", "baseline TFLOP/s", "speedup"]  # fmt: skip
    return _table(table, headers)


def _tf32_note(g: Gpu) -> str:
    """SPEC section 5: the TF32 settings of the float32 rows compared, stated (the sweep
    records them as each baseline row's config; yat_triton's float32 kernels, measured side
    by side, follow the matmul one). None for rows measured without a GPU (no TF32 there)."""
    settings = set()
    for r in g.baseline.values():
        if g.representative and r.dtype == "float32" and r.config:
            cfg = json.loads(r.config)
            if "matmul_tf32" in cfg:
                settings.add((bool(cfg["matmul_tf32"]), bool(cfg.get("cudnn_tf32", cfg["matmul_tf32"]))))
    if not settings:
        return ""
    said = "; ".join(
        f"matmul TF32 {'on' if mm else 'off'} (cuBLAS, and yat_triton's float32 kernels: "
        f"{'tf32' if mm else 'ieee'}), cuDNN TF32 {'on' if dnn else 'off'}"
        for mm, dnn in sorted(settings)
    )
    return f"float32 rows ran with {said}."


def _square_4096(p: Problem) -> bool:
    d = json.loads(p[3])
    return set(d) == {"M", "N", "K"} and d["M"] == d["N"] == d["K"] >= 4096


# ResNet-50's 3x3 convolutions (C_in = C_out channels, input size, stride), any batch:
# stride 1 in every stage, and the stride-2 first convolution of stages 2-4 (v1.5).
RESNET50_3X3 = {
    (64, 56, 1),
    (128, 28, 1),
    (256, 14, 1),
    (512, 7, 1),
    (128, 56, 2),
    (256, 28, 2),
    (512, 14, 2),
}


def _resnet50_3x3(p: Problem) -> bool:
    d = json.loads(p[3])
    return (
        d.get("k") == 3 and d.get("padding") == 1 and d.get("C_in") == d.get("C_out")
        and d.get("H") == d.get("W") and (d.get("C_in"), d.get("H"), d.get("stride")) in RESNET50_3X3
    )  # fmt: skip


# (what, op or None for any, mode, baseline, problem filter, "time" ratio <= limit or "speedup" >= limit)
TARGETS = (
    ("ⵟ-dense fwd, bf16, M=N=K >= 4096", "dense", "fwd", "linear+relu", _square_4096, "time", 1.00),
    ("ⵟ-dense fwd+bwd, bf16, M=N=K >= 4096", "dense", "fwd+bwd", "linear+relu", _square_4096, "time", 1.10),
    ("ⵟ-conv2d fwd, bf16, ResNet-50 3x3", "conv2d", "fwd", "conv+relu", _resnet50_3x3, "time", 1.10),
    ("ⵟ-conv2d fwd+bwd, bf16, ResNet-50 3x3", "conv2d", "fwd+bwd", "conv+relu", _resnet50_3x3, "time", 1.30),
    ("against eager_ref, fwd+bwd, bf16", None, "fwd+bwd", "eager_ref", lambda p: True, "speedup", 10.0),
    ("against compiled_ref, fwd+bwd, bf16", None, "fwd+bwd", "compiled_ref", lambda p: True, "speedup", 1.2),
)


MIXED_SOFTWARE = (
    "‡: the two rows come from different project commits, torch, Triton or driver versions "
    "(SPEC section 6 asks for both measured side by side in one run)."
)
NOT_JUDGED = "not judged (not representative)"
NOT_JUDGED_GPU = "not judged (timed targets are set for the H200)"


def _mixed(a: Result | None, b: Result | None) -> bool:
    """Whether two rows were timed differently (one from a CUDA graph, one eagerly)."""
    return bool(a and b and a.timing and b.timing and a.timing != b.timing)


def _mixed_software(a: Result | None, b: Result | None) -> bool:
    """Whether two rows were measured by different code (commit, torch, Triton, driver)."""
    fields = ("commit", "torch", "triton", "driver")
    return bool(a and b and any(getattr(a, f) != getattr(b, f) for f in fields))


def _verdict(g: Gpu, met: bool, timed: bool = True) -> str:
    """A target line's status: met or not met, where the rows can judge it (a timing: on an
    H200, SPEC section 6's GPU; anything else: on a GPU)."""
    if not g.representative:
        return NOT_JUDGED
    if timed and not g.judged:
        return NOT_JUDGED_GPU
    return "met" if met else "not met"


def _ratio(x: float) -> str:
    """A ratio as the targets table judges it: three decimals, two significant digits below
    0.01 (an interpreted kernel against a compiled baseline)."""
    return f"{x:.3f}x" if x >= 0.01 else f"{x:.2g}x"


def _judged(x: float) -> float:
    """A ratio at the precision the targets table shows it (`_ratio`), the value judged."""
    return float(_ratio(x)[:-1])


def _targets(g: Gpu) -> tuple[str, list[tuple[str, str]]]:
    """The SPEC section 6 table, and (target, status) per line in order. Every problem a
    target names that the database holds a row of gets a line: "not met" where no
    yat_triton row is correct, "n/a" where yat_triton or the baseline was not measured, and
    "not judged" for rows measured without a GPU, or timings on a GPU other than the H200.
    A ratio is judged at the precision shown; one between rows timed differently
    (MIXED_TIMING) or measured by different software (MIXED_SOFTWARE) is marked."""
    table, statuses, marks = [], [], []
    for what, op, mode, baseline, keep, kind, limit in TARGETS:
        want = f"time <= {limit:.2f}x {baseline}" if kind == "time" else f"speedup >= {limit:g}x"
        problems = sorted_problems({
            (r.op, r.mode, r.dtype, r.shape) for r in g.rows
            if r.mode == mode and r.dtype == "bfloat16" and (op is None or r.op == op)
            and r.status != "pruned" and keep((r.op, r.mode, r.dtype, r.shape))
        })  # fmt: skip
        if not problems:
            table.append([what, want, "-", "-", "n/a"])
            statuses.append((what, "n/a"))
        for p in problems:
            label = f"{p[0]} {_shape_label(p[3])}"
            ours, base = g.best.get(p), g.baseline.get((p, baseline))
            if ours is None and p not in g.tried:  # only baselines (and pruned tiles) so far: a capped sweep
                measured, status = "yat_triton not measured", "n/a"
            elif ours is None:
                measured, status = f"no correct yat_triton row ({g.failed_tiles(p)})", _verdict(g, False)
            elif base is None:
                measured, status = f"no {baseline} row", "n/a"
            else:
                sp = base.median_ms / ours.median_ms
                shown = _ratio(1 / sp if kind == "time" else sp)
                value = _judged(1 / sp if kind == "time" else sp)
                marks.append(_marks(ours, base))
                measured = f"{kind} {shown}{marks[-1]}"
                status = _verdict(g, value <= limit if kind == "time" else value >= limit)
            table.append([what, want, label, measured, status])
            statuses.append((what, status))
    for row in _memory_targets(g) + _sweep_target(g):
        table.append(row)
        statuses.append((row[0], row[-1]))
    reach, reach_marks = _reach_notes(g)
    headers = ["target (SPEC section 6)", "threshold", "problem", "measured", "status"]
    return _table(table, headers) + reach + _mark_notes(marks + reach_marks), statuses


def _reach_notes(g: Gpu) -> tuple[str, list[str]]:
    """Below the targets (where the table judges timings): each speedup target not met on a
    problem whose standard layer itself is not the target's factor faster than the same
    reference, with what meeting it would take, `limit` times faster than the reference
    being faster than the standard layer (a reference 5x slower than conv+relu: 10x
    faster than it needs half conv+relu's time), where the time targets allow the ⵟ-layer
    more than the standard layer's time. Ratios at the precision shown, marked as the
    table's are (`_marks`); returns the text and its marks."""
    if not (g.representative and g.judged):
        return "", []
    lines, marks = [], []
    for what, _, mode, baseline, keep, kind, limit in TARGETS:
        if kind != "speedup":
            continue
        problems = {k for k, _ in g.baseline if k[1] == mode and k[2] == "bfloat16" and keep(k)}
        for p in sorted_problems(problems):
            ref, std = g.baseline.get((p, baseline)), g.baseline.get((p, STANDARD.get(p[0], "")))
            ours = g.best.get(p)
            if ref is None or std is None or not std.median_ms:
                continue
            if ours is not None and _judged(ref.median_ms / ours.median_ms) >= limit:
                continue  # met
            ratio = float(f"{ref.median_ms / std.median_ms:.1f}")
            need = float(f"{ratio / limit:.2f}")
            if need >= 1.0:
                continue
            marks.append(_marks(ref, std))
            lines.append(
                f"- {what}, {p[0]} {_shape_label(p[3])}: {baseline} takes {_ms(ref.median_ms)} ms, "
                f"{ratio:.1f}x {std.provider}'s {_ms(std.median_ms)} ms{marks[-1]}: "
                f"{limit:g}x faster than {baseline} needs {need:.2f}x {std.provider}'s time"
            )
    if not lines:
        return "", []
    head = "Out of reach unless the ⵟ-layer beats the layer it replaces (measured baselines):"
    return "\n\n" + head + "\n\n" + "\n".join(lines), marks


TALLY = re.compile(r"^\*\*(.+?)\*\* \(of \d+ (?:lines|targets[^)]*)\)$", re.M)  # _tally's line, for the index


def _tally(statuses: list[tuple[str, str]]) -> str:
    """The targets counted by status, in one bold line: met, not met, then the rest. A
    target over several problems is not met if one of them is not, met if every other one
    is met or n/a (not measured), else the status its lines share or the first other one;
    a target met on part of its problems is named below, with how many."""
    per_target: dict[str, list[str]] = {}
    for what, status in statuses:
        per_target.setdefault(what, []).append(status)
    verdicts, partly = [], []
    for what, lines in per_target.items():
        if "not met" in lines:
            verdicts.append("not met")
        elif "met" in lines and all(s in ("met", "n/a") for s in lines):
            verdicts.append("met")
            if "n/a" in lines:
                partly.append(f"{what} ({lines.count('met')} of {len(lines)})")
        else:
            verdicts.append(next((s for s in lines if s not in ("met", "n/a")), "n/a"))
    counts = Counter(verdicts)
    order = sorted(counts, key=lambda s: (s != "met", s != "not met", s))
    tally = (
        "**" + ", ".join(f"{counts[s]} {s}" for s in order)
        + f"** (of {len(per_target)} targets, {len(statuses)} lines)"
    )  # fmt: skip
    if partly:
        tally += "\n\nMet where measured, the other problems n/a: " + "; ".join(partly) + "."
    return tally


def _out_numel(op: str, shape: str) -> int:
    d = json.loads(shape)
    if op == "dense":
        return d["M"] * d["N"]
    oh = (d["H"] + 2 * d["padding"] - d["k"]) // d["stride"] + 1
    ow = (d["W"] + 2 * d["padding"] - d["k"]) // d["stride"] + 1
    return d["B"] * d["C_out"] * oh * ow


def _memory_targets(g: Gpu) -> list[list[str]]:
    """Output-sized tensors the ⵟ op (its default tiles) saves for backward beyond what the
    standard layer saves, per bf16 backward problem, from the sweep's saved_bytes."""
    what, want = "memory saved for backward", "<= 1 extra output-sized tensor"
    saved: dict[tuple[Problem, str], float] = {}
    for r in g.ok:
        if r.saved_bytes is not None and r.dtype == "bfloat16" and (r.provider != OURS or r.config == ""):
            saved[((r.op, r.mode, r.dtype, r.shape), r.provider)] = r.saved_bytes
    rows = []
    for p in sorted_problems({p for p, prov in saved if prov == OURS}):
        base = saved.get((p, STANDARD[p[0]]))
        out_bytes = _out_numel(p[0], p[3]) * DTYPE_BYTES[p[2]]
        if base is None or out_bytes == 0:  # an empty output saves nothing to count in
            continue
        extra = round((saved[(p, OURS)] - base) / out_bytes, 3)
        label = f"{p[0]} {p[1]} {_shape_label(p[3])}"
        status = _verdict(g, extra <= 1.0, timed=False)
        rows.append([what, want, label, f"{extra:.3f} beyond {STANDARD[p[0]]}", status])
    return rows or [[what, want, "-", "-", "n/a"]]


def _options(args: str) -> dict[str, set[str]]:
    """A run's recorded options ("ops=dense,conv2d modes=fwd ..."), each as its set of values;
    a run recorded before the search was (`search=`) timed every tile."""
    options = {k: set(v.split(",")) for k, _, v in (token.partition("=") for token in args.split())}
    options.setdefault("search", {"exhaustive"})
    return options


def _whole_suite(run: Run) -> bool:
    """A run over the whole core suite: both ops, not a shard of it."""
    options = _options(run.args)
    return {"dense", "conv2d"} <= options.get("ops", set()) and "shard" not in options


# A full sweep (SPEC section 6) as `sweep` records its options: every mode, the default
# dtypes, the tiles of either search (`autotune.search`: the guided default, or every tile)
# uncapped, compiled_ref compiled in max-autotune, warp-specialized tiles included
FULL_SWEEP = {
    "ops": {"dense", "conv2d"},
    "modes": {"fwd", "bwd", "fwd+bwd"},
    "dtypes": {"bfloat16", "float32"},
    "max_configs": {"None"},
    "compile_mode": {"max-autotune"},
}
FULL_SEARCHES = ({"guided"}, {"exhaustive"})


def _full_options(args: str) -> bool:
    """Whether a run's options make it a full sweep (FULL_SWEEP and one of FULL_SEARCHES, no
    more and no fewer; runs recorded before compile_mode was are not full). gpu.sh's
    time-capped sweep restricts them (bf16, two modes, a dozen tiles a problem, compile mode
    default); so does a failed warp-specialization canary (warp_specialize=off)."""
    options = _options(args)
    search = options.pop("search")
    return options == FULL_SWEEP and search in FULL_SEARCHES


def _restrictions(args: str) -> str:
    """The options of a run that make it less than a full sweep, as key=value."""
    options = _options(args)
    if options["search"] in FULL_SEARCHES:
        del options["search"]
    keys = sorted(set(options) | set(FULL_SWEEP))
    return (
        " ".join(
            f"{k}={','.join(sorted(options.get(k, {'-'})))}"
            for k in keys
            if options.get(k) != FULL_SWEEP.get(k)
        )
        or "-"
    )


def _sweep_target(g: Gpu) -> list[list[str]]:
    """Wall time of the core suite, compile included, from the newest campaign of `sweep
    --suite core` runs on this GPU with full options (else the newest with any options):
    runs with the same options, each resuming the one before, added up to the one that
    finished every task (a rerun that found nothing left to do does not count). Shards and
    single-op runs are not the whole suite. Met only by a complete full sweep; a restricted
    or incomplete one is judged only where it already took longer than the target."""
    what, want = "core suite sweep, compile included", "<= 5 min (300 s)"
    campaigns: list[list[Run]] = []
    for run in sorted((r for r in g.runs if r.suite == "core" and _whole_suite(r)), key=lambda r: r.started):
        current = campaigns[-1] if campaigns else None
        complete = bool(current) and current[-1].tasks_done == current[-1].tasks_total
        if current and not complete and _options(current[-1].args) == _options(run.args):
            current.append(run)
        elif run.rows_added > 0 or run.tasks_done < run.tasks_total:
            campaigns.append([run])
    if not campaigns:
        return [[what, want, "-", "-", "n/a"]]
    full = [c for c in campaigns if _full_options(c[-1].args)]
    runs = (full or campaigns)[-1]
    total, last = sum(r.seconds for r in runs), runs[-1]
    n_runs = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
    complete = last.tasks_done == last.tasks_total
    label = f"sweep --suite core ({n_runs}" + (
        "" if complete else f", {last.tasks_done} of {last.tasks_total} tasks done"
    )
    label += ")" if full else f"; restricted: {_restrictions(last.args)})"
    measured = f"{total:.0f} s" if complete else f"> {total:.0f} s (incomplete)"
    if not g.judged:
        status = _verdict(g, False)
    elif total > 300:
        status = "not met"  # whatever is left out, the sweep already took longer
    elif not complete:
        status = "not judged (incomplete)"
    elif not full:
        status = "not judged (restricted options)"
    else:
        status = "met"
    return [[what, want, label, measured, status]]


NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _failures(g: Gpu) -> str:
    """The rows that failed or were wrong, grouped by status and reason (how many configs,
    on how many problems), with every row in a folded list; the pruned tiles grouped by
    reason, with the count per problem folded."""
    order = {p: i for i, p in enumerate(sorted_problems({(r.op, r.mode, r.dtype, r.shape) for r in g.rows}))}

    def problem(r: Result) -> int:
        return order[(r.op, r.mode, r.dtype, r.shape)]

    failed = [r for r in g.rows if r.status in FAILED]
    failed.sort(key=lambda r: (problem(r), r.provider, r.config))
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in failed:  # reasons that differ only in their numbers (sizes, errors) go together
        groups.setdefault((r.status, NUMBER.sub("#", r.reason or "-")), []).append(r)
    gtable = [
        [status, rs[0].reason or "-" if len({r.reason for r in rs}) == 1 else f"{pattern} (# varies)",
         len(rs), len({problem(r) for r in rs}),
         ", ".join(sorted({r.provider for r in rs}, key=lambda p: (p != OURS, p)))]
        for (status, pattern), rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]  # fmt: skip
    table = [
        [r.op, r.mode, r.dtype, _shape_label(r.shape), r.provider, config_label(r.config), r.status,
         r.reason or "-"]
        for r in failed
    ]  # fmt: skip
    out = ["### Failed and wrong configs", ""]
    out.append(_table(gtable, ["status", "reason", "rows", "problems", "providers"]))
    if failed:
        out += ["", f"<details><summary>Every failed or wrong row ({len(failed)})</summary>", "",
                _table(table, ["op", "mode", "dtype", "shape", "provider", "config", "status", "reason"]),
                "", "</details>"]  # fmt: skip
    pruned = [r for r in g.rows if r.status == "pruned"]
    by_reason: dict[str, list[Result]] = {}
    for r in pruned:
        by_reason.setdefault(r.reason or "-", []).append(r)
    rtable = [[reason, len(rs), len({problem(r) for r in rs})]
              for reason, rs in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))]  # fmt: skip
    out += ["", "### Pruned configs (never run)", "", _table(rtable, ["reason", "tiles", "problems"])]
    per_problem = Counter((r.op, r.mode, r.dtype, r.shape) for r in pruned)
    if per_problem:
        ptable = [[*p[:3], _shape_label(p[3]), per_problem[p]] for p in sorted_problems(per_problem)]
        out += ["", "<details><summary>Pruned tiles per problem</summary>", "",
                _table(ptable, ["op", "mode", "dtype", "shape", "pruned"]), "", "</details>"]  # fmt: skip
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Plots


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # legends placed outside the axes included
    _plt().close(fig)
    return path


def _title(g: Gpu, what: str) -> str:
    return f"{what} - {g.gpu}" + ("" if g.representative else " (NOT REPRESENTATIVE)")


def _best_per_provider(g: Gpu) -> dict[tuple[str, Problem], Result]:
    """Per (provider, problem): the best correct yat_triton row or the baseline row."""
    out: dict[tuple[str, Problem], Result] = {(OURS, p): r for p, r in g.best.items()}
    out.update({(b, p): r for (p, b), r in g.baseline.items()})
    return out


# One colour per provider and one line style per dtype, in one panel per (op, mode): a
# series reads from its look alone, however many there are.
PROVIDER_COLORS = {
    OURS: "tab:red", "linear+relu": "tab:blue", "addmm_relu": "tab:cyan", "conv+relu": "tab:green",
    "eager_ref": "tab:gray", "compiled_ref": "tab:purple", "nmn": "tab:brown",
}  # fmt: skip
DTYPE_MARKERS = {"bfloat16": "o", "float16": "^", "float32": "s"}


PEAK_STYLES = {"bfloat16": "-.", "float16": (0, (5, 2, 1, 2, 1, 2)), "float32": ":"}


def _cublas_peaks(g: Gpu) -> dict[str, tuple[float, str]]:
    """Per dtype, the highest throughput cuBLAS reached in this database (the dense standard
    layers' forward rows), and what it was measured as: a compute roof per dtype."""
    peaks: dict[str, tuple[float, str]] = {}
    for r in g.ok:
        if r.op == "dense" and r.mode == "fwd" and r.provider in ("linear+relu", "addmm_relu") and r.tflops:
            if r.dtype not in peaks or r.tflops > peaks[r.dtype][0]:
                peaks[r.dtype] = (r.tflops, f"{r.provider} peak, {r.dtype}: {r.tflops:.4g} TFLOP/s")
    return dict(sorted(peaks.items(), key=lambda kv: -kv[1][0]))


def _peak_lines(ax, peaks: dict[str, tuple[float, str]]) -> None:  # noqa: ANN001 - a matplotlib Axes
    for dtype, (tflops, _) in peaks.items():
        ax.axhline(tflops, color="black", linewidth=1, linestyle=PEAK_STYLES.get(dtype, "--"))


def _plot_tflops(g: Gpu, path: Path) -> Path:
    """TFLOP/s (log scale: bf16 and fp32 differ tenfold) against problem size, one panel per
    (op, mode), a colour per provider and a marker per dtype, with each dtype's measured
    cuBLAS peak as a line. Points only: shapes of one size (ResNet-50's 3x3 layers, an MLP's
    up and down projections) share an x."""
    plt = _plt()
    series: dict[tuple[str, str, str, str], list[tuple[float, float]]] = {}
    for (prov, p), r in _best_per_provider(g).items():
        gf = _gflop(r)
        if gf and r.tflops:
            series.setdefault((p[0], p[1], prov, p[2]), []).append((gf, r.tflops))
    panels = sorted({k[:2] for k in series}, key=lambda k: (k[0], MODES.index(k[1])))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols + 2.5, 4.0 * rows), squeeze=False)
    peaks = _cublas_peaks(g)
    for ax, (op, mode) in zip(axes.flat, panels, strict=False):
        for (sop, smode, prov, dtype), pts in sorted(series.items()):
            if (sop, smode) == (op, mode):
                xs, ys = zip(*sorted(pts), strict=True)
                _points(ax, xs, ys, prov, dtype)
        _peak_lines(ax, peaks)
        _log_xlim(ax, [x for k, pts in series.items() if k[:2] == (op, mode) for x, _ in pts])
        _log_log_panel(ax, "problem size (GFLOP, log scale)", f"{op} {mode}")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles = _legend_handles([k[2] for k in series], [k[3] for k in series], peaks)
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle(_title(g, "Throughput per provider (best correct row per problem)"), fontsize=11)
    return _save(fig, path)


def _plot_label(shape: str) -> str:
    """A shape short enough for a plot's tick: MxN over xK, or a conv's batch, channels (in→out),
    size, kernel and every other setting (s: stride, p: padding, ...) by its initial."""
    dims = json.loads(shape)
    if set(dims) == {"M", "N", "K"}:
        return f"{dims['M']}x{dims['N']}\nx{dims['K']}"
    if not {"B", "C_in", "H", "W", "C_out", "k"} <= set(dims):
        return _shape_label(shape)
    rest = " ".join(f"{k[0]}{v}" for k, v in dims.items() if k not in {"B", "C_in", "H", "W", "C_out", "k"})
    return f"B{dims['B']} {dims['C_in']}→{dims['C_out']}\n{dims['H']}x{dims['W']} k{dims['k']} {rest}".strip()


def _target_speedup(op: str, mode: str) -> tuple[float, float, Callable[[Problem], bool]] | None:
    """The speedup over the standard layer that SPEC section 6 asks of (op, mode) in bf16
    (1 / its time ratio), the time ratio itself, and the problems it covers; None where it
    sets none."""
    for _, t_op, t_mode, baseline, keep, kind, limit in TARGETS:
        if (t_op, t_mode, baseline, kind) == (op, mode, STANDARD.get(op), "time"):
            return 1.0 / limit, limit, keep
    return None


def _speedups(g: Gpu) -> dict[Problem, float]:
    """Per problem, the speedup over its standard layer, where both were measured."""
    speedups = {p: g.speedup(p, STANDARD.get(p[0], "")) for p in sorted_problems(g.best)}
    return {p: sp for p, sp in speedups.items() if sp is not None}


def _target_slots(
    compared: dict[Problem, float], op: str, mode: str, shapes: list[str], keep: Callable[[Problem], bool]
) -> list[int]:
    """The positions (in `shapes`) of the bf16 bars a target covers: its shapes with a bf16
    speedup measured."""
    return [
        j
        for j, s in enumerate(shapes)
        if keep((op, mode, "bfloat16", s)) and (op, mode, "bfloat16", s) in compared
    ]


def _plot_speedup(g: Gpu, path: Path) -> Path:
    """Speedup over the standard layer: a panel per (op, mode), a group of bars per shape
    (one bar a dtype), the parity line and, over the bf16 bars of the shapes it covers, SPEC
    section 6's target."""
    import numpy as np

    plt = _plt()
    compared = _speedups(g)
    panels = sorted({(p[0], p[1]) for p in compared}, key=lambda k: (k[0], MODES.index(k[1])))
    ops = sorted({op for op, _ in panels})
    modes = [m for m in MODES if any(mode == m for _, mode in panels)]
    rows, cols = max(1, len(ops)), max(1, len(modes))
    widest = max([len({p[3] for p in compared if p[:2] == k}) for k in panels] or [1])
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(5.0, 0.9 * widest + 2) * cols, 4.2 * rows), squeeze=False
    )
    dtypes = [d for d in ("bfloat16", "float16", "float32") if any(p[2] == d for p in compared)]
    dtypes += sorted({p[2] for p in compared} - set(dtypes))
    colors = dict(
        zip(dtypes, ("tab:blue", "tab:orange", "tab:gray", "tab:purple", "tab:olive"), strict=False)
    )
    for ax in axes.flat:
        ax.set_visible(False)
    width = 0.8 / max(1, len(dtypes))
    for op, mode in panels:
        ax = axes[ops.index(op)][modes.index(mode)]
        ax.set_visible(True)
        probs = [p for p in compared if p[:2] == (op, mode)]
        flop = {p[3]: _gflop(g.best[p]) or _size(g.best[p]) for p in probs}  # smallest first
        shapes = sorted(flop, key=lambda s: (float(f"{flop[s]:.3g}"), _shape_order(s)))
        for i, dtype in enumerate(dtypes):
            xs, vs = [], []
            for j, shape in enumerate(shapes):
                sp = compared.get((op, mode, dtype, shape))
                if sp is not None:
                    xs.append(j + (i - (len(dtypes) - 1) / 2) * width)
                    vs.append(sp)
            if vs:
                bars = ax.bar(np.array(xs), vs, width, color=colors[dtype], label=dtype)
                ax.bar_label(bars, labels=[speedup_label(v) for v in vs], fontsize=7)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="parity (1.0x)")
        top = max([1.0, *(v for p, v in compared.items() if p[:2] == (op, mode))])
        ax.set_ylim(0, top * 1.22)  # room above the bars for their labels and the target's text
        target = _target_speedup(op, mode)
        if target is not None and "bfloat16" in dtypes:
            speedup, limit, keep = target
            i = dtypes.index("bfloat16")
            covered = _target_slots(compared, op, mode, shapes, keep)
            for j in covered:  # over the bf16 bar of each shape the target covers
                x = j + (i - (len(dtypes) - 1) / 2) * width
                ax.hlines(speedup, x - width / 2, x + width / 2, color="tab:red", linewidth=2.5,
                          label="SPEC section 6 target (bf16 bars of the shapes it covers)")  # fmt: skip
            if covered:
                ax.text(0.01, 0.98, f"target: time <= {limit:.2f}x, i.e. speedup >= {speedup:.2f}x",
                        transform=ax.transAxes, va="top", fontsize=7, color="tab:red")  # fmt: skip
        ax.set_xticks(range(len(shapes)), [_plot_label(s) for s in shapes], fontsize=7)
        ax.set_title(f"{op} {mode}: vs {STANDARD[op]}", fontsize=10)
        ax.set_ylabel("speedup (x, > 1: yat_triton faster)")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncols=min(4, len(handles)), fontsize=8)  # fmt: skip
    fig.suptitle(_title(g, "Speedup over the standard layer (baseline time / yat_triton time)"))
    return _save(fig, path)


HEATMAP_STATES = ("wrong", "failed", "unchecked", "pruned")


def _plot_heatmap(g: Gpu, op: str, dtype: str, shape: str, path: Path) -> Path:
    """The forward tile sweep of one problem as a BLOCK_M x BLOCK_N grid: the best correct
    TFLOP/s over the other fields (BLOCK_K, warps, stages, ...) where a tile of the cell ran
    correctly, else how its tiles ended (wrong, failed, unchecked, pruned); cells no tile of
    the sweep reached are left blank, the winner is framed."""
    import numpy as np

    plt = _plt()
    want = (op, "fwd", dtype, shape, OURS)
    rows = [r for r in g.rows if (r.op, r.mode, r.dtype, r.shape, r.provider) == want and r.config]
    cfgs = [(json.loads(r.config), r) for r in rows]
    cfgs = [(c, r) for c, r in cfgs if "block_m" in c and "block_n" in c]
    bms = sorted({c["block_m"] for c, _ in cfgs})
    bns = sorted({c["block_n"] for c, _ in cfgs})
    grid = np.full((len(bms), len(bns)), np.nan)
    states: dict[tuple[int, int], Counter[str]] = {}
    for c, r in cfgs:
        i, j = bms.index(c["block_m"]), bns.index(c["block_n"])
        state = "pruned" if r.status == "pruned" else _outcome(r)
        states.setdefault((i, j), Counter())[state] += 1
        if state == "ok" and r.tflops is not None:
            grid[i, j] = r.tflops if math.isnan(grid[i, j]) else max(grid[i, j], r.tflops)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(bns) + 2), max(4, 0.9 * len(bms) + 2)))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", origin="lower", aspect="auto")
    # plain numbers: an offset or exponent text above the bar would run into the title
    fig.colorbar(im, ax=ax, label="best correct TFLOP/s over the other config fields", format="%.3g")
    for (i, j), counts in states.items():
        if not math.isnan(grid[i, j]):  # dark text on the bright end of viridis
            bright = im.norm(grid[i, j]) > 0.6
            ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=7,
                    color="black" if bright else "white")  # fmt: skip
            continue
        bad = counts["wrong"] > 0
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="xx",
                                   color="tab:red" if bad else "grey"))  # fmt: skip
        said = "\n".join(f"{counts[k]} {k}" for k in HEATMAP_STATES if counts[k])
        ax.text(j, i, said, ha="center", va="center", fontsize=7, color="tab:red" if bad else "black")
    win = g.best.get((op, "fwd", dtype, shape))
    if win is not None and win.config:
        c = json.loads(win.config)
        if c.get("block_m") in bms and c.get("block_n") in bns:
            i, j = bms.index(c["block_m"]), bns.index(c["block_n"])
            said = f"winner {config_label(win.config)} ({win.median_ms:.4g} ms)"
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=3,
                                       label=said))  # fmt: skip
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8)
    ax.set_xticks(range(len(bns)), [str(b) for b in bns])
    ax.set_yticks(range(len(bms)), [str(b) for b in bms])
    ax.set_xlabel("BLOCK_N (elements)")
    ax.set_ylabel("BLOCK_M (elements)")
    ax.set_title(_title(g, f"{op} fwd {dtype} {_shape_label(shape)}") + "\nblank: no tile tried", fontsize=9)
    return _save(fig, path)


def _legend_handles(
    providers: Iterable[str], dtypes: Iterable[str], peaks: dict[str, tuple[float, str]]
) -> list:
    """Legend entries by look: a colour per provider, a marker per dtype, a line per
    compute roof."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=PROVIDER_COLORS.get(p, "black"), linewidth=3, label=p)
        for p in sorted(set(providers), key=lambda p: (p != OURS, p))
    ]
    handles += [
        Line2D([], [], color="black", marker=DTYPE_MARKERS.get(d, "D"), linestyle="none", label=d)
        for d in sorted(set(dtypes))
    ]
    handles += [
        Line2D([], [], color="black", linewidth=1, linestyle=PEAK_STYLES.get(d, "--"), label=label)
        for d, (_, label) in peaks.items()
    ]
    return handles


def _log_xlim(ax, xs: Iterable[float]) -> None:  # noqa: ANN001 - a matplotlib Axes
    """A log x axis that shows every point, also when all share one x."""
    xs = [x for x in xs if x > 0]
    if xs:
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)


def _points(ax, xs: Iterable[float], ys: Iterable[float], provider: str, dtype: str) -> None:  # noqa: ANN001
    """One series of a throughput panel: its provider's colour, its dtype's marker."""
    ax.plot(list(xs), list(ys), color=PROVIDER_COLORS.get(provider, "black"), linestyle="none",
            marker=DTYPE_MARKERS.get(dtype, "D"), markersize=7, alpha=0.85)  # fmt: skip


def _log_log_panel(ax, xlabel: str, title: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """A throughput panel's log-log axes, labels and grid (after its points are drawn)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axes(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("throughput (TFLOP/s, log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def _plain_log_axes(ax) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Log axes labelled with plain numbers (1000, not 10^3) at the decades and, where a
    decade is wider than the axis, at 2 and 5 of it; no crowded minor labels."""
    from matplotlib import ticker

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        wide = lo > 0 and hi / lo > 100  # over two decades: the decades alone
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(ticker.NullFormatter())


def copy_bandwidth(items: Iterable[dict[str, object]]) -> tuple[float, str] | None:
    """The memory bandwidth (TB/s) the breakdown's device copy reached (op "memory", shape
    "bytes=N": bytes read plus written; the fastest where there are several), and how it was
    measured; None without such a line."""
    best = None
    for it in items:
        m = re.fullmatch(r"bytes=(\d+)", str(it["shape"]))
        if it["op"] == "memory" and m and float(it["us"]) > 0:
            tbs = int(m[1]) / (float(it["us"]) * 1e-6) / 1e12
            if math.isfinite(tbs) and tbs > 0 and (best is None or tbs > best[0]):
                mib = int(m[1]) / 2 / 2**20
                best = (tbs, f"measured copy bandwidth: {tbs:.3g} TB/s ({mib:.0f} MiB device copy)")
    return best


def _plot_roofline(g: Gpu, path: Path, bandwidth: tuple[float, str] | None = None) -> Path:
    """Each provider's best forward per problem at its arithmetic intensity, a panel per op
    (colours and markers as in the throughput plot), under each dtype's measured cuBLAS peak
    (compute roofs) and, from the breakdown, the measured copy bandwidth (memory roof)."""
    plt = _plt()
    points: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for (prov, p), r in _best_per_provider(g).items():
        gf = _gflop(r)
        if p[1] == "fwd" and gf and r.tflops:
            ai = gf * 1e9 / _bytes_moved(p[0], p[3], p[2])
            points.setdefault((p[0], prov, p[2]), []).append((ai, r.tflops))
    ops = sorted({k[0] for k in points}) or ["fwd"]
    fig, axes = plt.subplots(1, len(ops), figsize=(6.5 * len(ops), 5.0), squeeze=False)
    peaks = _cublas_peaks(g)
    for ax, op in zip(axes.flat, ops, strict=True):
        for (pop, prov, dtype), pts in sorted(points.items()):
            if pop == op:
                xs, ys = zip(*sorted(pts), strict=True)
                _points(ax, xs, ys, prov, dtype)
        xs = [x for k, pts in points.items() if k[0] == op for x, _ in pts]
        if peaks and bandwidth is not None:
            xs.append(max(t for t, _ in peaks.values()) / bandwidth[0])  # the ridge point
        _log_xlim(ax, xs)
        _peak_lines(ax, peaks)
        if bandwidth is not None and xs:
            import numpy as np

            ai = np.geomspace(*ax.get_xlim(), 200)
            roof = ai * bandwidth[0]  # FLOP/byte x TB/s = TFLOP/s
            top = max((t for t, _ in peaks.values()), default=None)
            ax.plot(ai, roof if top is None else np.minimum(roof, top), color="black", linewidth=1,
                    linestyle="--")  # fmt: skip
        _log_log_panel(ax, "arithmetic intensity (FLOP/byte, compulsory fwd traffic)", f"{op} fwd")
    handles = _legend_handles([k[1] for k in points], [k[2] for k in points], peaks)
    if bandwidth is not None:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", linewidth=1, linestyle="--",
                              label=f"memory roof, {bandwidth[1]}"))  # fmt: skip
    fig.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(
        _title(
            g,
            "Roofline view, fwd: compute roofs are the dense standard layer's measured peaks "
            "(cuBLAS on a GPU)",
        ),
        fontsize=10,
    )
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Pages


_BREAKDOWN_FIELDS = {"op": str, "phase": str, "what": str, "grid": str, "us": (int, float), "gpu": str,
                     "dtype": str, "shape": str}  # fmt: skip


def read_breakdown(path: str | Path) -> list[dict[str, object]]:
    """The JSON lines `autotune.breakdown --json-out` wrote, checked line by line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: no such breakdown file (write one with `python -m autotune.breakdown --json-out`)"
        )
    try:
        content = p.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a text file of JSON lines ({e.reason} at byte {e.start})") from e
    lines = []
    for n, text in enumerate(content.splitlines(), 1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{n}: not a JSON object ({e.msg})") from e
        bad = [
            k
            for k, t in _BREAKDOWN_FIELDS.items()
            if not isinstance(item, dict) or not isinstance(item.get(k), t)
        ]
        if bad:
            raise ValueError(f"{p}:{n}: a breakdown line needs the fields {bad} (see autotune.breakdown)")
        share = item.get("share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))):
            raise ValueError(f"{p}:{n}: a breakdown line's share must be a number or null, got {share!r}")
        lines.append(item)
    return lines


def _breakdown(items: list[dict[str, object]]) -> str:
    """Per op and phase: every kernel's time and share of the whole launcher call."""
    table = [
        [it["op"], it["phase"], it["shape"], it["dtype"], it["what"], it["grid"], f"{float(it['us']):.1f}",
         "-" if it.get("share") is None else f"{100 * float(it['share']):.0f}%"]
        for it in items
    ]  # fmt: skip
    headers = ["op", "phase", "shape", "dtype", "kernel", "grid", "µs", "share of the call"]
    return _table(table, headers)


# the breakdown's reference line for a GEMM alone, per op family (`autotune.breakdown`)
GEMM_REFS = {"dense": "x @ W^T (matmul)", "conv2d": "conv alone (no bias)"}
GEMM_ONLY_SUFFIX = " @ gemm only"


def gemm_and_epilogue(items: list[dict[str, object]]) -> list[list[str]]:
    """Per breakdown "fwd-gemm" line (a forward kernel again without the ⵟ math): that
    kernel's inference forward time (phase "fwd-infer" of the same op and shape), its GEMM
    alone, their difference (the ⵟ math: the epilogue and norms summed in the kernel, with
    its share of the kernel), and the standard GEMM of its op family at that shape
    (GEMM_REFS) with the GEMM alone's time over it; "-" where a line is missing."""

    def us(op: object, phase: str, shape: object, dtype: object, what: object) -> float | None:
        key = (op, phase, shape, dtype, what)
        return next(
            (
                float(it["us"])
                for it in items
                if (it["op"], it["phase"], it["shape"], it["dtype"], it["what"]) == key
            ),
            None,
        )

    rows = []
    for it in items:
        what = str(it["what"])
        if it["phase"] != "fwd-gemm" or not what.endswith(GEMM_ONLY_SUFFIX):
            continue
        kernel, gemm = what.removesuffix(GEMM_ONLY_SUFFIX), float(it["us"])
        op, shape, dtype = it["op"], it["shape"], it["dtype"]
        whole = us(op, "fwd-infer", shape, dtype, kernel)
        family = str(op).split("-")[0]
        ref = us(family, "ref", shape, dtype, GEMM_REFS.get(family))
        rows.append([
            str(op), str(shape), str(dtype), kernel,
            "-" if whole is None else f"{whole:.1f}",
            f"{gemm:.1f}",
            "-" if whole is None or whole <= 0 else f"{whole - gemm:.1f} ({(whole - gemm) / whole:.0%})",
            "-" if ref is None else f"{ref:.1f} ({GEMM_REFS[family]})",
            "-" if ref is None or ref <= 0 else f"{gemm / ref:.2f}x",
        ])  # fmt: skip
    return rows


def _gemm_and_epilogue(rows: list[list[str]]) -> list[str]:
    """The report's lines for the rows of `gemm_and_epilogue`: none without a row."""
    if not rows:
        return []
    headers = [
        "op", "shape", "dtype", "forward kernel", "inference µs", "GEMM alone µs",
        "ⵟ math µs (share)", "standard GEMM µs", "GEMM alone / standard",
    ]  # fmt: skip
    return [
        "### GEMM and epilogue", "",
        "Each forward kernel timed again storing its accumulator without the ⵟ math (phase "
        "\"fwd-gemm\", nothing saved; a persistent kernel's grid planned again for it): the ⵟ "
        "math (norms summed in the kernel and the epilogue) costs the difference to the same "
        "kernel's inference forward, and the GEMM alone against cuBLAS's matmul or cuDNN's conv "
        "(no bias, no ReLU) at the same shape is how far the main loop is from theirs.", "",
        _table(rows, headers), "",
    ]  # fmt: skip


def _heatmap_shape(g: Gpu, op: str, dtype: str) -> str | None:
    """The forward problem whose tile sweep the heatmap of (op, dtype) shows: the smallest
    headline shape (one a SPEC section 6 target covers: the 4096 cube, ResNet-50's first 3x3
    layer) with a correct tile, else the largest problem with one; None without any."""
    shapes = {  # GFLOP to 3 digits: shapes of one size (ResNet-50's layers) go by their sizes
        r.shape: float(f"{_gflop(r) or _size(r):.3g}")
        for r in g.rows
        if (r.op, r.mode, r.dtype, r.provider) == (op, "fwd", dtype, OURS) and _outcome(r) == "ok"
        and "block_m" in json.loads(r.config or "{}")  # a tile the grid can place
    }  # fmt: skip
    covers = _square_4096 if op == "dense" else _resnet50_3x3
    headline = [s for s in shapes if covers((op, "fwd", dtype, s))]
    if headline:
        return min(headline, key=lambda s: (shapes[s], _shape_order(s)))
    return max(shapes, key=lambda s: (shapes[s], _shape_order(s)), default=None)


def _render_gpu(g: Gpu, folder: Path, breakdown: list[dict[str, object]] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written, plots, missing = [], [], []
    timed = [(p, r) for (_, p), r in _best_per_provider(g).items() if _gflop(r) and r.tflops]
    if timed:
        written.append(_plot_tflops(g, folder / "tflops.png"))
        plots.append("![TFLOP/s against problem size](tflops.png)")
    else:
        missing.append("no throughput plot: no row with a throughput on this GPU")
    if _speedups(g):
        written.append(_plot_speedup(g, folder / "speedup.png"))
        plots.append("![Speedup over linear+relu / conv+relu](speedup.png)")
    else:
        missing.append("no speedup plot: no problem has both a correct yat_triton row and a "
                       "linear+relu / conv+relu row")  # fmt: skip
    for op, dtype in sorted({(r.op, r.dtype) for r in g.rows if r.provider == OURS and r.mode == "fwd"}):
        shape = _heatmap_shape(g, op, dtype)
        if shape is None:
            missing.append(f"no {op} {dtype} tile heatmap: no forward tile ran correctly")
            continue
        path = _plot_heatmap(g, op, dtype, shape, folder / f"heatmap_{op}_{dtype}.png")
        plots.append(f"![{op} fwd {dtype} {_shape_label(shape)} tile heatmap]({path.name})")
        written.append(path)
    bandwidth = copy_bandwidth(breakdown or [])
    if any(p[1] == "fwd" for p, _ in timed):
        written.append(_plot_roofline(g, folder / "roofline.png", bandwidth))
        plots.append("![Roofline](roofline.png)")
    else:
        missing.append("no roofline: no forward row with a throughput on this GPU")
    searches = sorted({s for run in g.runs for s in _options(run.args)["search"]})
    searched = f"`--search {'` / `'.join(searches)}`" if searches else "the sweep's search"

    targets, statuses = _targets(g)
    split_rows = gemm_and_epilogue(breakdown or [])  # (the targets' pointer and the table)
    parts = [BANNER, ""] if not g.representative else []
    parts += [
        f"# Performance report: {g.gpu}", "",
        "Rendered by `yat-autotune report` from the results database; do not edit by hand.", "",
        _header(g, bandwidth), "",
        *([] if g.ok else [
            "**No successful measurement on this GPU**: every row failed, was wrong or was pruned "
            "(see below).", "",
        ]),
        "## Targets (SPEC.md section 6)", "",
        *([] if g.judged or not g.representative else [
            f"SPEC section 6 sets its targets for the H200: the timed ones are not judged on {g.gpu}; "
            "their ratios are shown.", "",
        ]),
        _tally(statuses), "",
        targets, "",
        *([
            "What limits a forward: the breakdown's \"GEMM and epilogue\" table (below) splits "
            "each forward kernel into its GEMM alone, against cuBLAS's matmul or cuDNN's conv, and "
            "its ⵟ math.", "",
        ] if split_rows else []),
        "## Summary: best correct yat_triton config vs each baseline", "",
        "Per problem, the fastest correct yat_triton tile, and against each baseline the speedup "
        "(baseline time / yat_triton time: > 1 means yat_triton is faster) with the baseline's "
        f"median time. Tiles tried: the yat_triton tiles {searched} ran for the problem (pruned "
        "ones excluded). A tile's name reads m<BLOCK_M>n<BLOCK_N>k<BLOCK_K>g<GROUP_M>w<warps>"
        "s<stages>, then e<n> (epilogue in n slices), _nil (row norms summed in the main loop), "
        "_tma (TMA loads), _ws (warp-specialized), _sk (a last partial wave's tiles split into "
        "parts); \"(default tiles)\": the op's built-in choice. "
        "A backward mode's tile is the backward's; its forward ran on the tile named after it "
        "(\"(forward ...)\": the fastest of the problem's fwd rows, as the exported winners run "
        "together), or where none is named, on its default tile.", "",
        _summary(g), "",
        *([
            "## Where the time goes: one call, kernel by kernel", "",
            "Measured by `python -m autotune.breakdown` (each kernel timed on its own, as a "
            "CUDA graph with `triton.testing.do_bench`; \"launcher\" is the whole call, also "
            "in loops of calls back to back, eager and replayed: their difference is the "
            "host's launching; \"ref\" rows are the "
            "standard layers at the same shape, and op \"memory\" the device copy that gives "
            "the roofline's memory roof).", "",
            *_gemm_and_epilogue(split_rows),
            _breakdown(breakdown), "",
        ] if breakdown else []),
        "## Failed, wrong and pruned configs", "",
        _failures(g), "",
        "## Plots", "",
        *[f"{plot}\n" for plot in plots],
        *[f"- {why}." for why in missing], "",
    ]  # fmt: skip
    readme = folder / "README.md"
    readme.write_text("\n".join(parts))
    return [readme, *written]


def _render_index(out: Path) -> Path:
    pages = {p.parent: p.read_text() for p in sorted(out.glob("*/README.md"))}
    folders = list(pages)
    gpu_reports = [f for f in folders if BANNER not in pages[f]]
    lines = [INDEX_TITLE, "", "Rendered by `yat-autotune report`; one folder per GPU model.", ""]
    if not gpu_reports:
        lines += ["**No GPU report exists yet**: every report below was measured without a GPU "
                  "(Triton interpreter) and is NOT REPRESENTATIVE.", ""]  # fmt: skip
    for f in folders:
        tag = "" if f in gpu_reports else " (NOT REPRESENTATIVE: measured without a GPU)"
        tally = TALLY.search(pages[f])  # a page rendered before the tally has none
        lines.append(f"- [{f.name}]({f.name}/README.md){tag}" + (f": targets {tally[1]}" if tally else ""))
    index = out / "README.md"
    index.write_text("\n".join(lines) + "\n")
    return index


def render_report(
    db_path: str | Path, out_dir: str | Path = "reports", breakdown: str | Path | None = None
) -> list[Path]:
    """Render one report folder per GPU model of the database at `db_path` under `out_dir`,
    refresh `out_dir`/README.md (the index), and return every file written. `breakdown`:
    a file of `autotune.breakdown --json-out`, rendered into the report of its GPU."""
    path = Path(db_path)
    if not path.exists():  # a folder: ResultsDB says so
        raise FileNotFoundError(f"{path}: no such results database (run `yat-autotune sweep` first)")
    timed = read_breakdown(breakdown) if breakdown is not None else []
    with ResultsDB(path, read_only=True) as db:
        rows = db.query()
        runs = db.runs()
    if not rows:
        raise ValueError(f"{path}: the results database is empty; nothing to report")
    by_gpu: dict[str, list[Result]] = {}
    for r in rows:
        by_gpu.setdefault(r.gpu, []).append(r)
    gpus = [Gpu(name, rs, [run for run in runs if run.gpu == name]) for name, rs in sorted(by_gpu.items())]
    if not any(g.ok for g in gpus):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in rows).items()))
        raise ValueError(f"{path}: no successful (status ok) measurements ({counts}); nothing to report")
    out = Path(out_dir)
    check_output_folder(out, "for reports")
    check_folders((g.gpu for g in gpus), out)
    index = out / "README.md"
    if index.is_file() and not index.read_text(errors="replace").startswith(INDEX_TITLE):
        raise ValueError(f"{index}: not a report index that this command wrote; render into another folder")
    out.mkdir(parents=True, exist_ok=True)
    # Render every page into a staging folder first, then move the files into place: a render
    # that fails half-way (a plot's error, a full disk) leaves the report that was there whole,
    # not new plots next to an old README.
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=out))
    try:
        staged = {
            slug(g.gpu): _render_gpu(g, staging / slug(g.gpu), [it for it in timed if it["gpu"] == g.gpu])
            for g in gpus
        }
        written: list[Path] = []
        for name, files in staged.items():
            written += _publish(files, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    written.append(_render_index(out))
    return written


def _publish(files: list[Path], folder: Path) -> list[Path]:
    """Move freshly rendered `files` into `folder`, each by an atomic rename, and remove the
    plots of an earlier render that this one did not make (a heatmap of a dtype no longer
    measured, a plot left out for having nothing to show); files that are not the report's
    (import-run's results and logs) stay."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {f.name for f in files}
    for old in (
        *folder.glob("heatmap_*.png"),
        *(folder / n for n in ("tflops.png", "speedup.png", "roofline.png")),
    ):
        if old.name not in names and old.is_file():
            old.unlink()
    for f in files:
        os.replace(f, folder / f.name)
    return [folder / f.name for f in files]
