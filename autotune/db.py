"""The results database of the autotune harness: one SQLite file, one row per measurement.

Why SQLite and not CSV: a sweep runs for hours, is interrupted, resumed, split across GPUs
and merged. Every `add` is its own committed transaction, so a killed sweep keeps all it
measured; the UNIQUE key makes a re-run replace a row instead of duplicating it; WAL mode
lets several sweep processes write one file at once. SPEC.md section 5 fixes what a row
records.

    with ResultsDB("results/h200.sqlite") as db:
        done = db.done_keys(op="dense", gpu=gpu)
        for job in shard([j for j in jobs if j.key not in done], "2/4"):
            db.add(measure(job))  # a Result
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

# 2: results.saved_bytes, the runs table; 3: results.timing (older files are upgraded)
SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 30_000  # SQLite waits this long for another writer before "database is locked"
LOCK_RETRIES = 5  # then we retry the whole transaction a few times, with backoff

OPS = ("dense", "conv2d")
MODES = ("fwd", "bwd", "fwd+bwd")
STATUSES = ("ok", "wrong", "compile_error", "out_of_resources", "pruned", "error")
TIMINGS = ("cuda-graph", "eager", "wall")  # see autotune.timing
# How a yat_triton ok row of a backward mode names the forward tile it ran on (the sweep's
# `fastest_fwd_tile`), in its reason: "forward: m128n128k64g8w8s4e4_tma"
FWD_NOTE = "forward: "
# A problem's shape, per op: these keys in this order, non-negative whole numbers (the sweep's
# suites; one spelling per problem, so that a problem is one key and one winners entry).
SHAPE_KEYS = {
    "dense": ("M", "N", "K"),
    "conv2d": ("B", "C_in", "H", "W", "C_out", "k", "stride", "padding"),
}
LATEST_CREATED = 1e10  # unix seconds (year 2286): anything later is not a time.time() value
MAX_MS = 1e9  # milliseconds (11 days): a longer "median" is not a measurement
MIN_OK_MS = 1e-6  # a nanosecond: no call runs faster
MAX_TFLOPS = 1e6

T = TypeVar("T")


class Key(NamedTuple):
    """The identity of a measurement: a resumed sweep skips a key that is already stored."""

    op: str
    mode: str
    provider: str
    dtype: str
    shape: str
    config: str
    gpu: str


def canonical_json(obj: dict[str, object]) -> str:
    """The compact JSON that `Result.shape` and `Result.config` hold.

    Keys keep their given order (problem order: M, N, K), so build these dicts in one place;
    two spellings of the same dims would be two keys and defeat resume.
    """
    return json.dumps(obj, separators=(",", ":"))


@functools.lru_cache(maxsize=65536)
def _canonical_object(text: str) -> bool:
    """Whether `text` is a JSON object as canonical_json writes it (a database repeats a few
    shapes and configs over thousands of rows: each is parsed once)."""
    try:
        obj = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and canonical_json(obj) == text


@functools.lru_cache(maxsize=65536)
def _shape_fits(op: str, shape: str) -> bool:
    """Whether a canonical shape has the op's keys in order, each a whole number >= 0."""
    dims = json.loads(shape)
    return tuple(dims) == SHAPE_KEYS[op] and all(_is_count(v) for v in dims.values())


@functools.lru_cache(maxsize=65536)
def _tile_values(config: str) -> bool:
    """Whether a canonical config holds only whole numbers and flags (a yat_triton tile)."""
    return all(isinstance(v, (int, bool)) for v in json.loads(config or "{}").values())


def _check_json(name: str, text: str, allow_empty: bool) -> None:
    if allow_empty and text == "":
        return
    if not isinstance(text, str) or not _canonical_object(text):
        empty = '"" or ' if allow_empty else ""
        raise ValueError(
            f"Result.{name} must be {empty}a JSON object as canonical_json writes it, got {text!r}"
        )


