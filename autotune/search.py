"""Which tiles a sweep times for one problem: a guided search (the default) or all of them.

The fitted search space holds hundreds of tiles a problem (the dense forward ~1,000 in
bf16; the core suite ~17,500 over its modes and dtypes: `yat-autotune sweep --suite core
--plan --search exhaustive`), far more than a sweep can time within the SPEC's 5 minutes
for the core suite: timing alone takes an estimated (not yet measured) ~0.1-0.3 s a tile
on a GPU (capture, `do_bench`'s 25 ms of warm-up and 100 ms of repetitions, the
correctness check). The guided search times, per problem:

1. the tile the op ships with (the default, or the op on its defaults in the backward
   modes), then the first `SEEDS` tiles of the static ranking (`rank_configs`, which
   spreads its first picks over tile shapes and kernels);
2. up to `ROUNDS` rounds of the untried `neighbours` of the fastest correct tile so far
   (one knob moved a step: a block size, the stages, the warps, the group, the epilogue
   split, a kernel flag; then two knobs), `REFINE` a round, stopping early when a round
   finds nothing faster.

That is at most 1 + 8 + 2 * 6 = 21 tiles timed a problem. A tile the sweep's static prune
drops (on a GPU: it spills, overflows shared memory or has its wgmma serialized on sm_90;
`sweep.StaticPrune`) is not timed and does not count: the stage that proposed it proposes
the next of its candidates in its place (ranked tiles for the seeds, neighbours in a
round), up to `REFILL` times the tiles the stage wants (a refill's prune checks as many
tiles after it, in parallel, so that a second refill finds their verdicts: `Batch`), so
that a dtype whose space the prune thins still starts its rounds from up to 8 seeds that
run. That costs compiles: over the core suite's fp32 problems (FMA dots), the first stages
propose 407 tiles, prune 153 and keep 254, 240 distinct compiles in 23 rounds one after the
other (28 without the look-ahead, an ad hoc count), 136.3 and 145.9 s on 2 cores (`TRITON_CACHE_DIR=$(mktemp
-d) python -m autotune.inspect --prune core --dtype float32 --processes 0`, Triton 3.6);
the first batches alone (ad hoc, REFILL = 1) keep 179 of 270, 140 compiles, in 77.5 s.
bf16 proposes 277 tiles and keeps 270, 183 compiles, 74.5 s. In `fwd+bwd` mode, which times the
same backward tiles as `bwd` with the forward on its default tile, a run that sweeps the
problem's `bwd` mode first (in the same process: `sweep.fwd_bwd_after_bwd`) times the op as
it ships and the `FROM_BWD` fastest correct tiles it found there (a guided search where
none came out correct, or where `bwd` is not swept first). `exhaustive` times every tile,
in ranked order (past the prune: with a cap, the next ranked tiles in place of those it
drops). Both take `--max-configs` as a cap on the tiles a problem times, and both
resume: a tile already in the database is not timed again, and a rerun of the same sweep
picks the same tiles (the guided search steps from the tiles it proposed itself, whose
times and prune verdicts it reads from the database).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Sequence

from kernels._common import TileConfig

SEARCHES = ("guided", "exhaustive")
SEEDS = 8
REFINE = 6
ROUNDS = 2
FROM_BWD = 3
REFILL = 2

_FIELDS = tuple(f.name for f in dataclasses.fields(TileConfig))

# A tile to time; None: the op as it ships (the backward modes' first row)
Tile = TileConfig | None


class Batch(list):  # type: ignore[type-arg]
    """Tiles to time, in order. `ahead`: the tiles the same stage would propose next if the
    prune drops some of these, for the prune to check along with them (each a compile, run
    in parallel with the batch's instead of one refill after another; set on a stage's
    refills, where drops are known to happen, as many as the refill holds)."""

    def __init__(self, tiles: Sequence[Tile], ahead: Sequence[TileConfig] = ()) -> None:
        super().__init__(tiles)
        self.ahead = list(ahead)


Batches = Iterator[Batch]


def neighbours(tile: TileConfig, space: Sequence[TileConfig], *, max_moves: int = 2) -> list[TileConfig]:
    """The tiles of `space` one step away from `tile` on at most `max_moves` knobs, fewest
    moves first, then in `space`'s order (ranked: most promising first).

    A step on a numeric knob (block sizes, group, warps, stages, epilogue split) goes to the
    next value the space holds for it, up or down; a flag (norms in the loop, TMA, warp
    specialization) steps by flipping. `tile` need not be in the space (a default tile)."""
    values = {f: sorted({getattr(c, f) for c in space}) for f in _FIELDS}

    def steps(field: str, a: object, b: object) -> int:
        if a == b:
            return 0
        if isinstance(a, bool):
            return 1
        lo, hi = sorted((a, b))  # type: ignore[type-var]
        return 1 + sum(lo < v < hi for v in values[field])

    by_moves: dict[int, list[TileConfig]] = {}
    for c in space:
        moved = [steps(f, getattr(tile, f), getattr(c, f)) for f in _FIELDS]
        changed = [s for s in moved if s]
        if changed and max(changed) == 1 and len(changed) <= max_moves:
            by_moves.setdefault(len(changed), []).append(c)
    return [c for n in sorted(by_moves) for c in by_moves[n]]


def nothing_dropped() -> set[TileConfig]:
    """No tile dropped (a search driven without a static prune)."""
    return set()


def _stage(
    candidates: Sequence[Tile],
    want: int,
    cap: int,
    proposed: set[Tile],
    dropped: Callable[[], set[TileConfig]],
) -> Generator[list[Tile], None, int]:
    """The batches of one stage of a search: `candidates` not yet `proposed`, in order,
    until `want` of this stage's are not `dropped()` (the static prune's, read after each
    batch is timed), the candidates run out or `cap` were proposed. Returns how many of
    its tiles were kept."""
    todo = [c for c in candidates if c not in proposed]
    mine: list[Tile] = []
    while True:
        kept = len(mine) - len(dropped().intersection(mine)) if mine else 0
        n = min(want - kept, cap - len(mine), len(todo))
        if n <= 0:
            return kept
        batch, todo = todo[:n], todo[n:]
        ahead = [c for c in todo[: min(n, cap - len(mine) - n)] if c is not None] if mine else []
        mine += batch
        proposed.update(batch)
        yield Batch(batch, ahead)


def exhaustive(
    first: Sequence[Tile],
    ranked: Sequence[TileConfig],
    limit: int | None,
    dropped: Callable[[], set[TileConfig]] = nothing_dropped,
) -> Batches:
    """`first`, then every ranked tile; with a `limit`, the first `limit` of them that the
    prune leaves (a batch, then the next ones in place of those `dropped()`)."""
    tiles = [*first, *(c for c in ranked if c not in first)]
    yield from _stage(tiles, len(tiles) if limit is None else limit, len(tiles), set(), dropped)


def guided(
    first: Sequence[Tile],
    ranked: Sequence[TileConfig],
    timed: Callable[[], dict[TileConfig, float]],
    limit: int | None,
    *,
    dropped: Callable[[], set[TileConfig]] = nothing_dropped,
    seeds: int = SEEDS,
    refine: int = REFINE,
    rounds: int = ROUNDS,
) -> Batches:
    """The guided search's batches (module docstring). The caller times each batch before
    asking for the next (tiles already timed it skips); `timed()` then returns the median
    ms of every correct tile of the problem timed so far (this run's and earlier runs'),
    `dropped()` the tiles the static prune dropped. `limit` caps the tiles of all batches
    together that are not dropped."""
    left = limit if limit is not None else len(first) + seeds + rounds * refine
    proposed: set[Tile] = set()
    want = min(left, len(first) + seeds)
    candidates = [*first, *(c for c in ranked if c not in first)]
    left -= yield from _stage(candidates, want, REFILL * want, proposed, dropped)
    best: TileConfig | None = None
    for _ in range(rounds):
        # the tiles this search proposed alone: a rerun, whose database already holds the
        # later rounds' times, then walks the same steps (a resume times nothing again)
        times = {c: t for c, t in timed().items() if c in proposed}
        if not times or left <= 0:
            return
        fastest = min(times, key=lambda c: (times[c], c.name))
        if fastest == best:  # the last round found nothing faster
            return
        best = fastest
        want = min(left, refine)
        left -= yield from _stage(neighbours(fastest, ranked), want, REFILL * want, proposed, dropped)


def from_bwd(first: Sequence[Tile], bwd_times: dict[TileConfig, float], limit: int | None) -> Batches:
    """`fwd+bwd` mode after a `bwd` search of the problem: `first`, then the `FROM_BWD`
    tiles fastest there."""
    fastest = sorted(bwd_times, key=lambda c: (bwd_times[c], c.name))[:FROM_BWD]
    yield Batch([*first, *(c for c in fastest if c not in first)][:limit])


def most(
    search: str, first: Sequence[Tile], ranked: Sequence[TileConfig], limit: int | None, *, after_bwd: bool
) -> tuple[int, int]:
    """The most tiles `search` times for a problem, and the most where `after_bwd` (a
    fwd+bwd problem whose bwd mode the run sweeps first) holds its promise: `from_bwd` then
    takes bwd's fastest tiles, unless no bwd tile came out correct (a guided search then)."""
    every = len(first) + sum(c not in first for c in ranked)
    cap = min(every, limit if limit is not None else every)
    if search == "exhaustive":
        return cap, cap
    bound = min(cap, len(first) + SEEDS + ROUNDS * REFINE)
    return bound, min(cap, len(first) + FROM_BWD) if after_bwd else bound
