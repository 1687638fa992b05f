"""The report renderer (autotune.report) on small fixture databases.

Every row below is INVENTED for the test (gpu "Test GPU", commit "testcommit"): the numbers
only check that the report shows what the database holds, they measure nothing.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("matplotlib", reason="the report plots need matplotlib")

from autotune import cli  # noqa: E402
from autotune.db import Result, ResultsDB, canonical_json  # noqa: E402
from autotune.report import BANNER, render_report  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIG = canonical_json({"M": 4096, "N": 4096, "K": 4096})
SMALL = canonical_json({"M": 64, "N": 48, "K": 32})


def cfg(bm: int, bn: int) -> str:
    return canonical_json({"block_m": bm, "block_n": bn, "block_k": 64, "num_warps": 4})


BASELINE_CFG = canonical_json({"matmul_tf32": False})


def invented(gpu: str, representative: bool, **kw: object) -> Result:
    base = dict(op="dense", mode="fwd", dtype="bfloat16", gpu=gpu, driver="999.1", torch="2.99", triton="9.9",
                commit="testcommit", representative=representative, created=1_700_000_000.0)  # fmt: skip
    base.update(kw)
    if base.get("status", "ok") == "ok" and "median_ms" in base:
        flop = 2.0 * 4096**3 if base["shape"] == BIG else 2.0 * 64 * 48 * 32
        base.setdefault("tflops", flop / (base["median_ms"] * 1e-3) / 1e12)
        base.setdefault("status", "ok")
    return Result(**base)  # type: ignore[arg-type]


def fixture_rows(gpu: str, representative: bool) -> list[Result]:
    r = lambda **kw: invented(gpu, representative, **kw)
    ours = dict(provider="yat_triton", correct=True, timing="cuda-graph")
    rows = []
    for shape, scale in ((BIG, 1.0), (SMALL, 0.01)):
        rows += [
            r(shape=shape, config=cfg(128, 128), median_ms=0.8123 * scale, **ours),
            r(shape=shape, config=cfg(64, 128), median_ms=0.9456 * scale, **ours),
            r(shape=shape, provider="yat_triton", config=cfg(64, 64), status="wrong", correct=False,
              max_rel_err=0.5, reason="max rel error 0.5 > 0.03 (invented)"),
            r(shape=shape, provider="yat_triton", config=cfg(256, 256), status="pruned",
              reason="shared memory exceeds sm_90 (invented)"),
            r(shape=shape, provider="linear+relu", config=BASELINE_CFG, median_ms=0.9000 * scale,
              timing="cuda-graph"),
            r(shape=shape, provider="eager_ref", config=BASELINE_CFG, median_ms=9.5 * scale, correct=True,
              timing="eager", reason="CUDA graph capture failed (invented); timed eagerly"),
        ]  # fmt: skip
    return rows


def make_db(path, rows: list[Result]):  # noqa: ANN001, ANN201
    with ResultsDB(path) as db:
        for row in rows:
            db.add(row)
    return path


@pytest.fixture
def gpu_db(tmp_path):  # noqa: ANN001, ANN201
    return make_db(tmp_path / "gpu.db", fixture_rows("Test GPU", True))


@pytest.fixture
def cpu_db(tmp_path):  # noqa: ANN001, ANN201
    return make_db(tmp_path / "cpu.db", fixture_rows("cpu (Triton interpreter)", False))


def check_png(path) -> None:  # noqa: ANN001
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 1024, path


def test_gpu_report_files_tables_and_plots(gpu_db, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "reports"
    written = render_report(gpu_db, out)
    folder = out / "test_gpu"
    expected = ["README.md", "tflops.png", "speedup.png", "heatmap_dense_bfloat16.png", "roofline.png"]
    for name in expected:
        assert folder / name in written
        assert (folder / name).is_file()
    for png in folder.glob("*.png"):
        check_png(png)
    text = (folder / "README.md").read_text()
    assert BANNER not in text
    for value in ("Test GPU", "999.1", "2.99", "9.9", "testcommit", "2023-11-14"):
        assert value in text
    assert re.search(r"\| timing +\| cuda-graph 6, eager 2 \(eager_ref\) +\|", text)
    # best correct config of the big shape: 0.8123 ms; linear+relu 0.9 ms -> 0.9 / 0.8123 = 1.11x
    assert "| 0.8123 " in text and "0.9456" not in text.split("## Targets")[0]
    assert re.search(r"1\.11x +\|", text) and "11.70x †" in text  # eager_ref: 9.5 / 0.8123, timed eagerly
    assert text.count("†: the two rows were timed differently") == 1
    assert "## Targets (SPEC.md section 6)" in text
    assert "0.90x" in text and "| met" in text  # dense fwd bf16 4096: 0.8123 / 0.9 <= 1.00
    assert "n/a" in text  # no conv2d, no fwd+bwd rows
    assert "max rel error 0.5 > 0.03 (invented)" in text
    assert "shared memory exceeds sm_90 (invented)" in text
    for name in expected[1:]:
        assert f"]({name})" in text
    index = (out / "README.md").read_text()
    assert "[test_gpu](test_gpu/README.md)" in index
    assert "No GPU report exists yet" not in index


def test_cpu_report_is_marked_not_representative(cpu_db, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "reports"
    render_report(cpu_db, out)
    folder = out / "cpu_triton_interpreter_"
    text = (folder / "README.md").read_text()
    assert text.startswith(BANNER)
    assert "NOT REPRESENTATIVE: measured without a GPU (Triton interpreter)" in text
    index = (out / "README.md").read_text()
    assert "No GPU report exists yet" in index
    assert "[cpu_triton_interpreter_](cpu_triton_interpreter_/README.md)" in index


def test_index_lists_every_folder(gpu_db, cpu_db, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "reports"
    render_report(cpu_db, out)
    render_report(gpu_db, out)
    index = (out / "README.md").read_text()
    assert "test_gpu/README.md" in index and "cpu_triton_interpreter_/README.md" in index
    assert "No GPU report exists yet" not in index


def test_missing_empty_and_failed_only_db(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="no such results database"):
        render_report(tmp_path / "missing.db", tmp_path / "r")
    empty = make_db(tmp_path / "empty.db", [])
    with pytest.raises(ValueError, match="empty"):
        render_report(empty, tmp_path / "r")
    failed = make_db(tmp_path / "failed.db", [
        invented("Test GPU", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), status="error",
                 reason="RuntimeError: invented"),
    ])  # fmt: skip
    with pytest.raises(ValueError, match="no successful"):
        render_report(failed, tmp_path / "r")


def test_cli_report(gpu_db, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "cli_reports"
    assert cli.main(["report", "--db", str(gpu_db), "--out", str(out)]) == 0
    assert (out / "test_gpu" / "README.md").is_file()
    assert cli.main(["report", "--db", str(tmp_path / "nope.db"), "--out", str(out)]) == 2
    assert "no such results database" in capsys.readouterr().err


def test_config_labels_are_short() -> None:
    from autotune.report import config_label
    from kernels._common import TileConfig

    tile = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=4, tma=True)
    assert config_label(json.dumps(tile.as_dict())) == "m128n128k64g8w8s4e4_tma"
    assert config_label("") == "(default tiles)"
    assert (
        config_label('{"matmul_tf32":false,"cudnn_benchmark":true}')
        == "matmul_tf32=false cudnn_benchmark=true"
    )


@pytest.mark.parametrize(
    ("ours_saved", "runs", "memory", "sweep"),
    [
        (2.0, [(0.0, 100.0, 5), (200.0, 380.0, 20)], ("1.00 beyond linear+relu", "met"), ("280 s", "met")),
        (3.0, [(0.0, 400.0, 20)], ("2.00 beyond linear+relu", "not met"), ("400 s", "not met")),
        (2.0, [(0.0, 100.0, 5)], ("1.00 beyond linear+relu", "met"), ("> 100 s (incomplete)", "not met")),
    ],
    ids=["both-met", "both-missed", "sweep-incomplete"],
)
def test_memory_and_sweep_time_targets(tmp_path, ours_saved, runs, memory, sweep) -> None:  # noqa: ANN001
    """Saved bytes (in bf16 outputs: 4096^2 x 2 bytes) beyond linear+relu, and the core
    sweep's runs added up to the first complete one, become target rows."""
    from autotune.db import Run

    out_bytes = 4096 * 4096 * 2
    rows = [
        invented("Test GPU", True, mode="fwd+bwd", shape=BIG, provider="yat_triton", config="", correct=True,
                 median_ms=3.0, saved_bytes=ours_saved * out_bytes),
        invented("Test GPU", True, mode="fwd+bwd", shape=BIG, provider="linear+relu", config=BASELINE_CFG,
                 median_ms=2.9, saved_bytes=1.0 * out_bytes),
    ]  # fmt: skip
    path = make_db(tmp_path / "r.db", rows)
    with ResultsDB(path) as db:
        for start, end, done in runs:
            db.add_run(Run("core", "modes=fwd+bwd max_configs=12", "Test GPU", "c", start, end, 20, done, 9))
        db.add_run(Run("quick", "-", "Test GPU", "c", 0.0, 1.0, 1, 1, 1))  # another suite: ignored
    render_report(path, tmp_path / "reports")
    text = (tmp_path / "reports" / "test_gpu" / "README.md").read_text()
    cells = {}
    for line in text.splitlines():
        row = [c.strip() for c in line.split("|")[1:-1]]
        if row and row[0] in ("memory saved for backward", "core suite sweep, compile included"):
            cells[row[0]] = (row[3], row[4])
    assert cells["memory saved for backward"] == memory
    assert cells["core suite sweep, compile included"] == sweep