@dataclass(frozen=True, kw_only=True)
class Result:
    """One measurement: a provider on one problem shape, dtype, mode and (for us) tile config.

    `config` is "" for baselines. Times are milliseconds (median, 20th/80th percentile),
    `correct` says whether the output matched the reference, `representative` is False for
    timings that do not speak for the GPU (CPU, Triton interpreter). `saved_bytes` (backward
    modes) is what the forward keeps for backward in output-sized tensors (see
    `autotune.sweep.Problem.saved_bytes`). `timing` says how a timed row was timed (TIMINGS,
    see `autotune.timing`); None where nothing was timed
    and in files older than schema 3.
    """

    op: str
    mode: str
    provider: str
    dtype: str
    shape: str
    config: str
    status: str
    reason: str = ""
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    tflops: float | None = None
    correct: bool | None = None
    max_rel_err: float | None = None
    saved_bytes: float | None = None
    timing: str | None = None
    gpu: str
    driver: str
    torch: str
    triton: str
    commit: str
    representative: bool
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        for name, allowed in (("op", OPS), ("mode", MODES), ("status", STATUSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Result.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.timing is not None and self.timing not in TIMINGS:
            raise ValueError(f"Result.timing must be None or one of {TIMINGS}, got {self.timing!r}")
        for name in ("provider", "dtype"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"Result.{name} must be a non-empty string, got {getattr(self, name)!r}")
        for f in _FIELDS:
            why = _type_error(str(f.type), getattr(self, f.name), stored=False)
            if why is not None:
                raise ValueError(f"Result.{f.name} must be {f.type}, got {why}")
        _check_json("shape", self.shape, allow_empty=False)
        _check_json("config", self.config, allow_empty=True)
        if not _shape_fits(self.op, self.shape):
            raise ValueError(
                f"Result.shape of a {self.op} row must have the keys {SHAPE_KEYS[self.op]} in that "
                f"order, each a whole number >= 0, got {self.shape}"
            )
        if self.provider == "yat_triton" and not _tile_values(self.config):
            raise ValueError(
                f"Result.config of a yat_triton row holds tile sizes and flags, got {self.config}"
            )
        if not (math.isfinite(self.created) and 0 <= self.created <= LATEST_CREATED):
            raise ValueError(f"Result.created must be a unix time in seconds, got {self.created!r}")

    @property
    def key(self) -> Key:
        return Key(self.op, self.mode, self.provider, self.dtype, self.shape, self.config, self.gpu)


# One source of truth for the table: the dataclass fields, typed by their annotations.
_SQL_TYPES = {
    "str": "TEXT NOT NULL",
    "str | None": "TEXT",
    "float": "REAL NOT NULL",
    "float | None": "REAL",
    "bool": "INTEGER NOT NULL",
    "bool | None": "INTEGER",
}
_FIELDS = dataclasses.fields(Result)
_COLUMNS = [f.name for f in _FIELDS]
_BOOLS = {f.name for f in _FIELDS if f.type.startswith("bool")}
_COLS = ", ".join(f'"{c}"' for c in _COLUMNS)  # quoted: "commit" is an SQL keyword
_KEY_WHERE = " AND ".join(f'"{c}" = ?' for c in Key._fields)
_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    "id" INTEGER PRIMARY KEY, "suite" TEXT NOT NULL, "args" TEXT NOT NULL, "gpu" TEXT NOT NULL,
    "commit" TEXT NOT NULL, "started" REAL NOT NULL, "ended" REAL NOT NULL,
    "tasks_total" INTEGER NOT NULL, "tasks_done" INTEGER NOT NULL, "rows_added" INTEGER NOT NULL
)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    {", ".join(f'"{f.name}" {_SQL_TYPES[str(f.type)]}' for f in _FIELDS)},
    UNIQUE ({", ".join(f'"{c}"' for c in Key._fields)})
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{_RUNS_DDL};
"""


@dataclass(frozen=True)
class Run:
    """One sweep invocation: which suite with which options (`args`: modes, dtypes, ops,
    max configs), how long (compile included), how far it got. `tasks_done` counts the
    (op, shape, dtype, mode) tasks finished, by this run or before it."""

    suite: str
    args: str
    gpu: str
    commit: str
    started: float
    ended: float
    tasks_total: int
    tasks_done: int
    rows_added: int

    @property
    def seconds(self) -> float:
        return self.ended - self.started


_RUN_FIELDS = dataclasses.fields(Run)
_RUN_COLS = ", ".join(f'"{f.name}"' for f in _RUN_FIELDS)
_UPSERT = f"INSERT OR REPLACE INTO results ({_COLS}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_RUN_INSERT = f"INSERT INTO runs ({_RUN_COLS}) VALUES ({', '.join('?' * len(dataclasses.fields(Run)))})"


# A run is the same run when it started at the same instant (on its suite and GPU).
_RUN_WHERE = '"suite" = ? AND "gpu" = ? AND "started" = ?'


def _run_key(run: Run) -> tuple[str, str, float]:
    return (run.suite, run.gpu, run.started)


def _put_run(c: sqlite3.Connection, run: Run) -> None:
    """Store `run`'s record in place of any of the same run."""
    c.execute(f"DELETE FROM runs WHERE {_RUN_WHERE}", _run_key(run))
    c.execute(_RUN_INSERT, dataclasses.astuple(run))


def _has_runs(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
        is not None
    )


_MEASURES = ("median_ms", "p20_ms", "p80_ms", "tflops", "saved_bytes")


def _check_measures(r: Result, stored: bool = False) -> None:
    """ValueError unless the numbers of `r` are storable: SQLite would store a NaN as NULL,
    and an ok row without a time would be a measurement that says nothing (one already
    `stored` by older code is read as it is: the commands skip an untimed row)."""
    for name in _MEASURES:
        v = getattr(r, name)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"Result.{name} must be None or a finite number >= 0, got {v!r} ({r.key})")
        top = {"tflops": MAX_TFLOPS, "saved_bytes": math.inf}.get(name, MAX_MS)
        if v is not None and v > top:
            raise ValueError(f"Result.{name} must be at most {top:g}, got {v!r} ({r.key})")
    if r.max_rel_err is not None and math.isnan(r.max_rel_err):
        raise ValueError(f"Result.max_rel_err must not be NaN (inf for outputs not finite) ({r.key})")
    if (
        r.status == "ok"
        and not (r.median_ms and r.median_ms >= MIN_OK_MS)
        and not (stored and r.median_ms is None)
    ):
        raise ValueError(
            f"a Result with status ok needs its median_ms >= {MIN_OK_MS:g}, got {r.median_ms!r} ({r.key})"
        )


