"""The sweep and its command line on the CPU (through the interpreter): suites, the
correctness gate, resume, shards, merge and the table."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from children import compiled_child

from autotune import cli, search, sweep
from autotune.db import FWD_NOTE, Result, ResultsDB, canonical_json
from autotune.report import render_report
from kernels._common import TileConfig

TINY = """
[[dense]]
M = 20
N = 12
K = 16
"""


# The harness tests leave compiled_ref out: on a GPU its torch.compile takes seconds to
# minutes a problem (the GPU script's own sweep measures it).
NO_COMPILE = ["--compile-mode", "none"]


CONV_ENTRY = (
    "[[conv2d]]\nB = 1\nC_in = 4\nH = 2\nW = 6\nC_out = 4\nk = {k}\nstride = {stride}\npadding = {padding}\n"
)


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_builtin_suites_load() -> None:
    quick, core = sweep.load_suite("quick"), sweep.load_suite("core")
    assert quick["dense"] and quick["conv2d"]
    assert {4096, 8192} <= {s["M"] for s in core["dense"] if s["M"] == s["N"] == s["K"]}
    assert any(s["C_in"] == 64 and s["H"] == 56 and s["k"] == 3 for s in core["conv2d"])
    decode = sweep.load_suite("decode")
    assert decode["dense"] and all(s["M"] <= 128 for s in decode["dense"]) and "conv2d" not in decode


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[[dense]]\nM = 1\nN = 2\n", "exactly the non-negative integer keys"),
        ("[[attention]]\nL = 3\n", "unknown table"),
        ("[[dense]\nM = 1", "not valid TOML"),
        ('[[dense]]\nM = 1\nN = 2\nK = "3"\n', "exactly the non-negative integer keys"),
        ("[[dense]]\nM = 0\nN = 2\nK = 3\n", "M must be at least 1"),
        (CONV_ENTRY.format(k=3, stride=0, padding=1), "stride must be at least 1"),
        (CONV_ENTRY.format(k=7, stride=1, padding=1), "the 7x7 kernel does not fit H=2 padded by 1"),
        (TINY + TINY.replace("M = 20", "M = 8") + TINY, r"\[\[dense\]\] entry 2 .* repeats entry 0"),
    ],
    ids=[
        "missing-key",
        "unknown-op",
        "bad-toml",
        "string-dim",
        "empty-dim",
        "stride-0",
        "kernel-too-big",
        "repeated-shape",
    ],
)
def test_bad_suite_files_are_refused(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        sweep.load_suite(str(path))
    with pytest.raises(ValueError, match="neither one of"):
        sweep.load_suite(str(tmp_path / "missing.toml"))


def _rows(db_path: Path) -> list:
    with ResultsDB(db_path) as db:
        return db.query()


def test_sweep_checks_records_and_resumes(tiny_suite: Path, tmp_path: Path, capsys) -> None:
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense",
            "--mode", "fwd,bwd", "--dtype", "float32", "--max-configs", "2", "--quiet",
            *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == 0
    rows = _rows(db_path)
    ours = [r for r in rows if r.provider == "yat_triton" and r.status == "ok"]
    assert len([r for r in ours if r.mode == "fwd"]) == 2
    bwd = [r for r in ours if r.mode == "bwd"]  # the op on its default tiles, then one forced tile
    assert len(bwd) == 2 and sorted(bool(r.config) for r in bwd) == [False, True]
    assert all(r.correct and r.max_rel_err is not None and r.max_rel_err < 1e-4 for r in ours)
    env = sweep.environment()  # a CPU run is labelled not representative; a GPU run is
    assert all(r.representative == env.representative and r.gpu == env.gpu for r in rows)
    assert env.representative != env.gpu.startswith("cpu")
    assert "compiled_ref" not in {r.provider for r in rows}  # left out by --compile-mode none
    assert {"linear+relu", "eager_ref"} <= {r.provider for r in rows if r.status == "ok"}
    assert any(r.status == "pruned" for r in rows)
    for r in ours:  # every row carries what SPEC section 5 asks for
        assert r.median_ms > 0 and r.p20_ms <= r.median_ms <= r.p80_ms and r.tflops > 0
        assert r.torch == torch.__version__ and r.triton and r.commit
        json.loads(r.shape)
    # how each ok row was timed: CUDA graphs on a GPU, one wall-clock run without one
    timings = {"cuda-graph", "eager"} if env.representative else {"wall"}
    assert {r.timing for r in rows if r.status == "ok"} <= timings
    assert all(r.timing is None for r in rows if r.status != "ok")
    capsys.readouterr()
    assert cli.main(argv) == 0  # resume: everything is done already
    assert "nothing new" in capsys.readouterr().out
    assert len(_rows(db_path)) == len(rows)


@pytest.mark.parametrize("closed_output", [False, True])
def test_a_stopped_sweep_says_so_and_records_its_run(
    tiny_suite: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    closed_output: bool,
) -> None:
    """Ctrl-C / SIGINT (the GPU script's cap) in the second task: the first task's rows and
    the run's record are kept, the command says it stopped (not "nothing new") and exits 130;
    also where saying so hits a closed pipe (the log's tee, stopped with the process group)."""
    if closed_output:

        def closed(*args: object, **kwargs: object) -> None:
            if args and str(args[0]).startswith("\nstopped"):
                raise BrokenPipeError(32, "Broken pipe")
            print(*args, **kwargs)

        monkeypatch.setattr(sweep, "print", closed, raising=False)
    real = sweep._run_task
    seen = []

    def stop_in_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(sweep, "_run_task", stop_in_second)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd,bwd",
            "--dtype", "float32", "--max-configs", "1", "--quiet", *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == 130
    out = capsys.readouterr().out
    said = "stopped; " in out and "Run the same command to resume" in out
    assert said != closed_output and "nothing new" not in out
    with ResultsDB(db_path) as db:
        (run,) = db.runs()
        assert (run.tasks_total, run.tasks_done) == (2, 1) and run.rows_added == len(db.query()) > 0


def test_a_problem_whose_setup_fails_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shape too large for memory (the inputs or the float64 reference cannot be made) is
    one error row, not the end of the sweep: the next problem is measured, and a rerun
    records the failure again (not a crash every time it reaches the shape). Once the setup
    succeeds (memory another process held is free again), that row goes: in a backward
    mode its key is the op's default tiles', which are then measured."""
    suite = tmp_path / "two.toml"
    suite.write_text(TINY + TINY.replace("M = 20", "M = 24"))
    real = sweep.Problem.reference
    failing = [True]

    def out_of_memory(self):  # noqa: ANN001, ANN202
        if self.shape["M"] == 20 and failing[0]:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real(self)

    monkeypatch.setattr(sweep.Problem, "reference", out_of_memory)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd,bwd",
            "--dtype", "float32", "--max-configs", "1", "--quiet", *NO_COMPILE]  # fmt: skip
    for _ in range(2):
        assert cli.main(argv) == 0
        rows = _rows(db_path)
        failed = [r for r in rows if json.loads(r.shape)["M"] == 20]
        assert [(r.mode, r.provider, r.config, r.status) for r in failed] == [
            ("bwd", "yat_triton", "", "error"), ("fwd", "yat_triton", "", "error")
        ]  # fmt: skip
        assert {r.reason for r in failed} == {
            "setup failed (the inputs or the float64 reference): RuntimeError: "
            "DefaultCPUAllocator: can't allocate memory"
        }
        assert {"linear+relu", "yat_triton"} <= {
            r.provider for r in rows if json.loads(r.shape)["M"] == 24 and r.status == "ok"
        }
    failing[0] = False
    assert cli.main(argv) == 0
    rows = [r for r in _rows(db_path) if json.loads(r.shape)["M"] == 20]
    assert not any(r.reason.startswith("setup failed") for r in rows)
    defaults = [r for r in rows if r.provider == "yat_triton" and r.config == "" and r.mode == "bwd"]
    assert [(r.status, r.correct) for r in defaults] == [("ok", True)]
    assert {"linear+relu", "eager_ref"} <= {r.provider for r in rows if r.status == "ok"}


def test_a_killed_sweep_keeps_the_record_of_what_it_finished(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's record is saved as the sweep goes (after every task): a process ended
    outright in its second task (a kill, a crash: nothing after it runs) leaves the time
    and the task of the first, for the report's sweep-time target."""
    real = sweep._run_task
    seen = []

    def killed_in_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(1)
        if len(seen) == 2:
            raise SystemExit("killed")  # no handler of the sweep's catches it
        yield from real(*args, **kwargs)

    monkeypatch.setattr(sweep, "_run_task", killed_in_second)
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db, pytest.raises(SystemExit):
        sweep.run_sweep(db, sweep.load_suite(str(tiny_suite)), ops=["dense"], modes=["fwd", "bwd"],
                        dtypes=["float32"], max_configs=1, progress=False, compile_mode="none",
                        suite_name="tiny")  # fmt: skip
    with ResultsDB(db_path) as db:
        (run,) = db.runs()
        assert (run.suite, run.tasks_total, run.tasks_done) == ("tiny", 2, 1)
        assert run.rows_added == len(db.query()) > 0 and run.ended > run.started


def test_sigterm_stops_a_sweep_as_ctrl_c_does(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (a scheduler's stop, `timeout`'s default signal) in the second task: the first
    task's rows and the run's record are kept, the command says how to resume and exits 143;
    the handler is put back after."""
    import os
    import signal

    real = sweep._run_task
    seen = []

    def terminated_in_second(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(1)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        yield from real(*args, **kwargs)

    monkeypatch.setattr(sweep, "_run_task", terminated_in_second)
    before = signal.getsignal(signal.SIGTERM)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd,bwd",
            "--dtype", "float32", "--max-configs", "1", "--quiet", *NO_COMPILE]  # fmt: skip
    started = time.monotonic()
    assert cli.main(argv) == 143
    assert time.monotonic() - started < 60 and signal.getsignal(signal.SIGTERM) == before
    assert "Run the same command to resume" in capsys.readouterr().out
    with ResultsDB(db_path) as db:
        (run,) = db.runs()
        assert (run.tasks_total, run.tasks_done) == (2, 1) and run.rows_added == len(db.query()) > 0


def test_compiled_ref_rows_name_their_compile_mode(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep in another torch.compile mode measures compiled_ref again rather than taking
    the stored row, compiled in the first mode, for its own (stubbed: compiled_ref, which
    only a GPU compiles, stands in as the eager reference)."""
    real = sweep.Problem.baselines

    def with_compiled_ref(self):  # noqa: ANN001, ANN202
        for provider, fn, check, layer in real(self):
            yield provider, fn, check, layer
            if provider == "eager_ref" and self.compile_mode != "none":
                yield "compiled_ref", fn, check, layer

    monkeypatch.setattr(sweep.Problem, "baselines", with_compiled_ref)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd",
            "--dtype", "float32", "--max-configs", "1", "--quiet"]  # fmt: skip
    for mode in ("default", "max-autotune"):
        assert cli.main([*argv, "--compile-mode", mode]) == 0
    rows = [r for r in _rows(db_path) if r.provider == "compiled_ref"]
    assert sorted(json.loads(r.config)["compile_mode"] for r in rows) == ["default", "max-autotune"]
    assert all(r.status == "ok" for r in rows)
    assert [r.config for r in _rows(db_path) if r.provider == "eager_ref"] == [
        sweep.canonical_json({k: v for k, v in json.loads(rows[0].config).items() if k != "compile_mode"})
    ]


FAULT = "CUDA error: an illegal memory access was encountered"


def test_a_row_that_loses_the_cuda_context_stops_the_sweep(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tile whose kernel faults leaves the process's CUDA context unusable (stubbed here:
    the tile raises, and from then on the probe fails, as on a GPU). Its row is recorded as
    an error saying so, nothing after it runs (every later row would record the same
    failure, and a resume would not measure them again), the run's record is kept and the
    command exits 3. A fresh process resumes after that row, which it does not run again."""
    real = sweep.Problem.yat
    faulted: list[str] = []

    def faulting(self, config):  # noqa: ANN001, ANN202 - the first tile timed faults
        fn = real(self, config)
        if config is None or (faulted and faulted[0] != sweep.canonical_json(config.as_dict())):
            return fn

        def fault() -> object:
            faulted[:] = [sweep.canonical_json(config.as_dict())]
            raise RuntimeError(FAULT)

        return fault

    monkeypatch.setattr(sweep.Problem, "yat", faulting)
    monkeypatch.setattr(sweep, "context_lost", lambda device: FAULT if faulted else "")
    exits: list[int] = []  # the process would end at once (os._exit), its database closed
    monkeypatch.setattr(cli, "exit_now", exits.append)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd,bwd",
            "--dtype", "float32", "--max-configs", "2", "--quiet", *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == sweep.RESTART_EXIT and exits == [sweep.RESTART_EXIT]
    out = capsys.readouterr().out
    assert "lost the CUDA context" in out and "Run the same command to resume in a fresh process" in out
    assert f"{len(_rows(db_path))} rows saved this run, that one included" in out
    rows = _rows(db_path)
    (bad,) = [r for r in rows if r.status != "ok" and r.status != "pruned"]
    assert bad.config == faulted[0] and bad.status == "error" and bad.mode == "fwd"
    assert bad.reason.startswith("lost the CUDA context: RuntimeError: " + FAULT)
    # the standard layers came before it; the other tile, the references and the bwd task did not run
    assert "linear+relu" in {r.provider for r in rows if r.status == "ok"} <= set(sweep.STANDARD_LAYERS)
    assert "bwd" not in {r.mode for r in rows}
    with ResultsDB(db_path) as db:
        (run,) = db.runs()
        assert (run.tasks_total, run.tasks_done) == (2, 0) and run.rows_added == len(rows)
    # a fresh process: the context works; the row that faulted is kept and not run again
    faulted_config = faulted[0]
    faulted[:] = []
    monkeypatch.setattr(sweep.Problem, "yat", real)
    assert cli.main(argv) == 0 and exits == [sweep.RESTART_EXIT]
    again = _rows(db_path)
    assert [r.reason for r in again if r.config == faulted_config and r.mode == "fwd"] == [bad.reason]
    assert {"linear+relu", "eager_ref", "yat_triton"} <= {r.provider for r in again if r.status == "ok"}
    assert {r.mode for r in again if r.provider == "yat_triton" and r.status == "ok"} == {"fwd", "bwd"}


def test_a_hung_row_is_recorded_and_ends_the_process(tiny_suite: Path, tmp_path: Path) -> None:
    """A row that never finishes (a kernel in a deadlock blocks the host in a CUDA call no
    signal interrupts; a sleep here) is recorded as hung by the sweep's watchdog, with the
    run's record, and the process exits 3 at once: a time cap's kill would leave the row
    unrecorded, to hang every resumed sweep again. A row that finishes in time is not
    touched."""
    import os
    import subprocess
    import sys

    script = tmp_path / "hang.py"
    script.write_text(
        "import sys, time\n"
        "from autotune import sweep\n"
        "from autotune.db import ResultsDB\n"
        "real = sweep.Problem.yat\n"
        "def hanging(self, config):\n"
        "    fn = real(self, config)\n"
        "    return fn if config is None else (lambda: time.sleep(600))\n"
        "sweep.Problem.yat = hanging\n"
        "with ResultsDB(sys.argv[1]) as db:\n"
        "    sweep.run_sweep(db, sweep.load_suite(sys.argv[2]), ops=['dense'], modes=['fwd'],\n"
        "                    dtypes=['float32'], max_configs=1, progress=False, compile_mode='none',\n"
        "                    suite_name='tiny', hang_after=2.0)\n"
        "print('the sweep went on')\n"
    )
    root = Path(__file__).resolve().parents[1]
    db_path = tmp_path / "r.db"
    run = subprocess.run([sys.executable, str(script), str(db_path), str(tiny_suite)], cwd=root,
                         env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)},
                         capture_output=True, text=True, timeout=150)  # fmt: skip
    assert run.returncode == sweep.RESTART_EXIT, run.stdout + run.stderr
    assert "hung: no result after 2 s" in run.stdout and "the sweep went on" not in run.stdout
    rows = _rows(db_path)
    (hung,) = [r for r in rows if r.provider == "yat_triton" and r.status != "pruned"]
    assert hung.status == "error" and hung.reason.startswith("hung: no result after 2 s") and hung.config
    assert [r.status for r in rows if r.provider == "linear+relu"] == ["ok"]  # measured in time
    with ResultsDB(db_path) as db:
        (record,) = db.runs()
        assert (record.suite, record.tasks_total, record.tasks_done) == ("tiny", 1, 0)
        assert record.rows_added == len(rows)


def test_the_watchdog_leaves_rows_that_end_in_time(tmp_path: Path) -> None:
    """Only a row still running at the limit is recorded as hung; the exit is asked once."""
    exits: list[int] = []
    db_path = tmp_path / "w.db"
    ResultsDB(db_path).close()
    shape = sweep.canonical_json({"M": 20, "N": 12, "K": 16})
    row = Result(op="dense", mode="fwd", provider="yat_triton", dtype="float32", shape=shape, config="{}",
                 status="ok", gpu="cpu", driver="", torch=torch.__version__, triton="", commit="abc1234",
                 representative=False)  # fmt: skip

    def record() -> object:
        return sweep.Run("tiny", "args", row.gpu, row.commit, 0.0, 1.0, 1, 0, 0)

    fired = threading.Event()

    def exit_now(code: int) -> None:
        exits.append(code)
        fired.set()

    dog = sweep.Watchdog(db_path, 0.3, record, exit=exit_now)
    try:
        with dog.watching(lambda reason: dataclasses.replace(row, status="error", reason=reason)):
            time.sleep(0.05)
        time.sleep(0.6)
        assert exits == [] and _rows(db_path) == []
        with dog.watching(lambda reason: dataclasses.replace(row, status="error", reason=reason)):
            assert fired.wait(60)
    finally:
        dog.close()
    assert exits == [sweep.RESTART_EXIT]
    (hung,) = _rows(db_path)
    assert hung.status == "error" and "no result after 0.3 s" in hung.reason
    # a row it cannot record: the process still ends, with 1 (a restart would hang on it again)
    for path, hung_row in ((tmp_path / "gone" / "w.db", lambda reason: row), (db_path, lambda reason: 1 / 0)):
        fired.clear()
        dog = sweep.Watchdog(path, 0.1, record, exit=exit_now)
        try:
            with dog.watching(hung_row):
                assert fired.wait(60)
        finally:
            dog.close()
    assert exits == [sweep.RESTART_EXIT, 1, 1] and len(_rows(db_path)) == 1


def test_waiting_for_the_database_is_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog times a row's run, not the write of its result: a write waiting on
    another sweep into the same file (stubbed: the first write takes 4 s, past a 3 s limit)
    is no hang, and a result is never recorded as hung after it was measured."""
    exits: list[int] = []
    real_add = ResultsDB.add
    waits = [4.0]

    def contended_add(self: ResultsDB, result: Result) -> None:
        time.sleep(waits.pop() if waits else 0.0)
        real_add(self, result)

    monkeypatch.setattr(ResultsDB, "add", contended_add)
    task = sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "fwd")
    env = sweep.environment()
    with ResultsDB(tmp_path / "w.db") as db:
        dog = sweep.Watchdog(db.path, 3.0, lambda: sweep.Run("t", "", env.gpu, env.commit, 0, 1, 1, 0, 0),
                             exit=exits.append)  # fmt: skip
        try:
            rows = list(sweep._run_task(db, task, env, "cpu", 1, "none", watchdog=dog))
        finally:
            dog.close()
    assert exits == [] and waits == [] and rows
    assert all(r.status in ("ok", "pruned") for r in rows), [(r.provider, r.reason) for r in rows]


def test_out_of_memory_is_no_lost_context(
    tiny_suite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tile that runs out of GPU memory is an error row like any other: the context still
    works, and it is not probed (a probe amid the failed call's tensors could fail too)."""
    real = sweep.Problem.yat
    probed: list[str] = []
    first: list[object] = []  # the first tile the sweep times (whatever the ranking puts first)

    def hungry(self, config):  # noqa: ANN001, ANN202
        fn = real(self, config)
        first[:] = first or ([config] if config is not None else [])
        if config is None or config != first[0]:
            return fn

        def oom() -> object:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")

        return oom

    monkeypatch.setattr(sweep.Problem, "yat", hungry)
    monkeypatch.setattr(sweep, "context_lost", lambda device: probed.append(device) or FAULT)
    with ResultsDB(tmp_path / "r.db") as db:
        counts = sweep.run_sweep(db, sweep.load_suite(str(tiny_suite)), ops=["dense"], modes=["fwd"],
                                 dtypes=["float32"], max_configs=None, progress=False,
                                 compile_mode="none")  # fmt: skip
    errors = [r for r in _rows(tmp_path / "r.db") if r.status == "error"]
    assert errors and all(r.reason.startswith("OutOfMemoryError: CUDA out of memory") for r in errors)
    assert probed == [] and counts["ok"] > len(errors)


def test_the_compile_phase_warms_what_each_row_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU, what a row runs is compiled before it, on the host's cores, so that no
    compile falls inside the rows (one by one, and under the watchdog's limit): in fwd mode
    the forward as inference runs it and as training runs it (saving s, for the row's
    check); in the backward modes also the op on its default tiles, the first row, which
    the static prune never sees. The GPU's path, with the sm_90 checks and the compiles
    stubbed."""
    warmed: list[list[object]] = []
    monkeypatch.setattr(sweep, "_static_compile", lambda call: None)
    monkeypatch.setattr(sweep, "_warm", warmed.append)
    gpu_env = dataclasses.replace(sweep.environment(), representative=True)
    task = sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "fwd")
    with ResultsDB(tmp_path / "w.db") as db:
        rows = list(sweep._run_task(db, task, gpu_env, "cpu", 2, "none"))
    timed = [r for r in rows if r.provider == "yat_triton" and r.status == "ok"]
    assert len(warmed) == len(timed) == 2
    for calls in warmed:
        fwd = [c.kwargs["STORE_S"] for c in calls if c.kernel.__name__.startswith("yat_dense_fwd")]
        assert sorted(fwd) == [False, True], [c.kernel.__name__ for c in calls]
    # bwd mode: the op on its default tiles (its first row, never pruned) is compiled there too
    warmed.clear()
    task = sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "bwd")
    with ResultsDB(tmp_path / "b.db") as db:
        rows = list(sweep._run_task(db, task, gpu_env, "cpu", 2, "none"))
    timed = [r for r in rows if r.provider == "yat_triton" and r.status == "ok"]
    assert "" in {r.config for r in timed} and len(warmed) == len(timed) == 2
    assert all(any("bwd_gemm" in c.kernel.__name__ for c in calls) for calls in warmed)


def test_a_gpu_sweep_times_the_next_seed_in_place_of_one_the_prune_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU, a seed the static prune drops is recorded as pruned and the search times
    the next ranked tile in its place (`search.guided`'s refill): the cap of 3 tiles holds
    3 that ran; the tile after it, checked ahead of need (`search.Batch.ahead`), has no
    row, pruned or not; a rerun proposes the same tiles and adds nothing. Only this problem's
    verdicts count: the same tile pruned at another shape, in another mode or on another GPU
    is timed here. `then` (the next task's compiles) is called once, after the first check,
    before the first tiles run; the references wait for those compiles (`settle`).
    The GPU's path, with the sm_90 verdicts and the compiles stubbed."""
    recorded: list[object] = []
    real_record = sweep._record

    def record(problem, config):  # noqa: ANN001, ANN202
        recorded.append(config)
        return real_record(problem, config)

    task = sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "fwd")
    first, ranked, _ = sweep.task_tiles(task)
    seeds = [c for c in ranked if c not in first]
    drop = seeds[0]

    order: list[str] = []

    def reasons(self, checked):  # noqa: ANN001, ANN202 - the tiles just recorded, in order
        order.append("check")
        return [
            "spills on sm_90 (stub)" if c in (drop, seeds[3]) else None
            for c in recorded[len(recorded) - len(checked) :]
        ]

    monkeypatch.setattr(sweep, "_record", record)
    monkeypatch.setattr(sweep.StaticPrune, "reasons", reasons)
    monkeypatch.setattr(sweep, "_warm", lambda calls: order.append("warm"))
    monkeypatch.setattr(sweep.StaticPrune, "settle", lambda self: order.append("settle"))
    gpu_env = dataclasses.replace(sweep.environment(), representative=True)
    key = lambda c: canonical_json(c.as_dict())  # noqa: E731
    elsewhere = [
        Result(op="dense", mode=mode, provider="yat_triton", dtype="float32", shape=canonical_json(shape),
               config=key(seeds[1]), status="pruned", reason="elsewhere", gpu=gpu, driver="", torch="",
               triton="", commit="", representative=True)
        for mode, shape, gpu in [("fwd", {"M": 20, "N": 12, "K": 32}, gpu_env.gpu),
                                 ("bwd", task.shape, gpu_env.gpu), ("fwd", task.shape, "another GPU")]
    ]  # fmt: skip
    with ResultsDB(tmp_path / "p.db") as db:
        db.add_many(elsewhere)
        rows = []
        for r in sweep._run_task(db, task, gpu_env, "cpu", 3, "none", then=lambda: order.append("then")):
            rows.append(r)
            if r.provider in ("eager_ref", "compiled_ref"):
                order.append(r.provider)
        ours = [r for r in rows if r.provider == "yat_triton"]
        # the next task's compiles start once, before this task's first tiles run; the
        # references are timed once they are done
        steps = [step for step, _ in itertools.groupby(order)]  # (a warm a tile)
        assert steps[:6] == ["check", "then", "warm", "check", "warm", "settle"] and steps[6:], order
        assert [r.config for r in ours if r.status == "pruned" and "stub" in r.reason] == [key(drop)]
        ran = [r.config for r in ours if r.status == "ok"]
        assert ran == [key(first[0]), key(seeds[1]), key(seeds[2])]
        assert recorded.count(seeds[3]) == 1 and not [r for r in db.query() if r.config == key(seeds[3])]
        before = len(db.query())
        again = [
            r for r in sweep._run_task(db, task, gpu_env, "cpu", 3, "none") if r.provider == "yat_triton"
        ]
        assert again == [] and len(db.query()) == before


def test_the_next_tasks_first_batch_starts_compiling_on_the_prunes_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start_first_batch` hands the prune the recorded calls of the tiles a task's guided
    search checks first, those not yet in the database (a resumed run's are), forward as
    inference and as training runs it; nothing for an exhaustive search, a fwd+bwd task
    taking bwd's tiles, or a task that cannot be planned."""

    class Prune:
        def __init__(self) -> None:
            self.checked: list[list[object]] = []

        def start(self, checked: list[list[object]]) -> int:
            self.checked += checked
            return len(checked)

    task = sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "fwd")
    env = sweep.environment()
    first, ranked, _ = sweep.task_tiles(task)
    batch = next(search.guided(first, ranked, dict, None))
    kw = {"warp_specialize": True, "search": "guided", "max_configs": None, "after_bwd": False}
    with ResultsDB(tmp_path / "s.db") as db:
        done = sweep.Result(op="dense", mode="fwd", provider="yat_triton", dtype="float32",
                            shape=canonical_json(task.shape), config=canonical_json(batch[1].as_dict()),
                            status="pruned", gpu=env.gpu, driver="", torch="", triton="", commit="",
                            representative=False)  # fmt: skip
        db.add(done)
        prune = Prune()
        assert sweep.start_first_batch(prune, db, task, env, **kw) == len(batch) - 1
        fwd = [[c.kwargs["BLOCK_M"], c.kwargs["STORE_S"]] for calls in prune.checked for c in calls
               if c.kernel.__name__.startswith("yat_dense_fwd")]  # fmt: skip
        assert fwd == [[c.block_m, s] for c in batch if c != batch[1] for s in (False, True)], fwd
        bwd = sweep.Task("dense", task.shape, "float32", "fwd+bwd")
        assert sweep.start_first_batch(prune, db, bwd, env, **{**kw, "after_bwd": True}) == 0
        assert sweep.start_first_batch(prune, db, task, env, **{**kw, "search": "exhaustive"}) == 0
        monkeypatch.setattr(sweep, "Problem", None)  # (cannot be planned)
        assert sweep.start_first_batch(prune, db, task, env, **kw) == 0


def test_a_batch_checked_now_goes_before_compiles_started_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """On workers, the compiles started ahead (`StaticPrune.start`) that no worker has taken
    yet are cancelled for a batch checked now and started again after it; one a batch needs
    is waited for, not compiled again; `settle` keeps what they found. A stand-in pool (its
    futures end when the test says) and stand-in compiles."""
    from concurrent.futures import Future

    log: list[object] = []

    class Pool:
        def __init__(self) -> None:
            self.futures: dict[str, list[Future]] = {}

        def submit(self, fn: object, job: SimpleNamespace) -> Future:
            log.append(("start", job.key))
            self.futures.setdefault(job.key, []).append(Future())
            return self.futures[job.key][-1]

        def map(self, fn: object, jobs: list[SimpleNamespace]) -> list[str]:
            log.append(("batch", [j.key for j in jobs]))
            return [f"why {j.key}" for j in jobs]

        def shutdown(self, **kw: object) -> None:
            pass

    monkeypatch.setattr(sweep, "_static_compile", lambda call: SimpleNamespace(key=call))
    prune = sweep.StaticPrune(2)
    pool = prune._pool = Pool()
    assert prune.start([["a", "b"], ["c"]]) == 3 and prune.start([["a"]]) == 0
    assert pool.futures["c"][0].set_running_or_notify_cancel()  # a worker took c
    assert prune.reasons([["x"], ["y"]]) == ["why x", "why y"]
    assert log == [("start", "a"), ("start", "b"), ("start", "c"), ("batch", ["x", "y"]), ("start", "a"),
                   ("start", "b")]  # fmt: skip
    assert pool.futures["a"][0].cancelled() and not pool.futures["c"][0].cancelled()
    pool.futures["a"][1].set_result("why a")
    assert prune.reasons([["a"], ["x"]]) == ["why a", "why x"] and len(log) == 6  # (nothing compiled)
    pool.futures["b"][1].set_result(None)
    pool.futures["c"][0].set_result("why c")
    prune.settle()
    assert not prune.started and prune.verdicts == {
        "x": "why x",
        "y": "why y",
        "a": "why a",
        "b": None,
        "c": "why c",
    }


def test_each_task_starts_the_next_ones_compiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run_sweep` hands each task but the last a `then` starting the next task's first
    compiles (`start_first_batch`), with the run's prune and search."""
    seen: list[tuple[sweep.Task, object]] = []
    started: list[tuple[sweep.Task, str]] = []

    def run_task(db, task, *args, then=None, prune=None, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append((task, then))
        if then is not None:
            then()
        return []

    monkeypatch.setattr(sweep, "_run_task", run_task)
    monkeypatch.setattr(
        sweep, "start_first_batch", lambda prune, db, task, env, **kw: started.append((task, kw["search"]))
    )
    suite = {"dense": [{"M": 20, "N": 12, "K": 16}, {"M": 24, "N": 12, "K": 16}]}
    with ResultsDB(tmp_path / "t.db") as db:
        sweep.run_sweep(db, suite, ops=["dense"], modes=["fwd", "bwd"], dtypes=["float32"], progress=False,
                        compile_mode="none")  # fmt: skip
    todo = [task for task, _ in seen]
    assert len(todo) == 4 and seen[-1][1] is None
    assert started == [(task, "guided") for task in todo[1:]]


def test_correctness_gate_rejects_a_wrong_config(tiny_suite: Path, tmp_path: Path, monkeypatch) -> None:
    """A config whose output is off is recorded as wrong, with its error, and never timed."""
    real = sweep.Problem.yat
    first: list[object] = []  # the first tile the sweep times (whatever the ranking puts first)

    def sabotaged(self, config):
        fn = real(self, config)
        first[:] = first or ([config] if config is not None else [])
        if config is not None and config == first[0]:
            return lambda: fn() * 1.01
        return fn

    monkeypatch.setattr(sweep.Problem, "yat", sabotaged)
    db_path = tmp_path / "r.db"
    suite = sweep.load_suite(str(tiny_suite))
    with ResultsDB(db_path) as db:
        counts = sweep.run_sweep(db, suite, ops=["dense"], modes=["fwd"], dtypes=["float32"],
                                 max_configs=None, progress=False, compile_mode="none")  # fmt: skip
    wrong = [r for r in _rows(db_path) if r.status == "wrong"]
    assert counts.get("wrong", 0) == len(wrong) > 0
    assert all(r.median_ms is None and r.correct is False and "max rel error" in r.reason for r in wrong)
    sabotaged_name = first[0].name  # type: ignore[attr-defined]
    from yat_triton.tuning import config_from_dict

    assert all(config_from_dict(json.loads(r.config)).name == sabotaged_name for r in wrong)
    ok = [r for r in _rows(db_path) if r.provider == "yat_triton" and r.status == "ok"]
    assert ok and all(config_from_dict(json.loads(r.config)).name != sabotaged_name for r in ok)


def test_correctness_gate_checks_every_output(tiny_suite: Path, tmp_path: Path, monkeypatch) -> None:
    """A backward tile is checked on dx, dW and db, a forward tile also as training runs
    it (saving s): one wrong output makes the row wrong, naming that output."""
    real_with, real_training = sweep.Problem.yat_with, sweep.Problem.fwd_for_training

    def wrong_dw(self, config):
        fn = real_with(self, config)
        if config is None or self.mode == "fwd":
            return fn
        return lambda: (lambda dx, dw, db: (dx, dw * 1.01, db))(*fn())

    def wrong_training(self, config):
        fn = real_training(self, config)
        return lambda: fn() * 1.01

    monkeypatch.setattr(sweep.Problem, "yat_with", wrong_dw)
    monkeypatch.setattr(sweep.Problem, "fwd_for_training", wrong_training)
    db_path = tmp_path / "r.db"
    with ResultsDB(db_path) as db:
        sweep.run_sweep(db, sweep.load_suite(str(tiny_suite)), ops=["dense"], modes=["fwd", "bwd"],
                        dtypes=["float32"], max_configs=2, progress=False, compile_mode="none")  # fmt: skip
    ours = {
        (r.mode, r.config): r for r in _rows(db_path) if r.provider == "yat_triton" and r.status != "pruned"
    }
    assert len(ours) == 4
    for (mode, config), r in ours.items():
        if mode == "bwd" and not config:  # the op on its defaults: not sabotaged
            assert r.status == "ok" and r.correct and r.max_rel_err < 1e-4
        else:
            assert r.status == "wrong" and r.median_ms is None, r
            assert r.reason.endswith("(dW)" if mode == "bwd" else "(y)"), r.reason


def test_time_capped_runs_measure_what_matters_first(tiny_suite: Path, tmp_path: Path) -> None:
    """Tasks interleave the ops, headline shapes first; within a task the standard layer
    comes first, then the ⵟ configs, then the ⵟ references (a run stopped early still has
    the comparison that matters most)."""
    todo = sweep.tasks(sweep.load_suite("core"), ["dense", "conv2d"], ["fwd"], ["bfloat16"])
    assert [t.op for t in todo[:4]] == ["dense", "conv2d", "dense", "conv2d"]
    assert todo[0].shape == {"M": 4096, "N": 4096, "K": 4096} and todo[1].shape["H"] == 56

    def target(t: sweep.Task) -> bool:  # SPEC section 6's shapes
        if t.op == "dense":
            return t.shape["M"] == t.shape["N"] == t.shape["K"] >= 4096
        return t.shape["B"] == 64 and t.shape["k"] == 3

    # every target shape before the other shapes, but for one of seconds (the 2048 cube)
    last = max(i for i, t in enumerate(todo) if target(t))
    assert last == 5
    assert [t.shape for t in todo[:last] if not target(t)] == [{"M": 2048, "N": 2048, "K": 2048}]
    (task,) = sweep.tasks(sweep.load_suite(str(tiny_suite)), ["dense"], ["fwd"], ["float32"])
    with ResultsDB(tmp_path / "order.db") as db:
        rows = list(sweep._run_task(db, task, sweep.environment(), "cpu", 1, "default"))
    measured = [r.provider for r in rows if r.status != "pruned"]
    assert measured[:3] == ["linear+relu", "addmm_relu", "yat_triton"], measured
    assert "eager_ref" in measured[3:] and "yat_triton" not in measured[3:], measured


@pytest.mark.parametrize("op, shape", [
    ("dense", {"M": 40, "N": 24, "K": 32}),
    ("conv2d", {"B": 4, "C_in": 16, "H": 4, "W": 4, "C_out": 16, "k": 3, "stride": 1, "padding": 1}),
])  # fmt: skip
def test_backward_modes_run_the_forward_on_the_fwd_sweeps_fastest_tile(
    op: str, shape: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, untuned: None
) -> None:
    """fwd+bwd measures the op as the winners file ships it: its forward on the fastest
    correct tile of the problem's fwd rows (not the default tile), named in each yat_triton
    row's reason and in the report's summary; without fwd rows, the default forward."""
    from autotune.inspect import record_calls
    from autotune.sweep import Problem, fastest_fwd_tile

    suite = {op: [shape]}
    task = sweep.Task(op, shape, "float32", "fwd+bwd")
    env = sweep.environment()
    with ResultsDB(tmp_path / "r.db") as db:
        assert fastest_fwd_tile(db, task, env) is None
        sweep.run_sweep(db, suite, ops=[op], modes=["fwd", "bwd", "fwd+bwd"], dtypes=["float32"],
                        max_configs=2, progress=False, compile_mode="none")  # fmt: skip
        fwd = [r for r in db.query(mode="fwd", provider="yat_triton", status="ok") if r.correct]
        assert len(fwd) == 2, [(r.config, r.status) for r in db.query(mode="fwd")]
        best = min(fwd, key=lambda r: r.median_ms)
        tile = fastest_fwd_tile(db, task, env)
        assert tile is not None and json.loads(best.config) == tile.as_dict()
        rows = db.query(mode="fwd+bwd", provider="yat_triton", status="ok")
        assert rows and all(r.reason == FWD_NOTE + tile.name for r in rows), [r.reason for r in rows]
        # bwd mode times its backward alone: its forward runs on the default, no note
        assert all(r.reason == "" for r in db.query(mode="bwd", provider="yat_triton", status="ok"))
        # faster rows that this run cannot take are passed over: another Triton's; a
        # warp-specialized tile where those are left out; a config that is no tile; one in
        # the kernels' constexpr spelling is read
        ws = TileConfig(128, 64, 32, 8, 4, 2, tma=True, warp_specialize=True)
        faster = {
            "other-triton": (canonical_json(TileConfig(16, 16, 16, 8, 4, 1).as_dict()), {"triton": "0.0"}),
            "ws": (canonical_json(ws.as_dict()), {}),
            "bad": (canonical_json({"block_m": 3}), {}),
        }
        for i, (config, changes) in enumerate(faster.values()):
            db.add(dataclasses.replace(best, config=config, median_ms=best.median_ms / (10 + i), **changes))
        assert fastest_fwd_tile(db, task, env, warp_specialize=False) == tile
        assert fastest_fwd_tile(db, task, env) == ws
        spelled = {k.upper(): v for k, v in TileConfig(32, 16, 16, 4, 4, 1).as_dict().items()}
        db.add(dataclasses.replace(best, config=canonical_json(spelled), median_ms=best.median_ms / 100))
        assert fastest_fwd_tile(db, task, env) == TileConfig(32, 16, 16, 4, 4, 1)
    written = render_report(tmp_path / "r.db", tmp_path / "report")
    page = next(p for p in written if p.name == "README.md" and p.parent != tmp_path / "report")
    assert f"(forward {tile.name})" in page.read_text()
    # the forward's launch takes that tile (16 rows; the default here takes 64)
    problem = Problem(op, shape, "float32", "fwd+bwd", "cpu")
    for fwd_tile, rows_a_tile in ((None, 64), (TileConfig(16, 16, 16, 8, 4, 1), 16)):
        problem.fwd_tile = fwd_tile
        calls = record_calls(problem.yat_with(TileConfig(32, 32, 32, 8, 4, 1)))
        forward = [c for c in calls if "_fwd" in c.kernel.__name__]
        assert forward, [c.kernel.__name__ for c in calls]
        assert all(c.kwargs["BLOCK_M"] == rows_a_tile for c in forward), [c.kwargs for c in forward]


def test_sweep_records_a_warp_specialization_fallback_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """A warp-specialized tile that this Triton runs unspecialized (the launcher's
    WarpSpecializationFallback) becomes an error row saying why, not a timing under a name
    it did not run as; the other rows are measured as usual."""
    import warnings

    import yat_triton._launch as launch_mod
    from kernels._common import TileConfig

    def refuse(call: object) -> object:
        if call.kwargs.get("WARP_SPECIALIZE"):
            warnings.warn("k: warp specialization does not compile", launch_mod.WarpSpecializationFallback, 2)
            return launch_mod.unspecialized(call)
        return call

    monkeypatch.setattr(launch_mod, "unless_warp_specialization_fails", refuse)
    ws = TileConfig(128, 64, 32, 2, 4, 2, tma=True, warp_specialize=True)
    monkeypatch.setattr(sweep, "config_space", lambda *a, **k: ([ws], []))
    task = sweep.Task("dense", {"M": 130, "N": 72, "K": 32}, "bfloat16", "fwd")
    with ResultsDB(tmp_path / "ws.db") as db:
        rows = list(sweep._run_task(db, task, sweep.environment(), device, 2, "none"))
    ours = {json.loads(r.config).get("warp_specialize", False): r for r in rows if r.provider == "yat_triton"}
    assert ours[True].status == "error" and "warp specialization does not compile" in ours[True].reason
    assert ours[True].median_ms is None and ours[False].status == "ok"


def test_shards_split_the_work(tiny_suite: Path, tmp_path: Path) -> None:
    suite = sweep.load_suite("quick")
    todo = sweep.tasks(suite, ["dense"], ["fwd", "bwd"], ["float32"])
    parts = [sweep.shard(todo, f"{i}/3") for i in (1, 2, 3)]
    assert sorted(len(p) for p in parts) and sum(len(p) for p in parts) == len(todo)
    dbs = []
    for i in (1, 2):
        path = tmp_path / f"s{i}.db"
        argv = ["sweep", "--suite", str(tiny_suite), "--db", str(path), "--op", "dense", "--mode", "fwd,bwd",
                "--dtype", "float32", "--max-configs", "1", "--shard", f"{i}/2", "--quiet",
                *NO_COMPILE]  # fmt: skip
        assert cli.main(argv) == 0
        dbs.append(path)
    modes = [{r.mode for r in _rows(p) if r.provider == "yat_triton" and r.status == "ok"} for p in dbs]
    assert modes[0].isdisjoint(modes[1]) and modes[0] | modes[1] == {"fwd", "bwd"}
    merged = tmp_path / "all.db"
    assert cli.main(["merge", "--db", str(merged), *map(str, dbs)]) == 0
    assert len(_rows(merged)) == sum(len(_rows(p)) for p in dbs)


def test_show_prints_the_table(tiny_suite: Path, tmp_path: Path, capsys) -> None:
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd",
            "--dtype", "bfloat16", "--max-configs", "1", "--quiet", *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["show", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert '{"M":20,"N":12,"K":16}' in out and "bfloat16" in out
    assert ("NO (CPU)" in out) == (not sweep.environment().representative)


def test_show_and_sweep_report_bad_databases(tmp_path: Path, capsys) -> None:
    assert cli.main(["show", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such results database" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 10)
    before = junk.read_bytes()
    assert cli.main(["show", "--db", str(junk)]) == 2
    assert str(junk) in capsys.readouterr().err
    assert junk.read_bytes() == before


def test_command_line_refuses_bad_values(tmp_path: Path, capsys) -> None:
    """Options are checked before anything runs; export of a missing database creates none."""
    for bad in (["--max-configs", "0"], ["--max-configs", "-1"], ["--compile-mode", "bogus"],
                ["--hang-after", "-1"], ["--hang-after", "soon"], ["--hang-after", "inf"],
                ["--op", "dense,dense"], ["--mode", "fwd,bwd,fwd"]):  # fmt: skip
        with pytest.raises(SystemExit) as stop:
            cli.main(["sweep", "--db", str(tmp_path / "r.db"), *bad])
        assert stop.value.code == 2
        assert bad[0] in capsys.readouterr().err
    assert cli.main(["export", "--db", str(tmp_path / "typo.db")]) == 2
    assert "no such results database" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_export_cpu_sweep_and_load_back(tiny_suite: Path, tmp_path: Path, capsys) -> None:
    """A sweep exports its correct winners (labelled representative or not, as the machine
    is) outside the package, and yat_triton's loader reads every entry back."""
    from yat_triton.tuning import read_winners

    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(tiny_suite), "--db", str(db_path), "--op", "dense", "--mode", "fwd",
            "--dtype", "float32", "--max-configs", "2", "--quiet", *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == 0
    out = tmp_path / "tuned"
    assert cli.main(["export", "--db", str(db_path), "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    doc = json.loads(path.read_text())
    env = sweep.environment()
    assert doc["representative"] is env.representative and doc["gpu"] == env.gpu
    gpu, entries = read_winners(path)
    assert gpu == doc["gpu"] and len(entries) == len(doc["entries"]) == 1
    assert "read back and checked by yat_triton.tuning" in capsys.readouterr().out


def test_quick_suite_runs_on_cpu(tmp_path: Path, capsys) -> None:
    """The README's main job, trimmed: the built-in quick suite, one config per problem."""
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", "quick", "--db", str(db_path), "--mode", "fwd", "--dtype", "bfloat16",
            "--max-configs", "1", "--quiet", *NO_COMPILE]  # fmt: skip
    assert cli.main(argv) == 0
    rows = [r for r in _rows(db_path) if r.provider == "yat_triton" and r.status == "ok"]
    assert {r.op for r in rows} == {"dense", "conv2d"} and all(r.correct for r in rows)
    assert cli.main(["show", "--db", str(db_path)]) == 0


def test_static_prune_flags_spilling_tiles() -> None:
    """On a GPU the sweep compiles each tile for sm_90 first and prunes the ones that spill
    or overflow shared memory (5 stages of 128x256x64 bf16: 240 KB), the forward also as
    training runs it. In a child process: static compiles need compiled, not interpreted,
    kernels."""

    code = (
        "from autotune.sweep import Problem, _record, _record_training, call_reason, static_reasons\n"
        "from kernels._common import TileConfig\n"
        "p = Problem('dense', {'M': 512, 'N': 512, 'K': 512}, 'bfloat16', 'fwd', 'cpu')\n"
        "both = lambda c: _record(p, c) + _record_training(p, c)\n"
        "assert len(both(TileConfig(128, 128, 64, 8, 8, 3))) == 4  # norm pass + forward, twice\n"
        "tiles = [TileConfig(256, 256, 64, 8, 4, 3), TileConfig(128, 256, 64, 8, 8, 5, epilogue_split=4),\n"
        "         TileConfig(128, 128, 64, 8, 8, 3, epilogue_split=4)]\n"
        "one_by_one = [next((w for w in map(call_reason, both(t)) if w), None) for t in tiles]\n"
        "assert static_reasons([both(t) for t in tiles]) == one_by_one  # the sweep's, in parallel\n"
        "print(*one_by_one, sep='\\n')\n"
    )
    spills, smem, good = compiled_child("-c", code).strip().splitlines()[-3:]
    assert "yat_dense_fwd_kernel spills on sm_90" in spills
    assert "yat_dense_fwd_kernel needs" in smem and "B of shared memory" in smem
    assert good == "None"


def test_the_static_prune_checks_each_compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a run, a compile the prune has checked (the same key: source, specialization,
    options) is not checked again, in the same batch or a later one; a tile takes its first
    call's reason; a call that plans no compile (a tile-independent kernel) gives none."""
    checked: list[str] = []
    jobs = {"a": "A", "a-again": "A", "b": "B", "c": "C", "norms": None}  # call -> compile key
    reasons = {"A": None, "B": "B spills", "C": "C overflows"}

    def verdict(job: object) -> str | None:
        checked.append(job.key)
        return reasons[job.key]

    planned = {c: None if k is None else SimpleNamespace(key=k) for c, k in jobs.items()}
    monkeypatch.setattr(sweep, "_static_compile", planned.__getitem__)
    monkeypatch.setattr(sweep, "_verdict", verdict)
    prune = sweep.StaticPrune()
    assert prune.reasons([["norms", "a", "b"], ["a-again"], ["c", "b"], ["norms"]]) == [
        "B spills", None, "C overflows", None,
    ]  # fmt: skip
    assert sorted(checked) == ["A", "B", "C"]
    assert prune.reasons([["a"], ["b", "a-again"]]) == [None, "B spills"] and len(checked) == 3
    assert prune.describe() == "static prune: 3 distinct sm_90 compiles checked, on threads"


def test_the_static_prune_on_processes_agrees_with_one_by_one() -> None:
    """The prune's compiles on worker processes give each tile the reason its calls give one
    by one in the sweep's process (a tile that spills, one that overflows shared memory, one
    that fits), each distinct compile checked once however often the batches repeat it,
    the workers started for a batch of MIN_JOBS_TO_SPAWN new compiles, not fewer; compiles
    started ahead on the workers (`start`, none before they run; `settle` waits for them
    and keeps their verdicts) give `reasons` their verdicts without a compile of its own;
    where a worker dies (compiles started ahead with it), the batch and the rest of the run
    are checked on threads, with the same verdicts; the workers of a process ended by
    os._exit end too, and `close` ends them, a compile running there included. In a child
    process: static compiles need compiled, not interpreted, kernels."""

    code = (
        "from autotune.sweep import Problem, StaticPrune, _record, _record_training, call_reason\n"
        "from kernels._common import TileConfig\n"
        "p = Problem('dense', {'M': 512, 'N': 512, 'K': 512}, 'bfloat16', 'fwd', 'meta')\n"
        "both = lambda c: _record(p, c) + _record_training(p, c)\n"
        "tiles = [TileConfig(256, 256, 64, 8, 4, 3), TileConfig(128, 256, 64, 8, 8, 5, epilogue_split=4),\n"
        "         TileConfig(128, 128, 64, 8, 8, 3, epilogue_split=4), TileConfig(64, 128, 64, 8, 4, 3)]\n"
        "if __name__ == '__main__':\n"
        "    prune = StaticPrune(2)\n"
        "    small = [both(TileConfig(64, 64, 64, 8, 4, 3))]  # 2 compiles: on threads\n"
        "    assert prune.reasons(small) == [None] and prune.worker_pids() == []\n"
        "    found = prune.reasons([both(t) for t in tiles] * 2)\n"
        "    assert len(prune.verdicts) == 10 and len(prune.worker_pids()) == 2, prune.verdicts  # 2 a tile\n"
        "    assert prune.describe().endswith('10 distinct sm_90 compiles checked, on 2 worker processes')\n"
        "    one_by_one = [next((w for w in map(call_reason, both(t)) if w), None) for t in tiles]\n"
        "    assert found == one_by_one * 2 and found[0] and found[1] and not found[2], found\n"
        "    import autotune.sweep as S\n"
        "    reason = lambda t: next((w for w in map(call_reason, both(t)) if w), None)\n"
        "    more = [TileConfig(64, 256, 64, 8, 4, 3), TileConfig(128, 64, 64, 8, 4, 3)]\n"
        "    assert StaticPrune(2).start([both(t) for t in more]) == 0  # (no workers yet: none)\n"
        "    assert prune.start([both(t) for t in more]) == 4 and prune.start([both(more[0])]) == 0\n"
        "    import concurrent.futures\n"
        "    concurrent.futures.wait([f for f, _ in prune.started.values()])  # (sent to the workers)\n"
        "    verdict, S._verdict = S._verdict, None  # (a compile here, not the workers', would fail)\n"
        "    early = prune.reasons([both(t) for t in more])\n"
        "    S._verdict = verdict\n"
        "    assert early == list(map(reason, more)) and len(prune.verdicts) == 14 and not prune.started\n"
        "    last = [TileConfig(64, 128, 32, 8, 4, 3), TileConfig(128, 128, 32, 8, 8, 3)]\n"
        "    assert prune.start([both(t) for t in last]) == 4\n"
        "    prune.settle()  # (waits for them, and keeps their verdicts)\n"
        "    assert not prune.started and len(prune.verdicts) == 18\n"
        "    import os, signal\n"
        "    spills = TileConfig(256, 256, 64, 8, 4, 2)  # (a batch not checked yet, started ahead)\n"
        "    assert prune.start([both(spills)]) == 2\n"
        "    for pid in prune.worker_pids():\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    again = prune.reasons([both(spills), both(tiles[2])])\n"
        "    assert 'spills on sm_90' in again[0] and again[1] is None, again\n"
        "    assert prune.processes == 0 and prune.worker_pids() == [] and 'failed' in prune.describe()\n"
        "    busy = StaticPrune(2)  # close ends the workers, a compile running there included\n"
        "    busy.reasons([both(t) for t in tiles])\n"
        "    assert busy.start([both(TileConfig(128, 256, 32, 8, 8, 3))]) == 2\n"
        "    import time; time.sleep(0.5)\n"
        "    workers = list(busy._pool._processes.values())\n"
        "    busy.close()\n"
        "    [w.join(10) for w in workers]\n"
        "    assert -signal.SIGTERM in [w.exitcode for w in workers], [w.exitcode for w in workers]\n"
        "    orphans = StaticPrune(2)  # a process ended by os._exit leaves none behind\n"
        "    orphans.reasons([both(t) for t in tiles])\n"
        "    print('ok', *orphans.worker_pids(), flush=True)\n"
        "    os._exit(0)\n"
    )
    # (workers left alive would hold the child's stdout open: this would time out)
    last = compiled_child("-c", code).splitlines()[-1].split()
    assert last[0] == "ok" and len(last) == 3, last

    def alive(pid: str) -> bool:  # an exited worker not yet reaped by init is a zombie: ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    for _ in range(50):
        if not any(map(alive, last[1:])):
            break
        time.sleep(0.1)
    assert not any(map(alive, last[1:])), last


def test_the_tiles_an_fma_dot_leaves_out_spill() -> None:
    """The three kinds of tile `fma_spills` keeps from an FMA dot's searches (fp32, IEEE)
    spill there when compiled for sm_90: a 64x64x32 TMA tile, a 128x128x32 one on 4 warps
    (128 accumulator values a thread), and a 128x64x64 one on 4 warps in the forward (64
    values a thread, 64 deep); the 64x64x32 pointer tile, which it keeps, does not, nor
    does a 64x128x64 tile in the dense backward's GEMMs, which it keeps there (Triton 3.9
    spills the 128x64x64 one there, 3.6 does not). In a child process: static compiles need
    compiled, not interpreted, kernels."""

    code = (
        "from autotune.sweep import Problem, _record, call_reason, fma_dot, fma_spills, swept_calls\n"
        "from kernels._common import TileConfig\n"
        "assert fma_dot('float32')\n"
        "shape = {'M': 512, 'N': 512, 'K': 512}\n"
        "p = Problem('dense', shape, 'float32', 'fwd', 'meta')\n"
        "for c in (TileConfig(64, 64, 32, 8, 4, 3, tma=True), TileConfig(128, 128, 32, 8, 4, 3),\n"
        "          TileConfig(128, 64, 64, 8, 4, 4), TileConfig(64, 64, 32, 8, 4, 3)):\n"
        "    print(fma_spills(c), 'spills on sm_90' in str(call_reason(_record(p, c)[-1])))\n"
        "b = Problem('dense', shape, 'float32', 'bwd', 'meta')\n"
        "c = TileConfig(64, 128, 64, 8, 4, 4)\n"
        "gemms = [k for k in swept_calls(_record(b, c), 'bwd') if 'bwd_gemm' in k.kernel.__name__]\n"
        "assert len(gemms) == 2, gemms\n"
        "print(fma_spills(c, dense_bwd_gemm=True), any(map(call_reason, gemms)))\n"
    )
    assert compiled_child("-c", code).split() == ["True"] * 6 + ["False"] * 4


def test_the_static_prunes_lean_report_agrees_with_the_full_one() -> None:
    """The sweep's static prune compiles without disassembling (`StaticCompile.lean_report`,
    as `compile_sm90(disassemble=False)`), and its verdicts match the full report's: the
    spills (the stack frame alone, against the full report's also counting the SASS's
    spill stores and loads), TMA loads (from the PTX, not a TMA store, against the SASS) and
    wgmma (PTX against SASS), for kernels that spill and kernels that do not (one under a
    register cap); the fields both read from cuobjdump and ptxas (registers, shared memory,
    serialization) come along. In a child process: static compiles need compiled, not
    interpreted, kernels."""

    code = (
        "from autotune.inspect import compile_sm90\n"
        "from autotune.sweep import Problem, _record\n"
        "from kernels._common import TileConfig\n"
        "p = Problem('dense', {'M': 512, 'N': 512, 'K': 512}, 'bfloat16', 'fwd', 'cpu')\n"
        "c = Problem('conv2d', {'B': 2, 'C_in': 16, 'H': 6, 'W': 6, 'C_out': 16, 'k': 3, 'stride': 1,\n"
        "            'padding': 1}, 'bfloat16', 'fwd', 'cpu')\n"
        "tile = TileConfig(128, 128, 64, 8, 8, 3, epilogue_split=4)\n"
        "calls = [_record(p, tile)[-1], _record(p, TileConfig(128, 128, 64, 8, 8, 3, tma=True))[-1],\n"
        "         _record(c, TileConfig(32, 16, 16, 2, 4, 2))[-1]]  # (a TMA store, pointer loads)\n"
        "spills = _record(p, TileConfig(256, 256, 64, 8, 4, 3))[-1]  # (as the prune test's)\n"
        "runs = [(k, None) for k in calls] + [(spills, None), (calls[1], 168)]\n"
        "keys = ('registers', 'stack_bytes', 'shared_bytes', 'tma', 'wgmma_serialized', 'spills',\n"
        "        'programs_per_sm', 'warps')\n"
        "for k, cap in runs:\n"
        "    full, lean = (compile_sm90(k, maxnreg=cap, disassemble=d) for d in (True, False))\n"
        "    assert [getattr(full, a) for a in keys] == [getattr(lean, a) for a in keys], (full, lean)\n"
        "    assert (full.hgmma > 0) == (lean.hgmma > 0) and lean.loop_step == 0, (full, lean)\n"
        "    print(k.kernel.__name__, full.spills, full.tma)\n"
    )
    assert compiled_child("-c", code).split() == [
        "yat_dense_fwd_kernel", "False", "False", "yat_dense_fwd_tma_kernel", "False", "True",
        "yat_conv_fwd_kernel", "False", "False", "yat_dense_fwd_kernel", "True", "False",
        "yat_dense_fwd_tma_kernel", "False", "True",  # (a cap that fits it)
    ]  # fmt: skip


@pytest.mark.parametrize("op, shape", [
    ("dense", {"M": 40, "N": 24, "K": 32}),
    ("conv2d", {"B": 2, "C_in": 16, "H": 6, "W": 6, "C_out": 16, "k": 3, "stride": 1, "padding": 1}),
])  # fmt: skip
def test_static_prune_checks_a_backward_tile_on_the_backward_kernels(op: str, shape: dict) -> None:
    """In the backward modes the recorded run holds the forward on its default tile too:
    the static prune checks only the kernels the swept backward tile runs."""
    from autotune.sweep import Problem, _record, swept_calls
    from kernels._common import TileConfig

    tile = TileConfig(32, 32, 32, 8, 4, 2)
    fwd = _record(Problem(op, shape, "float32", "fwd", "cpu"), tile)
    assert fwd and swept_calls(fwd, "fwd") == fwd
    calls = _record(Problem(op, shape, "float32", "fwd+bwd", "cpu"), tile)
    names = [c.kernel.__name__ for c in swept_calls(calls, "fwd+bwd")]
    assert any("fwd" in c.kernel.__name__ for c in calls)  # recorded, not checked
    assert names and not any("fwd" in n for n in names), names
    gemms = {"dense": {"yat_dense_bwd_gemm_kernel"},
             "conv2d": {"yat_conv_dgrad_kernel", "yat_conv_wgrad_kernel"}}  # fmt: skip
    assert gemms[op] <= set(names), names


@pytest.fixture
def untuned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The launchers on their default tiles: no winners file (the package's own, committed
    after a GPU sweep, would change which kernels a shape runs)."""
    from yat_triton import tuning

    monkeypatch.delenv(tuning.ENV_VAR, raising=False)
    monkeypatch.setattr(tuning, "TUNED_DIR", tmp_path / "no-winners")
    tuning.use_tuned_configs(None)
    yield
    monkeypatch.undo()
    tuning.use_tuned_configs(None)


def test_breakdown_times_every_kernel(capsys, untuned) -> None:
    """Per phase: every kernel the launcher ran, then the whole call (graph, loops); the standard layers
    as references; the backward's prep kernel at the alternative blocks; the TMA variants
    of the dense op and of the conv forward and input gradient on request."""
    from autotune import breakdown

    assert (
        breakdown.main(["--dense", "24", "40", "32", "--conv", "1", "16", "5", "16", "3", "--tma", "--json"])
        == 0
    )
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    kernels = {(ln["op"], ln["phase"]): [] for ln in lines}
    for ln in lines:
        kernels[(ln["op"], ln["phase"])].append(ln["what"])
        assert ln["us"] > 0
    # the whole call (graph replays, L2 flushed), then in loops of calls back to back: eagerly
    # and, on a GPU, as the graph's replay
    whole = ["launcher (whole call)", "launcher (eager, back to back)"]
    whole += ["launcher (graph, back to back)"] if breakdown.REPRESENTATIVE else []
    # the shipped tile of this 24-row batch (bf16, the breakdown's dtype) takes its norms
    # from the pass, on a GPU too (16-bit io: `IN_LOOP_NORMS_16BIT`)
    from kernels.dense import dense_default_config

    # (the GPU's default for it too: the interpreter's never sums them in its loop)
    assert not dense_default_config(24, 40, 32, 2).norms_in_loop
    assert kernels["dense", "fwd"] == ["row_sqnorm_kernel", "yat_dense_fwd_kernel", *whole]
    # the same forward as inference runs it (nothing saved), and its norm pass at other blocks
    assert kernels["dense", "fwd-infer"] == ["row_sqnorm_kernel", "yat_dense_fwd_kernel", *whole]
    passes = [(ln["what"], ln["grid"]) for ln in lines if ln["phase"] == "fwd-normpass"]
    assert passes == [
        (f"row_sqnorm_kernel @ {br}x{bk}/{w}w", str(-(-24 // br) + -(-40 // br)))
        for br, bk, w in breakdown.NORM_BLOCKS
    ]
    assert kernels["dense-tma", "fwd"][1] == "yat_dense_fwd_tma_kernel"
    assert kernels["dense-tma-xnorms", "fwd"][:2] == ["row_sqnorm_kernel", "yat_dense_fwd_tma_kernel"]
    assert kernels["dense-tma", "bwd"].count("yat_dense_bwd_gemm_tma_kernel") == 2
    assert kernels["conv2d-tma", "fwd"][2] == "yat_conv_fwd_tma_kernel"
    assert kernels["conv2d", "fwd"][2] == "yat_conv_fwd_kernel"
    assert (
        "yat_conv_dgrad_kernel" in kernels["conv2d", "bwd"]
        and "yat_conv_wgrad_kernel" in kernels["conv2d", "bwd"]
    )
    # the backward with the same tile (the input gradient's shipped one, 16 channels wide) on
    # the TMA input and weight gradients
    assert (
        "yat_conv_dgrad_tma_kernel" in kernels["conv2d-tma", "bwd"]
        and "yat_conv_wgrad_tma_kernel" in kernels["conv2d-tma", "bwd"]
    )
    # the conv forward with its patch norms the other way: the shipped bf16 tile takes them
    # from the pixel-norm pass, the "fwd-norms" line sums them in the loop, on the TMA kernel
    # only (16-bit io: `broken_in_loop_norms`)
    # (a channels_last weight, as cuDNN's: its norms from the row-norm pass, then the pixels')
    assert kernels["conv2d", "fwd"][:3] == ["row_sqnorm_kernel", "row_sqnorm_kernel", "yat_conv_fwd_kernel"]
    assert kernels["conv2d", "fwd-infer"] == kernels["conv2d", "fwd"]  # (the same kernels, nothing saved)
    assert ("conv2d", "fwd-norms") not in kernels
    in_loop_tma = ["row_sqnorm_kernel", "yat_conv_fwd_tma_kernel", *whole]
    assert kernels["conv2d-tma", "fwd-norms"] == in_loop_tma
    # an NCHW weight: copied to the forward's K order by the pass that sums its norms
    assert kernels["conv2d", "fwd-nchw-w"] == [
        "yat_conv_weight_prep_kernel", "row_sqnorm_kernel", "yat_conv_fwd_kernel", *whole
    ]  # fmt: skip
    # the "-nopdl" phases only where the forwards overlap their norm pass (a GPU's)
    assert not [k for k in kernels if k[1].endswith("-nopdl")]
    assert kernels["dense", "ref"] == ["x @ W^T (matmul)", "linear+relu fwd", "linear+relu bwd"]
    # first, the device copy the roofline's memory roof comes from: 16 MiB read and written
    assert lines[0]["op"] == "memory" and kernels["memory", "ref"] == [breakdown.COPY_WHAT]
    assert lines[0]["shape"] == f"bytes={2 * (16 << 20)}" and lines[1]["shape"] == "24x40x32"
    assert lines[0]["dtype"] == "uint8" and lines[1]["dtype"] == "bfloat16"
    assert kernels["conv2d", "ref"] == ["conv+relu fwd", "conv+relu bwd", "conv alone (no bias)"]
    # each forward's GEMM again, without the ⵟ math (`gemm_only_lines`)
    assert kernels["dense", "fwd-gemm"] == ["yat_dense_fwd_kernel @ gemm only"]
    assert kernels["conv2d", "fwd-gemm"] == ["yat_conv_fwd_kernel @ gemm only"]
    # and on the other 16-bit TMA tile shapes, their inference forward too
    for op in breakdown.PROBE_TILES:
        assert kernels[op, "fwd-infer"][:2] == ["row_sqnorm_kernel", "yat_dense_fwd_tma_kernel"]
        assert kernels[op, "fwd-gemm"] == ["yat_dense_fwd_tma_kernel @ gemm only"]
    assert all(kernels[k][-len(whole) :] == whole for k in kernels if k[1] in ("fwd", "bwd"))
    # the conv forward (channels_last y, 16 bf16 channels: 32-byte rows) stores by TMA, and is
    # timed again storing through pointers
    stored = [(ln["op"], ln["what"]) for ln in lines if ln["phase"] == "fwd-store"]
    assert stored == [("conv2d", "yat_conv_fwd_kernel @ pointer stores")]
    capped = [ln for ln in lines if ln["phase"] == "fwd-maxnreg"]
    assert [(ln["op"], ln["what"]) for ln in capped] == [
        ("dense", f"yat_dense_fwd_kernel @ maxnreg={cap}") for cap in breakdown.FWD_MAXNREG
    ]
    # the backward's prep kernel again at each alternative block, its grid that block's
    for op, (M, N) in (("dense", (24, 40)), ("conv2d", (25, 16))):
        alt = [ln for ln in lines if ln["op"] == op and ln["phase"] == "bwd-prep"]
        assert [(ln["what"], ln["grid"]) for ln in alt] == [
            (f"yat_dense_bwd_prep_kernel @ {bm}x{bn}/{w}w", f"{(-(-M // bm)) * (-(-N // bn))}x1")
            for bm, bn, w in breakdown.PREP_BLOCKS
        ]
    # last, a 16-row batch's inference forward through the 40x32 layer: the shipped bf16 tile
    # runs the norm pass, and no line sums them in its loop (16-bit io: `broken_in_loop_norms`)
    small = [ln for ln in lines if ln["op"] == "dense-small"]
    assert small and lines[-len(small) :] == small and {ln["shape"] for ln in small} == {"16x40x32"}
    assert not dense_default_config(16, 40, 32, 2).norms_in_loop  # (fp32's would sum them)
    assert dense_default_config(16, 40, 32, 4).norms_in_loop
    assert kernels["dense-small", "fwd"][:2] == ["row_sqnorm_kernel", "yat_dense_fwd_kernel"]
    assert ("dense-small", "fwd-norms") not in kernels
    assert kernels["dense-small", "ref"] == ["x @ W^T (matmul)", "linear+relu fwd"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--copy-mib", "--copy-mib: 0 is not a whole number of MiB >= 1"),
     ("--small", "--small: -1 is not a number of rows >= 0")],
)  # fmt: skip
def test_breakdown_refuses_bad_sizes(capsys, flag: str, message: str) -> None:  # noqa: ANN001
    from autotune import breakdown

    with pytest.raises(SystemExit) as exc:
        breakdown.main([flag, "0" if flag == "--copy-mib" else "-1"])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_breakdown_pointer_store_variant_of_the_tma_forward(
    untuned, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """The pointer-store variant swaps only y's and s's descriptors for their tensors: the
    TMA conv forward (whose x and W stay descriptors) runs it too, storing through
    pointers into the same memory."""
    import torch
    from triton.tools.tensor_descriptor import TensorDescriptor

    from autotune import breakdown
    from kernels._common import TileConfig
    from yat_triton.conv import conv2d_fwd
    from yat_triton.tuning import forced_config

    timed = []
    call_line = breakdown.call_line
    monkeypatch.setattr(breakdown, "call_line", lambda *a: timed.append(a[-1]) or call_line(*a))
    x = torch.randn(1, 16, 5, 5, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 16, 3, 3, device=device)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    with forced_config("conv2d", "fwd", TileConfig(32, 16, 16, 2, 4, 2, tma=True)):
        lines = breakdown.pointer_store_lines(
            "conv2d-tma", lambda: conv2d_fwd(x, w, None, None, 1.0, None, 1e-5, *geo, "ieee", True)
        )
    assert [(ln.op, ln.phase, ln.what) for ln in lines] == [
        ("conv2d-tma", "fwd-store", "yat_conv_fwd_tma_kernel @ pointer stores")
    ]
    (plain,) = timed
    kinds = {name: type(a) for name, a in zip(plain.kernel.arg_names, plain.args, strict=False)}
    assert kinds["x_desc"] is kinds["w_desc"] is TensorDescriptor
    assert kinds["y_ptr"] is kinds["s_ptr"] is torch.Tensor
    assert plain.kwargs["TMA_STORE"] is False


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["dense", "conv2d"])
@pytest.mark.parametrize("tma", [False, True], ids=["pointer", "tma"])
def test_gemm_only_lines_run_the_forwards_gemm(untuned, device: str, op: str, tma: bool, dtype: str) -> None:
    """The "fwd-gemm" line replays the forward kernel with GEMM_ONLY (and nothing saved):
    the same launch then writes the plain product, x W^T (dense) or the convolution (conv,
    no bias), as the float64 oracle computes it; the bias, the norms and the ⵟ quotient
    are gone."""
    import torch
    import torch.nn.functional as F
    from tolerances import assert_close

    from autotune import breakdown
    from yat_triton.conv import conv2d_fwd
    from yat_triton.dense import dense_fwd
    from yat_triton.tuning import forced_config

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(3)
    outputs = []
    if op == "dense":
        x, w, b = (torch.randn(*shape, generator=gen).to(device, dt) for shape in ((24, 32), (40, 32), (40,)))

        def forward() -> object:
            outputs.append(dense_fwd(x, w, b, None, 1.0, None, 1e-5, "ieee", False)[0])

        expected, reduction = x.double() @ w.double().T, 32
    else:
        cl = torch.channels_last
        x = torch.randn(2, 16, 5, 5, generator=gen).to(device, dt).contiguous(memory_format=cl)
        w = torch.randn(24, 16, 3, 3, generator=gen).to(device, dt).contiguous(memory_format=cl)
        b = torch.randn(24, generator=gen).to(device, dt)
        geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)

        def forward() -> object:
            # (saving s, as training runs it: the replay turns STORE_S off)
            outputs.append(conv2d_fwd(x, w, b, None, 1.0, None, 1e-5, *geo, "ieee", True)[0])

        expected, reduction = F.conv2d(x.double(), w.double(), None, 1, 1), 16 * 9
    with forced_config(op, "fwd", TileConfig(16, 16, 16, 2, 4, 2, tma=tma)):
        lines = breakdown.gemm_only_lines(op, forward)
    kernel = f"yat_{op.removesuffix('2d')}_fwd_{'tma_' if tma else ''}kernel"
    assert [(ln.op, ln.phase, ln.what) for ln in lines] == [(op, "fwd-gemm", f"{kernel} @ gemm only")]
    (y,) = outputs  # the forward's own y, written again by the GEMM-only launch
    assert_close(y, expected, dtype, reduction=reduction, what=f"{op} GEMM only")


def test_breakdown_times_a_shipped_tma_forward_against_its_pointer_twin(untuned, device: str) -> None:
    """Where the shipped forward runs the persistent TMA kernel (the default of a 16-bit
    forward that fills the GPU), --tma does not time that forward again as "dense-tma": its
    pointer twin is timed instead, as "dense-pointer" (the backward forced to TMA as before).
    A shipped TMA tile summing the x norms in its loop differs from the plain TMA tile:
    "dense-tma" times the plain one's forward then."""
    import torch

    from autotune import breakdown
    from yat_triton.tuning import forced_config

    def phases_of(shipped: TileConfig) -> tuple[set[tuple[str, str]], list]:
        with forced_config("dense", "fwd", shipped):
            lines = [
                ln
                for group in breakdown.dense_lines(24, 40, 32, torch.float32, device, tma=True)
                for ln in group
            ]
        return {(ln.op, ln.phase) for ln in lines}, lines

    phases, lines = phases_of(TileConfig(16, 16, 16, 2, 4, 2, tma=True))
    assert ("dense-pointer", "fwd") in phases and ("dense-tma", "bwd") in phases
    assert ("dense-tma", "fwd") not in phases and ("dense-pointer", "bwd") not in phases
    nil, _ = phases_of(TileConfig(16, 16, 16, 2, 4, 2, norms_in_loop=True, tma=True))
    assert {("dense-tma", "fwd"), ("dense-pointer", "fwd")} <= nil
    kernels = {
        op: {ln.what for ln in lines if ln.op == op and ln.phase == "fwd"}
        for op in ("dense", "dense-pointer")
    }
    assert (
        "yat_dense_fwd_tma_kernel" in kernels["dense"] and "yat_dense_fwd_kernel" in kernels["dense-pointer"]
    )


def test_breakdown_times_the_tma_forward_paired_on_an_sm(
    capsys, untuned, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --tma, where the shipped TMA tile's programs do not pair up on an SM, the
    inference forward again at the most stages at which they do (`pair_per_sm`): phase
    "fwd-infer-pair" of op "dense-tma", on the TMA kernel; none where the tile pairs already."""
    import yat_triton.dense as dense
    from autotune import breakdown

    shipped = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=4, tma=True)  # (an H200's 4096^3 default)
    monkeypatch.setattr(dense, "pick_dense_config", lambda *a, **k: shipped)
    monkeypatch.setattr(breakdown, "conv_lines", lambda *a, **k: iter([]))  # (not under test)
    argv = ["--dense", "24", "40", "32", "--tma", "--small", "0", "--json"]
    assert breakdown.main(argv) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    paired = [ln["what"] for ln in lines if (ln["op"], ln["phase"]) == ("dense-tma", "fwd-infer-pair")]
    assert paired[:2] == ["row_sqnorm_kernel", "yat_dense_fwd_tma_kernel"], paired
    shipped = dataclasses.replace(shipped, num_stages=3)  # pairs already
    assert breakdown.main(argv) == 0
    assert "fwd-infer-pair" not in capsys.readouterr().out


def test_breakdown_times_more_conv_layers_leanly(capsys, untuned, monkeypatch: pytest.MonkeyPatch) -> None:
    """--more-conv: each further layer after the --conv layer's phases and before the small
    batch's, its forward, backward, references and TMA kernels only, every line naming its
    shape; the table gets a shape column."""
    from autotune import breakdown

    monkeypatch.setattr(breakdown, "dense_lines", lambda *a, **k: iter([]))  # (not under test)
    first, more = ["1", "16", "5", "16", "3"], ["2", "16", "4", "32", "3"]
    argv = ["--dense", "16", "32", "16", "--conv", *first, "--more-conv", *more, "--tma"]
    assert breakdown.main([*argv, "--json"]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    label = "B=2,C_in=16,HW=4,C_out=32,k=3"
    ours = [i for i, ln in enumerate(lines) if ln["shape"] == label]
    assert ours == list(range(ours[0], ours[-1] + 1))  # one run of lines
    before, after = lines[: ours[0]], lines[ours[-1] + 1 :]
    first_label = "B=1,C_in=16,HW=5,C_out=16,k=3"
    assert {ln["shape"] for ln in before if ln["op"].startswith("conv2d")} == {first_label}
    # after it, the --conv layer's extras (`PARTS`), then the small batch's
    assert {ln["shape"] for ln in after if ln["op"].startswith("conv2d")} == {first_label}
    assert {ln["phase"] for ln in after if ln["op"].startswith("conv2d")} >= {"fwd-nchw-w", "fwd-norms"}
    assert after[-1]["op"] == "dense-small"
    phases = list(dict.fromkeys((lines[i]["op"], lines[i]["phase"]) for i in ours))
    assert phases == [
        ("conv2d", "fwd"), ("conv2d", "bwd"), ("conv2d", "ref"), ("conv2d", "fwd-infer"),
        ("conv2d-tma", "fwd"), ("conv2d-tma", "bwd"),
        # the default tile without and with a split tail (2 tiles for the interpreter's 132 SMs)
        ("conv2d", "fwd-plain"), ("conv2d", "fwd-split"),
        ("conv2d-tma", "fwd-plain"), ("conv2d-tma", "fwd-split"),
        # and the backward's (its input gradient splits)
        ("conv2d", "bwd-plain"), ("conv2d", "bwd-split"),
        ("conv2d-tma", "bwd-plain"), ("conv2d-tma", "bwd-split"),
        # the inference forward's GEMM without the ⵟ math
        ("conv2d", "fwd-gemm"),
    ]  # fmt: skip
    for op in ("conv2d", "conv2d-tma"):
        for mode, kernel in (("fwd", "yat_conv_fwd"), ("bwd", "yat_conv_dgrad")):
            grids = {
                lines[i]["phase"]: int(lines[i]["grid"].split("x")[0])
                for i in ours
                if lines[i]["op"] == op and lines[i]["what"].startswith(kernel)
            }
            assert grids[f"{mode}-split"] > grids[f"{mode}-plain"], grids  # the tail's parts
    refs = [lines[i]["what"] for i in ours if lines[i]["phase"] == "ref"]
    assert refs == ["conv+relu fwd", "conv+relu bwd", "conv alone (no bias)"]
    assert "yat_conv_fwd_tma_kernel" in [lines[i]["what"] for i in ours]
    # the --conv layer keeps its whole set of phases, its core ones before the other layer's
    assert ("conv2d", "fwd-gemm") in {(ln["op"], ln["phase"]) for ln in before}
    # without --json: the table, a shape column where the layers are several
    assert breakdown.main([*argv, "--small", "0"]) == 0
    out = capsys.readouterr().out
    header = next(row for row in out.splitlines() if row.startswith("op "))
    assert header.split() == ["op", "shape", "phase", "kernel", "grid", "us", "share"]
    assert label in out and "conv [1, 16, 5, 16, 3], [2, 16, 4, 32, 3]" in out


def test_breakdown_keeps_every_phase_measured_before_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--json-out is rewritten after each phase: a run stopped in the conv backward (the GPU
    script's time cap) leaves the copy, the dense op's core lines and the conv forward's for
    the report (the extras come after every group's core phases)."""
    from autotune import breakdown

    phase_lines = breakdown.phase_lines

    def stop_in_conv_bwd(op: str, phase: str, launcher: object) -> list:
        if (op, phase) == ("conv2d", "bwd"):
            raise KeyboardInterrupt
        return phase_lines(op, phase, launcher)

    monkeypatch.setattr(breakdown, "phase_lines", stop_in_conv_bwd)
    out = tmp_path / "breakdown.jsonl"
    small = ["--dense", "24", "40", "32", "--conv", "1", "16", "5", "8", "3"]
    with pytest.raises(KeyboardInterrupt):
        breakdown.main([*small, "--json-out", str(out)])
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    assert {(ln["op"], ln["phase"]) for ln in lines} == {
        ("memory", "ref"), ("dense", "fwd"), ("dense", "bwd"), ("dense", "fwd-infer"), ("dense", "ref"),
        ("dense", "fwd-gemm"), ("conv2d", "fwd"),
    }  # fmt: skip
    assert {ln["shape"] for ln in lines if ln["op"] == "dense"} == {"24x40x32"}


def test_breakdown_leaves_out_a_failing_phase_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A phase that raises (a TMA variant's first run on hardware, a register cap that does
    not compile) costs its own lines: the phases after it are measured, the failures are
    named on stderr and under the table, and the exit status is 1."""
    from autotune import breakdown

    measure_phase = breakdown.measure_phase

    def failing(op: str, phase: str, launcher: object) -> list:
        if (op, phase) == ("dense-tma", "fwd"):
            raise RuntimeError("boom")
        return measure_phase(op, phase, launcher)

    def no_caps(*args: object) -> list:
        raise ValueError("maxnreg refused")

    monkeypatch.setattr(breakdown, "measure_phase", failing)
    monkeypatch.setattr(breakdown, "maxnreg_lines", no_caps)
    out = tmp_path / "breakdown.jsonl"
    small = ["--dense", "24", "40", "32", "--conv", "1", "16", "5", "8", "3", "--tma", "--small", "0"]
    assert breakdown.main([*small, "--json-out", str(out)]) == 1
    phases = {(ln["op"], ln["phase"]) for ln in map(json.loads, out.read_text().splitlines())}
    assert ("dense-tma", "fwd") not in phases and ("dense", "fwd-maxnreg") not in phases
    assert {("dense-tma", "bwd"), ("dense", "bwd-prep"), ("conv2d", "fwd"), ("conv2d-tma", "bwd")} <= phases
    captured = capsys.readouterr()
    assert "breakdown: dense-tma fwd: not timed (RuntimeError: boom)" in captured.err
    assert "breakdown: dense fwd-maxnreg: not timed (ValueError: maxnreg refused)" in captured.err
    assert "not timed (see above): dense-tma fwd, dense fwd-maxnreg" in captured.out


def test_breakdown_stops_where_the_cuda_context_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A phase whose failure lost the CUDA context (stubbed: the probe says so) stops the
    breakdown with status 3, saying which; the lines measured before it are kept."""
    from autotune import breakdown

    measure_phase = breakdown.measure_phase

    def faulting(op: str, phase: str, launcher: object) -> list:
        if (op, phase) == ("conv2d", "fwd"):
            raise RuntimeError(FAULT)
        return measure_phase(op, phase, launcher)

    monkeypatch.setattr(breakdown, "measure_phase", faulting)
    monkeypatch.setattr(breakdown, "_context_probe", lambda e: FAULT)
    out = tmp_path / "breakdown.jsonl"
    small = ["--dense", "24", "40", "32", "--conv", "1", "16", "5", "8", "3", "--small", "0"]
    assert breakdown.main([*small, "--json-out", str(out)]) == breakdown.CONTEXT_LOST_EXIT
    ops = {ln["op"] for ln in map(json.loads, out.read_text().splitlines())}
    assert ops == {"memory", "dense"}
    captured = capsys.readouterr()
    assert "breakdown stopped: conv2d fwd failed and lost the CUDA context" in captured.err
    # what was measured is printed too: the table, or the JSON lines
    assert "dense" in captured.out and "launcher (whole call)" in captured.out
    assert "not timed (see above): every phase after that (the CUDA context was lost)" in captured.out
    assert breakdown.main([*small, "--json"]) == breakdown.CONTEXT_LOST_EXIT
    printed = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert {ln["op"] for ln in printed} == ops


def test_breakdown_leaves_out_a_group_whose_setup_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group's own code failing (its inputs) costs that group: the next is measured, the
    status is 1; the next run of main in the process starts with no failure on record."""
    from autotune import breakdown

    def no_inputs(*args: object, **kwargs: object) -> Iterator[list]:
        raise RuntimeError("no inputs")
        yield []

    monkeypatch.setattr(breakdown, "dense_lines", no_inputs)
    small = ["--dense", "24", "40", "32", "--conv", "1", "16", "5", "8", "3", "--small", "0", "--json"]
    assert breakdown.main(small) == 1
    captured = capsys.readouterr()
    assert {json.loads(s)["op"] for s in captured.out.splitlines()} == {"memory", "conv2d"}
    assert "breakdown: dense (the rest of its phases): not timed (RuntimeError: no inputs)" in captured.err
    monkeypatch.undo()
    assert breakdown.main(small) == 0


def test_breakdown_still_ends_the_warp_specialized_op_on_a_fallback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warp-specialized tile this Triton runs unspecialized ends op dense-tma-ws's lines,
    said on stderr: not timed as another tile, and no failure of the run."""
    import warnings

    from autotune import breakdown
    from yat_triton._launch import WarpSpecializationFallback

    def fallback(op: str, phase: str, launcher: object) -> list:
        warnings.warn("k: warp specialization does not compile", WarpSpecializationFallback, 2)
        return []

    monkeypatch.setattr(breakdown, "measure_phase", fallback)
    breakdown._FAILED.clear()
    assert list(breakdown.dense_ws_lines(130, 72, 32, torch.bfloat16, "cpu")) == []
    assert breakdown._FAILED == [] and "dense-tma-ws fwd" in capsys.readouterr().err


def test_the_breakdown_probes_the_context_only_where_cuda_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """No probe without CUDA, before CUDA is used, or after an out-of-memory error (the
    context survives it); otherwise the probe's answer."""
    from autotune import breakdown

    probed: list[str] = []
    state = {"available": False, "initialized": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["available"])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(breakdown, "context_lost", lambda device: probed.append(device) or FAULT)
    fault = RuntimeError(FAULT)
    assert breakdown._context_probe(fault) == "" and probed == []
    state["available"] = True
    assert breakdown._context_probe(fault) == "" and probed == []
    state["initialized"] = True
    assert breakdown._context_probe(torch.OutOfMemoryError("CUDA out of memory")) == "" and probed == []
    assert breakdown._context_probe(fault) == FAULT and probed == ["cuda"]


def test_breakdown_times_the_warp_specialized_forward_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """With --tma the warp-specialized tiles come after every phase of the headline problems
    (the newest compiler path: a hang there loses only the small-batch lines, the last and
    least wanted), and --no-warp-specialize leaves them out; they run the forward and the
    backward GEMMs on warp-specialized tiles; a problem too small for one, or in fp32, has
    none, and fp16 only the forward (its backward GEMMs run the pointer kernel)."""
    from autotune import breakdown

    fwd, bwd = breakdown.dense_ws_lines(130, 72, 32, torch.bfloat16, device)
    assert {(ln.op, ln.phase) for ln in fwd + bwd} == {("dense-tma-ws", "fwd"), ("dense-tma-ws", "bwd")}
    assert "yat_dense_fwd_tma_kernel" in {ln.what for ln in fwd}
    assert "yat_dense_bwd_gemm_tma_kernel" in {ln.what for ln in bwd}
    assert list(breakdown.dense_ws_lines(24, 40, 32, torch.bfloat16, device)) == []
    assert list(breakdown.dense_ws_lines(130, 72, 32, torch.float32, device)) == []  # 16-bit io only
    (fwd16,) = breakdown.dense_ws_lines(130, 72, 32, torch.float16, device)  # fp16: pointer backward GEMMs
    assert {ln.phase for ln in fwd16} == {"fwd"}

    def stub(op: str) -> object:  # (a group's part named in its op)
        return lambda *a, part="all", **k: iter([[breakdown.Line(f"{op} {part}", "fwd", "k", "-", 1.0)]])

    for name, op in (
        ("dense_lines", "dense"), ("conv_lines", "conv2d"), ("small_batch_lines", "dense-small"),
        ("dense_ws_lines", "dense-tma-ws"),
    ):  # fmt: skip
        monkeypatch.setattr(breakdown, name, stub(op))
    out = tmp_path / "b.jsonl"
    # the core phases of each group, then the extras, then the warp-specialized tiles
    groups = ["memory", "dense core", "conv2d core", "dense extra", "conv2d extra"]
    for flags, ops in (
        (["--tma"], [*groups, "dense-tma-ws all", "dense-small all"]),
        (["--tma", "--no-warp-specialize"], [*groups, "dense-small all"]),
        ([], [*groups, "dense-small all"]),
        (["--small", "0"], groups),
    ):
        breakdown.main([*flags, "--json-out", str(out)])
        assert [json.loads(s)["op"] for s in out.read_text().splitlines()] == ops, flags


GPU_SCRIPT = Path(__file__).resolve().parents[1] / "autotune" / "gpu.sh"


def _stub_commands(folder: Path, **commands: str) -> Path:
    """A folder of stub commands (name: script text), executable, to put first on PATH: only
    the GPU script's own logic runs."""
    folder.mkdir()
    for name, text in commands.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_gpu_script_parses_its_options(tmp_path: Path) -> None:
    """The GPU script is valid bash and refuses bad options before running anything."""
    import subprocess

    script = GPU_SCRIPT
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    bad = subprocess.run(
        ["bash", str(script), str(tmp_path / "o"), "--bogus"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unknown option: --bogus" in bad.stderr
    gone = subprocess.run(
        ["bash", str(script), str(tmp_path / "o"), "--resume", str(tmp_path / "none.db")], capture_output=True
    )
    assert gone.returncode == 2 and not (tmp_path / "o" / "results.db").exists()


def test_gpu_script_writes_under_a_relative_output_dir(tmp_path: Path) -> None:
    """Called from another folder with a relative OUTPUT_DIR, the script (which changes to
    the repository) still writes every log there. Its python is a stub here: only the
    script's own file handling runs."""
    import os
    import subprocess

    script = GPU_SCRIPT
    stubs = _stub_commands(tmp_path / "bin", python='#!/bin/sh\necho "stub python $*"\n')
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(script), "out"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    logs = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"env.txt", "canary.log", "tests.log", "inspect_bfloat16.txt", "breakdown.txt", "sweep.log",
            "show.txt"} <= logs, logs  # fmt: skip
    assert "stub python -m autotune sweep --suite core" in (tmp_path / "out" / "sweep.log").read_text()
    # the rest of the suite on 8 workers where pytest-xdist imports (the stub imports
    # anything), in one process where it does not
    tests_log = (tmp_path / "out" / "tests.log").read_text()
    assert "the rest of the suite: 8 workers" in tests_log
    assert "stub python -m pytest -q -ra -n 8 -m not gpu" in tests_log, tests_log
    (stubs / "python").write_text('#!/bin/sh\n[ "$1" = -c ] && exit 1\necho "stub python $*"\n')
    plain = subprocess.run(
        ["bash", str(script), "plain"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    tests_log = (tmp_path / "plain" / "tests.log").read_text()
    assert plain.returncode == 0 and "the rest of the suite: one process (no pytest-xdist here)" in tests_log
    assert "stub python -m pytest -q -ra -m not gpu" in tests_log, tests_log


def test_gpu_script_packs_every_step_into_one_archive(tmp_path: Path) -> None:
    """With --pack, one archive outside OUTPUT_DIR holds all of it (logs, database, winners,
    report), rewritten after each step; a sweep stopped at its cap (exit 124) is no failure
    and its resume hint is in the archive. An archive inside OUTPUT_DIR is refused. Stub
    python and git here: only the script's own file handling runs."""
    import os
    import shutil
    import subprocess
    import tarfile

    script = GPU_SCRIPT
    stubs = _stub_commands(
        tmp_path / "bin",
        # writes a file for --db / --json-out and one into --out's folder; the sweep hits its cap
        python='#!/bin/bash\necho "stub python $*"\nargs=("$@")\n'
        'for i in "${!args[@]}"; do case "${args[$i]}" in\n'
        '  --db|--json-out) echo data > "${args[$((i+1))]}" ;;\n'
        '  --out) mkdir -p "${args[$((i+1))]}" && echo data > "${args[$((i+1))]}/made.txt" ;;\n'
        "esac; done\n"
        '[ "$3" = sweep ] && exit "${SWEEP_RC:-124}"\nexit 0\n',
        git="#!/bin/sh\nexit 128\n",  # a copied checkout: no git history
    )
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "YAT_TRITON_COMMIT": "abc123"}
    run = subprocess.run(["bash", str(script), "work", "--pack", "back/gpu_run.tar.gz"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    # env.txt, canary, tests, inspect (begun first), breakdown, sweep, the end
    assert run.stdout.count("packed ") == 7
    with tarfile.open(tmp_path / "back" / "gpu_run.tar.gz") as tar:
        names = {n.removeprefix("./") for n in tar.getnames()}
        assert {"env.txt", "canary.log", "tests.log", "inspect_bfloat16.txt", "breakdown.txt",
                "breakdown.jsonl", "results.db", "sweep.log", "show.txt", "tuned/made.txt",
                "reports/made.txt"} <= names, names  # fmt: skip
        sweep_log = tar.extractfile("./sweep.log").read().decode()
        assert "stopped at its 250 s cap" in sweep_log
        # the database to resume from is the one import-run files (a top-level one is git-ignored)
        assert "--resume reports/<gpu>/runs/<UTC start>/results.db --sweep-only" in sweep_log
        assert "commit: abc123 (no git history here)" in tar.extractfile("./env.txt").read().decode()
    assert not list((tmp_path / "back").glob("*.part"))
    for inside in ("work/a.tar.gz", "work", "work/"):
        refused = subprocess.run(["bash", str(script), "work", "--pack", inside],
                                 cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and "outside OUTPUT_DIR" in refused.stderr, inside
    folder = subprocess.run(["bash", str(script), "work", "--pack", "back"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert folder.returncode == 2 and "is a folder" in folder.stderr
    # a short second run: the sweep alone, under the cap given
    again = subprocess.run(["bash", str(script), "again", "--sweep-only", "--sweep-cap", "150"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert (
        again.returncode == 0 and "stopped at its 150 s cap" in (tmp_path / "again" / "sweep.log").read_text()
    )
    # a 137 before the cap is an out-of-memory kill: a failure (after the cap, the kill that
    # follows its grace, it counts as the cap)
    oom = subprocess.run(["bash", str(script), "oom", "--sweep-only"], cwd=tmp_path,
                         env={**env, "SWEEP_RC": "137"}, capture_output=True, text=True)  # fmt: skip
    assert oom.returncode == 1 and "stopped at" not in (tmp_path / "oom" / "sweep.log").read_text()
    # the kill after the grace (timeout's 137, stubbed: the sweep's call takes 2 s, past a 1 s
    # cap) is the cap, its resume hint saying where the run record stops
    real_timeout = shutil.which("timeout")
    killed = tmp_path / "killed_bin"
    killed.mkdir()
    (killed / "timeout").write_text(
        f'#!/bin/bash\ncase " $* " in *" sweep "*) sleep 2; exit 137 ;; esac\nexec {real_timeout} "$@"\n'
    )
    (killed / "timeout").chmod(0o755)
    late = subprocess.run(["bash", str(script), "late", "--sweep-only", "--sweep-cap", "1"], cwd=tmp_path,
                          env={**env, "PATH": f"{killed}:{env['PATH']}"},
                          capture_output=True, text=True)  # fmt: skip
    late_log = (tmp_path / "late" / "sweep.log").read_text()
    assert late.returncode == 0 and "stopped at its 1 s cap, killed after its grace" in late_log, late_log
    failed = subprocess.run(["bash", str(script), "failed", "--sweep-only"], cwd=tmp_path,
                            env={**env, "SWEEP_RC": "1"}, capture_output=True, text=True)  # fmt: skip
    assert failed.returncode == 1 and "stopped at" not in (tmp_path / "failed" / "sweep.log").read_text()
    assert not (tmp_path / "again" / "tests.log").exists()
    for option in ("--sweep-cap", "--deadline"):
        for bad in ("0", "abc", "-5", "1.5", "007"):
            refused = subprocess.run(["bash", str(script), "again", option, bad],
                                     cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
            assert refused.returncode == 2 and f"{option}: {bad} is not a whole number" in refused.stderr, bad
    for option in ("--sweep-cap", "--deadline", "--resume", "--pack"):
        refused = subprocess.run(["bash", str(script), "again", option], cwd=tmp_path, env=env,
                                 capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and f"{option} needs a value" in refused.stderr, option


def test_gpu_script_ends_by_its_deadline_and_exits_0_or_1(tmp_path: Path) -> None:
    """Every step's cap is cut so that it ends, grace included, by --deadline, the sweep
    keeping time to be packed; a step with no time left is skipped and says so. A test step
    stopped at its cap (timeout's 124) is no failure, and the script's status is 0 or 1, never
    a 124 that a device tool would read as its own time limit. Stub python and timeout here
    (the timeout stub logs each cap, then returns 124 for pytest: every test step capped)."""
    import os
    import shutil
    import subprocess

    real = shutil.which("timeout")
    stubs = _stub_commands(
        tmp_path / "bin",
        # -c: the count of rows, 3 where the database exists; the sweep writes its --db; show /
        # export / report fail (2) on a database the sweep never wrote, as the real commands do
        python='#!/bin/bash\nif [ "$1" = -c ]; then [ -f "${!#}" ] && { echo 3; exit 0; }; exit 1; fi\n'
        'echo "stub python $*"\ndb="" prev=""\nfor a in "$@"; do [ "$prev" = --db ] && db=$a; prev=$a; done\n'
        'case "$3" in\n  sweep) touch "$db"; exit "${SWEEP_RC:-0}" ;;\n'
        '  show|export|report) [ -f "$db" ] || exit 2 ;;\nesac\nexit 0\n',
        # every test step and inspect stopped at their caps
        timeout=f'#!/bin/bash\necho "$*" >> "$TIMEOUTS"\ncase " $* " in\n'
        f'  *" pytest "*|*" autotune.inspect "*) {real} "$@"; exit 124 ;;\nesac\nexec {real} "$@"\n',
    )

    def run(name: str, *options: str, sweep_rc: int = 0) -> tuple[int, list[str]]:
        env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "TIMEOUTS": str(tmp_path / name),
               "SWEEP_RC": str(sweep_rc)}  # fmt: skip
        done = subprocess.run(["bash", str(GPU_SCRIPT), f"out_{name}", *options], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
        return done.returncode, (tmp_path / name).read_text().splitlines()

    def cap(calls: list[str], what: str) -> int:
        (line,) = [c for c in calls if f" {what} " in f"{c} "]
        words = line.split()
        return int(next(w for w in words[words.index("-k") + 2 :] if w.isdigit()))

    rc, calls = run("default")
    assert rc == 0, calls  # every test step capped (124): no failure, no 124
    assert cap(calls, "sweep") == 250 and cap(calls, "-m gpu") == 60  # the caps, when time allows
    # each capped step says so in its log (a killed one may have printed nothing); the
    # canary dumps where a hung test waits, before its cap
    out = tmp_path / "out_default"
    assert "the canary: stopped at its 30 s cap" in (out / "canary.log").read_text()
    assert "faulthandler_timeout=20" in next(c for c in calls if "-k (warp_specialized" in c)
    assert "the GPU-only tests: stopped at its 60 s cap" in (out / "tests.log").read_text()
    assert "inspect: stopped at its 55 s cap" in (out / "inspect_bfloat16.txt").read_text()
    rc, calls = run("short", "--deadline", "100", sweep_rc=124)
    assert rc == 0
    assert not [
        c for c in calls if any(f"-m {m} " in c for m in ("pytest", "autotune.inspect", "autotune.breakdown"))
    ]
    assert 55 <= cap(calls, "sweep") <= 60  # 100 s, less its 30 s grace and 10 s for the pack
    assert (
        "the sweep stopped at the 100 s deadline; to finish it"
        in (tmp_path / "out_short" / "sweep.log").read_text()
    )
    out = tmp_path / "out_short"
    assert "the canary: skipped, no time left before the 100 s deadline" in (out / "canary.log").read_text()
    assert "the GPU-only tests: skipped" in (out / "tests.log").read_text()
    rc, calls = run("none", "--deadline", "35")
    sweep_log = (tmp_path / "out_none" / "sweep.log").read_text()
    assert rc == 0 and "the sweep: skipped, no time left" in sweep_log and " sweep " not in " ".join(calls)
    assert "the sweep stopped at the 35 s deadline" in sweep_log
    # nothing measured: nothing to show, export or report (no failure); the canary skipped
    # leaves the warp-specialized tiles out, untried
    assert (
        "the sweep measured nothing: show, export and report skipped"
        in (tmp_path / "out_none" / "show.txt").read_text()
    )
    assert "warp specialization untried" in (tmp_path / "out_none" / "canary.log").read_text()
    assert run("failed", "--sweep-only", sweep_rc=2)[0] == 1  # a sweep that failed


def test_gpu_script_full_sweep_times_the_default_sweep_from_scratch(tmp_path: Path) -> None:
    """--full-sweep: the canary, then `sweep --suite core` with the default options (what the
    5-minute target times) into an empty database, export and report; no tests. It refuses
    --resume and an OUTPUT_DIR that already holds a database. Stub python."""
    import os
    import subprocess

    script = GPU_SCRIPT
    stubs = _stub_commands(
        tmp_path / "bin",
        python='#!/bin/sh\necho "stub python $*"\n[ "$3" = sweep ] && exit "${SWEEP_RC:-0}"\nexit 0\n',
    )
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(script), "full", "--full-sweep"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    sweep_log = (tmp_path / "full" / "sweep.log").read_text()
    assert f"stub python -m autotune sweep --suite core --db {tmp_path}/full/results.db" in sweep_log, (
        sweep_log
    )
    assert not (tmp_path / "full" / "tests.log").exists() and (tmp_path / "full" / "canary.log").exists()
    capped = subprocess.run(["bash", str(script), "capped", "--full-sweep"], cwd=tmp_path,
                            env={**env, "SWEEP_RC": "124"}, capture_output=True, text=True)  # fmt: skip
    capped_log = (tmp_path / "capped" / "sweep.log").read_text()
    assert capped.returncode == 0 and "stopped at its 360 s cap; the full sweep took longer" in capped_log
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "results.db").write_text("earlier rows")
    for argv, why in (
        (["kept", "--full-sweep"], "kept/results.db exists"),
        (["new", "--full-sweep", "--resume", "kept/results.db"], "it takes no --resume"),
        (["new", "--resume", "kept/results.db", "--full-sweep"], "it takes no --resume"),
    ):
        refused = subprocess.run(["bash", str(script), *argv], cwd=tmp_path, env=env, capture_output=True,
                                 text=True)  # fmt: skip
        assert refused.returncode == 2 and why in refused.stderr, (argv, refused.stderr)
    assert (tmp_path / "kept" / "results.db").read_text() == "earlier rows" and not (
        tmp_path / "new"
    ).exists()


def test_gpu_script_restarts_a_sweep_that_cannot_go_on(tmp_path: Path) -> None:
    """A sweep that exits 3 (a row lost the CUDA context or hung, and is recorded) is
    restarted in a fresh process while its cap leaves time, at most 10 times; near the cap
    the run ends as a capped one. Stub python here: its sweep exits 3 the first FAULTS times."""
    import os
    import shutil
    import subprocess

    script = GPU_SCRIPT
    stubs = _stub_commands(
        tmp_path / "bin",
        python='#!/bin/bash\necho "stub python $*"\n'
        'if [ "$3" = sweep ]; then\n'
        '  n=$(cat "$COUNTER" 2> /dev/null || echo 0); echo $((n + 1)) > "$COUNTER"\n'
        '  [ "$n" -lt "$FAULTS" ] && { sleep "$NAP"; echo "stopped: a row lost the CUDA context"; exit 3; }\n'
        "fi\nexit 0\n",
        # logs the cap each sweep process gets
        timeout=f'#!/bin/bash\necho "$*" >> "$TIMEOUTS"\nexec {shutil.which("timeout")} "$@"\n',
    )

    def run(name: str, faults: int, *options: str, nap: int = 0) -> tuple[int, str, int]:
        counter = tmp_path / f"{name}.count"
        env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "COUNTER": str(counter),
               "FAULTS": str(faults), "NAP": str(nap),
               "TIMEOUTS": str(tmp_path / f"{name}.timeouts")}  # fmt: skip
        done = subprocess.run(["bash", str(script), name, "--sweep-only", *options], cwd=tmp_path, env=env,
                              capture_output=True, text=True)  # fmt: skip
        return done.returncode, (tmp_path / name / "sweep.log").read_text(), int(counter.read_text())

    rc, log, sweeps = run("once", 1, nap=2)
    assert (rc, sweeps) == (0, 2) and "restart 1: a fresh process resumes it" in log, log
    caps = [
        int(line.split()[5])
        for line in (tmp_path / "once.timeouts").read_text().splitlines()
        if " sweep " in line
    ]
    assert len(caps) == 2 and 398 <= caps[0] <= 400 and 380 < caps[1] < caps[0], caps  # what is left
    assert log.count("stub python -m autotune sweep --suite core") == 2 and "stopped at its" not in log
    rc, log, sweeps = run("always", 99)
    assert (rc, sweeps) == (1, 11) and "could not go on 11 times: not restarted again" in log, log
    rc, log, sweeps = run("late", 1, "--sweep-cap", "15")  # under 20 s of the cap left: not restarted
    assert (rc, sweeps) == (0, 1) and "stopped at its 15 s cap" in log and "restart 1" not in log, log


def test_a_test_that_loses_the_cuda_context_stops_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU (stubbed), a failed test after which the CUDA context no longer works ends
    its process, naming it (every later test would fail with its error): a single process
    stops its session, a pytest-xdist worker ends at once with its failure on stderr (the
    controller replaces it). A passed test is not probed, nor one that left CUDA untouched,
    and a failure that leaves the context working stops nothing."""
    from types import SimpleNamespace

    import conftest

    from autotune import timing

    probe, probed, ended = [""], [], []
    cuda_used = [False]
    monkeypatch.setattr(conftest, "_HAS_CUDA", True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_used[0])
    monkeypatch.setattr(timing, "context_lost", lambda device: probed.append(device) or probe[0])
    monkeypatch.setattr(conftest, "_end_worker", ended.append)

    def report(failed: bool, worker: bool = False) -> SimpleNamespace:
        config = SimpleNamespace(workerinput={"workerid": "gw0"}) if worker else SimpleNamespace()
        session = SimpleNamespace(shouldstop=False)
        item = SimpleNamespace(nodeid="tests/test_x.py::test_fault", session=session, config=config)
        hook = conftest.pytest_runtest_makereport(item, None)
        next(hook)
        with pytest.raises(StopIteration):
            hook.send(
                SimpleNamespace(get_result=lambda: SimpleNamespace(failed=failed, longreprtext="Trace"))
            )
        return item

    assert report(True).session.shouldstop is False and probed == []  # CUDA never initialized
    cuda_used[0] = True
    assert report(False).session.shouldstop is False and probed == []
    assert report(True).session.shouldstop is False and probed == ["cuda"]  # the context still works
    probe[0] = FAULT
    stopped = report(True).session.shouldstop
    assert stopped.startswith("tests/test_x.py::test_fault lost the CUDA context") and FAULT in stopped
    assert ended == []
    report(True, worker=True)
    (message,) = ended
    assert "tests/test_x.py::test_fault lost the CUDA context" in message and message.rstrip().endswith(
        "Trace"
    )


def test_gpu_marker_picks_out_the_tests_only_a_gpu_runs() -> None:
    """`-m gpu` (which the GPU script runs first, so that its time cap cannot cut them)
    selects the tests a CPU machine skips for want of CUDA, and only those. The step is
    capped: the occupancy, CUDA graph and one torch.compile check per op come first (each
    name in conftest's GPU_FIRST still matches a test), the sweep's test last."""
    import subprocess
    import sys

    from conftest import GPU_FIRST, GPU_LAST

    root = Path(__file__).resolve().parents[1]
    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-m", "gpu", "tests"], cwd=root, capture_output=True, text=True)  # fmt: skip
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    names = {i.split("::")[1].split("[")[0] for i in ids}
    expected = {
        "test_torch_compile", "test_torch_compile_under_autocast", "test_torch_compile_dynamic",
        "test_sweep_rows_are_timed_from_cuda_graphs", "test_forward_and_backward_replay_from_a_cuda_graph",
        "test_persistent_kernels_fill_every_resident_slot", "test_second_gpu_while_the_first_is_current",
        "test_overlapped_forward_matches_oracle_eagerly_and_in_a_cuda_graph",
        "test_split_tail_parts_racing_on_a_gpu", "test_torch_compile_split_tail",
    }  # fmt: skip
    assert names == expected, listed.stdout[-2000:]
    assert {i.split("::")[0] for i in ids if "test_torch_compile[" in i} == {
        "tests/test_dense.py",
        "tests/test_conv.py",
    }
    firsts = [next(i for i, nodeid in enumerate(ids) if name in nodeid) for name in GPU_FIRST]
    assert firsts == sorted(firsts) and max(firsts) < len(GPU_FIRST) + 1, ids  # one name covers 2 ids
    assert all(name in ids[-1] for name in GPU_LAST), ids


def test_project_commit_names_the_code_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows name git's HEAD, "-dirty" when tracked files differ; without git history the
    commit the caller gives in $YAT_TRITON_COMMIT, else "unknown"."""
    import subprocess

    monkeypatch.delenv(sweep.COMMIT_VAR, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # not a checkout around it
    assert sweep.project_commit(tmp_path) == "unknown"
    monkeypatch.setenv(sweep.COMMIT_VAR, "abc123")
    assert sweep.project_commit(tmp_path) == "abc123"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "c")
    head = git("rev-parse", "--short=12", "HEAD")
    assert sweep.project_commit(tmp_path) == head  # git wins over the variable
    (tmp_path / "f.txt").write_text("b")
    assert sweep.project_commit(tmp_path) == f"{head}-dirty"
    inner = tmp_path / "copied"  # a copy of the project inside some other repository
    inner.mkdir()
    assert sweep.project_commit(inner) == "abc123"


def test_conv_split_tiles_only_where_an_h200_splits_the_tail() -> None:
    """A conv forward's space holds the `split_tail` twin of each tile that takes the patch
    norms from the pass, exactly where an H200's grid of that tile splits its tail
    (`tail_split`); the backward space, where the input gradient's grid of input pixels
    and channels splits (its TMA kernel's boxes where it takes the tile); they rank among a
    capped search's seeds where a last partial wave idles half the SMs (ResNet-50's
    14x14x256 layer: 196 tiles of 128x128); the dense space and a 1x1 conv's (the dense
    kernels) hold none."""
    from autotune.search import SEEDS
    from kernels._common import SM90_SMS, tail_split
    from kernels.conv import implicit_gemm_grid

    layer = {"B": 64, "C_in": 256, "H": 14, "W": 14, "C_out": 256, "k": 3, "stride": 1, "padding": 1}
    wide = {**layer, "B": 32, "H": 56, "W": 56, "C_in": 64, "C_out": 64}
    for shape in (layer, wide, {**layer, "stride": 2}):
        kept, _ = sweep.config_space("conv2d", shape, 2)
        twins = {c for c in kept if c.split_tail}
        plain = [c for c in kept if not c.split_tail]
        M, N, K = sweep.gemm_dims("conv2d", shape)
        ow = (shape["W"] + 2 - 3) // shape["stride"] + 1
        for c in plain:
            tiles, steps = implicit_gemm_grid(shape["B"], M // shape["B"] // ow, ow, N, K, 9, c, c.tma)
            splits = tail_split(tiles, steps, SM90_SMS)[1] > 1 and not c.norms_in_loop
            assert (dataclasses.replace(c, split_tail=True) in twins) == splits, c
        assert len(twins) == len(kept) - len(plain)
        bwd = sweep.backward_tiles("conv2d", shape, kept, 2)
        bwd_twins = {c for c in bwd if c.split_tail}
        bwd_plain = [c for c in bwd if not c.split_tail]
        stride = (shape["stride"],) * 2
        for c in bwd_plain:
            on_tma = c.tma and sweep.tma_conv_tile(c, N, stride)  # (the input gradient's K: filters)
            tiles, steps = implicit_gemm_grid(shape["B"], shape["H"], shape["W"], K, N, 9, c, on_tma)
            splits = tail_split(tiles, steps, SM90_SMS)[1] > 1
            assert (dataclasses.replace(c, split_tail=True) in bwd_twins) == splits, c
        assert len(bwd_twins) == len(bwd) - len(bwd_plain) and (shape is not layer or bwd_twins)
    kept, _ = sweep.config_space("conv2d", layer, 2)
    assert TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=2, tma=True, split_tail=True) in kept[:SEEDS]
    assert not any(c.split_tail for c in kept[:2])  # (the plain tiles that won it before stay first)
    bwd = sweep.backward_tiles("conv2d", layer, kept, 2)
    assert TileConfig(128, 128, 64, 8, 8, 4, tma=True, split_tail=True) in bwd[:SEEDS]
    assert not all(c.split_tail for c in bwd[:SEEDS])
    dense = sweep.config_space("dense", {"M": 4096, "N": 4096, "K": 4096}, 2)[0]
    pointwise = sweep.config_space("conv2d", {**layer, "k": 1, "padding": 0}, 2)[0]
    assert not any(c.split_tail for c in dense + pointwise)


def test_conv_tiles_offer_tma_only_where_it_runs() -> None:
    """A stride-1 3x3 conv's forward space holds TMA tiles (the conv's TMA kernel) that fit
    without the dense kernel's store staging, each with a K tile dividing the channels; a
    strided conv's has none (they would repeat the pointer tiles). Its backward space
    holds each pointer tile and, where the TMA input gradient runs it (K tiles dividing the
    filters, not fp16), its TMA twin; the dense backward keeps its TMA GEMMs."""
    conv3 = {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    kept, _ = sweep.config_space("conv2d", conv3, 2)
    assert any(c.tma for c in kept)
    assert not any(c.tma for c in sweep.config_space("conv2d", {**conv3, "stride": 2}, 2)[0])
    # 96 channels: TMA tiles only with 32-channel K tiles
    kept96, _ = sweep.config_space("conv2d", {**conv3, "C_in": 96}, 2)
    assert {c.block_k for c in kept96 if c.tma} == {32} and {c.block_k for c in kept96} == {32, 64, 128}
    bwd = sweep.backward_tiles("conv2d", conv3, kept, 2)
    pointer = {c for c in bwd if not c.tma}
    assert {dataclasses.replace(c, tma=False) for c in bwd if c.tma} == pointer
    assert len(bwd) == 2 * len(pointer)
    assert not any(c.tma for c in sweep.backward_tiles("conv2d", conv3, kept, 2, tma=False))
    # 96 filters (the input gradient's K) and 64 channels (the weight gradient's columns a
    # tap): TMA twins of 32-filter K tiles and of column tiles dividing 64 channels
    conv96 = {**conv3, "C_out": 96}
    bwd96 = sweep.backward_tiles("conv2d", conv96, sweep.config_space("conv2d", conv96, 2)[0], 2)
    pointer96 = [c for c in bwd96 if not c.tma]
    assert {c.block_k for c in pointer96} == {32, 64} and {c.block_n for c in pointer96} >= {64, 128}
    for c in pointer96:
        assert (dataclasses.replace(c, tma=True) in bwd96) == (c.block_k == 32 or 64 % c.block_n == 0), c
    strided = {**conv3, "stride": 2}
    kept2, _ = sweep.config_space("conv2d", strided, 2)
    assert not any(c.tma for c in sweep.backward_tiles("conv2d", strided, kept2, 2))
    dense = {"M": 4096, "N": 4096, "K": 4096}
    dense_kept, _ = sweep.config_space("dense", dense, 2)
    dense_bwd = sweep.backward_tiles("dense", dense, dense_kept, 2)
    # the backward GEMMs' TMA tiles fitted as such: 128x256x64 with 3 and 4 stages, which the
    # forward's epilogue staging leaves out (in every epilogue split with 4 stages)
    wide = [TileConfig(128, 256, 64, 8, 8, stages, tma=True) for stages in (3, 4)]
    assert all(c in dense_bwd for c in wide), [c.name for c in dense_bwd if c.tma][:20]
    assert not any(
        dataclasses.replace(c, epilogue_split=e) in dense_kept for c in wide[1:] for e in (1, 2, 4)
    )
    # no tile a backward search times is recorded as pruned first under its key (it would
    # then never run); fp16's backward GEMMs run the pointer kernels: no TMA tiles; nor do
    # fp32's at IEEE precision (PyTorch's default), on FMAs
    assert not torch.backends.cuda.matmul.allow_tf32
    for dtype in ("bfloat16", "float32", "float16"):
        for problem in (dense, conv3):
            op = "dense" if "M" in problem else "conv2d"
            _, ranked, pruned = sweep.task_tiles(sweep.Task(op, problem, dtype, "fwd+bwd"))
            assert ranked and not set(ranked) & set(pruned), (dtype, op)
            assert any(c.tma for c in ranked) == (dtype == "bfloat16"), (dtype, op)


@pytest.mark.parametrize("mode", ["fwd", "bwd"])
@pytest.mark.parametrize("op", ["dense", "conv2d"])
def test_an_fma_dot_searches_no_tile_that_spills_on_it(op: str, mode: str, no_tf32: object) -> None:
    """fp32 at IEEE precision multiplies on FMAs (`fma_dot`): its searches hold no TMA tile,
    none of more than 64 accumulator values a thread, and in the ⵟ kernels none of more
    than 2048 for BLOCK_K times those (`fma_spills`; each compiled in
    `test_the_tiles_an_fma_dot_leaves_out_spill`); those are recorded as pruned instead.
    With TF32 on, the tensor cores' tiles come back."""
    shape = (
        {"M": 4096, "N": 4096, "K": 4096} if op == "dense"
        else {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    )  # fmt: skip
    task = sweep.Task(op, shape, "float32", mode)
    _, ranked, pruned = sweep.task_tiles(task)
    acc = lambda c: c.block_m * c.block_n // (32 * c.num_warps)  # noqa: E731
    deep = lambda c: c.block_k * acc(c) > 2048  # noqa: E731
    assert len(ranked) > 20 and all(not c.tma and acc(c) <= 64 for c in ranked)
    assert any(c.tma for c in pruned) and any(acc(c) > 64 for c in pruned) and not set(ranked) & set(pruned)
    assert any(map(deep, pruned)) and any(map(deep, ranked)) == (op == "dense" and mode == "bwd")
    torch.backends.cuda.matmul.allow_tf32 = True  # (the fixture restores it)
    _, tensor_cores, _ = sweep.task_tiles(task)
    assert any(c.tma for c in tensor_cores) and any(acc(c) > 64 for c in tensor_cores)


def test_timing_without_a_gpu_is_one_wall_clock_run() -> None:
    """Off the GPU a call is run once and timed by the wall clock ("wall", not representative)."""
    from autotune import timing

    calls = []
    t = timing.time_call(lambda: calls.append(1))
    assert calls == [1] and t.method == timing.WALL and t.median_ms == t.p20_ms == t.p80_ms >= 0
    with timing.bench_stream():  # a no-op off the GPU
        pass


def test_timing_falls_back_to_eager_when_capture_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that cannot be captured as a CUDA graph is still timed, by do_bench of the call
    itself, and the Timing says why; a captured one is timed by replaying its graph."""
    import triton

    from autotune import timing

    timed = []

    def bench(fn: object, quantiles: list[float]) -> list[float]:
        timed.append(fn)
        return [2.0, 1.5, 2.5]

    def refuse(fn: object) -> object:
        raise RuntimeError("operation not permitted when stream is capturing")

    class Graph:
        def replay(self) -> None:
            pass

    call = lambda: None  # noqa: E731
    monkeypatch.setattr(timing, "on_gpu", lambda: True)
    monkeypatch.setattr(triton.testing, "do_bench", bench)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(timing, "capture", refuse)
    t = timing.time_call(call)
    assert (t.median_ms, t.p20_ms, t.p80_ms, t.method) == (2.0, 1.5, 2.5, timing.EAGER)
    assert "CUDA graph capture failed (RuntimeError: operation not permitted" in t.note
    assert timed == [call]
    graph = Graph()
    monkeypatch.setattr(timing, "capture", lambda fn: graph)
    t = timing.time_call(call)
    assert t.method == timing.GRAPH and t.note == "" and timed[-1] == graph.replay
    assert timing.time_call(call, graph=False).method == timing.EAGER and timed[-1] is call


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_sweep_rows_are_timed_from_cuda_graphs(tmp_path: Path) -> None:
    """On a GPU every provider of a small dense and conv problem, forward and backward modes
    (whose backward runs on the stream of a forward made before capture), is captured."""
    conv = {"B": 2, "C_in": 16, "H": 8, "W": 8, "C_out": 16, "k": 3, "stride": 1, "padding": 1}
    suite = {"dense": [{"M": 64, "N": 48, "K": 32}], "conv2d": [conv]}
    with ResultsDB(tmp_path / "r.db") as db:
        sweep.run_sweep(
            db, suite, ops=["dense", "conv2d"], modes=["fwd", "bwd", "fwd+bwd"], dtypes=["float32"],
            max_configs=2, progress=False, compile_mode="none",
        )  # fmt: skip
        ok = [r for r in db.query() if r.status == "ok"]
    # (a backward mode's reason names its forward tile, `FWD_NOTE`: no timing note before it)
    eager = [r for r in ok if r.timing != "cuda-graph" or (r.reason and not r.reason.startswith(FWD_NOTE))]
    assert ok and not eager, [(r.provider, r.mode, r.timing, r.reason) for r in eager]


def test_failed_capture_hands_its_pool_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyTorch's capture_end raises before telling the caching allocator a failed capture is
    over; `_abandon_pool` ends the allocation to the capture's pool and releases it through
    PyTorch's private hooks (which this PyTorch must have), so later captures still work.
    Off the GPU, `back_to_back_ms` is one wall-clock call."""
    from autotune import timing

    calls = []
    for name in ("_cuda_endAllocateToPool", "_cuda_releasePool"):
        assert hasattr(torch._C, name), name
        monkeypatch.setattr(torch._C, name, lambda dev, pool, name=name: calls.append((name, dev, pool)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    timing._abandon_pool((0, 7))
    assert calls == [("_cuda_endAllocateToPool", 3, (0, 7)), ("_cuda_releasePool", 3, (0, 7))]
    ran = []
    assert timing.back_to_back_ms(lambda: ran.append(1)) >= 0 and ran == [1]


def test_compiled_ref_with_its_own_graphs_is_timed_eagerly() -> None:
    """compiled_ref in a torch.compile mode that replays CUDA graphs of its own is not
    captured into another graph (timed eagerly, the row says why); every other provider
    and mode is."""
    assert "replays CUDA graphs of its own" in sweep.own_cuda_graphs("compiled_ref", "max-autotune")
    assert sweep.own_cuda_graphs("compiled_ref", "reduce-overhead")
    captured = [
        ("compiled_ref", "default"), ("compiled_ref", "max-autotune-no-cudagraphs"), ("compiled_ref", "none"),
        ("yat_triton", "max-autotune"), ("conv+relu", "max-autotune"),
    ]  # fmt: skip
    for provider, mode in captured:
        assert sweep.own_cuda_graphs(provider, mode) == "", (provider, mode)


def test_failed_capture_releases_its_pool_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A capture that ended (fn raised a Python error, out of memory) leaves its pool to the
    graph, which releases it when freed; one that did not end (invalidated) has its pool
    handed back here. Releasing twice would abort the process in an allocator assert."""
    from autotune import timing

    abandoned = []
    monkeypatch.setattr(timing, "_abandon_pool", lambda pool: abandoned.append(pool))

    class Ended:
        def pool(self) -> tuple[int, int]:
            return (0, 1)

    class Invalidated:
        def pool(self) -> tuple[int, int]:
            raise RuntimeError("Called CUDAGraph::pool() without a preceding successful capture.")

    timing._after_failed_capture(Ended(), (0, 1))
    assert abandoned == []
    timing._after_failed_capture(Invalidated(), (0, 2))
    assert abandoned == [(0, 2)]


def test_a_stop_cancels_the_compiles_not_started() -> None:
    """A Ctrl-C / SIGINT during the sweep's parallel compiles stops within the GPU script's
    grace period: the items not started are cancelled, not waited for."""
    import threading

    started, release = [], threading.Event()

    def work(i: int) -> int:
        started.append(i)
        if i == 0:
            raise KeyboardInterrupt  # as the signal lands while the pool runs
        release.wait(5)
        return i

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sweep._parallel(work, list(range(200)))
    release.set()
    assert time.monotonic() - t0 < 4 and len(started) < 200
    assert sweep._parallel(lambda i: 2 * i, [1, 2, 3]) == [2, 4, 6]
