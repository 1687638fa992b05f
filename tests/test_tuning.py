"""Tuned winners: export from a results database, load at call time, and every way a winners
file can be missing or broken (defaults and one warning, never a crash).

The database rows here are FIXTURE ROWS: invented timings in the shape the sweep writes
(autotune/sweep.py), not measurements. The GPU branch of the lookup runs without CUDA by
replacing `yat_triton.tuning.current_gpu`, the one place that asks which device this is.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from oracle import yat_conv2d_ref, yat_dense_ref
from tolerances import assert_close

import yat_triton
from autotune import export
from autotune.db import Result, ResultsDB, canonical_json
from autotune.export import export_winners
from autotune.sweep import SHAPE_KEYS
from kernels._common import INTERPRETING, TileConfig
from kernels.conv import conv_default_config
from kernels.dense import dense_default_config
from yat_triton import tuning
from yat_triton.tuning import (
    ENV_VAR,
    TunedConfigWarning,
    conv_shape,
    pick_conv_config,
    pick_dense_config,
    tuned_config,
    use_tuned_configs,
)

H200 = "NVIDIA H200"
A100 = "NVIDIA A100-SXM4-80GB"
BF16 = torch.bfloat16
CUBE = {"M": 4096, "N": 4096, "K": 4096}
SMALL = {"M": 1024, "N": 1024, "K": 1024}
CONV = {"B": 32, "C_in": 64, "H": 56, "W": 56, "C_out": 64, "k": 3, "stride": 1, "padding": 1}

# Distinct, valid tiles, so that a lookup's answer says which entry it came from.
BIG = TileConfig(128, 256, 64, 8, 8, 3, epilogue_split=4)
SLOW = TileConfig(128, 128, 64, 8, 8, 4, epilogue_split=4)
MID = TileConfig(64, 128, 32, 4, 4, 4, epilogue_split=2)
TINY = TileConfig(16, 32, 16, 1, 4, 2)


def fixture_row(
    shape: dict[str, int], config: TileConfig | str | None, median_ms: float, **kw: object
) -> Result:
    """A FIXTURE row (made-up numbers, not a measurement), well formed as the sweep writes
    them: a yat_triton dense fwd bf16 row on an H200 that ran ok and passed the check.
    `config`: a tile, its stored JSON text, or None for an end-to-end row."""
    if isinstance(config, TileConfig):
        config = canonical_json(config.as_dict())
    fields: dict[str, object] = dict(
        op="dense", mode="fwd", provider="yat_triton", dtype="bfloat16", shape=canonical_json(shape),
        config=config or "", status="ok", median_ms=median_ms,
        p20_ms=median_ms * 0.99, p80_ms=median_ms * 1.01, tflops=2 * 4096**3 / (median_ms * 1e9),
        correct=True, max_rel_err=1e-3, gpu=H200, driver="570.86", torch="2.11.0", triton="3.6.0",
        commit="abc1234", representative=True,
    )  # fmt: skip
    fields.update(kw)
    return Result(**fields)  # type: ignore[arg-type]


def make_db(path: Path, rows: list[Result]) -> Path:
    with ResultsDB(path) as db:
        db.add_many(rows)
    return path


def winners(entries: list[dict[str, object]], gpu: str = H200, **top: object) -> dict[str, object]:
    """A winners document written by hand (for the files that the exporter would not write)."""
    doc: dict[str, object] = {
        "format": "yat-triton-winners", "version": 1, "gpu": gpu, "torch": "2.11.0", "triton": "3.6.0",
        "commit": "abc1234", "created": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    doc.update(top)
    doc["entries"] = entries
    return doc


def entry(shape: dict[str, int], config: TileConfig | dict[str, object], **kw: object) -> dict[str, object]:
    fields: dict[str, object] = {"op": "dense", "mode": "fwd", "dtype": "bfloat16", "shape": shape}
    fields["config"] = config.as_dict() if isinstance(config, TileConfig) else config
    fields.update(kw)
    return fields


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) if not isinstance(doc, str) else doc)
    return path


def default_dense(M: int, N: int, K: int) -> TileConfig:
    return dense_default_config(M, N, K, 2, interpreting=tuning.INTERPRETING)


@pytest.fixture(autouse=True)
def clean_lookup(monkeypatch: pytest.MonkeyPatch):
    """Every test starts from the default lookup with nothing cached and no env var."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    use_tuned_configs(None)
    yield
    use_tuned_configs(None)