def _to_row(r: Result) -> tuple[object, ...]:
    """The row to store, or ValueError (see `_check_measures`)."""
    _check_measures(r)
    return tuple(getattr(r, c) for c in _COLUMNS)


def _is_count(v: object) -> bool:
    return type(v) is int and v >= 0


def _type_error(annotation: str, v: object, stored: bool = True) -> str | None:
    """Why a value does not fit a field annotated `annotation`, or None where it does:
    a Python value (stored=False), or one read from SQLite, which keeps whatever a hand edit
    wrote (text in a REAL column, a REAL in an INTEGER one) and holds a bool as 0 or 1."""
    if v is None:
        return None if annotation.endswith(" | None") else ("NULL" if stored else "None")
    kind = annotation.partition(" | ")[0]
    if kind == "str":
        fits = isinstance(v, str)
    elif kind == "float":
        fits = type(v) is float or (isinstance(v, (int, float)) and not isinstance(v, bool))
    elif kind == "int":
        fits = type(v) is int
    else:  # bool: SQLite holds 0 or 1
        fits = type(v) is int and v in (0, 1) if stored else type(v) is bool
    return None if fits else f"{v!r} ({type(v).__name__})"


def _check_types(
    path: Path, table: str, fields: Sequence[dataclasses.Field[object]], row: Sequence[object]
) -> None:
    for f, v in zip(fields, row, strict=True):
        why = _type_error(str(f.type), v)
        if why is not None:
            raise ValueError(
                f"{path}: a row of table {table} holds {why} in column {f.name}, which must be "
                f"{f.type}; the file is damaged or was edited by hand (row: {tuple(row)!r})"
            )


def _from_row(row: Sequence[object], path: Path) -> Result:
    """The Result a stored row holds, or ValueError naming the file and the bad value."""
    _check_types(path, "results", _FIELDS, row)
    values = dict(zip(_COLUMNS, row, strict=True))
    for name in _BOOLS:
        if values[name] is not None:
            values[name] = bool(values[name])
    try:
        r = Result(**values)  # type: ignore[arg-type]
        _check_measures(r, stored=True)
    except ValueError as e:
        raise ValueError(f"{path}: a damaged or hand-edited row of table results: {e}") from e
    return r


