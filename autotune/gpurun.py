"""Bring a GPU run into the repository: the archive of `autotune/gpu.sh OUT --pack FILE`.

    yat-autotune import-run gpu_run.tar.gz

For each GPU measured in the archive's results database:
- its rows are merged into `reports/<gpu>/results.db` (the committed record of every run on
  that GPU: earlier rows stay, a re-measured key keeps the newer row);
- the run's own rows (its results.db, to resume from) and its logs (env.txt, canary.log,
  tests.log, inspect_bfloat16.txt, breakdown.*, sweep.log, show.txt) go to
  `reports/<gpu>/runs/<UTC start of the run>/`, for the GPUs the run measured on (a resumed
  database may carry older rows of another GPU: they are merged into its record only);
- the winners are exported again from the merged database into `yat_triton/tuned/`;
- the report is rendered again from the merged database (with the breakdown of the newest
  run that left a readable one: a sweep-only run leaves none), and the
  index `reports/README.md` with it.

A run that measured nothing on its GPU (cut before its sweep, or a sweep that failed at
once) still brought back what the GPU told it: when its env.txt names a GPU (nvidia-smi's
line), its logs alone are filed under `reports/<gpu>/runs/<UTC start>/`, and the record,
winners and report stay as they were.

Nothing is written before the archive has been read whole and its database checked: a
corrupt archive, or one with neither a GPU measurement nor a GPU named in its env.txt (a
CPU rehearsal; its rows are taken with `allow_cpu`), changes nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from autotune.db import ResultsDB, read_database
from autotune.export import export_winners
from autotune.report import check_folders, check_output_folder, read_breakdown, render_report, slug

DB_NAME = "results.db"
# files of the run kept with its report; the database is merged, the rest is rendered again
LOGS = ("env.txt", "canary.log", "tests.log", "inspect_bfloat16.txt", "breakdown.txt", "breakdown.jsonl",
        "sweep.log", "show.txt")  # fmt: skip
# what an import unpacks: the database (with the WAL of a sweep killed before its checkpoint)
# and the logs
UNPACKED = (DB_NAME, f"{DB_NAME}-wal", *LOGS)
MAX_UNPACKED_BYTES = 1 << 30


@dataclass
class Imported:
    """What `import_run` wrote, per GPU, and why any winners file was not."""

    reports: list[Path] = field(default_factory=list)
    databases: list[Path] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    winners: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


STAMP = re.compile(r"\d{8}T\d{6}Z")  # a run's folder under runs/: its UTC start
SMI_HEADER = "name, driver_version"  # gpu.sh's `nvidia-smi --query-gpu=name,driver_version,...`


def smi_gpu(env: Path) -> str | None:
    """The GPU that nvidia-smi named in a run's env.txt (the line under its CSV header), or
    None: no such file, or no GPU (a CPU rehearsal's env.txt says the command failed)."""
    if not env.is_file():
        return None
    lines = env.read_text(errors="replace").splitlines()
    for header, line in zip(lines, lines[1:], strict=False):
        if header.startswith(SMI_HEADER) and line.count(",") >= 1:
            name = line.split(",")[0].strip()
            return name or None
    return None


def newest_breakdown(runs: Path, gpu: str) -> Path | None:
    """The breakdown of the newest run (by start) that left a readable one with lines of
    `gpu`: a sweep-only run has none, and one cut short may have left a broken file."""
    for path in sorted(runs.glob("*/breakdown.jsonl"), key=lambda p: p.parent.name, reverse=True):
        if STAMP.fullmatch(path.parent.name):
            try:
                if any(item["gpu"] == gpu for item in read_breakdown(path)):
                    return path
            except ValueError:
                continue
    return None


def _member_path(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The member's path inside the archive, None for folders; refuses anything that could
    write outside the extraction folder or is not a plain file."""
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or ".." in parts:
        raise ValueError(f"{archive}: member {member.name!r} points outside the archive's folder")
    if member.isdir():
        return None
    if not member.isfile():
        raise ValueError(f"{archive}: member {member.name!r} is not a plain file (links are refused)")
    return PurePosixPath(*parts) if parts else None


def _unpack(archive: Path, into: Path) -> dict[Path, float]:
    """Unpack the archive's files that an import reads (the database with its WAL, the logs:
    UNPACKED) into `into`, each with its modification time; return those times. The rest
    (the run's own export and report, rendered again here) is not unpacked, and the files
    read may hold MAX_UNPACKED_BYTES in all."""
    mtimes: dict[Path, float] = {}
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                rel = _member_path(member, archive)
                if rel is None or rel.name not in UNPACKED:
                    continue
                total += member.size
                if total > MAX_UNPACKED_BYTES:
                    raise ValueError(
                        f"{archive}: its databases and logs hold more than {MAX_UNPACKED_BYTES >> 20} MiB "
                        f"(at {member.name!r}); a GPU run leaves a few MiB: nothing imported"
                    )
                target = into / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a plain file
                with source, open(target, "wb") as f:
                    shutil.copyfileobj(source, f)
                os.utime(target, (member.mtime, member.mtime))
                mtimes[target] = float(member.mtime)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{archive}: not a readable .tar.gz archive ({e})") from e
    if not mtimes:
        raise ValueError(f"{archive}: holds none of {', '.join(UNPACKED)}; nothing imported")
    return mtimes


def _stamp(started: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))


def _file(source: Path, target: Path, mtime: float, done: Imported) -> None:
    """Copy `source` to `target` with the time `mtime`, unless `target` is newer: an earlier
    copy of a run (an archive packed before the run ended) does not overwrite a later one."""
    if target.is_file() and target.stat().st_mtime > mtime:
        done.notes.append(f"{target}: kept, newer than this archive's copy")
        return
    shutil.copyfile(source, target)
    os.utime(target, (mtime, mtime))
    done.logs.append(target)


def _file_logs(run_dir: Path, logs: Path, done: Imported) -> Path:
    """Copy the run's logs (those of LOGS it has) into the folder `logs`; return it."""
    logs.mkdir(parents=True, exist_ok=True)
    for name in LOGS:
        if (run_dir / name).is_file():
            _file(run_dir / name, logs / name, (run_dir / name).stat().st_mtime, done)
    return logs


def import_run(
    archive: str | Path,
    reports_dir: str | Path = "reports",
    tuned_dir: str | Path | None = None,
    allow_cpu: bool = False,
) -> Imported:
    """Merge, file, export and render one GPU run's archive (see the module docstring).
    `tuned_dir`: where the winners go (default: the package's `yat_triton/tuned/`).
    `allow_cpu`: also take rows measured without a GPU (their report is marked not
    representative; no winners are exported for them)."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(
            f"{archive}: no such archive (made by `bash autotune/gpu.sh OUT --pack FILE`)"
        )
    reports = Path(reports_dir)
    done = Imported()
    with tempfile.TemporaryDirectory(prefix="yat-gpu-run-") as tmp:
        run_dir = Path(tmp)
        mtimes = _unpack(archive, run_dir)
        if not (run_dir / DB_NAME).is_file():  # an archive of the output folder itself
            found = sorted(run_dir.glob(f"**/{DB_NAME}"))
            envs = sorted(run_dir.glob("**/env.txt"))
            if len(found) == 1:
                run_dir = found[0].parent
            elif not found and len(envs) == 1:  # a run that ended before its sweep
                run_dir = envs[0].parent
            else:
                where = ", ".join(str(p.relative_to(run_dir)) for p in found) or "none"
                raise ValueError(
                    f"{archive}: expected one {DB_NAME} at its top or in one folder (found: {where}; "
                    "a run that ends before its sweep leaves none); nothing imported"
                )
        db_path = run_dir / DB_NAME
        # the run's start: its env.txt, written first (else the archive's newest file)
        started = mtimes.get(run_dir / "env.txt", max(mtimes.values()))
        rows, runs = [], []
        if db_path.is_file():
            try:
                rows, runs = read_database(db_path)
            except (ValueError, sqlite3.DatabaseError) as e:  # named by the archive, not the temporary folder
                why = str(e).replace(f"{db_path}: ", "")
                raise ValueError(f"{archive}: its {DB_NAME} cannot be read ({why}); nothing imported") from e
        gpus = sorted({r.gpu for r in rows if r.representative or allow_cpu})
        if not gpus:
            gpu = smi_gpu(run_dir / "env.txt")
            if gpu is not None:  # the GPU's logs are worth keeping even without a row
                check_folders([gpu], reports)
                logs = _file_logs(run_dir, reports / slug(gpu) / "runs" / _stamp(started), done)
                done.notes.append(
                    f"{gpu}: the run measured nothing (no GPU rows); its logs are filed in {logs}, "
                    "the record, winners and report are unchanged"
                )
                return done
            if not db_path.is_file():
                raise ValueError(
                    f"{archive}: no {DB_NAME} (a run that ends before its sweep leaves none) and no GPU "
                    "named in its env.txt; nothing imported"
                )
            what = "only rows measured without a GPU (--allow-cpu takes them)" if rows else "no rows at all"
            raise ValueError(f"{archive}: its {DB_NAME} holds {what}; nothing imported")
        # before any write: every output a folder (or one that can be made), every record
        # there already readable
        for out in (reports, Path(tuned_dir) if tuned_dir is not None else None):
            if out is not None:
                check_output_folder(out, "to write into; nothing imported")
        check_folders(gpus, reports)
        for gpu in gpus:
            if (reports / slug(gpu) / DB_NAME).exists():
                with ResultsDB(reports / slug(gpu) / DB_NAME, read_only=True) as kept:
                    others = sorted({r.gpu for r in kept.query()} - {gpu})
                if others:
                    raise ValueError(
                        f"{reports / slug(gpu) / DB_NAME}: the record of {others}, which share its folder "
                        f"with {gpu!r}; nothing imported"
                    )
        stamp = _stamp(started)
        # the GPUs this run measured on (a resumed database also carries older rows, maybe of
        # another GPU: those are merged into their records, but the logs are not theirs)
        new_rows = {r.gpu for r in rows if r.created >= started}
        measured = (new_rows | {run.gpu for run in runs if run.started >= started}) or set(gpus)
        for gpu in gpus:
            folder = reports / slug(gpu)
            folder.mkdir(parents=True, exist_ok=True)
            # this GPU's rows and runs alone, merged as one transaction into the record
            part = run_dir / f"{slug(gpu)}.part.db"
            with ResultsDB(part) as one:
                one.add_many(r for r in rows if r.gpu == gpu)
                for run in runs:
                    if run.gpu == gpu:
                        one.add_run(run)
            record = folder / DB_NAME
            with ResultsDB(record) as kept:
                kept.merge_from(part)
            done.databases.append(record)
            if gpu not in measured:
                continue
            # the run's own rows beside its logs: what a resumed run starts from (the record
            # mixes every commit measured, and a sweep does not measure a key twice)
            logs = _file_logs(run_dir, folder / "runs" / stamp, done)
            # the database's time: its WAL's where a killed sweep left rows only there
            db_time = max(mtimes.get(db_path, started), mtimes.get(run_dir / f"{DB_NAME}-wal", 0.0))
            _file(part, logs / DB_NAME, db_time, done)
            if any(r.representative for r in rows if r.gpu == gpu):
                try:
                    done.winners += export_winners(record, tuned_dir, gpu=gpu)
                except ValueError as e:  # every config failed: the report still says why
                    done.notes.append(f"{gpu}: no winners exported ({e})")
            else:
                done.notes.append(f"{gpu}: measured without a GPU, so no winners are exported")
            breakdown = newest_breakdown(folder / "runs", gpu)
            if breakdown is not None and breakdown.parent != logs:
                done.notes.append(f"{gpu}: the report shows the breakdown of run {breakdown.parent.name}")
            try:
                done.reports += render_report(record, reports, breakdown)
            except ValueError as e:  # nothing ran ok: the rows and logs are kept all the same
                done.notes.append(f"{gpu}: no report rendered ({e})")
    return done