@pytest.fixture
def on_h200(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Pretend the current device is an H200 and give it an empty winners folder."""
    monkeypatch.setattr(tuning, "current_gpu", lambda device=None: H200)
    monkeypatch.setattr(tuning, "TUNED_DIR", tmp_path / "tuned")
    return tmp_path / "tuned"


# ---------------------------------------------------------------------------------------
# Export


def test_export_writes_the_best_qualifying_row_per_shape_one_file_per_gpu(tmp_path: Path) -> None:
    rows = [
        fixture_row(CUBE, BIG, 0.21),
        fixture_row(CUBE, SLOW, 0.25),
        fixture_row(SMALL, MID, 0.011),
        fixture_row(CUBE, MID, 0.30, dtype="float16"),
        fixture_row(CONV, TINY, 0.5, op="conv2d"),
        fixture_row(CUBE, TINY, 0.40, gpu=A100),
        # faster, but not exportable: none of these may win
        fixture_row(CUBE, TINY, 0.01, provider="linear+relu"),
        fixture_row(CUBE, replace(TINY, num_stages=3), 0.02, status="wrong"),
        fixture_row(CUBE, replace(TINY, num_stages=4), 0.03, correct=False),
        fixture_row(CUBE, replace(TINY, num_stages=5), 0.04, representative=False),
        fixture_row(CUBE, None, 0.05, mode="bwd", provider="eager_ref"),
    ]
    out = tmp_path / "tuned"
    paths = export_winners(make_db(tmp_path / "r.db", rows), out)
    assert [p.name for p in paths] == ["nvidia_a100_sxm4_80gb.json", "nvidia_h200.json"]
    assert sorted(os.listdir(out)) == ["nvidia_a100_sxm4_80gb.json", "nvidia_h200.json"]  # no temp files
    text = paths[1].read_text()
    assert text.endswith("}\n") and '\n  "entries": [\n' in text  # indented, diffable
    doc = json.loads(text)
    assert {k: doc[k] for k in ("format", "version", "gpu", "torch", "triton", "commit")} == {
        "format": "yat-triton-winners", "version": 1, "gpu": H200, "torch": "2.11.0", "triton": "3.6.0",
        "commit": "abc1234",
    }  # fmt: skip
    assert doc["created"].endswith("Z")
    got = [
        (e["op"], e["dtype"], e["shape"], TileConfig(**e["config"]), e["median_ms"]) for e in doc["entries"]
    ]
    assert got == [  # sorted by op, mode, dtype, then dims numerically
        ("conv2d", "bfloat16", CONV, TINY, 0.5),
        ("dense", "bfloat16", SMALL, MID, 0.011),
        ("dense", "bfloat16", CUBE, BIG, 0.21),
        ("dense", "float16", CUBE, MID, 0.3),
    ]
    assert list(doc["entries"][0]["config"]) == list(TINY.as_dict())  # every field, in field order
    assert doc["entries"][2]["tflops"] == pytest.approx(654.5, abs=0.1)
    a100 = json.loads(paths[0].read_text())
    assert a100["gpu"] == A100 and [TileConfig(**e["config"]) for e in a100["entries"]] == [TINY]
    assert export_winners(tmp_path / "r.db", out, gpu=A100) == [out / "nvidia_a100_sxm4_80gb.json"]


def test_export_refuses_when_nothing_qualifies(tmp_path: Path) -> None:
    rows = [
        fixture_row(CUBE, BIG, 0.2, representative=False),
        fixture_row(CUBE, None, 0.2, mode="bwd", correct=False),
        fixture_row(CUBE, None, 0.1, mode="fwd"),  # a forward row always names its tile
    ]
    db = make_db(tmp_path / "r.db", rows)
    out = tmp_path / "tuned"
    with pytest.raises(ValueError, match="nothing to export"):
        export_winners(db, out)
    with pytest.raises(ValueError, match="nothing to export .* for gpu 'NVIDIA B200'"):
        export_winners(make_db(tmp_path / "ok.db", [fixture_row(CUBE, BIG, 0.2)]), out, gpu="NVIDIA B200")
    with pytest.raises(FileNotFoundError, match="no results database"):
        export_winners(tmp_path / "missing.db", out)
    assert not out.exists() and not (tmp_path / "missing.db").exists()


def test_export_refuses_a_winner_the_loader_would_reject(tmp_path: Path) -> None:
    bad = fixture_row(CUBE, canonical_json({**BIG.as_dict(), "block_m": 96}), 0.1)
    with pytest.raises(ValueError, match="block_m must be a power of two"):
        export_winners(make_db(tmp_path / "r.db", [bad, fixture_row(SMALL, MID, 0.1)]), tmp_path / "tuned")
    assert not (tmp_path / "tuned" / "nvidia_h200.json").exists()


def test_export_accepts_the_kernels_constexpr_spelling(tmp_path: Path) -> None:
    spelled = canonical_json({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 4, "num_warps": 4,
                              "num_stages": 4, "EPILOGUE_SPLIT": 2})  # fmt: skip
    (path,) = export_winners(make_db(tmp_path / "r.db", [fixture_row(CUBE, spelled, 0.1)]), tmp_path)
    assert json.loads(path.read_text())["entries"][0]["config"] == MID.as_dict()


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_db(tmp_path / "r.db", [fixture_row(CUBE, BIG, 0.2)])
    out = tmp_path / "tuned"
    out.mkdir()
    old = write(out / "nvidia_h200.json", "the previous winners\n")

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # as if the export were stopped between write and rename

    with monkeypatch.context() as m:
        m.setattr(export.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export_winners(db, out)
    assert old.read_text() == "the previous winners\n" and os.listdir(out) == ["nvidia_h200.json"]
    export_winners(db, out)
    assert os.listdir(out) == ["nvidia_h200.json"] and json.loads(old.read_text())["gpu"] == H200
    assert (old.stat().st_mode & 0o777) == 0o644


def test_export_tunes_the_backward_from_bwd_or_fwd_bwd_rows(tmp_path: Path, on_h200: Path) -> None:
    """Backward tiles are timed in the sweep's "bwd" or "fwd+bwd" mode; either is exported
    as "bwd", the mode the launchers look up (from "bwd" rows where a shape has both: times
    of two modes do not compare). Where the op on its default tiles (config "") is the
    fastest, the entry says so (config null): the defaults stay, rather than the slower tile
    or a neighbouring shape's winner."""
    rows = [
        fixture_row(CUBE, SLOW, 0.9, mode="fwd+bwd"),
        fixture_row(CUBE, MID, 1.1, mode="fwd+bwd"),
        fixture_row(CUBE, None, 1.0, mode="fwd+bwd"),
        fixture_row(SMALL, None, 0.05, mode="fwd+bwd"),  # the defaults win here
        fixture_row(SMALL, MID, 0.06, mode="fwd+bwd"),
        fixture_row(SMALL, SLOW, 0.02, mode="bwd"),  # timed alone: these decide for SMALL
        fixture_row(SMALL, TINY, 0.03, mode="bwd"),
        fixture_row(CONV, None, 0.4, mode="bwd", op="conv2d"),
        fixture_row(CONV, TINY, 0.5, mode="bwd", op="conv2d"),
    ]
    (path,) = export_winners(make_db(tmp_path / "r.db", rows))
    doc = json.loads(path.read_text())
    got = [
        (e["op"], e["mode"], e["timed_as"], e["shape"], e["config"], e["median_ms"]) for e in doc["entries"]
    ]
    assert got == [
        ("conv2d", "bwd", "bwd", CONV, None, 0.4),
        ("dense", "bwd", "bwd", SMALL, SLOW.as_dict(), 0.02),
        ("dense", "bwd", "fwd+bwd", CUBE, SLOW.as_dict(), 0.9),
    ]
    assert tuned_config("dense", "bwd", BF16, CUBE) == SLOW
    assert tuned_config("dense", "bwd", BF16, {"M": 1000, "N": 1000, "K": 1000}) == SLOW
    assert tuned_config("conv2d", "bwd", BF16, {**CONV, "groups": 1}) is None  # the defaults won
    assert pick_dense_config(4096, 4096, 4096, BF16, "bwd", problem=CUBE) == SLOW
    with pytest.raises(ValueError, match="mode in"):
        tuned_config("dense", "fwd+bwd", BF16, CUBE)  # not a kernel's mode


def test_export_takes_the_backward_from_the_mode_that_timed_the_tiles(tmp_path: Path, on_h200: Path) -> None:
    """A record that merges a run of every mode (the defaults alone timed in "bwd", say) with
    gpu.sh's fwd,fwd+bwd sweep of a dozen tiles: the backward's winner comes from the mode
    that timed the tiles, not from the default-only "bwd" rows."""
    rows = [
        fixture_row(CUBE, None, 1.0, mode="bwd"),
        fixture_row(CUBE, None, 2.0, mode="fwd+bwd"),
        fixture_row(CUBE, MID, 1.0, mode="fwd+bwd"),
        fixture_row(CUBE, SLOW, 1.5, mode="fwd+bwd"),
    ]
    (path,) = export_winners(make_db(tmp_path / "r.db", rows))
    (entry,) = json.loads(path.read_text())["entries"]
    assert (entry["mode"], entry["timed_as"], entry["config"]) == ("bwd", "fwd+bwd", MID.as_dict())


def test_default_entries_keep_the_defaults_at_their_shape(on_h200: Path) -> None:
    """An entry with config null (the defaults won there) is the nearest shape's answer like
    any other: a launch near it keeps the defaults, one nearer another entry takes that."""
    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG), {**entry(SMALL, MID), "config": None}]))
    assert tuned_config("dense", "fwd", BF16, {"M": 900, "N": 1000, "K": 1000}) is None
    assert pick_dense_config(1024, 1024, 1024, BF16) == default_dense(1024, 1024, 1024)
    assert tuned_config("dense", "fwd", BF16, {"M": 8192, "N": 4096, "K": 4096}) == BIG