def _run_from_row(row: Sequence[object], path: Path) -> Run:
    _check_types(path, "runs", _RUN_FIELDS, row)
    return Run(*row)  # type: ignore[arg-type]


def _is_lock_error(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _retry(fn: Callable[[], T]) -> T:
    """Run fn, retrying on a lock error that outlived busy_timeout (many writers, slow disk)."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_lock_error(e) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(0.1 * 2**attempt)
    raise AssertionError("unreachable")


def _check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Refuse, without writing, a file that is not a results database this code can read;
    return its schema version."""
    try:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"results", "meta"} <= tables:
            raise ValueError(
                f"{path}: a SQLite database but not a results database (tables: {sorted(tables)})"
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError as e:
        if _is_lock_error(e):
            raise
        if "unable to open" in str(e) and not os.access(path.parent, os.W_OK):
            raise ValueError(
                f"{path}: cannot be opened in a folder that is not writable (SQLite keeps its WAL "
                "index next to the file); copy it to a writable folder. The file was left untouched"
            ) from e
        raise ValueError(f"{path}: not a readable SQLite database ({e}); the file was left untouched") from e
    except sqlite3.DatabaseError as e:
        raise ValueError(f"{path}: not a SQLite database ({e}); the file was left untouched") from e
    if row is None or not str(row[0]).isdecimal():
        raise ValueError(f"{path}: results database without a valid schema version (meta has {row!r})")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema version {version} is newer than this code understands ({SCHEMA_VERSION}); "
            "update the harness. The file was left untouched"
        )
    if version not in _UPGRADES and version != SCHEMA_VERSION:
        raise ValueError(f"{path}: unknown schema version {version}, expected {SCHEMA_VERSION}")
    return version


# Older schema versions this code reads (missing columns as NULL) and upgrades on a write open.
_TO_3 = ['ALTER TABLE results ADD COLUMN "timing" TEXT']
_UPGRADES = {
    1: ['ALTER TABLE results ADD COLUMN "saved_bytes" REAL', _RUNS_DDL, *_TO_3],
    2: _TO_3,
}


