"""The report renderer (autotune.report) on small fixture databases.

Every row below is INVENTED for the test (gpu "Test H200", commit "testcommit"): the numbers
only check that the report shows what the database holds, they measure nothing.
"""

from __future__ import annotations

import dataclasses
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


def rendered_page(tmp_path, rows: list[Result], gpu: str = "test_h200") -> str:  # noqa: ANN001
    """The report page of `gpu` (a folder name) rendered from `rows` under tmp_path/reports."""
    render_report(make_db(tmp_path / "r.db", rows), tmp_path / "reports")
    return (tmp_path / "reports" / gpu / "README.md").read_text()


def make_db(path, rows: list[Result]):  # noqa: ANN001, ANN201
    with ResultsDB(path) as db:
        for row in rows:
            db.add(row)
    return path


@pytest.fixture
def gpu_db(tmp_path):  # noqa: ANN001, ANN201
    return make_db(tmp_path / "gpu.db", fixture_rows("Test H200", True))


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
    folder = out / "test_h200"
    expected = ["README.md", "tflops.png", "speedup.png", "heatmap_dense_bfloat16.png", "roofline.png"]
    for name in expected:
        assert folder / name in written
        assert (folder / name).is_file()
    for png in folder.glob("*.png"):
        check_png(png)
    text = (folder / "README.md").read_text()
    assert BANNER not in text
    for value in ("Test H200", "999.1", "2.99", "9.9", "testcommit", "2023-11-14"):
        assert value in text
    assert re.search(r"\| CUDA +\| - +\|", text)  # torch "2.99" names none
    assert re.search(
        r"\| timing \(rows\) +\| 6 as CUDA graph replays \(do_bench\), 2 as eager launches "
        r"\(do_bench: eager_ref\) +\|",
        text,
    )
    # what became of the tiles (per big and small shape: 2 correct, 1 wrong, 1 pruned) and baselines
    assert re.search(r"\| yat_triton tiles +\| 4 correct, 2 wrong, 2 pruned \(never ran: ", text)
    assert re.search(r"\| baseline rows +\| 2 correct, 2 timed +\|", text)
    assert "| rows measured     | 2023-11-14 22:13 UTC " in text  # one minute: said once
    # the summary: a line per problem, targets above it; the slower correct tile is not shown
    assert text.index("## Targets") < text.index("## Summary")
    summary = text.split("## Summary")[1].split("\n## ")[0]
    compact, full = summary.split("<details>")
    assert "0.9456" not in summary
    # best correct config of the big shape: 0.8123 ms; linear+relu 0.9 ms -> 0.9 / 0.8123 = 1.11x;
    # eager_ref: 9.5 / 0.8123, timed eagerly (†); the tiles the search ran: two ok, one wrong
    # (the pruned one never ran)
    assert re.search(
        r"\| fwd +\| bfloat16 +\| 4096x4096x4096 +\| 0\.8123 +\| 169 +\| 1\.11x \(0\.9 ms\) +"
        r"\| 11\.70x † \(9\.5 ms\) +\| m128n128k64g8w4s3 +\| 3 +\|",
        compact,
    ), compact
    assert "vs linear+relu" in compact and "vs eager_ref" in compact and "vs conv+relu" not in compact
    assert len(re.findall(r"^\| fwd ", compact, re.M)) == 2  # one line per problem
    # folded below: every baseline a line, with its TFLOP/s (2 * 4096^3 flop / 0.9 ms = 153)
    assert re.search(r"\| linear\+relu +\| 0\.9 +\| 153 +\| 1\.11x +\|", full), full
    assert len(re.findall(r"^\| dense ", full, re.M)) == 4
    assert text.count("†: the two rows were timed differently") == 1
    assert "## Targets (SPEC.md section 6)" in text
    assert "time 0.903x" in text and "| met" in text  # dense fwd bf16 4096: 0.8123 / 0.9 <= 1.00
    assert "**1 met, 7 n/a** (of 8 targets, 8 lines)" in text  # the rest: no conv2d, fwd+bwd or sweep rows
    assert "n/a" in text  # no conv2d, no fwd+bwd rows
    assert "max rel error 0.5 > 0.03 (invented)" in text
    assert "shared memory exceeds sm_90 (invented)" in text
    for name in expected[1:]:
        assert f"]({name})" in text
    index = (out / "README.md").read_text()
    assert "[test_h200](test_h200/README.md): targets 1 met, 7 n/a" in index
    assert "No GPU report exists yet" not in index


def test_cpu_report_is_marked_not_representative(cpu_db, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "reports"
    render_report(cpu_db, out)
    folder = out / "cpu_triton_interpreter"
    text = (folder / "README.md").read_text()
    assert text.startswith(BANNER)
    assert "NOT REPRESENTATIVE: measured without a GPU (Triton interpreter)" in text
    targets = text.split("## Targets")[1].split("##")[0]
    assert "not judged (not representative)" in targets and "| met" not in targets
    index = (out / "README.md").read_text()
    assert "No GPU report exists yet" in index
    assert "[cpu_triton_interpreter](cpu_triton_interpreter/README.md)" in index


def test_index_lists_every_folder(gpu_db, cpu_db, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "reports"
    render_report(cpu_db, out)
    render_report(gpu_db, out)
    index = (out / "README.md").read_text()
    assert "test_h200/README.md" in index and "cpu_triton_interpreter/README.md" in index
    assert "No GPU report exists yet" not in index


def test_missing_empty_and_failed_only_db(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="no such results database"):
        render_report(tmp_path / "missing.db", tmp_path / "r")
    empty = make_db(tmp_path / "empty.db", [])
    with pytest.raises(ValueError, match="empty"):
        render_report(empty, tmp_path / "r")
    failed = make_db(tmp_path / "failed.db", [
        invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), status="error",
                 reason="RuntimeError: invented"),
    ])  # fmt: skip
    with pytest.raises(ValueError, match="no successful"):
        render_report(failed, tmp_path / "r")