def test_default_tiles_only_turns_the_winners_off(on_h200: Path) -> None:
    """The sweep measures under default_tiles_only: no winners file, a forced tile still."""
    from yat_triton.tuning import default_tiles_only, forced_config

    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG
    with default_tiles_only():
        assert tuned_config("dense", "fwd", BF16, CUBE) is None
        assert pick_dense_config(4096, 4096, 4096, BF16) == default_dense(4096, 4096, 4096)
        with forced_config("dense", "fwd", MID):
            assert pick_dense_config(4096, 4096, 4096, BF16) == MID
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG


# ---------------------------------------------------------------------------------------
# Lookup


def test_exported_winners_load_back_by_nearest_shape(tmp_path: Path, on_h200: Path) -> None:
    rows = [
        fixture_row(CUBE, BIG, 0.21),
        fixture_row(SMALL, MID, 0.011),
        fixture_row({"M": 1024, "N": 4096, "K": 4096}, SLOW, 0.06),
        fixture_row(CONV, TINY, 0.5, op="conv2d"),
    ]
    assert export_winners(make_db(tmp_path / "r.db", rows)) == [on_h200 / "nvidia_h200.json"]  # the default
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG
    assert tuned_config("dense", "fwd", "bfloat16", {"M": 8192, "N": 4096, "K": 4096}) == BIG
    assert tuned_config("dense", "fwd", BF16, {"M": 900, "N": 1100, "K": 1000}) == MID
    # log distance, not linear: M=2500 is 1.29 octaves from 1024 and 0.71 from 4096
    assert tuned_config("dense", "fwd", BF16, {"M": 2500, "N": 4096, "K": 4096}) == BIG
    assert tuned_config("dense", "fwd", BF16, {"M": 1500, "N": 4096, "K": 4096}) == SLOW
    assert tuned_config("dense", "fwd", BF16, {"M": 2048, "N": 4096, "K": 4096}) == SLOW  # tie: first
    assert tuned_config("dense", "fwd", torch.float16, CUBE) is None  # other dtype
    assert tuned_config("dense", "bwd", BF16, CUBE) is None  # other mode
    assert tuned_config("conv2d", "fwd", BF16, {**CONV, "B": 16, "groups": 1}) == TINY
    assert yat_triton.tuned_config is tuned_config and yat_triton.use_tuned_configs is use_tuned_configs