def _result_select(conn: sqlite3.Connection) -> str:
    """The SELECT list of every Result column; a column an older file lacks reads as NULL."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
    return ", ".join(f'"{c}"' if c in have else f'NULL AS "{c}"' for c in _COLUMNS)


def _connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, so each write takes
    # the lock up front (no read-to-write upgrade deadlock that busy_timeout cannot resolve).
    # read_only: a file that must exist (mode=rw never creates one), which this code then
    # only reads; not mode=ro, whose connection leaves the WAL's -shm and -wal files behind
    # where a read-write one removes them as it closes.
    target, uri = (path.resolve().as_uri() + "?mode=rw", True) if read_only else (os.fspath(path), False)
    try:
        conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, uri=uri)
    except sqlite3.Error as e:
        raise ValueError(f"{path}: cannot open as a SQLite database ({e})") from e
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class ResultsDB:
    """A results database file; see the module docstring. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        """`read_only`: for commands that only read (show, export, report): the file must
        already be a results database, and is neither set up, switched to WAL nor upgraded
        (an older schema reads its missing columns as NULL)."""
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path}: a folder, not a results database file")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: the folder {self.path.parent} does not exist")
        if read_only and not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such results database (run `yat-autotune sweep` first)")
        if read_only and self.path.stat().st_size == 0:
            raise ValueError(f"{self.path}: an empty file, not a results database (sweep into it first)")
        self._conn = _connect(self.path, read_only=read_only)
        try:
            _retry(self._open if not read_only else lambda: _check_schema(self._conn, self.path))
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        try:
            empty = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _is_lock_error(e):
                raise
            empty = False  # not a database: _check_schema turns it into a ValueError naming the file
        if empty:  # a new (or zero-byte) file is ours to set up; IF NOT EXISTS covers racing openers
            self._set_wal()
            with self._transaction() as c:
                for statement in _SCHEMA.split(";"):
                    c.execute(statement)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        version = _check_schema(self._conn, self.path)  # before any write to an existing file
        self._set_wal()
        self._conn.execute("PRAGMA synchronous = NORMAL")  # in WAL: survives a killed process
        if version != SCHEMA_VERSION:
            self._upgrade(version)

    def _upgrade(self, version: int) -> None:
        """Bring an older results database to this schema in one transaction (rows kept)."""

        def upgrade(c: sqlite3.Connection) -> None:
            now = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            if int(now) >= SCHEMA_VERSION:  # a concurrent opener upgraded it first
                return
            for statement in _UPGRADES[int(now)]:  # from what the file holds now, not at open
                c.execute(statement)
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

        self._write(upgrade)

    def _set_wal(self) -> None:
        mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OSError(
                f"{self.path}: SQLite could not switch to WAL mode (got {mode!r}); use a local disk"
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def attempt() -> T:
            with self._transaction() as c:
                return fn(c)

        return _retry(attempt)

    def add(self, result: Result) -> None:
        """Insert, or replace the row with the same key; committed before returning."""
        if not isinstance(result, Result):
            raise TypeError(f"ResultsDB.add expects a Result, got {type(result).__name__}")
        self._write(lambda c: c.execute(_UPSERT, _to_row(result)))

    def add_many(self, results: Iterable[Result]) -> None:
        """Like add for each, in one transaction: all rows are stored or none."""
        rows = list(results)
        for i, r in enumerate(rows):
            if not isinstance(r, Result):
                raise TypeError(f"ResultsDB.add_many expects Results, item {i} is a {type(r).__name__}")
        self._write(lambda c: c.executemany(_UPSERT, [_to_row(r) for r in rows]))

    def remove_if(self, key: Key | tuple[str, ...], reason_prefix: str) -> bool:
        """Delete the row stored under `key` if its reason starts with `reason_prefix`
        (a record that no longer holds, e.g. a setup that failed once); whether one was."""
        if len(key) != len(Key._fields):
            raise ValueError(f"ResultsDB.remove_if expects a key {Key._fields}, got {key!r}")
        where = f'{_KEY_WHERE} AND substr("reason", 1, ?) = ?'
        params = (*tuple(key), len(reason_prefix), reason_prefix)
        return self._write(lambda c: c.execute(f"DELETE FROM results WHERE {where}", params).rowcount > 0)

    def has(self, key: Key | tuple[str, ...]) -> bool:
        if len(key) != len(Key._fields):
            raise ValueError(f"ResultsDB.has expects a key {Key._fields}, got {key!r}")
        return (
            self._conn.execute(f"SELECT 1 FROM results WHERE {_KEY_WHERE}", tuple(key)).fetchone() is not None
        )

    def _select(self, columns: str, filters: dict[str, str | None]) -> list[tuple[object, ...]]:
        allowed = {"op": OPS, "mode": MODES, "status": STATUSES}
        for name, value in filters.items():
            if value is not None and name in allowed and value not in allowed[name]:
                raise ValueError(f"filter {name} must be one of {allowed[name]} or None, got {value!r}")
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f'"{k}" = ?' for k in used) or "1"
        order = ", ".join(f'"{c}"' for c in Key._fields)
        sql = f"SELECT {columns} FROM results WHERE {where} ORDER BY {order}"
        return self._conn.execute(sql, tuple(used.values())).fetchall()

    def done_keys(
        self,
        op: str | None = None,
        mode: str | None = None,
        dtype: str | None = None,
        provider: str | None = None,
        status: str | None = None,
        gpu: str | None = None,
    ) -> set[Key]:
        """Keys already measured (any status unless given), for a sweep to skip on resume."""
        filters = {"op": op, "mode": mode, "dtype": dtype, "provider": provider, "status": status, "gpu": gpu}
        cols = ", ".join(f'"{c}"' for c in Key._fields)
        return {Key(*row) for row in self._select(cols, filters)}  # type: ignore[arg-type]

    def query(
        self,
        op: str | None = None,
        mode: str | None = None,
        dtype: str | None = None,
        provider: str | None = None,
        status: str | None = None,
        gpu: str | None = None,
    ) -> list[Result]:
        """Rows matching every given filter (None: any), in key order."""
        filters = {"op": op, "mode": mode, "dtype": dtype, "provider": provider, "status": status, "gpu": gpu}
        return [_from_row(row, self.path) for row in self._select(_result_select(self._conn), filters)]

    def best(self, op: str, mode: str, dtype: str, *, gpu: str | None = None) -> dict[str, Result]:
        """Per shape, the fastest yat_triton row that ran ok and passed the correctness check.

        Winners from different GPUs must not mix, so without `gpu` the rows must come from one.
        Ties on the median go to the smaller config string, so the answer is deterministic.
        """
        rows = [
            r
            for r in self.query(op=op, mode=mode, dtype=dtype, provider="yat_triton", status="ok", gpu=gpu)
            if r.correct and r.median_ms is not None
        ]
        gpus = sorted({r.gpu for r in rows})
        if len(gpus) > 1:
            raise ValueError(f"best({op!r}, {mode!r}, {dtype!r}): rows from several GPUs {gpus}; pass gpu=")
        winners: dict[str, Result] = {}
        for r in sorted(rows, key=lambda r: (r.median_ms, r.config)):
            winners.setdefault(r.shape, r)
        return dict(sorted(winners.items()))

    def merge_from(self, other_path: str | os.PathLike[str]) -> int:
        """Copy in the rows of another results database (read only); on a shared key the newer
        `created` wins, a tie keeps ours. Returns how many rows were added or replaced."""
        return self.merge([read_database(other_path)])[0]

    def merge(self, sources: Sequence[tuple[list[Result], list[Run]]]) -> list[int]:
        """Merge databases read by `read_database` in one transaction, in order (on a shared
        key the newer `created` wins; a tie keeps what is there). Returns, per source, how
        many rows it added or replaced."""

        def merge(c: sqlite3.Connection) -> list[int]:
            counts = []
            for incoming, runs in sources:
                changed = 0
                for r in incoming:
                    mine = c.execute(
                        f"SELECT created FROM results WHERE {_KEY_WHERE}", tuple(r.key)
                    ).fetchone()
                    if mine is None or mine[0] < r.created:
                        c.execute(_UPSERT, _to_row(r))
                        changed += 1
                for run in runs:  # the same run's record saved later (it went further) is kept
                    mine = c.execute(f'SELECT "ended" FROM runs WHERE {_RUN_WHERE}', _run_key(run)).fetchone()
                    if mine is None or mine[0] < run.ended:
                        _put_run(c, run)
                counts.append(changed)
            return counts

        return self._write(merge)

    def add_run(self, run: Run) -> None:
        """Record a sweep invocation, or update the record of the same run (the same suite
        and GPU, started at the same instant: a sweep saves its record as it goes);
        committed before returning."""
        self._write(lambda c: _put_run(c, run))

    def runs(self, suite: str | None = None) -> list[Run]:
        """Recorded sweep invocations, oldest first (none in a file without the table)."""
        if not _has_runs(self._conn):
            return []
        where, params = ('WHERE "suite" = ?', (suite,)) if suite is not None else ("", ())
        sql = f'SELECT {_RUN_COLS} FROM runs {where} ORDER BY "started"'
        return [_run_from_row(row, self.path) for row in self._conn.execute(sql, params)]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_database(path: str | os.PathLike[str]) -> tuple[list[Result], list[Run]]:
    """Every row and run of the results database at `path`, to merge: read without writing to
    it, checked value by value and row by row as a write would check them (ValueError or
    sqlite3.DatabaseError naming the file: a merge reads every source before it writes)."""
    try:
        with ResultsDB(path, read_only=True) as db:
            rows, runs = db.query(), db.runs()
        for r in rows:
            _check_measures(r)
    except (ValueError, sqlite3.DatabaseError) as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    return rows, runs


def shard(items: Sequence[T], spec: str) -> list[T]:
    """The share of `items` for worker i of n ("i/n", 1-based): every n-th item from the i-th.

    Round-robin keeps shards balanced when items are sorted by size; shards 1..n are
    disjoint and together cover every item, in the original order.
    """
    m = re.fullmatch(r"([0-9]+)/([0-9]+)", spec) if isinstance(spec, str) else None
    i, n = (int(m[1]), int(m[2])) if m else (0, 0)
    if not 1 <= i <= n:
        raise ValueError(f"shard spec must be 'i/n' with 1 <= i <= n (e.g. '2/4'), got {spec!r}")
    return list(items)[i - 1 :: n]