def test_targets_mark_ratios_between_rows_timed_differently(tmp_path) -> None:  # noqa: ANN001
    """A target ratio whose two rows were timed differently (here compiled_ref eagerly, as
    a torch.compile mode with CUDA graphs of its own is) carries the † mark and footnote;
    one between rows timed alike does not."""
    rows = [
        invented("Test GPU", True, mode="fwd+bwd", shape=BIG, provider="yat_triton", config="", correct=True,
                 median_ms=3.0, timing="cuda-graph"),
        invented("Test GPU", True, mode="fwd+bwd", shape=BIG, provider="compiled_ref", config=BASELINE_CFG,
                 median_ms=4.5, correct=True, timing="eager"),
        invented("Test GPU", True, mode="fwd+bwd", shape=BIG, provider="eager_ref", config=BASELINE_CFG,
                 median_ms=36.0, correct=True, timing="cuda-graph"),
    ]  # fmt: skip
    render_report(make_db(tmp_path / "r.db", rows), tmp_path / "reports")
    text = (tmp_path / "reports" / "test_gpu" / "README.md").read_text()
    targets = text.split("## Targets")[1].split("##")[0]
    measured = {}
    for line in targets.splitlines():
        row = [c.strip() for c in line.split("|")[1:-1]]
        if row and row[0].startswith("against"):
            measured[row[0].split(",")[0]] = row[3]
    assert measured == {"against compiled_ref": "1.50x †", "against eager_ref": "12.00x"}
    assert "†: the two rows were timed differently" in targets


