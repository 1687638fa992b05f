"""The sweep's tile search (`autotune.search`): neighbours, the guided rounds, the fwd+bwd
shortcut and the cap, on synthetic timings; then a guided sweep through the interpreter."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from autotune import cli, search, sweep
from autotune.db import ResultsDB, canonical_json
from kernels._common import TileConfig, rank_configs
from kernels.dense import dense_config_space, prune_dense_configs


def grid(stages: tuple[int, ...] = (3, 4, 5)) -> list[TileConfig]:
    return [
        TileConfig(m, n, 64, num_warps=4, num_stages=s)
        for m, n, s in itertools.product((64, 128, 256), (64, 128), stages)
    ]


def test_neighbours_move_one_knob_a_step_first() -> None:
    tile = TileConfig(128, 64, 64, num_warps=4, num_stages=4)
    found = search.neighbours(tile, grid())
    one = {(c.block_m, c.block_n, c.num_stages) for c in found[:5]}
    assert one == {(64, 64, 4), (256, 64, 4), (128, 128, 4), (128, 64, 3), (128, 64, 5)}
    two = {(c.block_m, c.block_n, c.num_stages) for c in found[5:]}
    assert (256, 128, 4) in two and (64, 64, 3) in two and (128, 128, 5) in two
    assert tile not in found
    small = TileConfig(64, 64, 64, num_warps=4, num_stages=4)  # 64 -> 256 is two steps
    assert {c.block_m for c in search.neighbours(small, grid(), max_moves=1)} == {64, 128}
    assert (256, 128, 5) not in one | two  # three knobs
    assert len(search.neighbours(tile, grid(), max_moves=1)) == 5


def test_neighbours_step_over_values_the_space_lacks() -> None:
    """A step goes to the next value the space holds: stages 3 -> 5 where 4 is absent, and
    a default tile outside the space still has neighbours; a flag steps by flipping."""
    space = grid(stages=(3, 5))
    tile = TileConfig(128, 64, 64, num_warps=4, num_stages=4)  # not in the space
    assert tile not in space
    one = search.neighbours(tile, space, max_moves=1)
    assert {(c.block_m, c.block_n, c.num_stages) for c in one} == {(128, 64, 3), (128, 64, 5)}
    flipped = replace(space[0], tma=True)
    assert search.neighbours(space[0], [*space, flipped], max_moves=1)[-1] == flipped


def test_neighbours_keep_the_ranked_order() -> None:
    space = grid()
    ranked = list(reversed(space))
    tile = TileConfig(128, 64, 64, num_warps=4, num_stages=4)
    ones = search.neighbours(tile, ranked, max_moves=1)
    assert ones == [c for c in ranked if c in ones]


def _run(batches, times: dict[TileConfig, float], timed: dict[TileConfig, float]) -> list[list]:
    """Drive a search as the sweep does: time each batch (here: look its tiles up) before
    asking for the next."""
    out = []
    for batch in batches:
        out.append(batch)
        for c in batch:
            if c is not None and c in times:
                timed[c] = times[c]
    return out


def core_space() -> list[TileConfig]:
    """The ranked bf16 space of the 4096 cube: what the guided search walks."""
    M = N = K = 4096
    kept = prune_dense_configs(dense_config_space(), M, N, K, 2)
    return rank_configs(kept, M, N, K, 2)


def test_guided_search_walks_to_a_faster_tile_outside_the_seeds() -> None:
    """Seeds from the ranking, then rounds of neighbours of the fastest: a tile two rounds of
    one-knob steps away from the best seed is found, within 1 + 8 + 2 * 6 tiles."""
    ranked = core_space()
    default = ranked[20]
    seeds = ranked[:8]
    start = seeds[3]
    proposed = {default, *seeds}
    round1 = [c for c in search.neighbours(start, ranked) if c not in proposed][: search.REFINE]
    hop = round1[-1]
    target = next(c for c in search.neighbours(hop, ranked) if c not in proposed | set(round1))
    # every tile 1.0 ms, the walk's steps faster: start 0.9, hop 0.8, target 0.5
    times = dict.fromkeys(ranked, 1.0) | {default: 1.0, start: 0.9, hop: 0.8, target: 0.5}
    timed: dict[TileConfig, float] = {}
    batches = _run(search.guided([default], ranked, lambda: dict(timed), None), times, timed)
    assert batches[0] == [default, *seeds]
    assert min(timed, key=timed.get) == target
    assert sum(map(len, batches)) <= 1 + search.SEEDS + search.ROUNDS * search.REFINE
    flat = [c for b in batches for c in b]
    assert len(flat) == len(set(flat))  # no tile proposed twice


def test_guided_search_stops_when_a_round_finds_nothing_faster() -> None:
    ranked = core_space()
    times = dict.fromkeys(ranked, 1.0) | {ranked[0]: 0.5}
    timed: dict[TileConfig, float] = {}
    batches = _run(search.guided([None], ranked, lambda: dict(timed), None), times, timed)
    assert len(batches) == 2 and batches[0][0] is None  # seeds, one round around ranked[0]
    round1 = [c for c in search.neighbours(ranked[0], ranked) if c not in batches[0]]
    assert batches[1] == round1[: search.REFINE]


def test_guided_search_keeps_to_its_cap_and_repeats_itself_on_resume() -> None:
    ranked = core_space()
    times = {c: 1.0 + i / 1000 for i, c in enumerate(reversed(ranked))}  # the last ranked fastest
    timed: dict[TileConfig, float] = {}
    capped = _run(search.guided([None], ranked, lambda: dict(timed), 12), times, timed)
    assert sum(map(len, capped)) == 12 and len(capped[0]) == 9
    assert len(_run(search.guided([None], ranked, lambda: dict(timed), 3), times, {})[0]) == 3
    # resume: the database already holds the first run's times; the same tiles come back
    again = _run(search.guided([None], ranked, lambda: dict(timed), 12), times, dict(timed))
    assert again == capped


def _run_pruned(batches, times: dict, timed: dict, drop: set, dropped: set) -> list[list]:
    """`_run` past a static prune: a batch's tiles in `drop` are recorded in `dropped`, not timed."""
    out = []
    for batch in batches:
        out.append(batch)
        dropped.update(c for c in batch if c in drop)
        for c in batch:
            if c is not None and c not in drop and c in times:
                timed[c] = times[c]
    return out


