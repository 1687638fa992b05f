"""Which tiles a sweep times for one problem: a guided search (the default) or all of them.

The fitted search space holds hundreds of tiles a problem (the dense forward ~1,000 in
bf16; the core suite ~18,000 over its modes and dtypes: `yat-autotune sweep --suite core
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

That is at most 1 + 8 + 2 * 6 = 21 tiles a problem. In `fwd+bwd` mode, which times the
same backward tiles as `bwd` with the forward on its default tile, a run that sweeps the
problem's `bwd` mode first (in the same process: `sweep.fwd_bwd_after_bwd`) times the op as
it ships and the `FROM_BWD` fastest correct tiles it found there (a guided search where
none came out correct, or where `bwd` is not swept first). `exhaustive` times every tile,
in ranked order. Both take `--max-configs` as a cap on the tiles a problem, and both
resume: a tile already in the database is not timed again, and a rerun of the same sweep
picks the same tiles (the guided search steps from the tiles it proposed itself, whose
times it reads from the database).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from kernels._common import TileConfig

SEARCHES = ("guided", "exhaustive")
SEEDS = 8
REFINE = 6
ROUNDS = 2
FROM_BWD = 3

_FIELDS = tuple(f.name for f in dataclasses.fields(TileConfig))

# A tile to time; None: the op as it ships (the backward modes' first row)
Tile = TileConfig | None
Batches = Iterator[list[Tile]]


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


def exhaustive(first: Sequence[Tile], ranked: Sequence[TileConfig], limit: int | None) -> Batches:
    """One batch: `first`, then every ranked tile, cut at `limit`."""
    tiles = [*first, *(c for c in ranked if c not in first)]
    yield tiles[:limit]


def guided(
    first: Sequence[Tile],
    ranked: Sequence[TileConfig],
    timed: Callable[[], dict[TileConfig, float]],
    limit: int | None,
    *,
    seeds: int = SEEDS,
    refine: int = REFINE,
    rounds: int = ROUNDS,
) -> Batches:
    """The guided search's batches (module docstring). The caller times each batch before
    asking for the next (tiles already timed it skips); `timed()` then returns the median
    ms of every correct tile of the problem timed so far (this run's and earlier runs').
    `limit` caps the tiles of all batches together."""
    left = limit if limit is not None else len(first) + seeds + rounds * refine
    batch = [*first, *(c for c in ranked if c not in first)][: min(left, len(first) + seeds)]
    proposed = set(batch)
    left -= len(batch)
    yield batch
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
        batch = [c for c in neighbours(fastest, ranked) if c not in proposed][: min(left, refine)]
        if not batch:
            return
        proposed.update(batch)
        left -= len(batch)
        yield batch


def from_bwd(first: Sequence[Tile], bwd_times: dict[TileConfig, float], limit: int | None) -> Batches:
    """`fwd+bwd` mode after a `bwd` search of the problem: `first`, then the `FROM_BWD`
    tiles fastest there."""
    fastest = sorted(bwd_times, key=lambda c: (bwd_times[c], c.name))[:FROM_BWD]
    yield [*first, *(c for c in fastest if c not in first)][:limit]


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