def test_breakdown_section(gpu_db, tmp_path) -> None:  # noqa: ANN001
    """A breakdown file renders into its GPU's report; a broken one is refused by line."""
    common = {"op": "dense", "phase": "fwd", "dtype": "bfloat16", "shape": "4096x4096x4096"}
    lines = [
        {
            **common,
            "what": "yat_dense_fwd_kernel",
            "grid": "132",
            "us": 201.5,
            "share": 0.93,
            "gpu": "Test GPU",
        },
        {
            **common,
            "what": "row_sqnorm_kernel",
            "grid": "1024",
            "us": 15.25,
            "share": 0.07,
            "gpu": "Other GPU",
        },
    ]
    path = tmp_path / "bd.jsonl"
    path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    render_report(gpu_db, tmp_path / "r", breakdown=path)
    text = (tmp_path / "r" / "test_gpu" / "README.md").read_text()
    assert "## Where the time goes" in text and "yat_dense_fwd_kernel" in text and "201.5" in text
    assert (
        "row_sqnorm_kernel" not in text.split("## Where the time goes")[1].split("##")[0]
    )  # other GPU's line
    path.write_text(json.dumps(lines[0]) + "\n" + '{"op": "dense"}\n')
    with pytest.raises(ValueError, match=r"bd.jsonl:2: a breakdown line needs the fields"):
        render_report(gpu_db, tmp_path / "r", breakdown=path)
    assert (
        cli.main(["report", "--db", str(gpu_db), "--out", str(tmp_path / "r"), "--breakdown", str(path)]) == 2
    )
