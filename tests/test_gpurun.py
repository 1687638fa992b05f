"""`yat-autotune import-run`: a GPU run's archive (gpu.sh --pack) merged into reports/<gpu>/,
its winners exported and its report rendered. The rows are the INVENTED fixture rows of
test_report ("Test H200"): they check the plumbing, they measure nothing."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sqlite3
import tarfile
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report plots need matplotlib")

from test_report import BIG, SMALL, cfg, fixture_rows, invented, make_db  # noqa: E402

from autotune import cli  # noqa: E402
from autotune.db import ResultsDB, Run  # noqa: E402
from autotune.gpurun import import_run  # noqa: E402
from yat_triton.tuning import read_winners  # noqa: E402

STARTED = 1_790_000_000  # 2026-09-21T14:13:20Z: the env.txt time of the first invented run


def run_folder(
    tmp_path: Path, name: str, rows: list, started: int = STARTED, earlier: tuple[str, ...] = ()
) -> Path:
    """What gpu.sh leaves in OUT: the database with a run record per GPU (at `started`, or a
    day before for the GPUs named `earlier`: rows a resumed database carried in), logs with
    the run's time on env.txt."""
    out = tmp_path / name
    out.mkdir()
    make_db(out / "results.db", rows)
    with ResultsDB(out / "results.db") as db:
        for gpu in sorted({r.gpu for r in rows}):
            at = started - 86400 if gpu in earlier else started
            db.add_run(Run("core", "{}", gpu, "testcommit", at, at + 100.0, 2, 2, len(rows)))
    for log in ("env.txt", "sweep.log", "show.txt", "tests.log"):
        (out / log).write_text(f"{log} of {name}\n")
    os.utime(out / "env.txt", (started, started))
    (out / "tuned").mkdir()
    (out / "tuned" / "ignored.json").write_text("{}")  # re-exported from the merged record instead
    return out