def test_guided_search_proposes_more_seeds_in_place_of_those_the_prune_drops() -> None:
    """Seeds the static prune drops are not timed and do not count: the next ranked tiles
    come in their place (and in place of those of them it drops), until 8 seeds run; a
    round's dropped neighbours make way for the next neighbours; the cap counts the tiles
    that run; a rerun proposes the same batches."""
    ranked = core_space()
    hood = [c for c in search.neighbours(ranked[0], ranked) if c not in ranked[:11]]
    # two seeds, the first tile in their place, a neighbour of the fastest seed
    drop = {ranked[1], ranked[4], ranked[8], hood[0]}
    times = dict.fromkeys(ranked, 1.0) | {ranked[0]: 0.5}

    def walk(limit: int | None, timed: dict, dropped: set) -> list[list]:
        batches = search.guided([None], ranked, lambda: dict(timed), limit, dropped=lambda: dropped)
        return _run_pruned(batches, times, timed, drop, dropped)

    timed: dict[TileConfig, float] = {}
    dropped: set[TileConfig] = set()
    batches = walk(None, timed, dropped)
    assert batches[0] == [None, *ranked[:8]]
    assert batches[1] == ranked[8:10]  # in place of ranked[1] and ranked[4]
    assert batches[2] == [ranked[10]]  # in place of ranked[8]
    # a refill's prune also checks as many tiles as it holds, those the stage proposes next
    assert batches[0].ahead == [] and batches[1].ahead == ranked[10:12] and batches[2].ahead == [ranked[11]]
    seeds = [c for b in batches[:3] for c in b if c is not None and c not in drop]
    assert len(seeds) == search.SEEDS
    assert batches[3] == hood[: search.REFINE] and batches[4] == [hood[search.REFINE]]
    assert len(timed) == search.SEEDS + search.REFINE  # (no round found anything faster)
    flat = [c for b in batches for c in b]
    assert len(flat) == len(set(flat))
    assert walk(None, dict(timed), set(dropped)) == batches  # a rerun, on the database's rows
    # the cap counts the tiles that run: 12, dropped ones past it
    capped = walk(12, {}, set())
    ran = [c for b in capped for c in b if c not in drop]
    assert len(ran) == 12 and sum(map(len, capped)) == 12 + len(drop)