def test_cli_report(gpu_db, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "cli_reports"
    assert cli.main(["report", "--db", str(gpu_db), "--out", str(out)]) == 0
    assert (out / "test_h200" / "README.md").is_file()
    assert cli.main(["report", "--db", str(tmp_path / "nope.db"), "--out", str(out)]) == 2
    assert "no such results database" in capsys.readouterr().err


def test_speedup_labels() -> None:
    from autotune.report import speedup_label

    assert [speedup_label(x) for x in (11.7, 1.114, 0.5, 0.01, 0.00123, 2.5e-7)] == [
        "11.70x", "1.11x", "0.50x", "0.01x", "0.0012x", "2.5e-07x",
    ]  # fmt: skip


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


# as sweep recorded a default core run's options before it recorded the search (then every
# tile), and gpu.sh's
FULL = (
    "ops=dense,conv2d modes=fwd,bwd,fwd+bwd dtypes=bfloat16,float32 max_configs=None "
    "compile_mode=max-autotune"
)
RESTRICTED = "ops=dense,conv2d modes=fwd,fwd+bwd dtypes=bfloat16 max_configs=12 compile_mode=default"


@pytest.mark.parametrize(
    ("ours_saved", "runs", "memory", "sweep"),
    [
        (2.0, [(0.0, 100.0, 5), (200.0, 380.0, 20)], ("1.000 beyond linear+relu", "met"), ("280 s", "met")),
        (3.0, [(0.0, 400.0, 20)], ("2.000 beyond linear+relu", "not met"), ("400 s", "not met")),
        (
            2.0,
            [(0.0, 100.0, 5)],
            ("1.000 beyond linear+relu", "met"),
            ("> 100 s (incomplete)", "not judged (incomplete)"),
        ),
        (2.0, [(0.0, 400.0, 5)], ("1.000 beyond linear+relu", "met"), ("> 400 s (incomplete)", "not met")),
        # gpu.sh's capped sweep: bf16, two modes, a dozen configs; a full sweep is preferred
        (
            2.0,
            [(0.0, 200.0, 20, 9, RESTRICTED)],
            ("1.000 beyond linear+relu", "met"),
            ("200 s", "not judged (restricted options)"),
        ),
        (2.0, [(0.0, 400.0, 20, 9, RESTRICTED)], ("1.000 beyond linear+relu", "met"), ("400 s", "not met")),
        (
            2.0,
            [(0.0, 250.0, 20), (300.0, 350.0, 20, 9, RESTRICTED)],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "met"),
        ),
        # an extra dtype or a cheaper compile mode is not the full sweep either
        (
            2.0,
            [(0.0, 250.0, 20, 9, FULL.replace("float32", "float32,float16"))],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "not judged (restricted options)"),
        ),
        (
            2.0,
            [(0.0, 250.0, 20, 9, FULL.replace("max-autotune", "none"))],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "not judged (restricted options)"),
        ),
        # the guided search (the default) and the exhaustive one are full; another is not
        (
            2.0,
            [(0.0, 250.0, 20, 9, FULL + " search=guided")],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "met"),
        ),
        (
            2.0,
            [(0.0, 250.0, 20, 9, FULL + " search=exhaustive")],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "met"),
        ),
        (
            2.0,
            [(0.0, 250.0, 20, 9, FULL + " search=guided,exhaustive")],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "not judged (restricted options)"),
        ),
        # a campaign recorded before the search was, resumed with the search named: one
        (
            2.0,
            [(0.0, 250.0, 5), (300.0, 500.0, 20, 9, FULL + " search=exhaustive")],
            ("1.000 beyond linear+relu", "met"),
            ("450 s", "not met"),
        ),
        # a complete campaign, a rerun that found nothing to do, then a newer campaign
        (
            2.0,
            [(0.0, 100.0, 20), (150.0, 152.0, 20, 0), (200.0, 300.0, 5), (400.0, 550.0, 20)],
            ("1.000 beyond linear+relu", "met"),
            ("250 s", "met"),
        ),
        # a whole-suite run; a later single-op run and a shard do not replace it
        (
            2.0,
            [
                (0.0, 200.0, 20),
                (300.0, 310.0, 20, 9, FULL.replace("ops=dense,conv2d", "ops=dense")),
                (400.0, 420.0, 20, 9, FULL + " shard=1/4"),
            ],
            ("1.000 beyond linear+relu", "met"),
            ("200 s", "met"),
        ),
    ],
    ids=[
        "both-met",
        "both-missed",
        "sweep-incomplete",
        "incomplete-too-slow",
        "restricted",
        "restricted-too-slow",
        "full-preferred",
        "extra-dtype",
        "no-compile",
        "guided",
        "exhaustive",
        "unknown-search",
        "search-named-on-resume",
        "newest-campaign",
        "partial-runs-ignored",
    ],  # fmt: skip
)
def test_memory_and_sweep_time_targets(tmp_path, ours_saved, runs, memory, sweep) -> None:  # noqa: ANN001
    """Saved bytes (in bf16 outputs: 4096^2 x 2 bytes) beyond linear+relu, and the core
    sweep's runs added up to the first complete one, become target rows."""
    from autotune.db import Run

    out_bytes = 4096 * 4096 * 2
    rows = [
        invented("Test H200", True, mode="fwd+bwd", shape=BIG, provider="yat_triton", config="", correct=True,
                 median_ms=3.0, saved_bytes=ours_saved * out_bytes),
        invented("Test H200", True, mode="fwd+bwd", shape=BIG, provider="linear+relu", config=BASELINE_CFG,
                 median_ms=2.9, saved_bytes=1.0 * out_bytes),
    ]  # fmt: skip
    path = make_db(tmp_path / "r.db", rows)
    with ResultsDB(path) as db:
        for start, end, done, *more in runs:
            added, args = (more + [9, FULL][len(more) :])[:2]
            db.add_run(Run("core", args, "Test H200", "c", start, end, 20, done, added))
        db.add_run(Run("quick", "-", "Test H200", "c", 0.0, 1.0, 1, 1, 1))  # another suite: ignored
    render_report(path, tmp_path / "reports")
    text = (tmp_path / "reports" / "test_h200" / "README.md").read_text()
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
        invented("Test H200", True, mode="fwd+bwd", shape=BIG, provider="yat_triton", config="", correct=True,
                 median_ms=3.0, timing="cuda-graph"),
        invented("Test H200", True, mode="fwd+bwd", shape=BIG, provider="compiled_ref", config=BASELINE_CFG,
                 median_ms=4.5, correct=True, timing="eager"),
        invented("Test H200", True, mode="fwd+bwd", shape=BIG, provider="eager_ref", config=BASELINE_CFG,
                 median_ms=36.0, correct=True, timing="cuda-graph"),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    targets = text.split("## Targets")[1].split("##")[0]
    measured = {}
    for line in targets.splitlines():
        row = [c.strip() for c in line.split("|")[1:-1]]
        if row and row[0].startswith("against"):
            measured[row[0].split(",")[0]] = row[3]
    assert measured == {"against compiled_ref": "speedup 1.500x †", "against eager_ref": "speedup 12.000x"}
    assert "†: the two rows were timed differently" in targets


