"""yat-autotune: sweep tile configs against the baselines, keep the results in a database,
export the winners, show them, and inspect compiled kernels.

    yat-autotune sweep --suite quick --db results.db
    yat-autotune show --db results.db
    yat-autotune report --db results.db --out reports
    yat-autotune import-run gpu_run.tar.gz
    yat-autotune inspect --dtype bfloat16 --all
    yat-autotune breakdown --dense 4096 4096 4096
    yat-autotune hostcost
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from autotune import db as dbmod
from autotune.args import positive_int, seconds

# torch.compile modes compiled_ref may take, and "none" (no compiled_ref)
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _interpret_without_gpu() -> None:
    """Without a GPU the sweep, show and breakdown run the Triton kernels through the
    interpreter, which Triton decides when it is first imported: call this before any
    import of triton (inspect, which compiles for sm_90 without a GPU, must not)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _csv(allowed: tuple[str, ...]):  # noqa: ANN202 - an argparse type
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        repeated = sorted({t for t in items if items.count(t) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(repeated)} given more than once")
        return items

    return parse


exit_now = os._exit  # the process's immediate end (tests stand in for it)


def cmd_sweep(args: argparse.Namespace) -> int:
    from autotune import sweep

    suite = sweep.load_suite(args.suite)
    if args.shard is not None:  # refused before the database file is made
        dbmod.shard([], args.shard)
    if args.plan:
        return _print_plan(suite, args)
    env = sweep.environment()
    if not env.representative:
        print("no CUDA device: running through the Triton interpreter for correctness; "
              "timings are stored as not representative")  # fmt: skip
    max_configs = args.max_configs if args.max_configs is not None else (None if env.representative else 2)
    hang_after = args.hang_after
    if hang_after is None:  # the watchdog watches kernels that may hang: a GPU's
        hang_after = sweep.HANG_AFTER_S if env.representative else 0
    lost = False
    with dbmod.ResultsDB(args.db) as db:
        terminated: list[int] = []
        try:
            with _terminate_as_interrupt(terminated):
                counts = sweep.run_sweep(
                    db, suite, ops=args.op, modes=args.mode, dtypes=args.dtype, shard_spec=args.shard,
                    max_configs=max_configs, progress=not args.quiet, compile_mode=args.compile_mode,
                    suite_name=args.suite, warp_specialize=not args.no_warp_specialize, search=args.search,
                    hang_after=hang_after or None,
                )  # fmt: skip
        except KeyboardInterrupt:  # run_sweep said what was saved and how to resume
            return 143 if terminated else 130
        except sweep.ContextLost:  # likewise; a fresh process resumes
            lost = True
    if lost:
        # Everything is saved and the database closed. With the CUDA context lost, PyTorch's
        # destructors at interpreter exit (CUDA tensors, graphs) can abort the process (status
        # 134, which the GPU script would not restart): it ends here, at once.
        sys.stdout.flush()
        sys.stderr.flush()
        exit_now(sweep.RESTART_EXIT)
        return sweep.RESTART_EXIT
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing new (all done)"
    print(f"{args.db}: {summary}")
    return 0


@contextlib.contextmanager
def _terminate_as_interrupt(taken: list[int]) -> Iterator[None]:
    """Inside the block SIGTERM (a scheduler's or `timeout`'s default stop) ends the sweep as
    Ctrl-C does: between rows, the run's record saved; `taken` then holds the signal."""

    def handler(signum: int, frame: object) -> None:
        taken.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: left as it is
        yield
        return
    try:
        yield
    finally:  # a handler set from C reads back as None: the default then
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _print_plan(suite: dict[str, list[dict[str, int]]], args: argparse.Namespace) -> int:
    """`sweep --plan`: per problem, the tiles that fit and the most the search times; nothing
    runs, no database is opened (the cap a CPU sweep applies is left out: this is the plan of
    a GPU sweep with the options given)."""
    from tabulate import tabulate

    from autotune import sweep

    rows = sweep.plan(
        suite, ops=args.op, modes=args.mode, dtypes=args.dtype, search=args.search,
        max_configs=args.max_configs, warp_specialize=not args.no_warp_specialize, shard_spec=args.shard,
    )  # fmt: skip
    table = [
        [t.op, t.mode, t.dtype, dbmod.canonical_json(t.shape), fit, most, usual]
        for t, fit, most, usual in rows
    ]
    headers = ["op", "mode", "dtype", "shape", "tiles that fit", "at most", "where bwd found a correct tile"]
    print(tabulate(table, headers=headers))
    fit, most, usual = (sum(r[i] for r in rows) for i in (1, 2, 3))
    where = (
        f" ({usual} where each bwd search finds a correct tile for fwd+bwd to take)" if usual != most else ""
    )
    print(
        f"{len(rows)} problems, {args.search} search: {most} tile timings at most{where}, of {fit} that fit"
    )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from autotune.report import STANDARD, Gpu, config_label, sorted_problems, speedup_label

    with dbmod.ResultsDB(args.db, read_only=True) as db:  # a missing file: FileNotFoundError, named
        rows = db.query(status="ok")
    if not rows:
        print(f"{args.db}: no successful measurements yet", file=sys.stderr)
        return 2
    by_gpu: dict[str, list[dbmod.Result]] = {}
    for r in rows:
        by_gpu.setdefault(r.gpu, []).append(r)
    table = []
    for gpu, gpu_rows in sorted(by_gpu.items()):
        g = Gpu(gpu, gpu_rows)  # the report's choice: fastest correct config, fastest correct baseline
        for p in sorted_problems(g.best):
            best = g.best[p]
            vs = [g.speedup(p, provider) for provider in (STANDARD[p[0]], "eager_ref")]
            table.append([
                gpu, *p, f"{best.median_ms:.4g}", "-" if best.tflops is None else f"{best.tflops:.3g}",
                *("-" if x is None else speedup_label(x) for x in vs), config_label(best.config),
                "yes" if best.representative else "NO (CPU)",
            ])  # fmt: skip
    if not table:
        print(f"{args.db}: no yat_triton config ran ok and passed its correctness check", file=sys.stderr)
        return 2
    headers = ["gpu", "op", "mode", "dtype", "shape", "ms", "TFLOP/s", "vs std layer", "vs eager_ref",
               "config", "representative"]  # fmt: skip
    print(tabulate(table, headers=headers))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the winners, then read them back the way yat_triton does at call time."""
    from autotune.export import export_winners
    from yat_triton.tuning import TUNED_DIR, read_winners

    with dbmod.ResultsDB(args.db, read_only=True) as db:  # a GPU's rows, even if none passed
        on_gpu = any(r.representative for r in db.query(provider="yat_triton"))
    out = args.out or (TUNED_DIR if on_gpu else Path("tuned"))
    if not on_gpu:
        print("no GPU measurements: exporting the CPU sweep's configs (correct, but their timings "
              f"mean nothing) to {out}, not into the package; the ops never use them, since "
              "nothing is tuned on the CPU")  # fmt: skip
    for path in export_winners(args.db, out, include_cpu=not on_gpu):
        gpu, entries = read_winners(path)
        print(f"{path}: {len(entries)} winners for {gpu} (read back and checked by yat_triton.tuning)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    sources = [dbmod.read_database(src) for src in args.sources]  # all read before anything is written
    try:
        with dbmod.ResultsDB(args.db) as db:
            counts = db.merge(sources)
    except sqlite3.DatabaseError as e:  # the target's (a source's was named when read)
        raise sqlite3.DatabaseError(e if str(args.db) in str(e) else f"{args.db}: {e}") from e
    for src, n in zip(args.sources, counts, strict=True):
        print(f"{src}: {n} rows merged into {args.db}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.report import render_report

    written = render_report(args.db, args.out, args.breakdown)
    for path in written:
        print(path)
    print(f"{len(written)} files written under {args.out}")
    return 0


def cmd_import_run(args: argparse.Namespace) -> int:
    from autotune.gpurun import import_run

    done = import_run(args.archive, args.reports, args.tuned, allow_cpu=args.allow_cpu)
    for what, paths in (("database", done.databases), ("log", done.logs), ("winners", done.winners)):
        for path in paths:
            print(f"{what}: {path}")
    print(f"report: {len(done.reports)} files rendered under {args.reports}")
    for note in done.notes:
        print(note)
    for page in done.reports:  # each GPU's verdicts, as its report states them
        if page.name == "README.md" and page.parent != args.reports:
            text = page.read_text()
            if "## Targets" in text:
                section = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
                print(f"\n{page.parent.name}: Targets{section.rstrip()}")
    return 0


def cmd_breakdown(rest: list[str]) -> int:
    from autotune.breakdown import main as breakdown_main

    return breakdown_main(rest)


def cmd_hostcost(rest: list[str]) -> int:
    from autotune.hostcost import main as hostcost_main

    return hostcost_main(rest)


def cmd_inspect(rest: list[str]) -> int:
    from autotune.inspect import main as inspect_main

    return inspect_main(rest)


def build_parser() -> argparse.ArgumentParser:
    from autotune import search, sweep

    parser = argparse.ArgumentParser(prog="yat-autotune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="time tile configs and the baselines on a shape suite")
    sw.add_argument("--suite", default="quick", help="quick, core, decode, or a TOML file (default: quick)")
    sw.add_argument("--db", default="results.db", help="results database (created if missing)")
    sw.add_argument("--op", type=_csv(sweep.OPS), default=list(sweep.OPS))
    sw.add_argument("--mode", type=_csv(sweep.MODES), default=list(sweep.MODES))
    sw.add_argument("--dtype", type=_csv(sweep.DTYPES), default=["bfloat16", "float32"])
    sw.add_argument("--shard", help="i/n: this process's share of the suite (1-based)")
    sw.add_argument(
        "--search",
        choices=search.SEARCHES,
        default="guided",
        help="which tiles a problem times: guided (default: the shipped tile, the statically best "
        "ranked ones, then neighbours of the fastest; at most 21) or exhaustive (every tile that "
        "fits, ranked)",
    )
    sw.add_argument(
        "--max-configs",
        type=positive_int,
        help="tiles a problem times at most (default: the search's; 2 on a CPU)",
    )
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument(
        "--plan",
        action="store_true",
        help="print per problem how many tiles the search times at most; run nothing",
    )
    sw.add_argument(
        "--compile-mode",
        default="max-autotune",
        choices=COMPILE_MODES,
        help="torch.compile mode of compiled_ref (GPU only); none: leave compiled_ref out (its "
        "compile takes seconds to minutes a problem)",
    )
    sw.add_argument(
        "--no-warp-specialize",
        action="store_true",
        help="leave the warp-specialized tiles out, forward and backward (where they fail to compile "
        "or hang: the GPU script's canary decides)",
    )
    sw.add_argument(
        "--hang-after",
        type=seconds,
        metavar="SECONDS",
        help=f"a row (compiled_ref's excepted) running longer is recorded as hung and the process exits "
        f"with status {sweep.RESTART_EXIT}, to be resumed by the same command (default: "
        f"{sweep.HANG_AFTER_S:g} on a GPU, off on a CPU; 0: off)",
    )
    sw.set_defaults(func=cmd_sweep)
    sh = sub.add_parser("show", help="best configs and speedups as a table")
    sh.add_argument("--db", default="results.db")
    sh.set_defaults(func=cmd_show)
    ex = sub.add_parser("export", help="write the winners per GPU as JSON, loaded by yat_triton")
    ex.add_argument("--db", default="results.db")
    ex.add_argument("--out", type=Path, help="folder (default: the package's yat_triton/tuned)")
    ex.set_defaults(func=cmd_export)
    mg = sub.add_parser("merge", help="merge other results databases into one")
    mg.add_argument("--db", required=True, help="the database to merge into")
    mg.add_argument("sources", nargs="+")
    mg.set_defaults(func=cmd_merge)
    rp = sub.add_parser("report", help="render the database as markdown + PNG reports, one folder per GPU")
    rp.add_argument("--db", default="results.db")
    rp.add_argument("--out", type=Path, default=Path("reports"), help="folder (default: reports)")
    rp.add_argument("--breakdown", type=Path, help="JSON lines of `python -m autotune.breakdown --json-out`")
    rp.set_defaults(func=cmd_report)
    ir = sub.add_parser(
        "import-run",
        help="merge a GPU run's archive (gpu.sh --pack) into reports/<gpu>/, export its winners, "
        "render its report",
    )
    ir.add_argument(
        "archive", type=Path, help="the .tar.gz written by `bash autotune/gpu.sh OUT --pack FILE`"
    )
    ir.add_argument("--reports", type=Path, default=Path("reports"), help="folder (default: reports)")
    ir.add_argument("--tuned", type=Path, help="winners folder (default: the package's yat_triton/tuned)")
    ir.add_argument(
        "--allow-cpu", action="store_true", help="also take rows measured without a GPU (a rehearsal)"
    )
    ir.set_defaults(func=cmd_import_run)
    sub.add_parser(
        "inspect", help="compile kernels for sm_90 and report resources (see --help)", add_help=False
    )
    sub.add_parser(
        "breakdown", help="time every kernel of one op call against its standard layer", add_help=False
    )
    sub.add_parser(
        "hostcost", help="host time of one small layer call, per route (see --help)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (a value, a file, a folder, a database that cannot be
    read or written) ends it with one line naming the problem and exit status 2; anything
    else is a bug, and keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    args = None
    try:
        if command == "inspect":
            return cmd_inspect(argv[1:])
        _interpret_without_gpu()
        if command == "breakdown":
            return cmd_breakdown(argv[1:])
        if command == "hostcost":
            return cmd_hostcost(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (ValueError, OSError, sqlite3.Error) as e:
        if isinstance(e, BrokenPipeError):  # output piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        db = getattr(args, "db", None)  # merge names its sources itself (read_database), and its target
        if (
            isinstance(e, sqlite3.DatabaseError)
            and db is not None
            and command != "merge"
            and str(db) not in str(e)
        ):
            e = f"{db}: {e}"  # e.g. "database disk image is malformed": which file
        print(f"yat-autotune {command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