def pack(folder: Path) -> Path:
    archive = folder.with_suffix(".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    return archive


def test_import_merges_files_exports_and_renders(tmp_path: Path) -> None:
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    first = pack(run_folder(tmp_path, "run1", fixture_rows("Test H200", True)))
    done = import_run(first, reports, tuned)
    folder = reports / "test_h200"
    logs = folder / "runs" / "20260921T141320Z"
    assert done.databases == [folder / "results.db"]
    assert sorted(p.name for p in done.logs) == [
        "env.txt",
        "results.db",
        "show.txt",
        "sweep.log",
        "tests.log",
    ]
    assert (logs / "sweep.log").read_text() == "sweep.log of run1\n"
    assert (folder / "README.md").is_file() and folder / "README.md" in done.reports
    assert "[test_h200](test_h200/README.md)" in (reports / "README.md").read_text()
    assert "0.8123" in (folder / "README.md").read_text()  # the invented best row, rendered
    (winners,) = done.winners
    gpu, entries = read_winners(winners)
    assert gpu == "Test H200" and {dict(e.shape)["M"] for e in entries} == {4096, 64}
    with ResultsDB(folder / "results.db") as db:
        assert len(db.query()) == len(fixture_rows("Test H200", True)) and len(db.runs()) == 1

    # a second run, later: a faster row for a key already kept, a new shape; the first
    # run's rows, run record and logs stay
    ours = dict(provider="yat_triton", correct=True, timing="cuda-graph")
    faster = invented(
        "Test H200", True, shape=BIG, config=cfg(128, 128), median_ms=0.7, created=1.8e9, **ours
    )
    wider = SMALL.replace("48", "96")
    new_shape = invented(
        "Test H200", True, shape=wider, config=cfg(64, 64), median_ms=0.005, tflops=1, **ours
    )
    second = pack(run_folder(tmp_path, "run2", [faster, new_shape], started=STARTED + 86400))
    import_run(second, reports, tuned)
    with ResultsDB(folder / "results.db") as db:
        rows = db.query()
        assert len(rows) == len(fixture_rows("Test H200", True)) + 1 and len(db.runs()) == 2
        (kept,) = [r for r in rows if r.key == faster.key]
        assert kept.median_ms == 0.7
    assert (logs / "sweep.log").read_text() == "sweep.log of run1\n"
    assert (folder / "runs" / "20260922T141320Z" / "sweep.log").read_text() == "sweep.log of run2\n"
    with ResultsDB(folder / "runs" / "20260922T141320Z" / "results.db") as own:  # the run's rows alone
        assert sorted(r.median_ms for r in own.query()) == [0.005, 0.7]
    text = (folder / "README.md").read_text()
    assert "| 0.7 " in text and "| 0.8123 " not in text
    assert not list(folder.glob("*.part.db")) and not (reports / "tuned").exists()


def test_the_report_keeps_the_newest_readable_breakdown(tmp_path: Path) -> None:
    """A sweep-only run leaves no breakdown, and a run cut short may leave a broken one: the
    report rendered after importing them shows the newest readable breakdown (by the runs'
    start), and the import says whose it is."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    ours = dict(provider="yat_triton", correct=True, timing="cuda-graph")

    def run(name: str, day: int, breakdown: str | None, us: float = 500.0) -> Path:
        row = invented("Test H200", True, shape=BIG, config=cfg(128, 128), median_ms=0.9 - day / 10,
                       created=STARTED + day * 86400 + 10.0, **ours)  # fmt: skip
        out = run_folder(tmp_path, name, [row], started=STARTED + day * 86400)
        line = {"op": "memory", "phase": "ref", "what": "device copy (read + write)", "grid": "-", "us": us,
                "share": None, "gpu": "Test H200", "dtype": "uint8", "shape": f"bytes={2 << 30}"}  # fmt: skip
        if breakdown == "good":
            (out / "breakdown.jsonl").write_text(json.dumps(line) + "\n")
        elif breakdown == "cut":  # the breakdown's cap stopped it mid-write
            (out / "breakdown.jsonl").write_text(json.dumps(line)[:30])
        return pack(out)

    def page() -> str:
        return (reports / "test_h200" / "README.md").read_text()

    done = import_run(run("full", 0, "good"), reports, tuned)
    assert done.notes == [] and "## Where the time goes" in page() and "4.29 TB/s" in page()
    done = import_run(run("cut", 1, "cut"), reports, tuned)
    assert done.notes == ["Test H200: the report shows the breakdown of run 20260921T141320Z"]
    assert "| 0.8 " in page() and "4.29 TB/s" in page()
    done = import_run(run("sweep_only", 2, None), reports, tuned)
    assert done.notes == ["Test H200: the report shows the breakdown of run 20260921T141320Z"]
    assert "| 0.7 " in page() and "## Where the time goes" in page() and "4.29 TB/s" in page()
    (reports / "test_h200" / "runs" / "manual").mkdir()  # not a run's folder: never taken
    (reports / "test_h200" / "runs" / "manual" / "breakdown.jsonl").write_text("not json\n")
    done = import_run(run("later", 3, "good", us=1000.0), reports, tuned)  # a newer full run
    assert done.notes == [] and "2.15 TB/s" in page()
    done = import_run(run("older", -1, "good", us=250.0), reports, tuned)  # an older run, imported last
    assert done.notes == ["Test H200: the report shows the breakdown of run 20260924T141320Z"]
    assert "2.15 TB/s" in page() and "8.59 TB/s" not in page()


def test_cpu_rows_are_refused_unless_asked(tmp_path: Path) -> None:
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    archive = pack(run_folder(tmp_path, "cpu", fixture_rows("cpu (Triton interpreter)", False)))
    with pytest.raises(ValueError, match="only rows measured without a GPU"):
        import_run(archive, reports, tuned)
    assert not reports.exists() and not tuned.exists()
    done = import_run(archive, reports, tuned, allow_cpu=True)
    assert done.winners == [] and "no winners are exported" in done.notes[0] and not tuned.exists()
    text = (reports / "cpu_triton_interpreter" / "README.md").read_text()
    assert "NOT REPRESENTATIVE" in text


def test_bad_archives_change_nothing(tmp_path: Path) -> None:
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    with pytest.raises(FileNotFoundError, match="no such archive"):
        import_run(tmp_path / "missing.tar.gz", reports, tuned)
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08 not really gzip")
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        import_run(corrupt, reports, tuned)
    no_db = tmp_path / "nodb"
    no_db.mkdir()
    (no_db / "env.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no results.db .* no GPU named in its env.txt"):
        import_run(pack(no_db), reports, tuned)  # a CPU rehearsal cut before its sweep
    (no_db / "env.txt").unlink()
    with pytest.raises(ValueError, match=r"holds none of results.db, results.db-wal, env.txt"):
        import_run(pack(no_db), reports, tuned)
    (no_db / "sub").mkdir()
    (no_db / "sub" / "env.txt").write_text("x")
    (no_db / "env.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected one results.db .*found: none"):
        import_run(pack(no_db), reports, tuned)
    bad_db = run_folder(tmp_path, "baddb", fixture_rows("Test H200", True))
    (bad_db / "results.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(
        ValueError, match=r"baddb.tar.gz: its results.db cannot be read \(not a SQLite database"
    ):
        import_run(pack(bad_db), reports, tuned)

    def crafted(name: str, info: tarfile.TarInfo) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            tar.addfile(info, io.BytesIO(b"x") if info.isfile() else None)
        return path

    escape = tarfile.TarInfo("../escaped.txt")
    escape.size = 1
    with pytest.raises(ValueError, match="points outside"):
        import_run(crafted("escape.tar.gz", escape), reports, tuned)
    link = tarfile.TarInfo("results.db")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ValueError, match="not a plain file"):
        import_run(crafted("link.tar.gz", link), reports, tuned)
    assert not reports.exists() and not tuned.exists()
    assert not (Path(tempfile.gettempdir()) / "escaped.txt").exists()  # beside the unpacking folder


SMI = "name, driver_version, memory.total [MiB]\nTest H200, 580.159.03, 143771 MiB\n"


@pytest.mark.parametrize("database", ["none", "empty"])
def test_a_gpu_run_without_rows_files_its_logs(tmp_path: Path, database: str) -> None:
    """A GPU run cut before its sweep (no database) or whose sweep measured nothing: its
    logs are filed under the GPU that nvidia-smi named, the record, winners and report of
    earlier runs stay as they were."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    import_run(pack(run_folder(tmp_path, "good", fixture_rows("Test H200", True))), reports, tuned)
    before = {p: p.read_bytes() for p in (*reports.rglob("*"), *tuned.rglob("*")) if p.is_file()}
    out = tmp_path / "cut"
    out.mkdir()
    (out / "env.txt").write_text("Mon Sep 21 15:13:20 UTC 2026\ncommit: abc\n" + SMI)
    (out / "tests.log").write_text("1 failed, 20 passed\n")
    os.utime(out / "env.txt", (STARTED + 3600, STARTED + 3600))
    if database == "empty":
        make_db(out / "results.db", [])
    done = import_run(pack(out), reports, tuned)
    logs = reports / "test_h200" / "runs" / "20260921T151320Z"
    assert sorted(done.logs) == [logs / "env.txt", logs / "tests.log"]
    assert (logs / "tests.log").read_text() == "1 failed, 20 passed\n"
    assert done.databases == done.reports == done.winners == []
    assert "measured nothing" in done.notes[0] and str(logs) in done.notes[0]
    after = {p: p.read_bytes() for p in (*reports.rglob("*"), *tuned.rglob("*")) if p.is_file()}
    assert {p: b for p, b in after.items() if p.parent != logs} == before


def test_existing_record_is_kept_when_the_run_holds_nothing_new(tmp_path: Path) -> None:
    """A run whose every config failed: its rows and logs are filed, the earlier winners
    and report stay, and the notes say why nothing new was exported."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    import_run(pack(run_folder(tmp_path, "good", fixture_rows("Test H200", True))), reports, tuned)
    winners_before = (tuned / "test_h200.json").read_text()
    failed = [invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(32, 32),
                       status="error", reason="RuntimeError: invented", created=1_800_000_000.0)]  # fmt: skip
    done = import_run(pack(run_folder(tmp_path, "bad", failed, started=STARTED + 60)), reports, tuned)
    assert done.notes == [] and done.winners  # the record still holds the good run's rows
    winners_after = (tuned / "test_h200.json").read_text()
    assert winners_after.split('"created"')[0] == winners_before.split('"created"')[0]
    with sqlite3.connect(reports / "test_h200" / "results.db") as c:
        assert c.execute("SELECT count(*) FROM results WHERE status = 'error'").fetchone()[0] == 1


def test_resumed_rows_of_another_gpu_are_merged_but_not_filed(tmp_path: Path) -> None:
    """An H200 run resumed from a database that also holds older rows of another GPU: those
    rows reach that GPU's record, but the run's logs, its rows and a new report and winners
    are the H200's alone. An archive of the output folder itself (one level down) is read."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    old = fixture_rows("Old GPU", True)  # created before the run started
    new = [dataclasses.replace(r, created=STARTED + 10.0) for r in fixture_rows("New GPU", True)]
    out = run_folder(tmp_path, "gpu", old + new, earlier=("Old GPU",))
    archive = tmp_path / "nested.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(out, arcname="gpu")  # gpu/results.db, gpu/env.txt, ...
    done = import_run(archive, reports, tuned)
    assert [p.parent.name for p in done.databases] == ["new_gpu", "old_gpu"]
    assert {p.parents[2].name for p in done.logs} == {"new_gpu"}
    assert [p.name for p in done.winners] == ["new_gpu.json"]
    assert not (reports / "old_gpu" / "runs").exists() and not (reports / "old_gpu" / "README.md").exists()
    with ResultsDB(reports / "old_gpu" / "results.db") as db:
        assert len(db.query()) == len(old)


def test_a_refused_import_writes_nothing(tmp_path: Path) -> None:
    """A run of two GPUs where one's record is corrupt, or a --tuned path that is a file:
    refused before anything is written, not half imported (the other GPU's record, logs,
    winners and report untouched)."""
    import hashlib

    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    archive = pack(run_folder(tmp_path, "two", fixture_rows("New GPU", True) + fixture_rows("Old GPU", True)))
    (reports / "old_gpu").mkdir(parents=True)
    (reports / "old_gpu" / "results.db").write_bytes(b"not sqlite" * 100)
    (tmp_path / "afile").write_text("x")

    def tree() -> dict[str, str]:
        return {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()
        }

    before = tree()
    with pytest.raises(ValueError, match=r"old_gpu/results.db: not a SQLite database"):
        import_run(archive, reports, tuned)
    assert tree() == before and not (reports / "new_gpu").exists() and not tuned.exists()
    (reports / "old_gpu" / "results.db").unlink()
    before = tree()
    with pytest.raises(ValueError, match=r"afile: a file, not a folder to write into; nothing imported"):
        import_run(archive, reports, tmp_path / "afile")
    assert tree() == before and not (reports / "new_gpu").exists() and not tuned.exists()
    with pytest.raises(ValueError, match=r"afile/sub: under the file .*afile, not a folder to write into"):
        import_run(archive, reports, tmp_path / "afile" / "sub")
    assert tree() == before and not (reports / "new_gpu").exists() and not tuned.exists()


def test_cli_import_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = pack(run_folder(tmp_path, "run", fixture_rows("Test H200", True)))
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    assert cli.main(["import-run", str(archive), "--reports", str(reports), "--tuned", str(tuned)]) == 0
    out = capsys.readouterr().out
    assert f"database: {reports / 'test_h200' / 'results.db'}" in out and "winners: " in out
    targets = out.split("test_h200: Targets (SPEC.md section 6)")[1]  # the report's verdicts
    assert "0.903x" in targets and "| met" in targets and "## Failed" not in targets
    assert cli.main(["import-run", str(tmp_path / "nope.tar.gz")]) == 2
    assert "no such archive" in capsys.readouterr().err


def test_gpu_names_sharing_a_folder_are_refused(tmp_path: Path) -> None:
    """ "Test H200" and "test-h200" share the folder test_h200 and the winners file
    test_h200.json: an archive with both, or one whose GPU's folder already holds the other's
    record, imports nothing, and neither report nor winners is overwritten."""
    import hashlib

    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    both = pack(
        run_folder(tmp_path, "both", fixture_rows("Test H200", True) + fixture_rows("test-h200", True))
    )
    with pytest.raises(ValueError, match=r"GPU names \['Test H200', 'test-h200'\] share the report folder"):
        import_run(both, reports, tuned)
    assert not reports.exists() and not tuned.exists()
    import_run(pack(run_folder(tmp_path, "first", fixture_rows("Test H200", True))), reports, tuned)

    def digests() -> dict[str, str]:
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                for d in (reports, tuned) for p in sorted(d.rglob("*")) if p.is_file()}  # fmt: skip

    before = digests()
    other = pack(run_folder(tmp_path, "other", fixture_rows("test-h200", True), started=STARTED + 3600))
    with pytest.raises(ValueError, match=r"\['Test H200', 'test-h200'\] share the report folder"):
        import_run(other, reports, tuned)
    (reports / "test_h200" / "README.md").unlink()  # the record alone still tells
    before = digests()
    with pytest.raises(
        ValueError, match=r"the record of \['Test H200'\], which share its folder with 'test-h200'"
    ):
        import_run(other, reports, tuned)
    assert digests() == before