def test_winners_ship_in_the_package_folder() -> None:
    assert tuning.TUNED_DIR == Path(yat_triton.__file__).resolve().parent / "tuned"
    assert (tuning.TUNED_DIR / "README.md").is_file()
    assert tuning.winners_filename("NVIDIA H200") == "nvidia_h200.json"
    assert tuning.winners_filename(A100) == "nvidia_a100_sxm4_80gb.json"


@pytest.mark.parametrize(
    ("gpu", "name"),
    [
        ("NVIDIA H200", "nvidia_h200"),
        ("NVIDIA A100-SXM4-80GB", "nvidia_a100_sxm4_80gb"),
        ("CPU (Triton interpreter)", "cpu_triton_interpreter"),
        ("  NVIDIA  H100 -- PCIe ", "nvidia_h100_pcie"),
        ("()", "unknown"),
    ],
)
def test_report_folders_and_winners_files_share_one_name(gpu: str, name: str) -> None:
    from autotune.report import slug

    assert tuning.gpu_slug(gpu) == slug(gpu) == name
    assert tuning.winners_filename(gpu) == name + ".json"


def test_picks_fit_the_tuned_tile_to_the_launch(on_h200: Path) -> None:
    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG), entry(CONV, BIG, op="conv2d")]))
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG
    # a small launch gets the nearest winner clipped to its dims, as the config prune does
    assert pick_dense_config(20, 40, 30, BF16) == TileConfig(32, 64, 32, 8, 8, 3, epilogue_split=4)
    assert pick_dense_config(4096, 4096, 4096, torch.float32) == dense_default_config(
        4096, 4096, 4096, 4, interpreting=tuning.INTERPRETING
    )
    assert pick_dense_config(64, 64, 64, BF16, "bwd") == default_dense(64, 64, 64)  # no bwd winners
    geo = conv_shape((32, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), 1)
    assert pick_conv_config(32 * 56 * 56, 64, 64, BF16, problem=geo) == TileConfig(
        128, 64, 64, 8, 8, 3, epilogue_split=4
    )
    # without the conv's own dims the implicit GEMM's {M, N, K} match no conv winner
    assert pick_conv_config(4096, 64, 64, BF16) == conv_default_config(
        4096, 64, 64, 2, interpreting=tuning.INTERPRETING
    )


def test_conv_lookup_shape_covers_the_dims_the_sweep_records() -> None:
    assert set(SHAPE_KEYS["conv2d"]) <= set(conv_shape((2, 8, 9, 9), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), 1))
    assert SHAPE_KEYS["dense"] == tuple(CUBE)
    # a conv1d runs as a height-1 conv2d: its own kernel size, stride and padding count
    assert conv_shape((4, 6, 1, 50), (12, 3, 1, 5), (1, 2), (0, 0, 2, 2), 2) == {
        "B": 4, "C_in": 6, "H": 1, "W": 50, "C_out": 12, "k": 5, "stride": 2, "padding": 2, "groups": 2,
    }  # fmt: skip


