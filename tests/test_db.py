"""The results database: round trips, resume, crash safety, concurrent writers, merge, refusal
of foreign files, and sharding. Pure Python and SQLite: no GPU, no torch."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autotune.db import SCHEMA_VERSION, Key, Result, ResultsDB, canonical_json, read_database, shard

ROOT = Path(__file__).resolve().parents[1]
ENV = {"gpu": "NVIDIA H200", "driver": "570.86", "torch": "2.11.0", "triton": "3.6.0", "commit": "abc1234"}


def make(m: int = 4096, config: str = "", provider: str = "yat_triton", **kw: object) -> Result:
    fields: dict[str, object] = dict(
        op="dense",
        mode="fwd",
        provider=provider,
        dtype="bfloat16",
        shape=canonical_json({"M": m, "N": 4096, "K": 4096}),
        config=config,
        status="ok",
        median_ms=1.0,
        correct=True,
        representative=True,
        **ENV,
    )
    fields.update(kw)
    return Result(**fields)  # type: ignore[arg-type]


CONV_SHAPE = canonical_json(
    {"B": 8, "C_in": 64, "H": 56, "W": 56, "C_out": 128, "k": 3, "stride": 1, "padding": 1}
)


def cfg(bm: int, bn: int = 128) -> str:
    return canonical_json({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3})


# A child process writes rows `n` (argv) one by one; "{tag}" keeps writers' keys apart.
CHILD = """
import sys, time
from pathlib import Path
from autotune.db import Result, ResultsDB
db_path, tag, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
while go and not Path(go).exists():
    time.sleep(0.005)
with ResultsDB(db_path) as db:
    for i in range(n):
        db.add(Result(op="dense", mode="fwd", provider="eager_ref", dtype="float16",
                      shape='{"M":%d,"N":64,"K":64}' % i, config='{"w":"%s"}' % tag, status="ok",
                      median_ms=i + 1.0, correct=True, gpu="g", driver="", torch="", triton="",
                      commit="", representative=False))
        print(i, flush=True)