def test_only_what_an_import_reads_is_unpacked_within_a_cap(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Files an import does not read (the run's own export and report, anything else) are
    not unpacked, so their size does not count; the database and logs are capped."""
    from autotune import gpurun

    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    folder = run_folder(tmp_path, "run", fixture_rows("Test H200", True))
    (folder / "huge.bin").write_bytes(b"\0" * (1 << 20))
    archive = pack(folder)
    monkeypatch.setattr(gpurun, "MAX_UNPACKED_BYTES", (folder / "results.db").stat().st_size + 4096)
    done = import_run(archive, reports, tuned)  # huge.bin is not unpacked: within the cap
    assert done.databases and not list(reports.rglob("huge.bin"))
    monkeypatch.setattr(gpurun, "MAX_UNPACKED_BYTES", 1024)
    with pytest.raises(ValueError, match=r"its databases and logs hold more than 0 MiB"):
        import_run(archive, tmp_path / "other", tuned)
    assert not (tmp_path / "other").exists()


def test_an_earlier_copy_of_a_run_does_not_overwrite_its_filed_files(tmp_path: Path) -> None:
    """gpu.sh packs after every step: an archive packed mid-run, imported after the final
    one, adds no rows the record lacks and leaves the run's filed logs and database as the
    final archive left them."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    rows = fixture_rows("Test H200", True)
    early = run_folder(tmp_path, "early", rows[:2])
    final = run_folder(tmp_path, "final", rows)
    for name in ("sweep.log", "results.db"):  # the final copy was written later
        os.utime(early / name, (STARTED + 60, STARTED + 60))
        os.utime(final / name, (STARTED + 600, STARTED + 600))
    import_run(pack(final), reports, tuned)
    logs = reports / "test_h200" / "runs" / "20260921T141320Z"
    before = {p.name: p.read_bytes() for p in logs.iterdir()}
    done = import_run(pack(early), reports, tuned)
    after = {p.name: p.read_bytes() for p in logs.iterdir()}
    assert after["sweep.log"] == before["sweep.log"] == b"sweep.log of final\n"
    assert after["results.db"] == before["results.db"]
    assert any("sweep.log: kept, newer than this archive's copy" in n for n in done.notes), done.notes
    with ResultsDB(logs / "results.db") as db:
        assert len(db.query()) == len(rows)


def test_a_final_copy_whose_rows_sit_in_the_wal_is_kept(tmp_path: Path) -> None:
    """A sweep killed before its checkpoint leaves its newest rows in results.db-wal, the main
    file's time unchanged: the WAL's time is the database's, so an earlier copy (same main
    file time, no WAL) imported after the final one does not replace the filed database."""
    reports, tuned = tmp_path / "reports", tmp_path / "tuned"
    rows = fixture_rows("Test H200", True)
    early = run_folder(tmp_path, "early", rows[:2])
    final = run_folder(tmp_path, "final", rows[:2])
    writer = ResultsDB(final / "results.db")  # held open: its rows stay in the WAL
    try:
        writer.add_many(rows[2:])
        assert (final / "results.db-wal").stat().st_size > 0
        for folder in (early, final):
            os.utime(folder / "results.db", (STARTED + 60, STARTED + 60))
        os.utime(final / "results.db-wal", (STARTED + 600, STARTED + 600))
        final_archive = pack(final)
    finally:
        writer.close()
    import_run(final_archive, reports, tuned)
    logs = reports / "test_h200" / "runs" / "20260921T141320Z"
    with ResultsDB(logs / "results.db", read_only=True) as db:
        assert len(db.query()) == len(rows)
    done = import_run(pack(early), reports, tuned)
    assert any("results.db: kept, newer than this archive's copy" in n for n in done.notes), done.notes
    with ResultsDB(logs / "results.db", read_only=True) as db:
        assert len(db.query()) == len(rows)
