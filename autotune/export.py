"""Export the tuned winners of a results database as the JSON files the launchers load.

One file per GPU model, `yat_triton/tuned/<slug>.json` (format in `yat_triton.tuning`), with
the fastest config per (op, kernel mode, dtype, shape) among the yat_triton rows that ran
ok, passed the correctness check and speak for the GPU (`representative`). The kernel
mode is the tile's: "fwd" rows tune the forward; "bwd" or "fwd+bwd" rows (of a shape,
the mode that timed more configs, "bwd" on a tie) tune the backward kernels, exported as
"bwd", the mode the launchers look up. Where the first backward row (config "", the op on its default tiles)
is the fastest, the entry's config is null: the defaults stay at that shape, rather than
a slower tile or a neighbouring shape's winner. Pretty-printed and
sorted, so that a re-export reads as a diff. Each file is written to a temporary file next
to it and moved into place, so an interrupted export leaves the old file or the new one.

    from autotune.export import export_winners
    export_winners("results/h200.sqlite")  # -> [Path(".../yat_triton/tuned/nvidia_h200.json")]
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from autotune.db import MODES, Result, ResultsDB
from kernels._common import TileConfig
from yat_triton import tuning

__all__ = ["export_winners", "winners_document"]

_FIELD_NAMES = {f.name for f in dataclasses.fields(TileConfig)}


def tile_fields(config: dict[str, object]) -> dict[str, object]:
    """A stored config as TileConfig fields; the kernels' constexpr spellings (BLOCK_M,
    GROUP_M, ...) are accepted for the same fields."""
    return {k.lower() if k.lower() in _FIELD_NAMES else k: v for k, v in config.items()}


def _one(values: Iterable[str]) -> str:
    """The value the winners share, or all of them ("2.11.0, 2.12.0") when they differ."""
    return ", ".join(sorted(set(values)))


def kernel_mode(mode: str) -> str:
    """The tile's mode of a sweep mode: "fwd" tunes the forward kernel, "bwd" and "fwd+bwd"
    the backward kernels (the forward in a fwd+bwd row runs the fastest fwd row's tile,
    named in the row's reason: `autotune.sweep.fastest_fwd_tile`)."""
    return "fwd" if mode == "fwd" else "bwd"


def _entry(r: Result) -> dict[str, object]:
    """The file entry of a winning row, checked as the loader will check it."""
    entry: dict[str, object] = {
        "op": r.op,
        "mode": kernel_mode(r.mode),
        "dtype": r.dtype,
        "shape": json.loads(r.shape),
        "config": tile_fields(json.loads(r.config)) if r.config else None,
        "timed_as": r.mode,
        "median_ms": float(f"{r.median_ms:.4g}"),
        "tflops": round(r.tflops, 1) if r.tflops is not None and math.isfinite(r.tflops) else None,
    }
    try:
        config = tuning.parse_entry(entry).config
        entry["config"] = None if config is None else config.as_dict()  # its fields, in field order
    except ValueError as e:
        raise ValueError(
            f"cannot export the winner {r.op}/{r.mode}/{r.dtype} {r.shape} config {r.config} on "
            f"{r.gpu!r}: {e}"
        ) from e
    return entry


def winners_document(gpu: str, rows: Iterable[Result], created: str | None = None) -> dict[str, object]:
    """The winners file of one GPU from its candidate rows (already filtered to exportable):
    per (op, kernel mode, dtype, shape) the fastest of the rows timed in one sweep mode
    (times of different modes do not compare): the mode that timed the most configs, "bwd"
    before "fwd+bwd" on a tie (a record that merges a run of every mode with gpu.sh's
    fwd,fwd+bwd one may hold the default tiles alone in "bwd"); ties on time to the
    smaller config string, as `ResultsDB.best` decides."""
    rows = list(rows)
    configs: dict[tuple[str, str, str, str], dict[str, set[str]]] = {}
    for r in rows:
        key = (r.op, kernel_mode(r.mode), r.dtype, r.shape)
        configs.setdefault(key, {}).setdefault(r.mode, set()).add(r.config)
    timed_in = {
        key: min(modes, key=lambda m: (-len(modes[m]), MODES.index(m))) for key, modes in configs.items()
    }
    winners: dict[tuple[str, str, str, str], Result] = {}
    for r in sorted(rows, key=lambda r: (r.median_ms, r.config)):
        key = (r.op, kernel_mode(r.mode), r.dtype, r.shape)
        if r.mode == timed_in[key]:
            winners.setdefault(key, r)

    def order(r: Result) -> tuple[str, str, str, tuple[tuple[str, int], ...]]:
        return r.op, kernel_mode(r.mode), r.dtype, tuple(json.loads(r.shape).items())

    chosen = sorted(winners.values(), key=order)
    entries = [_entry(r) for r in chosen]
    return {
        "format": tuning.FORMAT,
        "version": tuning.VERSION,
        "gpu": gpu,
        "torch": _one(r.torch for r in chosen),
        "triton": _one(r.triton for r in chosen),
        "commit": _one(r.commit for r in chosen),
        "created": created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "representative": all(r.representative for r in chosen),
        "entries": entries,
    }


def _exportable(r: Result, include_cpu: bool = False) -> bool:
    """A candidate: correct, timed, for the GPU (or a CPU export), and a tile or, in the
    backward modes, the op on its default tiles (config "")."""
    timed = r.median_ms is not None and math.isfinite(r.median_ms) and r.median_ms > 0
    return bool(r.correct and (r.representative or include_cpu) and timed and (r.config or r.mode != "fwd"))


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and os.replace (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; this file ships with the package
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def export_winners(
    db_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    gpu: str | None = None,
    include_cpu: bool = False,
) -> list[Path]:
    """Write one winners file per GPU in the database (only `gpu` if given) into `out_dir`
    (default: the package's `yat_triton/tuned/`); return their paths. `include_cpu` also
    takes rows timed without a GPU (a CPU sweep's file: correct configs, timings that
    mean nothing, marked "representative": false; never for the package folder).

    Raises FileNotFoundError for a missing database, ValueError when no row qualifies (a
    yat_triton row with status ok, correct, representative and a time) or when a
    winner's config or shape would not load; every file is built before the first is written.
    """
    db_file = Path(db_path)
    if not db_file.exists():  # a folder: ResultsDB says so
        raise FileNotFoundError(f"export_winners: no results database at {db_file}")
    with ResultsDB(db_file, read_only=True) as db:
        rows = [
            r for r in db.query(provider="yat_triton", status="ok", gpu=gpu) if _exportable(r, include_cpu)
        ]
    if not rows:
        which = f" for gpu {gpu!r}" if gpu is not None else ""
        raise ValueError(
            f"export_winners: nothing to export from {db_file}{which}: no yat_triton row that ran ok, "
            "passed the correctness check and is representative"
        )
    by_gpu: dict[str, list[Result]] = defaultdict(list)
    for r in rows:
        by_gpu[r.gpu].append(r)
    files: dict[str, str] = {}
    for name in sorted(by_gpu):
        file = tuning.winners_filename(name)
        if not name.strip() or file in files:
            other = f" as {files[file]!r} does" if file in files else ""
            raise ValueError(f"export_winners: GPU name {name!r} gives the file name {file!r}{other}")
        files[file] = name
    texts = {
        file: json.dumps(winners_document(name, by_gpu[name]), indent=2, allow_nan=False) + "\n"
        for file, name in files.items()
    }
    target = Path(out_dir) if out_dir is not None else tuning.TUNED_DIR
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for file, text in texts.items():
        path = target / file
        _write_atomic(path, text)
        paths.append(path)
    return paths