"""


def spawn_writer(db: Path, tag: str, n: int, go: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", CHILD, str(db), tag, str(n), str(go or "")]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_round_trip_every_field(tmp_path: Path) -> None:
    full = Result(
        op="conv2d",
        mode="fwd+bwd",
        provider="yat_triton",
        dtype="float16",
        shape=CONV_SHAPE,
        config=cfg(64),
        status="wrong",
        reason="max rel err 0.3 > 0.01",
        median_ms=0.123456789012345,
        p20_ms=0.1,
        p80_ms=0.2,
        tflops=512.25,
        correct=False,
        max_rel_err=0.3,
        saved_bytes=67108864.0,
        timing="cuda-graph",
        gpu="NVIDIA H200",
        driver="570.86",
        torch="2.11.0",
        triton="3.6.0",
        commit="deadbeef",
        representative=False,
        created=1_700_000_000.123456,
    )
    empty = make(status="compile_error", reason="ptxas error", median_ms=None, correct=None, created=5.0)
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add(full)
        db.add(empty)
        got = {r.key: r for r in db.query()}
    assert got == {full.key: full, empty.key: empty}
    # no field of `full` is None or at its default, so the comparison covers real values of all
    for f in dataclasses.fields(Result):
        assert getattr(full, f.name) not in (None, f.default), f.name
    assert got[empty.key].correct is None and got[empty.key].median_ms is None
    assert got[full.key].correct is False and got[full.key].representative is False


def test_pragmas_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        conn = db._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 30_000
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),
    )
    raw.close()


def test_resume_has_done_keys_and_replace(tmp_path: Path) -> None:
    a, b = make(config=cfg(64)), make(config=cfg(128))
    baseline = make(provider="linear+relu", mode="bwd")
    with ResultsDB(tmp_path / "r.sqlite") as db:
        assert not db.has(a.key) and db.done_keys() == set()
        db.add_many([a, b, baseline])
        assert db.has(a.key) and db.has(tuple(b.key)) and db.has(baseline.key)
        assert not db.has(make(config=cfg(32)).key)
        assert db.done_keys() == {a.key, b.key, baseline.key}
        assert db.done_keys(mode="fwd") == {a.key, b.key}
        assert db.done_keys(provider="linear+relu") == {baseline.key}
        assert all(isinstance(k, Key) for k in db.done_keys())

        db.add(dataclasses.replace(a, median_ms=0.5, status="error", reason="retry"))
        rows = db.query(provider="yat_triton")
        assert len(rows) == 2
        assert [(r.median_ms, r.status) for r in rows if r.key == a.key] == [(0.5, "error")]
        assert db.done_keys(status="ok") == {b.key, baseline.key}
        with pytest.raises(ValueError, match="has expects a key"):
            db.has(("dense", "fwd"))


def test_add_many_is_all_or_nothing_and_checks_types(tmp_path: Path) -> None:
    with ResultsDB(tmp_path / "r.sqlite") as db:
        with pytest.raises(TypeError, match="item 1 is a dict"):
            db.add_many([make(), {"op": "dense"}])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="expects a Result"):
            db.add("row")  # type: ignore[arg-type]
        assert db.query() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"median_ms": float("nan")}, "median_ms must be None or a finite number"),
        ({"p80_ms": float("inf")}, "p80_ms must be None or a finite number"),
        ({"tflops": -1.0}, "tflops must be None or a finite number"),
        ({"max_rel_err": float("nan")}, "max_rel_err must not be NaN"),
        ({"median_ms": None}, "status ok needs its median_ms >= 1e-06"),
        ({"median_ms": 5e-324}, "status ok needs its median_ms >= 1e-06"),
        ({"median_ms": 1e300}, "median_ms must be at most 1e"),
        ({"tflops": 1e300}, "tflops must be at most 1e"),
    ],
    ids=[
        "median-nan",
        "p80-inf",
        "tflops-negative",
        "err-nan",
        "ok-untimed",
        "ok-denormal",
        "median-huge",
        "tflops-huge",
    ],  # fmt: skip
)
def test_rows_that_would_store_no_measurement_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    """SQLite keeps a NaN as NULL: such a row is refused when written, naming its field and
    key, and the rows already stored stay."""
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add(make(1))
        with pytest.raises(ValueError, match=message):
            db.add(make(2, **change))
        with pytest.raises(ValueError, match=message):
            db.add_many([make(3), make(4, **change)])
        db.add(make(5, status="wrong", median_ms=None, correct=False, max_rel_err=float("inf")))
        assert [json.loads(r.shape)["M"] for r in db.query()] == [1, 5]


def test_query_filters(tmp_path: Path) -> None:
    rows = [
        make(1),
        make(2, mode="bwd"),
        make(3, dtype="float16"),
        make(4, provider="eager_ref"),
        make(5, status="pruned", reason="smem"),
        make(6, op="conv2d", shape=CONV_SHAPE),
    ]
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_many(rows)
        assert len(db.query()) == 6
        assert [r.mode for r in db.query(mode="bwd")] == ["bwd"]
        assert [r.dtype for r in db.query(dtype="float16")] == ["float16"]
        assert [r.provider for r in db.query(provider="eager_ref")] == ["eager_ref"]
        assert [r.reason for r in db.query(status="pruned")] == ["smem"]
        assert (
            len(db.query(op="dense", mode="fwd", dtype="bfloat16", provider="yat_triton", status="ok")) == 1
        )
        with pytest.raises(ValueError, match="filter mode must be one of"):
            db.query(mode="forward")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"op": "conv3d"}, "Result.op must be one of"),
        ({"mode": "fwd_bwd"}, "Result.mode must be one of"),
        ({"status": "OK"}, "Result.status must be one of"),
        ({"provider": ""}, "Result.provider must be a non-empty string"),
        ({"shape": '{"M": 1}'}, "Result.shape must be a JSON object"),
        ({"shape": ""}, "Result.shape must be a JSON object"),
        ({"config": "[1,2]"}, 'Result.config must be "" or a JSON object'),
        ({"created": float("nan")}, "Result.created must be a unix time in seconds"),
        ({"created": 1.7e18}, "Result.created must be a unix time in seconds"),
        ({"shape": '{"N":4096,"M":4096,"K":4096}'}, r"keys \('M', 'N', 'K'\) in that order"),
        ({"shape": '{"M":4096,"N":4096,"K":-1}'}, "each a whole number >= 0"),
        ({"shape": '{"M":4096,"N":4096,"K":true}'}, "each a whole number >= 0"),
        ({"op": "conv2d"}, r"a conv2d row must have the keys \('B', 'C_in'"),
        ({"config": '{"BLOCK_M":"64"}'}, "Result.config of a yat_triton row holds tile sizes"),
        ({"representative": "yes"}, r"Result.representative must be bool, got 'yes' \(str\)"),
        ({"correct": 0.5}, r"Result.correct must be bool \| None, got 0.5 \(float\)"),
        ({"gpu": None}, r"Result.gpu must be str, got None"),
        ({"median_ms": "1.0"}, r"Result.median_ms must be float \| None, got '1.0' \(str\)"),
    ],
    ids=[
        "op",
        "mode",
        "status",
        "provider",
        "shape-spaces",
        "shape-empty",
        "config-list",
        "created-nan",
        "created-ns",
        "shape-order",
        "shape-negative",
        "shape-bool",
        "conv-dense-shape",
        "config-str",
        "representative-str",
        "correct-float",
        "gpu-none",
        "median-str",
    ],  # fmt: skip
)
def test_result_validation_names_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**change)


def test_killed_writer_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    proc = spawn_writer(path, "kill", 10**6)
    reported: list[int] = []
    assert proc.stdout is not None
    while len(reported) < 40:
        line = proc.stdout.readline()
        assert line, f"writer ended early: {proc.communicate()[1]}"
        reported.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with ResultsDB(path) as db:
        assert db._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r.median_ms for r in db.query()}
    assert {i + 1.0 for i in reported} <= stored


def test_concurrent_writers(tmp_path: Path) -> None:
    path, go = tmp_path / "r.sqlite", tmp_path / "go"
    # the file does not exist yet: the four also race to create it
    procs = [spawn_writer(path, f"w{w}", 50, go) for w in range(4)]
    time.sleep(0.3)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with ResultsDB(path) as db:
        rows = db.query()
    assert len(rows) == 200
    assert {(r.config, r.median_ms) for r in rows} == {
        (f'{{"w":"w{w}"}}', i + 1.0) for w in range(4) for i in range(50)
    }


def test_merge_newer_wins(tmp_path: Path) -> None:
    mine_path, theirs_path = tmp_path / "mine.sqlite", tmp_path / "theirs.sqlite"
    with ResultsDB(mine_path) as mine, ResultsDB(theirs_path) as theirs:
        mine.add_many([make(1, median_ms=1.0, created=100.0), make(2, median_ms=2.0, created=200.0)])
        mine.add(make(4, median_ms=4.0, created=300.0))
        theirs.add_many(
            [
                make(1, median_ms=1.5, created=150.0),  # newer: replaces
                make(2, median_ms=2.5, created=50.0),  # older: ignored
                make(3, median_ms=3.0, created=10.0),  # new key: added
                make(4, median_ms=4.5, created=300.0),  # tie: ours kept
            ]
        )
    before = theirs_path.read_bytes()
    with ResultsDB(mine_path) as mine:
        assert mine.merge_from(theirs_path) == 2
        assert mine.merge_from(theirs_path) == 0  # idempotent
        got = {r.shape: r.median_ms for r in mine.query()}
        with pytest.raises(
            FileNotFoundError,
            match=r"missing.sqlite: no such results database \(run `yat-autotune sweep` first\)",
        ):
            mine.merge_from(tmp_path / "missing.sqlite")
    assert got == {make(m).shape: ms for m, ms in [(1, 1.5), (2, 2.0), (3, 3.0), (4, 4.0)]}
    assert theirs_path.read_bytes() == before


def test_merge_refuses_a_foreign_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database\n" * 100)
    with ResultsDB(tmp_path / "r.sqlite") as db, pytest.raises(ValueError, match="junk.sqlite"):
        db.merge_from(junk)


def test_best(tmp_path: Path) -> None:
    rows = [
        make(1, cfg(64), median_ms=2.0),
        make(1, cfg(128), median_ms=1.5),  # the winner for M=1
        make(1, cfg(32), median_ms=0.5, status="wrong", correct=False),
        make(1, cfg(16), median_ms=0.4, correct=False),
        make(1, cfg(256), median_ms=0.3, status="error", reason="illegal address"),
        make(1, median_ms=0.2, provider="linear+relu"),
        make(1, cfg(64, 64), median_ms=0.1, dtype="float16"),
        make(1, cfg(64, 32), median_ms=0.1, mode="bwd"),
        make(2, cfg(64), median_ms=3.0),
        make(2, cfg(32), median_ms=3.0),  # tie: the smaller config string wins
        make(3, cfg(64), median_ms=None, status="error"),
    ]
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add_many(rows)
        best = db.best("dense", "fwd", "bfloat16")
        assert {s: r.config for s, r in best.items()} == {make(1).shape: cfg(128), make(2).shape: cfg(32)}
        assert db.best("conv2d", "fwd", "bfloat16") == {}

        db.add(make(1, cfg(64), median_ms=0.01, gpu="NVIDIA A100"))
        with pytest.raises(ValueError, match="several GPUs"):
            db.best("dense", "fwd", "bfloat16")
        assert db.best("dense", "fwd", "bfloat16", gpu="NVIDIA A100")[make(1).shape].median_ms == 0.01
        assert db.best("dense", "fwd", "bfloat16", gpu="NVIDIA H200")[make(1).shape].median_ms == 1.5


@pytest.mark.parametrize("n", range(1, 6))
@pytest.mark.parametrize("size", [0, 1, 7, 13])
def test_shard_disjoint_and_covering(n: int, size: int) -> None:
    items = [f"item{i}" for i in range(size)]
    parts = [shard(items, f"{i}/{n}") for i in range(1, n + 1)]
    assert sorted(x for p in parts for x in p) == sorted(items)  # covering, and no item twice
    assert all(p == sorted(p, key=items.index) for p in parts)  # original order kept
    assert parts == [shard(items, f"{i}/{n}") for i in range(1, n + 1)]  # deterministic
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


@pytest.mark.parametrize("spec", ["0/3", "4/3", "x", "", "1/0", "-1/3", "1/", "1/3/4", " 1/3"])
def test_shard_bad_spec(spec: str) -> None:
    with pytest.raises(ValueError, match=f"got {spec!r}"):
        shard([1, 2, 3], spec)


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(random.Random(0).randbytes(8192)), "not a SQLite database"),
        (lambda p: p.write_text("op,mode,median_ms\ndense,fwd,1.0\n" * 50), "not a SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + random.Random(1).randbytes(8176)), "SQLite"),
        (_foreign_sqlite, "not a results database"),
    ],
    ids=["random-bytes", "text-file", "sqlite-header-garbage", "foreign-sqlite"],
)
def test_foreign_file_refused_untouched(
    tmp_path: Path, write: Callable[[Path], object], message: str
) -> None:
    path = tmp_path / "results.sqlite"
    write(path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message) as err:
        ResultsDB(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]


def test_newer_schema_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultsDB(path) as db:
        db.add(make())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ValueError, match="newer than this code") as err:
        ResultsDB(path)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before


def test_missing_folder_and_closed_db(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResultsDB(tmp_path / "nope" / "r.sqlite")
    with ResultsDB(tmp_path / "r.sqlite") as db:
        db.add(make())
    with pytest.raises(sqlite3.ProgrammingError):
        db.add(make())
    with ResultsDB(tmp_path / "r.sqlite") as db:  # reopening keeps the data
        assert len(db.query()) == 1


def _v1_database(path: Path, row: Result) -> None:
    """A results database as schema version 1 wrote it (no saved_bytes, timing or runs table)."""
    from autotune import db as dbmod

    cols = [c for c in dbmod._COLUMNS if c not in ("saved_bytes", "timing")]
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE results ({', '.join(repr(c) for c in cols)})")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute(
        f"INSERT INTO results VALUES ({', '.join('?' * len(cols))})", [getattr(row, c) for c in cols]
    )
    conn.commit()
    conn.close()


def test_version_1_files_are_read_and_upgraded(tmp_path: Path) -> None:
    """An older results file loses nothing: merged from read-only as it is, upgraded in place
    (rows kept, saved_bytes empty, a runs table) when opened for writing."""
    from autotune.db import Run

    old = make(created=3.0)
    _v1_database(tmp_path / "v1.sqlite", old)
    with ResultsDB(tmp_path / "new.sqlite") as db:
        assert db.merge_from(tmp_path / "v1.sqlite") == 1
        assert db.query() == [old]
    raw = sqlite3.connect(tmp_path / "v1.sqlite")
    assert raw.execute("SELECT value FROM meta").fetchone() == ("1",)  # merge only read it
    raw.close()
    with ResultsDB(tmp_path / "v1.sqlite") as db:
        assert db.query() == [old] and db.query()[0].saved_bytes is None
        run = Run("core", "modes=fwd", "NVIDIA H200", "abc", 10.0, 70.0, 20, 5, 40)
        db.add_run(run)
        db.add(make(provider="other", saved_bytes=2.0))
        assert db.runs() == [run] and db.runs("quick") == [] and run.seconds == 60.0
    raw = sqlite3.connect(tmp_path / "v1.sqlite")
    assert raw.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    raw.close()


def test_version_2_files_get_the_timing_column(tmp_path: Path) -> None:
    """A schema 2 file (no timing column) reads its rows with timing None and is upgraded
    in place, rows kept, when opened for writing; a timing outside TIMINGS is refused."""
    from autotune.db import TIMINGS

    old = make(created=4.0)
    path = tmp_path / "v2.sqlite"
    with ResultsDB(path) as db:
        db.add(old)
    raw = sqlite3.connect(path)
    raw.execute('ALTER TABLE results DROP COLUMN "timing"')
    raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with ResultsDB(path) as db:
        assert db.query() == [old] and old.timing is None
        db.add(make(provider="other", timing="cuda-graph"))
        assert {r.provider: r.timing for r in db.query()} == {old.provider: None, "other": "cuda-graph"}
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    raw.close()
    assert TIMINGS == ("cuda-graph", "eager", "wall")
    with pytest.raises(ValueError, match="Result.timing must be None or one of"):
        make(timing="stopwatch")


def test_runs_merge_once(tmp_path: Path) -> None:
    from autotune.db import Run

    run = Run("core", "modes=fwd", "gpu", "abc", 10.0, 70.0, 20, 20, 40)
    with ResultsDB(tmp_path / "a.sqlite") as db:
        db.add_run(run)
    with ResultsDB(tmp_path / "b.sqlite") as db:
        db.merge_from(tmp_path / "a.sqlite")
        db.merge_from(tmp_path / "a.sqlite")
        assert db.runs() == [run]
    # the same run saved later (a sweep saves its record as it goes): the later record stays
    later = dataclasses.replace(run, ended=90.0, tasks_done=20)
    with ResultsDB(tmp_path / "a.sqlite") as db:
        db.add_run(later)
        assert db.runs() == [later]
    with ResultsDB(tmp_path / "b.sqlite") as db:
        db.merge_from(tmp_path / "a.sqlite")
        assert db.runs() == [later]
    with ResultsDB(tmp_path / "c.sqlite") as db:
        db.add_run(later)
        db.merge_from(tmp_path / "b.sqlite")
        db.add_run(run)  # an earlier save of it replaces it only through add_run
        db.merge_from(tmp_path / "b.sqlite")
        assert db.runs() == [later]


def test_read_only_opening_writes_nothing(tmp_path: Path) -> None:
    """What show, export and report open: a version 1 file is read as it is (no upgrade, no
    WAL switch: its bytes stay the same, no runs table reads as no runs); an empty file, a
    folder or a missing file are refused by name and left as they were."""
    import hashlib

    old = make(created=3.0)
    v1 = tmp_path / "v1.sqlite"
    _v1_database(v1, old)
    digest = hashlib.sha256(v1.read_bytes()).hexdigest()
    with ResultsDB(v1, read_only=True) as db:
        assert db.query() == [old] and db.runs() == []
    assert hashlib.sha256(v1.read_bytes()).hexdigest() == digest
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(ValueError, match="empty.db: an empty file, not a results database"):
        ResultsDB(empty, read_only=True)
    assert empty.stat().st_size == 0
    with pytest.raises(ValueError, match="a folder, not a results database file"):
        ResultsDB(tmp_path, read_only=True)
    with pytest.raises(FileNotFoundError, match="none.db: no such results database"):
        ResultsDB(tmp_path / "none.db", read_only=True)
    assert not (tmp_path / "none.db").exists()


def test_cli_refusals_change_nothing(tmp_path: Path) -> None:
    """The harness's commands end bad input with one line and exit 2, leaving every file as
    it was: reads of an empty file, a merge whose second source is corrupt (nothing merged,
    no target made), a bad shard or an empty suite (no database made), an output path that
    is a file."""
    import hashlib

    from kernels._common import TileConfig

    good = tmp_path / "good.db"
    with ResultsDB(good) as db:
        db.add(make(config=canonical_json(TileConfig(64, 64, 32, 8, 4, 3).as_dict())))
    (tmp_path / "empty.db").touch()
    (tmp_path / "junk.db").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "ints.toml").write_text("dense = [1, 2]\n")
    (tmp_path / "afile").write_text("x")
    # an older file's untimed ok row (read as it is, refused by any write): named, before the
    # merge makes its target
    with ResultsDB(tmp_path / "old.db") as db:
        db.add(make())
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute('UPDATE results SET "median_ms" = NULL')
    conn.commit()
    conn.close()
    # a file damaged in its middle (its header intact): SQLite's message names no file
    with ResultsDB(tmp_path / "big.db") as db:
        db.add_many(make(m=i + 1) for i in range(400))
    malformed = bytearray((tmp_path / "big.db").read_bytes())
    (tmp_path / "big.db").unlink()
    for f in tmp_path.glob("big.db-*"):
        f.unlink()
    malformed[4096 * 5 : 4096 * 8] = b"\xff" * (3 * 4096)
    (tmp_path / "malformed.db").write_bytes(bytes(malformed))

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}

    before = digests()
    cases = [
        (["show", "--db", "empty.db"], "empty.db: an empty file, not a results database"),
        (["export", "--db", "empty.db"], "empty.db: an empty file"),
        (["report", "--db", "empty.db"], "empty.db: an empty file"),
        (["merge", "--db", "new.db", "good.db", "junk.db"], "junk.db: not a SQLite database"),
        (["merge", "--db", "new.db", "good.db", "old.db"], "old.db: a Result with status ok needs"),
        (
            ["merge", "--db", "new.db", "good.db", "malformed.db"],
            "^yat-autotune merge: malformed.db: .*malformed",
        ),
        (["show", "--db", "malformed.db"], "^yat-autotune show: malformed.db: .*malformed"),
        (["sweep", "--suite", "quick", "--shard", "0/2", "--db", "new.db"], "shard spec must be 'i/n'"),
        (["sweep", "--suite", "empty.toml", "--db", "new.db"], "empty.toml holds no shapes"),
        (
            ["sweep", "--suite", "ints.toml", "--db", "new.db"],
            r"\[\[dense\]\] entry 0 must be a table, got 1",
        ),
        (["export", "--db", "good.db", "--out", "afile"], "afile"),
        (["report", "--db", "good.db", "--out", "afile"], "afile"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args, message in cases:
        done = subprocess.run([sys.executable, "-m", "autotune", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"yat-autotune {args[0]}: "), (args, done.stderr)
        assert re.search(message, lines[0]), (args, lines[0])
        assert digests() == before and not (tmp_path / "new.db").exists(), args


@pytest.mark.parametrize(
    ("table", "column", "value", "message", "cli"),
    [
        ("results", "median_ms", "'fast'", r"'fast' \(str\) in column median_ms, which must be float", True),
        ("results", "correct", "'yes'", r"holds 'yes' \(str\) in column correct, which must be bool", False),
        ("results", "correct", "2", r"holds 2 \(int\) in column correct", False),
        ("results", "gpu", "X'41'", r"holds b'A' \(bytes\) in column gpu, which must be str", False),
        ("results", "median_ms", "-1.0", r"median_ms must be None or a finite number >= 0, got -1.0", False),
        ("results", "status", "'fine'", r"Result.status must be one of", False),
        ("runs", "tasks_done", "'many'", r"runs holds 'many' \(str\) in column tasks_done, which must", True),
        ("runs", "started", "X'00'", r"holds b'\\x00' \(bytes\) in column started, which must be", False),
    ],
)
def test_hand_edited_values_are_named(
    tmp_path: Path, table: str, column: str, value: str, message: str, cli: bool
) -> None:
    """SQLite keeps any value in any column, so a hand edit can leave text where a time
    belongs. Every read (query, runs, merge, and the commands on top) names the file, the
    column and the value, and changes nothing; it does not fail later with a TypeError."""
    import hashlib

    from autotune.db import Run

    path = tmp_path / "edited.db"
    with ResultsDB(path) as db:
        db.add(make())
        db.add_run(Run("core", "modes=fwd", "NVIDIA H200", "abc", 10.0, 70.0, 20, 5, 40))
    conn = sqlite3.connect(path)
    conn.execute(f'UPDATE {table} SET "{column}" = {value}')
    conn.commit()
    conn.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with ResultsDB(path, read_only=True) as db:
        with pytest.raises(ValueError, match=rf"edited\.db: .*{message}"):
            db.query() if table == "results" else db.runs()
    good = tmp_path / "good.db"
    with ResultsDB(good) as db:
        db.add(make(m=32))
    target = tmp_path / "target.db"
    with ResultsDB(target) as db:
        db.add(make(m=64))
        with pytest.raises(ValueError, match=message):
            db.merge([read_database(good), read_database(path)])
        assert [r.shape for r in db.query()] == [make(m=64).shape] and db.runs() == []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = [
        ["show", "--db", str(path)],
        ["export", "--out", "tuned", "--db", str(path)],
        ["merge", "--db", "new.db", str(good), str(path)],  # the good source is not merged either
        ["report", "--out", "reports", "--db", str(path)],
    ]
    if table == "runs":
        commands = commands[2:]  # show and export do not read the runs table
    for command in commands if cli else []:
        done = subprocess.run([sys.executable, "-m", "autotune", *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (command, done.stdout, done.stderr)
        assert re.search(message, lines[0]), (command, lines[0])
    assert not (tmp_path / "new.db").exists()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_an_older_files_untimed_ok_row_is_read(tmp_path: Path) -> None:
    """Files written before every ok row needed its time may hold one without: it is read
    (the commands skip an untimed row), though no such row is written any more."""
    path = tmp_path / "old.db"
    with ResultsDB(path) as db:
        db.add(make())
    conn = sqlite3.connect(path)
    conn.execute('UPDATE results SET "median_ms" = NULL')
    conn.commit()
    conn.close()
    with ResultsDB(path, read_only=True) as db:
        (row,) = db.query()
    assert row.status == "ok" and row.median_ms is None
    with (
        ResultsDB(tmp_path / "new.db") as db,
        pytest.raises(ValueError, match="status ok needs its median_ms"),
    ):
        db.add(row)