def test_targets_say_which_speedup_is_out_of_reach_of_the_standard_layer(tmp_path) -> None:  # noqa: ANN001
    """Below the targets table, a speedup target against a reference that the standard
    layer itself beats by less than the target's factor is named, with what meeting it
    would take (here conv's eager_ref 2.0 ms against conv+relu 0.3 ms: 10x faster needs
    0.67x conv+relu's time); where the standard layer is that much faster (dense), no note."""
    conv = canonical_json(
        {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    )
    r = lambda **kw: invented("Test H200", True, mode="fwd+bwd", correct=True, timing="cuda-graph", **kw)  # noqa: E731
    rows = [
        r(op="conv2d", shape=conv, provider="yat_triton", config="", median_ms=0.35),
        r(op="conv2d", shape=conv, provider="conv+relu", config=BASELINE_CFG, median_ms=0.3),
        r(op="conv2d", shape=conv, provider="eager_ref", config=BASELINE_CFG, median_ms=2.0),
        r(shape=BIG, provider="yat_triton", config="", median_ms=0.8),
        r(shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=0.6),
        r(shape=BIG, provider="eager_ref", config=BASELINE_CFG, median_ms=9.0),
    ]
    targets = rendered_page(tmp_path, rows).split("## Targets")[1].split("\n## ")[0]
    notes = [ln for ln in targets.splitlines() if ln.startswith("- against")]
    assert notes == [
        "- against eager_ref, fwd+bwd, bf16, conv2d B=64,C_in=64,H=56,W=56,C_out=64,k=3,stride=1,padding=1: "
        "eager_ref takes 2 ms, 6.7x conv+relu's 0.3 ms: "
        "10x faster than eager_ref needs 0.67x conv+relu's time"
    ], notes
    # met there after all (13.3x): no note; nor on a page whose targets are not judged
    for sub in ("met", "cpu", "eager"):
        (tmp_path / sub).mkdir()
    met = [dataclasses.replace(rows[0], median_ms=0.15), *rows[1:]]
    assert "Out of reach" not in rendered_page(tmp_path / "met", met)
    cpu = [dataclasses.replace(r, gpu="cpu (Triton interpreter)", representative=False) for r in rows]
    assert "Out of reach" not in rendered_page(tmp_path / "cpu", cpu, gpu="cpu_triton_interpreter")
    # a reference timed otherwise than the standard layer: marked, with the footnote
    eager = [*rows[:2], dataclasses.replace(rows[2], timing="eager"), *rows[3:]]
    page = rendered_page(tmp_path / "eager", eager).split("## Targets")[1].split("\n## ")[0]
    assert "0.3 ms †: 10x" in page and "†: the two rows were timed differently" in page


def _target_cells(text: str) -> list[list[str]]:
    targets = text.split("## Targets")[1].split("\n## ")[0]
    rows = [
        [c.strip() for c in line.split("|")[1:-1]] for line in targets.splitlines() if line.startswith("|")
    ]
    return [r for r in rows[2:] if r]


def test_targets_name_every_problem_they_cover(tmp_path) -> None:  # noqa: ANN001
    """A shape where every yat_triton config failed is "not met", not dropped; one where
    none ran yet (pruned tiles only) is "n/a"; a missing baseline is named; only ResNet-50
    3x3 layers count for the conv targets; the verdict is taken at the precision shown; rows
    measured by different software are marked."""
    conv = canonical_json(
        {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    )
    tiny_conv = canonical_json(
        {"B": 2, "C_in": 8, "H": 9, "W": 9, "C_out": 16, "k": 3, "stride": 1, "padding": 1}
    )
    huge = canonical_json({"M": 8192, "N": 8192, "K": 8192})
    r = lambda **kw: invented("Test H200", True, **kw)  # noqa: E731
    ours = dict(provider="yat_triton", config=cfg(128, 128), correct=True, timing="cuda-graph")
    base = dict(provider="linear+relu", config=BASELINE_CFG, timing="cuda-graph")
    rows = [
        r(shape=BIG, median_ms=2.76, **ours), r(shape=BIG, median_ms=2.50, **base),  # 1.104x: not met at 1.10
        r(shape=huge, provider="yat_triton", config=cfg(64, 64), status="wrong", correct=False,
          max_rel_err=1.0),
        r(shape=huge, provider="yat_triton", config=cfg(64, 128), status="error", reason="invented"),
        r(shape=huge, median_ms=6.0, tflops=180.0, **base),
        r(op="conv2d", shape=conv, median_ms=1.0, tflops=100.0, **{**ours, "commit": "other"}),
        r(op="conv2d", shape=conv, median_ms=0.95, tflops=105.0, **{**base, "provider": "conv+relu"}),
        r(op="conv2d", shape=tiny_conv, median_ms=5.0, tflops=0.1, **ours),
        r(op="conv2d", shape=tiny_conv, median_ms=1.0, tflops=0.5, **{**base, "provider": "conv+relu"}),
        r(mode="fwd+bwd", shape=BIG, median_ms=3.0, tflops=130.0, **ours),  # no baseline in this mode
        # a capped sweep cut after its static prune: no tile ran yet
        r(mode="fwd+bwd", shape=huge, provider="yat_triton", config=cfg(256, 256), status="pruned",
          reason="shared memory"),
        r(mode="fwd+bwd", shape=huge, median_ms=12.0, tflops=180.0, **base),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    got = {(c[0].split(",")[0], c[2]): (c[3], c[4]) for c in _target_cells(text)}
    assert got[("ⵟ-dense fwd", "dense 4096x4096x4096")] == ("time 1.104x", "not met")
    assert got[("ⵟ-dense fwd", "dense 8192x8192x8192")] == (
        "no correct yat_triton row (1 wrong, 1 failed)",
        "not met",
    )
    assert got[("ⵟ-dense fwd+bwd", "dense 4096x4096x4096")] == ("no linear+relu row", "n/a")
    assert got[("ⵟ-dense fwd+bwd", "dense 8192x8192x8192")] == ("yat_triton not measured", "n/a")
    conv_label = next(k[1] for k in got if k[0] == "ⵟ-conv2d fwd")
    assert "H=56" in conv_label and got[("ⵟ-conv2d fwd", conv_label)] == ("time 1.053x ‡", "met")
    assert not any("H=9" in k[1] for k in got)  # not a ResNet-50 layer
    assert "‡: the two rows come from different project commits" in text


def test_failed_gpu_heatmap_shape_and_peak_line(tmp_path) -> None:  # noqa: ANN001
    """A GPU whose rows all failed still gets its folder (and index line) next to one that
    measured; the heatmap shows the largest shape with timed tiles, not one that only has
    baselines; the throughput plot's peak line is cuBLAS's best measured throughput."""
    from autotune import report

    huge = canonical_json({"M": 8192, "N": 8192, "K": 8192})
    rows = [
        *fixture_rows("Test H200", True),
        invented("Test H200", True, shape=huge, provider="linear+relu", config=BASELINE_CFG, median_ms=1.5,
                 tflops=733.0, timing="cuda-graph"),
        invented("Other GPU", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), status="error",
                 reason="RuntimeError: invented"),
    ]  # fmt: skip
    written = render_report(make_db(tmp_path / "r.db", rows), tmp_path / "reports")
    other = (tmp_path / "reports" / "other_gpu" / "README.md").read_text()
    assert "No successful measurement on this GPU" in other and "RuntimeError: invented" in other
    assert "other_gpu/README.md" in (tmp_path / "reports" / "README.md").read_text()
    assert (
        "![dense fwd bfloat16 4096x4096x4096 tile heatmap]"
        in (tmp_path / "reports" / "test_h200" / "README.md").read_text()
    )
    g = report.Gpu("Test H200", [r for r in rows if r.gpu == "Test H200"])
    assert report._cublas_peaks(g) == {"bfloat16": (733.0, "linear+relu peak, bfloat16: 733 TFLOP/s")}
    for png in (p for p in written if p.suffix == ".png"):
        check_png(png)


def test_empty_output_shapes_do_not_break_the_memory_target(tmp_path) -> None:  # noqa: ANN001
    empty = canonical_json({"M": 0, "N": 4096, "K": 4096})
    rows = [
        invented("Test H200", True, mode="fwd+bwd", shape=empty, provider="yat_triton", config="",
                 correct=True, median_ms=0.01, tflops=0.0, saved_bytes=0.0),
        invented("Test H200", True, mode="fwd+bwd", shape=empty, provider="linear+relu", config=BASELINE_CFG,
                 median_ms=0.01, tflops=0.0, saved_bytes=0.0),
    ]  # fmt: skip
    cells = _target_cells(rendered_page(tmp_path, rows))
    assert ["memory saved for backward", "<= 1 extra output-sized tensor", "-", "-", "n/a"] in cells


def test_copy_bandwidth_is_the_memory_roof() -> None:
    """The breakdown's device copy (bytes read plus written over its time) gives the memory
    bandwidth: the fastest copy of the GPU's lines, none without one."""
    from autotune.report import copy_bandwidth

    def copy(us: float, nbytes: int, op: str = "memory") -> dict[str, object]:
        return {
            "op": op,
            "phase": "ref",
            "what": "device copy (read + write)",
            "us": us,
            "shape": f"bytes={nbytes}",
        }

    tbs, label = copy_bandwidth([copy(500.0, 2 << 30), copy(1000.0, 2 << 30), copy(1.0, 2 << 30, op="dense")])
    assert tbs == pytest.approx((2 << 30) / 500e-6 / 1e12)
    assert label == "measured copy bandwidth: 4.29 TB/s (1024 MiB device copy)"
    assert copy_bandwidth([copy(1.0, 2 << 30, op="dense")]) is None and copy_bandwidth([]) is None
    # no bandwidth from a line that cannot give one (the ridge point divides by it)
    for us, nbytes in ((0.0, 2 << 30), (-5.0, 2 << 30), (float("inf"), 2 << 30), (500.0, 0)):
        assert copy_bandwidth([copy(us, nbytes)]) is None, (us, nbytes)


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
            "gpu": "Test H200",
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
    text = (tmp_path / "r" / "test_h200" / "README.md").read_text()
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
    for share in ([1], "x", True):  # a wrong share type, and a file that is not text
        path.write_text(json.dumps({**lines[0], "share": share}) + "\n")
        with pytest.raises(
            ValueError, match=r"bd.jsonl:1: a breakdown line's share must be a number or null"
        ):
            render_report(gpu_db, tmp_path / "r", breakdown=path)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"bd.jsonl: not a text file of JSON lines"):
        render_report(gpu_db, tmp_path / "r", breakdown=path)


def test_gemm_and_epilogue_splits_each_forward(gpu_db, tmp_path) -> None:  # noqa: ANN001
    """Per GEMM-only line of the breakdown: the same kernel's inference time, the GEMM
    alone, the epilogue as their difference, and the standard GEMM of the op family at the
    same shape (a wide-tile variant of the dense op finds the dense op's reference); "-"
    where a line is missing. Rendered into the report's breakdown section."""
    from autotune.report import gemm_and_epilogue

    def line(op: str, phase: str, what: str, us: float, shape: str = "4096x4096x4096") -> dict[str, object]:
        return {"op": op, "phase": phase, "what": what, "us": us, "shape": shape, "dtype": "bfloat16",
                "grid": "-", "share": None, "gpu": "Test H200"}  # fmt: skip

    tma = "yat_dense_fwd_tma_kernel"
    conv = "B=64,C_in=256,HW=14,C_out=256,k=3"
    items = [
        line("dense", "fwd-infer", "row_sqnorm_kernel", 30.0),
        line("dense", "fwd-infer", tma, 250.0),
        line("dense", "ref", "x @ W^T (matmul)", 187.0),
        line("dense", "fwd-gemm", f"{tma} @ gemm only", 230.0),
        line("dense-tma-wide", "fwd-infer", tma, 220.0),
        line("dense-tma-wide", "fwd-gemm", f"{tma} @ gemm only", 200.0),
        line("conv2d", "fwd-gemm", "yat_conv_fwd_tma_kernel @ gemm only", 60.0, conv),  # no infer, no ref
        line("conv2d", "ref", "x @ W^T (matmul)", 10.0, conv),  # (not the conv's reference)
    ]
    assert gemm_and_epilogue(items) == [
        ["dense", "4096x4096x4096", "bfloat16", tma, "250.0", "230.0", "20.0 (8%)",
         "187.0 (x @ W^T (matmul))", "1.23x"],
        ["dense-tma-wide", "4096x4096x4096", "bfloat16", tma, "220.0", "200.0", "20.0 (9%)",
         "187.0 (x @ W^T (matmul))", "1.07x"],
        ["conv2d", conv, "bfloat16", "yat_conv_fwd_tma_kernel", "-", "60.0", "-", "-", "-"],
    ]  # fmt: skip
    assert gemm_and_epilogue(items[:3]) == []
    path = tmp_path / "bd.jsonl"
    path.write_text("".join(json.dumps(ln) + "\n" for ln in items))
    render_report(gpu_db, tmp_path / "r", breakdown=path)
    text = (tmp_path / "r" / "test_h200" / "README.md").read_text()
    section = text.split("## Where the time goes")[1]
    assert "### GEMM and epilogue" in section and "| 20.0 (8%) " in section
    # the targets section points to it, only where it is
    targets = text.split("## Targets")[1].split("## Summary")[0]
    assert '"GEMM and epilogue" table (below)' in targets
    path.write_text("".join(json.dumps(ln) + "\n" for ln in items[:3]))
    render_report(gpu_db, tmp_path / "r", breakdown=path)
    assert "GEMM and epilogue" not in (tmp_path / "r" / "test_h200" / "README.md").read_text()


def test_show_and_export_without_a_correct_row(tmp_path, capsys) -> None:  # noqa: ANN001
    """A GPU database where every ⵟ config failed its check: show has nothing to show (exit
    2, saying why), and export tries the GPU's winners (not a CPU export) and says none passed."""
    rows = [r for r in fixture_rows("Test H200", True) if not (r.provider == "yat_triton" and r.correct)]
    db = make_db(tmp_path / "wrong.db", rows)
    assert cli.main(["show", "--db", str(db)]) == 2
    assert "no yat_triton config ran ok and passed its correctness check" in capsys.readouterr().err
    assert cli.main(["export", "--db", str(db), "--out", str(tmp_path / "tuned")]) == 2
    out = capsys.readouterr()
    assert "no GPU measurements" not in out.out and "nothing to export" in out.err, out
    assert not (tmp_path / "tuned").exists()


def test_failed_render_keeps_the_old_report_and_stale_heatmaps_go(gpu_db, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A render that fails half-way leaves the report that was there, every file of it, and
    no staging folder; a later render removes the heatmap of a dtype the database no longer
    holds but keeps files that are not the report's (import-run's results and logs)."""
    import hashlib

    from autotune import report

    out = tmp_path / "reports"
    render_report(gpu_db, out)
    folder = out / "test_h200"
    (folder / "heatmap_dense_float16.png").write_bytes(PNG_SIGNATURE + b"\0" * 2000)  # an older dtype
    (folder / "results.db").write_bytes(b"import-run's own")

    def digests() -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}  # fmt: skip

    before = digests()

    def broken(*args: object) -> None:
        raise RuntimeError("invented plotting failure")

    # new rows (every time halved), so that a page written before the failure would differ
    faster = [dataclasses.replace(r, median_ms=r.median_ms / 2 if r.median_ms else None)
              for r in fixture_rows("Test H200", True)]  # fmt: skip
    monkeypatch.setattr(report, "_plot_roofline", broken)  # the last plot: the others are made by then
    with pytest.raises(RuntimeError, match="invented plotting failure"):
        render_report(make_db(tmp_path / "faster.db", faster), out)
    assert digests() == before
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "test_h200"]  # no staging folder left
    monkeypatch.undo()
    written = render_report(gpu_db, out)
    assert not (folder / "heatmap_dense_float16.png").exists()
    assert (folder / "heatmap_dense_bfloat16.png") in written and (
        folder / "results.db"
    ).read_bytes() == b"import-run's own"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "test_h200"]


def test_a_problem_with_only_baselines_is_not_measured_not_missed(tmp_path) -> None:  # noqa: ANN001
    """A capped sweep measures a problem's baselines before its tiles: a target problem with
    no yat_triton row at all is "n/a" (not measured), one whose every tile failed "not met"."""
    big2 = canonical_json({"M": 8192, "N": 8192, "K": 8192})
    rows = [
        invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), status="error",
                 reason="RuntimeError: invented"),
        invented("Test H200", True, shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=1.0,
                 status="ok", correct=True),
        invented("Test H200", True, shape=big2, provider="linear+relu", config=BASELINE_CFG, median_ms=8.0,
                 status="ok", correct=True),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    lines = [[c.strip() for c in ln.split("|")[1:-1]] for ln in text.split("## Targets")[1].splitlines()]
    dense_fwd = {row[2]: row[3:] for row in lines if row and row[0].startswith("ⵟ-dense fwd,")}
    assert dense_fwd == {
        "dense 4096x4096x4096": ["no correct yat_triton row (1 failed)", "not met"],
        "dense 8192x8192x8192": ["yat_triton not measured", "n/a"],
    }


def test_show_takes_the_reports_baseline(tmp_path, capsys) -> None:  # noqa: ANN001
    """show and the report compare against the same baseline row: the fastest correct one
    (here linear+relu measured twice, the faster one also correct, and a faster wrong one),
    not whichever row sorts last; a missing TFLOP/s shows as "-"."""
    rows = [
        invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), median_ms=1.0,
                 correct=True, status="ok", tflops=None),
        invented("Test H200", True, shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=0.5,
                 correct=True, status="ok"),
        invented("Test H200", True, shape=BIG, provider="linear+relu", config='{"matmul_tf32":true}',
                 median_ms=2.0, correct=True, status="ok"),
        invented("Test H200", True, shape=BIG, provider="linear+relu", config='{"zzz":1}', median_ms=0.1,
                 correct=False, status="ok"),
    ]  # fmt: skip
    db = make_db(tmp_path / "r.db", rows)
    assert cli.main(["show", "--db", str(db)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Test H200")]
    assert re.search(r"\b1 +- +0\.50x +- +m64n64", line), line
    render_report(db, tmp_path / "reports")
    assert "0.500x" not in (tmp_path / "reports" / "test_h200" / "README.md").read_text()  # time ratio 2.000x
    assert "2.000x" in (tmp_path / "reports" / "test_h200" / "README.md").read_text()


def test_report_refuses_gpu_names_sharing_a_folder_and_a_foreign_index(tmp_path) -> None:  # noqa: ANN001
    """Two GPU names with one folder name would overwrite one report with the other: refused,
    nothing written; so is rendering over a README.md this command did not write."""
    out = tmp_path / "reports"
    clash = make_db(
        tmp_path / "clash.db", fixture_rows("NVIDIA H200", True) + fixture_rows("nvidia-h200", True)
    )
    with pytest.raises(
        ValueError, match=r"GPU names \['NVIDIA H200', 'nvidia-h200'\] share the report folder"
    ):
        render_report(clash, out)
    assert not out.exists() or not any(out.iterdir())
    render_report(make_db(tmp_path / "a.db", fixture_rows("NVIDIA H200", True)), out)
    with pytest.raises(ValueError, match="share the report folder"):
        render_report(make_db(tmp_path / "b.db", fixture_rows("nvidia-h200", True)), out)
    assert "# Performance report: NVIDIA H200" in (out / "nvidia_h200" / "README.md").read_text()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# My project\n")
    with pytest.raises(ValueError, match="not a report index that this command wrote"):
        render_report(tmp_path / "a.db", docs)
    assert (docs / "README.md").read_text() == "# My project\n" and sorted(docs.iterdir()) == [
        docs / "README.md"
    ]


def test_report_states_the_tf32_settings_of_float32_rows(tmp_path) -> None:  # noqa: ANN001
    """SPEC section 5 asks for the TF32 setting stated: read from the float32 baselines'
    recorded configs (absent where there is no float32 row)."""
    tf32 = canonical_json({"matmul_tf32": False, "cudnn_tf32": True, "cudnn_benchmark": False})
    rows = [
        invented("Test H200", True, dtype="float32", shape=BIG, provider="yat_triton", config=cfg(64, 64),
                 median_ms=2.0, correct=True, status="ok"),
        invented("Test H200", True, dtype="float32", shape=BIG, provider="linear+relu", config=tf32,
                 median_ms=1.5, correct=True, status="ok"),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    assert (
        "float32 rows ran with matmul TF32 off (cuBLAS, and yat_triton's float32 kernels: ieee), "
        "cuDNN TF32 on." in text
    )
    render_report(make_db(tmp_path / "bf16.db", fixture_rows("Test H200", True)), tmp_path / "other")
    assert "TF32" not in (tmp_path / "other" / "test_h200" / "README.md").read_text()


def test_speedup_plot_targets_and_labels() -> None:
    """The speedup plot's target lines are SPEC section 6's time ratios inverted, only where
    one is set against the standard layer; its tick labels keep every setting of a shape."""
    from autotune.report import _plot_label, _target_speedup

    speedups = {
        (op, mode): _target_speedup(op, mode)[:2] for op in ("dense", "conv2d") for mode in ("fwd", "fwd+bwd")
    }
    assert speedups == {
        ("dense", "fwd"): pytest.approx((1.0, 1.0)),
        ("dense", "fwd+bwd"): pytest.approx((1 / 1.1, 1.1)),
        ("conv2d", "fwd"): pytest.approx((1 / 1.1, 1.1)),
        ("conv2d", "fwd+bwd"): pytest.approx((1 / 1.3, 1.3)),
    }
    assert _target_speedup("dense", "bwd") is None and _target_speedup("conv2d", "bwd") is None
    assert _plot_label(BIG) == "4096x4096\nx4096"
    conv = canonical_json(
        {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 128, "k": 3, "stride": 2, "padding": 1}
    )
    assert _plot_label(conv) == "B64 64→128\n56x56 k3 s2 p1"


def test_problems_sorted_in_mode_order() -> None:
    from autotune.report import sorted_problems

    problems = [("dense", m, "bfloat16", BIG) for m in ("fwd+bwd", "bwd", "fwd")] + [
        ("conv2d", "fwd", "float32", BIG)
    ]
    assert [p[:2] for p in sorted_problems(problems)] == [
        ("conv2d", "fwd"), ("dense", "fwd"), ("dense", "bwd"), ("dense", "fwd+bwd"),
    ]  # fmt: skip


def test_every_problem_keeps_its_summary_line(tmp_path) -> None:  # noqa: ANN001
    """A problem whose tiles were all wrong, or where only the baselines ran (a capped sweep
    times them first), keeps its line in the summary, saying why, with the baselines' times;
    the plots that would be empty are left out and named."""
    huge = canonical_json({"M": 8192, "N": 8192, "K": 8192})
    rows = [
        invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(64, 64), status="wrong",
                 correct=False, max_rel_err=0.5, reason="max rel error 0.5 > 0.03"),
        invented("Test H200", True, shape=BIG, provider="yat_triton", config=cfg(64, 128), status="error",
                 reason="RuntimeError: invented"),
        invented("Test H200", True, shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=0.9,
                 timing="cuda-graph"),
        invented("Test H200", True, shape=huge, provider="linear+relu", config=BASELINE_CFG, median_ms=7.5,
                 timing="cuda-graph"),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows, "test_h200")
    compact = text.split("## Summary")[1].split("<details>")[0]
    assert re.search(
        r"\| 4096x4096x4096 +\| none correct \(1 wrong, 1 failed\) +\| - +\| - \(0\.9 ms\) +\|", compact
    )
    assert re.search(r"\| 8192x8192x8192 +\| not measured +\| - +\| - \(7\.5 ms\) +\|", compact)
    folder = tmp_path / "reports" / "test_h200"
    assert not (folder / "speedup.png").exists() and not (folder / "heatmap_dense_bfloat16.png").exists()
    assert "- no speedup plot: no problem has both a correct yat_triton row and a" in text
    assert "- no dense bfloat16 tile heatmap: no forward tile ran correctly." in text
    assert "](tflops.png)" in text and "](roofline.png)" in text  # the baselines' throughput


def test_tally_counts_targets_and_only_an_h200_judges_timings(tmp_path) -> None:  # noqa: ANN001
    """The tally counts SPEC's targets, not the table's lines: a target over two shapes is
    not met when one misses. On another GPU the timed targets are shown, not judged; the
    memory target (no timing) still is."""
    huge = canonical_json({"M": 8192, "N": 8192, "K": 8192})

    def rows(gpu: str) -> list[Result]:
        r = lambda **kw: invented(gpu, True, timing="cuda-graph", **kw)  # noqa: E731
        ours = dict(provider="yat_triton", config=cfg(128, 128), correct=True)
        base = dict(provider="linear+relu", config=BASELINE_CFG)
        return [
            r(shape=BIG, median_ms=0.9, **ours), r(shape=BIG, median_ms=1.0, **base),  # met
            r(shape=huge, median_ms=8.0, **ours), r(shape=huge, median_ms=7.0, **base),  # not met
            r(mode="bwd", shape=BIG, config="", provider="yat_triton", correct=True, median_ms=2.0,
              saved_bytes=3.0 * 4096 * 4096 * 2),
            r(mode="bwd", shape=BIG, median_ms=1.8, saved_bytes=2.0 * 4096 * 4096 * 2, **base),
        ]  # fmt: skip

    text = rendered_page(tmp_path, rows("Test H200") + rows("Test B200"), "test_h200")
    assert "**1 met, 1 not met, 6 n/a** (of 8 targets, 9 lines)" in text
    assert "Met where measured" not in text  # the met target is met on every problem it has
    other = (tmp_path / "reports" / "test_b200" / "README.md").read_text()
    cells = {(c[0].split(",")[0], c[2]): (c[3], c[4]) for c in _target_cells(other)}
    judged = "not judged (timed targets are set for the H200)"
    assert cells[("ⵟ-dense fwd", "dense 4096x4096x4096")] == ("time 0.900x", judged)
    assert cells[("ⵟ-dense fwd", "dense 8192x8192x8192")] == ("time 1.143x", judged)
    assert cells[("memory saved for backward", "dense bwd 4096x4096x4096")] == (
        "1.000 beyond linear+relu",
        "met",
    )
    assert "SPEC section 6 sets its targets for the H200" in other
    index = (tmp_path / "reports" / "README.md").read_text()
    assert f"[test_b200](test_b200/README.md): targets 1 met, 6 n/a, 1 {judged}" in index
    assert "[test_h200](test_h200/README.md): targets 1 met, 1 not met, 6 n/a" in index


def test_baselines_are_the_rows_measured_side_by_side(tmp_path) -> None:  # noqa: ANN001
    """A later run with other settings (here TF32 on) adds baseline rows under a new config
    but measures no tile again (their keys are done): the comparison stays with the baseline
    measured next to the tile, and the TF32 note states that one's settings. Rows from
    different software carry ‡ in the summary too."""
    ieee = canonical_json({"matmul_tf32": False, "cudnn_tf32": False})
    tf32 = canonical_json({"matmul_tf32": True, "cudnn_tf32": True})
    r = lambda **kw: invented("Test H200", True, dtype="float32", shape=BIG, timing="cuda-graph", **kw)  # noqa: E731
    rows = [
        r(provider="yat_triton", config=cfg(64, 64), correct=True, median_ms=2.0, created=1_700_000_000.0),
        r(provider="linear+relu", config=ieee, median_ms=2.2, created=1_700_000_010.0),
        r(provider="linear+relu", config=tf32, median_ms=0.5, created=1_700_090_000.0, commit="later"),
        r(provider="eager_ref", config=ieee, median_ms=20.0, created=1_700_000_020.0, commit="other",
          correct=True),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    compact = text.split("## Summary")[1].split("<details>")[0]
    assert re.search(r"\| 1\.10x \(2\.2 ms\) +\| 10\.00x ‡ \(20 ms\) +\|", compact), compact
    assert "float32 rows ran with matmul TF32 off (cuBLAS, and yat_triton's float32 kernels: ieee)" in text
    assert "TF32 on" not in text
    assert "‡: the two rows come from different project commits" in text


def test_shapes_sort_by_their_sizes_and_failures_group_by_reason(tmp_path) -> None:  # noqa: ANN001
    """Shapes sort by their sizes in their own order (M, then N, then K), in every table;
    failures whose reasons differ only in numbers are one group, every row listed below."""
    from autotune.report import sorted_problems

    shapes = [
        canonical_json({"M": 8192, "N": n, "K": k}) for n, k in ((4096, 11008), (8192, 8192), (11008, 4096))
    ]
    problems = [("dense", "fwd", "bfloat16", s) for s in reversed(shapes)]
    assert [p[3] for p in sorted_problems(problems)] == shapes
    rows = [
        invented("Test H200", True, shape=s, provider="yat_triton", config=cfg(64, 64), status="wrong",
                 correct=False, max_rel_err=e, reason=f"max rel error {e} > 0.03 (y)")
        for s, e in zip(shapes, (0.5, 0.25, 1e-1), strict=True)
    ] + [
        invented("Test H200", True, shape=shapes[0], provider="linear+relu", config=BASELINE_CFG,
                 median_ms=1.0),
    ]  # fmt: skip
    text = rendered_page(tmp_path, rows)
    failures = text.split("### Failed and wrong configs")[1].split("### Pruned")[0]
    assert re.search(
        r"\| wrong +\| max rel error # > # \(y\) \(# varies\) +\| 3 +\| 3 +\| yat_triton +\|", failures
    )
    listed = re.findall(r"\| (8192x\d+x\d+) +\| yat_triton", failures)
    assert listed == ["8192x4096x11008", "8192x8192x8192", "8192x11008x4096"]


def test_only_an_h200_by_name_judges_the_timed_targets() -> None:
    from autotune.report import Gpu

    row = [invented("x", True, shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=1.0)]
    judged = {name: Gpu(name, row).judged for name in ("NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA GH200 480GB",
                                                       "NVIDIA H100 80GB HBM3")}  # fmt: skip
    assert judged == {"NVIDIA H200": True, "NVIDIA H200 NVL": True, "NVIDIA GH200 480GB": False,
                      "NVIDIA H100 80GB HBM3": False}  # fmt: skip


def test_heatmap_shape_target_slots_and_outcomes() -> None:
    """The conv heatmap shows ResNet-50's first 3x3 layer, whatever the last bits of the
    layers' equal sizes; a problem whose only correct row is the default tiles gets none (no
    tile to place on the grid); the speedup target sits only over bf16 bars that exist; an
    ok row stored without a median (an older file) is no correct measurement."""
    from autotune.report import Gpu, _heatmap_shape, _outcome, _resnet50_3x3, _target_slots

    first = canonical_json(
        {"B": 64, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}
    )
    second = canonical_json({"B": 64, "C_in": 128, "H": 28, "W": 28, "C_out": 128, "k": 3, "stride": 1,
                             "padding": 1})  # fmt: skip
    ours = dict(provider="yat_triton", config=cfg(128, 64), correct=True, median_ms=1.0)
    rows = [
        invented("Test H200", True, op="conv2d", shape=first, tflops=14.797504512000002, **ours),
        invented("Test H200", True, op="conv2d", shape=second, tflops=14.797504512, **ours),
        invented("Test H200", True, shape=BIG, provider="yat_triton", config="", correct=True, median_ms=1.0),
    ]
    g = Gpu("Test H200", rows)
    assert _heatmap_shape(g, "conv2d", "bfloat16") == first
    assert _heatmap_shape(g, "dense", "bfloat16") is None
    shapes = [first, second]
    compared = {("conv2d", "fwd", "float32", first): 0.9, ("conv2d", "fwd", "bfloat16", second): 0.95}
    assert _target_slots(compared, "conv2d", "fwd", shapes, _resnet50_3x3) == [1]
    old = dataclasses.replace(rows[0], median_ms=None)
    assert _outcome(old) == "unchecked" and _outcome(rows[0]) == "ok"


def test_plots_a_render_no_longer_makes_are_removed(tmp_path) -> None:  # noqa: ANN001
    """A re-render whose speedup plot has nothing to show removes the one an earlier render
    left, so the folder never shows a plot the page says is not there."""
    out = tmp_path / "reports"
    render_report(make_db(tmp_path / "a.db", fixture_rows("Test H200", True)), out)
    assert (out / "test_h200" / "speedup.png").is_file()
    wrong = [dataclasses.replace(r, status="wrong", correct=False, median_ms=None, tflops=None, timing=None)
             if r.provider == "yat_triton" and r.status == "ok" else r
             for r in fixture_rows("Test H200", True)]  # fmt: skip
    render_report(make_db(tmp_path / "b.db", wrong), out)
    page = (out / "test_h200" / "README.md").read_text()
    assert "- no speedup plot:" in page and not (out / "test_h200" / "speedup.png").exists()
    assert (out / "test_h200" / "tflops.png").is_file()  # the baselines' throughput is still drawn


def test_a_target_met_on_part_of_its_problems_says_so(tmp_path) -> None:  # noqa: ANN001
    """A target over two shapes, met on one, the other's tiles not measured yet: met, and
    named as met on 1 of its 2 problems."""
    huge = canonical_json({"M": 8192, "N": 8192, "K": 8192})
    r = lambda **kw: invented("Test H200", True, timing="cuda-graph", **kw)  # noqa: E731
    rows = [
        r(shape=BIG, provider="yat_triton", config=cfg(128, 128), correct=True, median_ms=0.9),
        r(shape=BIG, provider="linear+relu", config=BASELINE_CFG, median_ms=1.0),
        r(shape=huge, provider="linear+relu", config=BASELINE_CFG, median_ms=7.0),
    ]
    text = rendered_page(tmp_path, rows)
    assert "**1 met, 7 n/a** (of 8 targets, 9 lines)" in text
    assert "Met where measured, the other problems n/a: ⵟ-dense fwd, bf16, M=N=K >= 4096 (1 of 2)." in text
    index = (tmp_path / "reports" / "README.md").read_text()
    assert "[test_h200](test_h200/README.md): targets 1 met, 7 n/a" in index


def test_cuda_version_from_the_torch_build() -> None:
    """The header's CUDA row reads the CUDA a torch build names ("+cu130"); a CPU build says so."""
    from autotune.report import cuda_of

    assert cuda_of("2.11.0+cu130") == "13.0 (torch's build)"
    assert cuda_of("2.5.1+cu121") == "12.1 (torch's build)"
    assert cuda_of("2.4.0+cu118") == "11.8 (torch's build)"
    assert cuda_of("2.13.0+cpu") == "none (CPU build)"
    assert cuda_of("2.99") == "-" and cuda_of("2.6.0+rocm6.2") == "-"