def test_a_stage_proposes_at_most_refill_times_the_tiles_it_wants() -> None:
    """Where the prune drops everything, a stage stops after REFILL times its tiles (each a
    static compile), and the search after it: nothing ran to step from."""
    ranked = core_space()
    dropped: set[TileConfig] = set()
    batches = _run_pruned(
        search.guided([None], ranked, dict, None, dropped=lambda: dropped), {}, {}, set(ranked), dropped
    )
    assert sum(map(len, batches)) == search.REFILL * (1 + search.SEEDS)
    assert batches[0] == [None, *ranked[:8]] and batches[1] == ranked[8:16]  # (None always runs)
    assert batches[1].ahead == [ranked[16]] and batches[-1].ahead == []  # (within the cap)


def test_fwd_bwd_mode_takes_the_fastest_backward_tiles() -> None:
    ranked = core_space()
    bwd = {ranked[5]: 2.0, ranked[1]: 1.0, ranked[7]: 3.0, ranked[2]: 1.5}
    (batch,) = search.from_bwd([None], bwd, None)
    assert batch == [None, ranked[1], ranked[2], ranked[5]]
    (capped,) = search.from_bwd([None], bwd, 2)
    assert capped == [None, ranked[1]]


def test_exhaustive_search_takes_every_tile_in_ranked_order() -> None:
    ranked = core_space()
    default = ranked[3]
    (batch,) = search.exhaustive([default], ranked, None)
    assert batch == [default, *(c for c in ranked if c != default)]
    (capped,) = search.exhaustive([default], ranked, 4)
    assert capped == [default, *ranked[:3]]
    # with a cap: the next ranked tiles in place of those the prune drops
    dropped: set[TileConfig] = set()
    drop = {ranked[0], ranked[2]}
    batches = _run_pruned(search.exhaustive([default], ranked, 4, lambda: dropped), {}, {}, drop, dropped)
    assert batches == [[default, *ranked[:3]], [ranked[4], ranked[5]]]


TINY = """
[[dense]]
M = 20
N = 12
K = 16
"""