def test_launchers_run_the_tuned_configs(on_h200: Path, monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    """The dense forward and both backward GEMMs, the conv forward, dgrad and wgrad all ask the
    winners with their layer's shape, run the tuned tile, and stay right."""
    tile = TileConfig(16, 16, 16, 1, 4, 1)
    dense = {"M": 6, "N": 5, "K": 20}
    conv = {"B": 2, "C_in": 4, "H": 6, "W": 5, "C_out": 6, "k": 3, "stride": 1, "padding": 1}
    fp32 = dict(dtype="float32")
    write(on_h200 / "nvidia_h200.json", winners([
        entry(dense, tile, **fp32), entry(dense, tile, **fp32, mode="bwd"),
        entry(conv, tile, **fp32, op="conv2d"), entry(conv, tile, **fp32, op="conv2d", mode="bwd"),
    ]))  # fmt: skip
    asked: list[tuple[str, str, dict[str, int], TileConfig]] = []
    devices: list[object] = []

    def spy(op: str, real: Callable[..., TileConfig]) -> Callable[..., TileConfig]:
        def pick(
            M: int, N: int, K: int, dtype: torch.dtype, mode: str = "fwd", *, problem=None, **options
        ) -> TileConfig:
            cfg = real(M, N, K, dtype, mode, problem=problem, **options)
            asked.append((op, mode, dict(problem or {}), cfg))
            devices.append(options.get("device"))
            return cfg

        return pick

    monkeypatch.setattr(yat_triton.dense, "pick_dense_config", spy("dense", pick_dense_config))
    monkeypatch.setattr(yat_triton.conv, "pick_conv_config", spy("conv2d", pick_conv_config))
    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(6, 20, generator=gen), torch.randn(5, 20, generator=gen)
    xd, wd = (t.to(device).requires_grad_() for t in (x, w))
    y = yat_triton.yat_linear(xd, wd, eps=1e-3, precision="ieee")
    g = torch.randn(6, 5, generator=gen)
    y.backward(g.to(device))
    # the float64 oracle, and its gradients by autograd
    xr, wr = (t.detach().double().requires_grad_() for t in (x, w))
    y_ref = yat_dense_ref(xr, wr, None, None, 1e-3)
    y_ref.backward(g.double())
    assert_close(y, y_ref, torch.float32, reduction=20, what="y")
    assert_close(xd.grad, xr.grad, torch.float32, reduction=5, what="dx")
    assert_close(wd.grad, wr.grad, torch.float32, reduction=6, what="dW")
    xi, wi = torch.randn(2, 4, 6, 5, generator=gen), torch.randn(6, 4, 3, 3, generator=gen)
    xc, wc = (t.to(device).requires_grad_() for t in (xi, wi))
    yc = yat_triton.yat_conv2d(xc, wc, None, 1, 1, eps=1e-3, precision="ieee")
    gc = torch.randn(2, 6, 6, 5, generator=gen)
    yc.backward(gc.to(device))
    xir, wir = (t.detach().double().requires_grad_() for t in (xi, wi))
    yc_ref = yat_conv2d_ref(xir, wir, None, None, 1e-3, 1, 1)
    yc_ref.backward(gc.double())
    assert_close(yc, yc_ref, torch.float32, reduction=36, what="y")
    assert_close(xc.grad, xir.grad, torch.float32, reduction=6 * 9, what="conv dx")
    assert_close(wc.grad, wir.grad, torch.float32, reduction=2 * 6 * 5, what="conv dW")
    conv_geo = {**conv, "groups": 1}
    assert [(op, mode, shape) for op, mode, shape, _ in asked] == [
        ("dense", "fwd", {}),  # the forward looks up its own (M, N, K): the layer's
        ("dense", "bwd", dense), ("dense", "bwd", dense),
        ("conv2d", "fwd", conv_geo), ("conv2d", "bwd", conv_geo), ("conv2d", "bwd", conv_geo),
    ]  # fmt: skip
    assert all(cfg == tile for *_, cfg in asked)
    assert devices == [xd.device] * len(asked)  # the tensors' device names the winners file


def test_user_file_by_env_var_and_by_use_tuned_configs(
    tmp_path: Path, on_h200: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    env_file = write(tmp_path / "mine.json", winners([entry(CUBE, MID)]))
    call_file = write(tmp_path / "other.json", winners([entry(CUBE, TINY)]))
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG  # the per-GPU default file
    monkeypatch.setenv(ENV_VAR, str(env_file))
    assert tuned_config("dense", "fwd", BF16, CUBE) == MID
    use_tuned_configs(call_file)
    assert tuned_config("dense", "fwd", BF16, CUBE) == TINY  # the call wins over the env var
    use_tuned_configs(None)
    assert tuned_config("dense", "fwd", BF16, CUBE) == MID
    monkeypatch.delenv(ENV_VAR)
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG
    with pytest.raises(FileNotFoundError, match="no winners file at"):
        use_tuned_configs(tmp_path / "nope.json")
    with pytest.raises(TypeError, match="expects a path or None"):
        use_tuned_configs(42)  # type: ignore[arg-type]
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "typo.json"))
    with pytest.warns(TunedConfigWarning, match="no such winners file") as record:
        assert pick_dense_config(64, 64, 64, BF16) == default_dense(64, 64, 64)
    assert len(record) == 1


def test_winners_follow_the_tensors_device_not_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host with an H200 (cuda:0, current) and an A100 (cuda:1): a launch on cuda:1 takes
    the A100's winners (none here: the defaults), not the H200's, whose tile may not even
    fit an A100's shared memory."""
    names = {0: H200, 1: A100}
    monkeypatch.setattr(tuning, "INTERPRETING", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_name", lambda d=None: names[0 if d is None else torch.device(d).index]
    )
    monkeypatch.setattr(tuning, "TUNED_DIR", tmp_path / "tuned")
    write(tmp_path / "tuned" / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    h200, a100 = torch.device("cuda", 0), torch.device("cuda", 1)
    assert pick_dense_config(4096, 4096, 4096, BF16, device=a100) == default_dense(4096, 4096, 4096)
    assert pick_dense_config(4096, 4096, 4096, BF16, device=h200) == BIG
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG  # no device: the current one
    assert tuned_config("dense", "fwd", BF16, CUBE, a100) is None
    assert tuned_config("dense", "fwd", BF16, CUBE, "cuda:1") is None  # the public call's spellings
    assert (
        tuned_config("dense", "fwd", BF16, CUBE, 1) is None
        and tuned_config("dense", "fwd", BF16, CUBE, 0) == BIG
    )
    assert tuning.current_gpu(torch.device("cpu")) is None and tuning.current_gpu("cpu") is None


def test_every_exported_conv_winner_is_chosen_for_its_own_shape(tmp_path: Path, on_h200: Path) -> None:
    """Padding 0 and padding 1 are different shapes: each exported entry is the nearest to
    its own shape, whichever comes first in the file."""
    rows = [
        fixture_row({**CONV, "padding": 0}, TINY, 0.5, op="conv2d"),
        fixture_row({**CONV, "padding": 1}, MID, 0.5, op="conv2d"),
        fixture_row({**CONV, "padding": 2}, SLOW, 0.5, op="conv2d"),
    ]
    (path,) = export_winners(make_db(tmp_path / "r.db", rows))
    exported = json.loads(path.read_text())["entries"]
    assert len(exported) == 3
    for e in exported:
        assert tuned_config("conv2d", "fwd", BF16, {**e["shape"], "groups": 1}) == TileConfig(**e["config"])


def test_a_relative_winners_path_is_the_file_it_named(
    tmp_path: Path, on_h200: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """use_tuned_configs checks the file it is given: that file is read later, whatever the
    working directory is by then; $YAT_TRITON_CONFIGS is taken from the working directory of
    each lookup (and its memo follows it)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "w.json", winners([entry(CUBE, BIG)]))
    write(tmp_path / "b" / "w.json", winners([entry(CUBE, MID)]))
    monkeypatch.chdir(tmp_path / "a")
    use_tuned_configs("w.json")
    monkeypatch.chdir(tmp_path / "b")
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG
    use_tuned_configs(None)
    monkeypatch.setenv(ENV_VAR, "w.json")
    assert pick_dense_config(4096, 4096, 4096, BF16) == MID
    monkeypatch.chdir(tmp_path / "a")
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG


def test_a_reset_during_a_lookup_leaves_nothing_stale(on_h200: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup reading the file while another thread rewrites it and calls
    use_tuned_configs: what it read answers that one lookup, and is not kept."""
    path = write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    real = tuning._load

    def read_then_rewritten(*args: object) -> tuple[tuning.TunedEntry, ...]:
        entries = real(*args)
        write(path, winners([entry(CUBE, MID)]))
        use_tuned_configs(None)
        return entries

    monkeypatch.setattr(tuning, "_load", read_then_rewritten)
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG  # the racing lookup's own answer
    monkeypatch.setattr(tuning, "_load", real)
    assert tuned_config("dense", "fwd", BF16, CUBE) == MID
    assert pick_dense_config(4096, 4096, 4096, BF16) == MID


def test_files_are_read_once_until_the_lookup_is_reset(on_h200: Path) -> None:
    path = write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG
    path.unlink()
    assert tuned_config("dense", "fwd", BF16, {"M": 4000, "N": 4096, "K": 4096}) == BIG  # cached
    use_tuned_configs(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default file missing is silent
        assert tuned_config("dense", "fwd", BF16, CUBE) is None


def test_missing_default_file_is_silent(on_h200: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuned_config("dense", "fwd", BF16, CUBE) is None
        assert pick_dense_config(4096, 4096, 4096, BF16) == default_dense(4096, 4096, 4096)
        assert pick_conv_config(100, 64, 64, BF16, problem=CONV) == conv_default_config(
            100, 64, 64, 2, interpreting=tuning.INTERPRETING
        )


BAD_FILES = {
    "corrupt-json": ('{"format": "yat-triton-winners", "version": 1, "entr', "not valid JSON"),
    "not-an-object": ("[1, 2, 3]", "not a winners file"),
    "wrong-format": (winners([entry(CUBE, BIG)], format="flaggems-configs"), "not a winners file"),
    "wrong-version": (winners([entry(CUBE, BIG)], version=2), "version 2, this code reads version 1"),
    "version-as-text": (winners([entry(CUBE, BIG)], version="1"), "version '1'"),
    "foreign-gpu": (winners([entry(CUBE, BIG)], gpu="NVIDIA H200 NVL"), "tuned on 'NVIDIA H200 NVL'"),
    "entries-not-a-list": (winners({"dense": []}), "'entries' must be a list"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("content, match", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_broken_files_fall_back_to_defaults_with_one_warning(
    on_h200: Path, content: object, match: str
) -> None:
    write(on_h200 / "nvidia_h200.json", content)
    with pytest.warns(TunedConfigWarning, match=match) as record:
        assert pick_dense_config(4096, 4096, 4096, BF16) == default_dense(4096, 4096, 4096)
    assert len(record) == 1 and "nvidia_h200.json" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per file per process
        assert tuned_config("dense", "fwd", BF16, SMALL) is None
        use_tuned_configs(None)  # even when the file is read again
        assert tuned_config("dense", "fwd", BF16, CUBE) is None


def test_unreadable_file_falls_back_with_one_warning(
    tmp_path: Path, on_h200: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"gpu": "\xff"}')
    use_tuned_configs(path)
    with pytest.warns(TunedConfigWarning, match="unreadable") as record:
        assert tuned_config("dense", "fwd", BF16, CUBE) is None
    assert len(record) == 1
    use_tuned_configs(None)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # a folder, not a file
    with pytest.warns(TunedConfigWarning, match="unreadable") as record:
        assert tuned_config("dense", "fwd", BF16, CUBE) is None
    assert len(record) == 1


BAD_ENTRIES = {
    "block-not-pow2": entry(SMALL, {**BIG.as_dict(), "block_m": 96}),
    "block-below-16": entry(SMALL, {**BIG.as_dict(), "block_k": 8}),
    "warps-not-pow2": entry(SMALL, {**BIG.as_dict(), "num_warps": 6}),
    "stages-zero": entry(SMALL, {**BIG.as_dict(), "num_stages": 0}),
    "bool-as-int": entry(SMALL, {**BIG.as_dict(), "group_m": True}),
    "int-as-bool": entry(SMALL, {**BIG.as_dict(), "norms_in_loop": 1}),
    "tma-not-bool": entry(SMALL, {**BIG.as_dict(), "tma": "yes"}),
    "split-not-bool": entry(SMALL, {**BIG.as_dict(), "split_tail": 1}),
    "unknown-field": entry(SMALL, {**BIG.as_dict(), "BLOCK_M": 128}),
    "missing-field": entry(SMALL, {"block_m": 64, "block_n": 64}),
    "config-not-object": entry(SMALL, [128, 128, 64]),
    "block-too-big": entry(SMALL, {**BIG.as_dict(), "block_n": 2**40}),
    "warps-too-many": entry(SMALL, {**BIG.as_dict(), "num_warps": 64}),
    "shape-not-int": entry({"M": 1024.0, "N": 1024, "K": 1024}, BIG),
    "shape-too-big": entry({"M": 10**400, "N": 1024, "K": 1024}, BIG),  # log2 of it: a math error
    "unknown-op": entry(SMALL, BIG, op="matmul"),
    "unknown-dtype": entry(SMALL, BIG, dtype="int8"),
    "sweep-mode": entry(SMALL, BIG, mode="fwd+bwd"),
    "no-config": {k: v for k, v in entry(SMALL, BIG).items() if k != "config"},
}


@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_invalid_entries_are_skipped_with_one_warning(on_h200: Path, bad: dict[str, object]) -> None:
    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, MID), bad, bad, "not an entry"]))
    with pytest.warns(TunedConfigWarning, match=r"skipped 3 of 4 entries .*entry 1: ") as record:
        # the near-by bad entry is gone, the valid one still serves
        assert tuned_config("dense", "fwd", BF16, SMALL) == MID
    assert len(record) == 1


def test_nothing_is_tuned_on_the_cpu_or_under_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_tuned_configs(write(tmp_path / "w.json", winners([entry(CUBE, BIG)])))
    assert (tuning.current_gpu() is None) == (INTERPRETING or not torch.cuda.is_available())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: H200)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU only
    assert tuning.current_gpu() is None
    assert pick_dense_config(4096, 4096, 4096, BF16) == default_dense(4096, 4096, 4096)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tuning, "INTERPRETING", True)  # a CUDA machine running the interpreter
    assert tuning.current_gpu() is None
    assert pick_dense_config(4096, 4096, 4096, BF16) == default_dense(4096, 4096, 4096)
    monkeypatch.setattr(tuning, "INTERPRETING", False)  # the GPU branch, without a GPU
    assert tuning.current_gpu() == H200
    assert pick_dense_config(4096, 4096, 4096, BF16) == BIG


def test_symbolic_dims_take_the_defaults(on_h200: Path) -> None:
    """Under torch.compile with dynamic shapes the dims are SymInts: no tuned lookup (which
    would guard on every size), the defaults as before, and no error."""
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    write(on_h200 / "nvidia_h200.json", winners([entry(CUBE, BIG)]))
    M = ShapeEnv().create_unbacked_symint()
    assert tuned_config("dense", "fwd", BF16, {"M": M, "N": 4096, "K": 4096}) is None
    assert tuned_config("dense", "fwd", BF16, CUBE) == BIG


def test_a_remembered_pick_follows_what_it_depends_on(
    on_h200: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launchers' picks are memoized: the same question asked again after any of its
    inputs changed (env var, user file, per-GPU folder, device, forced and default-only
    blocks) gets the new answer, and the old one once the change is undone."""
    from yat_triton.tuning import default_tiles_only, forced_config

    def pick() -> TileConfig:
        return pick_dense_config(4096, 4096, 4096, BF16)

    default = default_dense(4096, 4096, 4096)
    assert pick() == default  # no winners file for this GPU
    monkeypatch.setenv(ENV_VAR, str(write(tmp_path / "env.json", winners([entry(CUBE, BIG)]))))
    assert pick() == BIG
    with forced_config("dense", "fwd", SLOW):
        assert pick() == SLOW
        with default_tiles_only():
            assert pick() == SLOW  # a forced tile still applies
    with default_tiles_only():
        assert pick() == default
    assert pick() == BIG
    use_tuned_configs(write(tmp_path / "user.json", winners([entry(CUBE, MID)])))
    assert pick() == MID
    use_tuned_configs(write(tmp_path / "user.json", winners([entry(CUBE, TINY)])))  # read again
    assert pick() == TINY
    use_tuned_configs(None)
    monkeypatch.delenv(ENV_VAR)
    assert pick() == default
    other = tmp_path / "elsewhere"
    write(other / "nvidia_h200.json", winners([entry(CUBE, SLOW)]))
    monkeypatch.setattr(tuning, "TUNED_DIR", other)
    assert pick() == SLOW
    monkeypatch.setattr(tuning, "current_gpu", lambda device=None: None)  # no CUDA device
    assert pick() == default
    monkeypatch.setattr(tuning, "current_gpu", lambda device=None: H200)
    assert pick() == SLOW
    assert pick_dense_config(4096, 4096, 4096, BF16, "bwd") == default  # no bwd entry


def test_lookup_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="op must be in"):
        tuned_config("matmul", "fwd", BF16, CUBE)
    with pytest.raises(ValueError, match="mode in"):
        tuned_config("dense", "forward", BF16, CUBE)
    with pytest.raises(TypeError, match="shape must map dim names to ints"):
        tuned_config("dense", "fwd", BF16, {"M": 1.5})


def test_forced_config_reaches_the_backward_launch() -> None:
    """forced_config (the sweep's way to time one backward tile) wins over tuned and default
    configs inside its block, fitted to the launch, and is gone after it."""
    from kernels._common import TileConfig
    from yat_triton.dense import plan_bwd_gemm
    from yat_triton.tuning import forced_config

    a, b = torch.empty((40, 24), device="meta"), torch.empty((24, 72), device="meta")
    e, v = torch.empty((40, 72), device="meta"), torch.empty((40,), device="meta")
    forced = TileConfig(128, 32, 16, 4, 8, 3)
    with forced_config("dense", "bwd", forced):
        _, (call,) = plan_bwd_gemm(a, b, e, v, "ieee")
    assert (call.kwargs["BLOCK_M"], call.kwargs["BLOCK_N"], call.kwargs["BLOCK_K"]) == (64, 32, 16)
    assert call.kwargs["num_warps"] == 8 and call.kwargs["GROUP_M"] == 4
    _, (after,) = plan_bwd_gemm(a, b, e, v, "ieee")
    assert after.kwargs["GROUP_M"] == 8  # the default again