def test_guided_sweep_through_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A guided sweep (a small search: 2 seeds, rounds of 2) times exactly the tiles its
    batches hold: the default and the 2 best ranked, then the untried neighbours of the
    fastest of those the database holds; fwd+bwd times the op and bwd's fastest tile; the
    run records its search and says where its time went; a rerun times nothing."""
    guided = search.guided
    batches: dict[str, list[list]] = {}

    def spy(first, ranked, timed, limit, **kw):  # noqa: ANN001, ANN003, ANN202
        mode = "fwd" if first[0] is not None else "bwd"
        for batch in guided(first, ranked, timed, limit, seeds=2, refine=2):
            batches.setdefault(mode, []).append(batch)
            yield batch

    monkeypatch.setattr(search, "guided", spy)
    monkeypatch.setattr(search, "FROM_BWD", 1)
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    db_path = tmp_path / "r.db"
    argv = ["sweep", "--suite", str(suite), "--db", str(db_path), "--op", "dense",
            "--mode", "fwd,bwd,fwd+bwd", "--dtype", "float32", "--max-configs", "7", "--quiet",
            "--compile-mode", "none"]  # fmt: skip
    assert cli.main(argv) == 0
    spent = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep time: "))
    assert all(f"{what} " in spent for what in ("yat_triton", "linear+relu", "eager_ref", "setup")), spent
    with ResultsDB(db_path) as db:  # (no compile-based prune off a GPU: every proposed tile runs)
        rows = [r for r in db.query(provider="yat_triton") if r.status != "pruned"]
        (run,) = db.runs()
    assert "search=guided" in run.args.split()
    shape = {"M": 20, "N": 12, "K": 16}
    for mode in ("fwd", "bwd"):
        timed = {r.config: r.median_ms for r in rows if r.mode == mode}
        proposed = batches[mode]
        key = {c: "" if c is None else canonical_json(c.as_dict()) for b in proposed for c in b}
        assert sorted(timed) == sorted(key.values()), mode  # what the batches held, no more
        assert len(proposed) >= 2 and sum(map(len, proposed)) <= 7, mode  # at least one round
        first, ranked, _ = sweep.task_tiles(sweep.Task("dense", shape, "float32", mode))
        assert proposed[0] == [*first, *[c for c in ranked if c not in first][:2]]
        seen = list(proposed[0])
        for batch in proposed[1:]:  # the neighbours of the fastest tile timed before it
            base = min((c for c in seen if c is not None), key=lambda c: (timed[key[c]], c.name))
            assert batch == [c for c in search.neighbours(base, ranked) if c not in seen][:2], mode
            seen += batch
    bwd = {r.config: r.median_ms for r in rows if r.mode == "bwd" and r.status == "ok" and r.config}
    both = [r.config for r in rows if r.mode == "fwd+bwd"]
    assert sorted(both) == sorted(["", min(bwd, key=bwd.get)])
    assert cli.main(argv) == 0  # resume: nothing left to time
    with ResultsDB(db_path) as db:
        assert db.runs()[-1].rows_added == 0


def test_fwd_bwd_takes_bwd_tiles_only_after_bwd_in_the_same_process() -> None:
    """The shortcut depends on this run alone (a rerun must pick the same tiles): bwd listed
    before fwd+bwd and no shard, which could leave bwd to another process."""
    assert sweep.fwd_bwd_after_bwd(["fwd", "bwd", "fwd+bwd"], None)
    assert not sweep.fwd_bwd_after_bwd(["fwd+bwd", "bwd"], None)
    assert not sweep.fwd_bwd_after_bwd(["fwd", "fwd+bwd"], None)
    assert not sweep.fwd_bwd_after_bwd(["bwd", "fwd+bwd"], "1/2")


def test_sweep_plan_counts_the_tiles_without_running_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sweep --plan`: the core suite's 60 problems take at most 21 tiles each in fwd and bwd
    and 4 in fwd+bwd under the guided search, every fitted tile under the exhaustive one;
    no database is made."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", "--suite", "core", "--plan"]) == 0
    guided = capsys.readouterr().out.splitlines()[-1]
    searched = 1 + search.SEEDS + search.ROUNDS * search.REFINE
    # fwd+bwd takes bwd's fastest tiles where bwd found a correct one, else searches too
    usual, most = 20 * (2 * searched + 1 + search.FROM_BWD), 20 * 3 * searched
    assert guided.startswith(
        f"60 problems, guided search: {most} tile timings at most ({usual} where each bwd"
    )
    fit = int(guided.split(" of ")[1].split()[0])
    assert fit > 15_000  # (~17,500: fp32's FMA dot leaves out the tiles that spill, `fma_spills`)
    argv = ["sweep", "--suite", "core", "--plan", "--search", "exhaustive", "--mode", "fwd,bwd"]
    assert cli.main(argv) == 0
    exhaustive = capsys.readouterr().out.splitlines()[-1]
    assert exhaustive.startswith("40 problems, exhaustive search: ")
    most, fit = int(exhaustive.split(": ")[1].split()[0]), int(exhaustive.split(" of ")[1].split()[0])
    assert fit <= most <= fit + 40  # every tile, and the default where the space lacks it
    assert not list(tmp_path.iterdir())


def test_fwd_bwd_listed_first_searches_on_its_own(tmp_path: Path) -> None:
    """fwd+bwd listed before bwd takes its own search even where the database already holds
    bwd rows (an earlier run's: this run's bwd comes after it), so that a rerun, which finds
    this run's bwd rows, picks the same tiles and times nothing new."""
    import sqlite3

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    db_path = tmp_path / "r.db"
    common = ["--suite", str(suite), "--db", str(db_path), "--op", "dense", "--dtype", "float32", "--quiet",
              "--compile-mode", "none"]  # fmt: skip
    assert cli.main(["sweep", *common, "--mode", "bwd", "--max-configs", "5"]) == 0
    _, ranked, _ = sweep.task_tiles(sweep.Task("dense", {"M": 20, "N": 12, "K": 16}, "float32", "fwd+bwd"))
    seeds = [canonical_json(c.as_dict()) for c in ranked[:2]]
    with sqlite3.connect(db_path) as c:  # the guided seeds the slowest bwd tiles
        c.execute("UPDATE results SET median_ms = CASE WHEN config IN (?, ?) THEN 9.0 ELSE 1.0 END "
                  "WHERE mode = 'bwd' AND provider = 'yat_triton' AND status = 'ok'", seeds)  # fmt: skip
    argv = ["sweep", *common, "--mode", "fwd+bwd,bwd", "--max-configs", "3"]
    assert cli.main(argv) == 0
    with ResultsDB(db_path) as db:
        both = {r.config for r in db.query(mode="fwd+bwd", provider="yat_triton") if r.status != "pruned"}
    assert both == {"", *seeds}
    assert cli.main(argv) == 0
    with ResultsDB(db_path) as db:
        assert db.runs()[-1].rows_added == 0
