"""``predmarket bench``: the engine, the HTTP API, the persister and two reference peers, in one run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

import predmarket
from predmarket.commands import Subcommands
from predmarket.engine.settings import get_settings

#: bench.options.SECTIONS (a test compares)
SECTIONS_HELP = "engine,policy,http,persister,peers,hotset,streams,shards,views"
#: --against: engine sections per install unless --pairs
DEFAULT_PAIRS = 5


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "bench", help="measure trades/s and latency of the engine, the API and the persister against two peers",
        description="Runs, on the Redis and PostgreSQL of PM_REDIS_URL / PM_DATABASE_URL (own key prefixes and "
        "throwaway databases, removed afterwards): the engine direct (1 and 2 processes, 1 hot market and 100 "
        "markets, 1/8/32/128 tasks), the HTTP API (two `predmarket serve` replicas, 64 keep-alive connections "
        "from a separate load process), the persister draining a 100,000-trade burst, and two reference peers "
        "on the same workload (PostgreSQL-only with row locks, and the naive unbatched CAS on Redis). Checks "
        "the invariants after every workload and exits 1 naming the breach. Prints a table with machine facts "
        "and writes bench-results.json and bench-throughput.png (matplotlib, the 'bench' extra) to --out. "
        "Also the sequencer's batch policy (pipeline depth, queue split, batch size) against the defaults, "
        "and the engine over 8 shards against one, on the primary and on a 3-master cluster it starts. "
        "About 5 minutes on a 2-core machine; --quick is a smoke test.",
    )
    p.add_argument("--quick", action="store_true", help="fewer and smaller runs (a smoke test, well under a minute)")
    p.add_argument("--only", default=None, metavar="SECTIONS",
                   help=f"comma-separated sections to run, of {SECTIONS_HELP} (default all but views: "
                        "it generates a 10-million-trade record, ~10 GB, kept between runs)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where to write bench-results.json and bench-throughput.png (default: the checkout's "
                        "docs/, whose figures docs/PERFORMANCE.md quotes, for a full run only; a run with --quick, "
                        "--only or subscriber counts writes nothing unless given --out, so it never replaces them)")
    p.add_argument("--seed", type=int, default=None, help="random seed for the workloads")
    p.add_argument("--stream-sse", type=int, default=None, metavar="N",
                   help="streams section: idle SSE subscribers on the replica (default 1000; 200 with --quick)")
    p.add_argument("--stream-ws", type=int, default=None, metavar="M",
                   help="streams section: idle WebSocket subscribers (default 100; 20 with --quick)")
    p.add_argument("--rebuild-views", action="store_true",
                   help="views section: generate the record again even if a kept one matches its sizes")
    p.add_argument("--against", default=None, metavar="PYTHON",
                   help="engine section only: run it by turns in this install and in the one of PYTHON (another "
                        "checkout's virtualenv interpreter, say of the release before), --pairs times each, and "
                        "print each YES/NO row's median paired ratio (writes bench-against.json to --out if given)")
    p.add_argument("--pairs", type=int, default=None, metavar="N",
                   help=f"with --against: engine sections per install (default {DEFAULT_PAIRS}; the seed defaults "
                        "to 7)")
    p.set_defaults(handler=main)


def checkout_root() -> Path | None:
    """The source checkout this package runs from, if it holds the bench (an editable install)."""
    root = Path(predmarket.__file__).resolve().parents[1]
    return root if (root / "bench" / "__init__.py").is_file() else None


def results_dir(args: argparse.Namespace, root: Path) -> Path | None:
    """Where this run's JSON and chart go: --out if given; else the checkout's docs/ for a full default
    run (the committed figures), and nowhere for a partial or smaller one, which would replace them."""
    if args.out is not None:
        return Path(args.out)
    full = not args.quick and args.only is None and args.stream_sse is None and args.stream_ws is None
    return root / "docs" if full else None


def main(args: argparse.Namespace) -> int:
    # The bench is tooling beside the product: it lives in bench/ of a checkout and is not in the wheel, so a
    # replica never imports it. From a checkout, put the checkout first on the path and import it here.
    root = checkout_root()
    if root is None:
        raise SystemExit("predmarket bench runs from a source checkout (bench/ is not installed with the package): "
                         "clone the repository, pip install -e '.[bench]', and run it there")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench.invariants import InvariantBroken
    from bench.options import DEFAULT_SECTIONS, FULL, QUICK, BenchOptions, parse_sections
    from bench.persister_runs import PersisterFailed
    from bench.report import print_report
    from bench.runner import run_bench

    try:
        sections = parse_sections(args.only or ",".join(DEFAULT_SECTIONS))
    except ValueError as exc:
        raise SystemExit(f"predmarket bench: --only: {exc}") from None
    # Piped output (a log, CI) would otherwise wrap the table at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 132)
    if args.against is not None:
        return _against(args, sections, console)
    if args.pairs is not None:
        raise SystemExit("predmarket bench: --pairs goes with --against")
    sizes = QUICK if args.quick else FULL
    if args.stream_sse is not None or args.stream_ws is not None:
        sizes = replace(sizes, stream_sse=sizes.stream_sse if args.stream_sse is None else args.stream_sse,
                        stream_websockets=sizes.stream_websockets if args.stream_ws is None else args.stream_ws)
    options = BenchOptions(settings=get_settings(one_shard=True), sections=sections, sizes=sizes,
                           out=results_dir(args, root), quick=args.quick, seed=args.seed,
                           rebuild_views=args.rebuild_views)
    try:
        results = run_bench(options, say=lambda line: console.print(line, highlight=False, markup=False))
    except (InvariantBroken, PersisterFailed) as exc:
        # escape: a breach names its subject in [brackets], which rich would take for markup
        console.print(f"[red]BENCH FAILED[/red] {escape(str(exc))}", highlight=False)
        return 1
    console.print()
    print_report(console, results)
    return 0


def _against(args: argparse.Namespace, sections: tuple[str, ...], console: Console) -> int:
    """``--against``: the engine section in two installs by turns (bench/against.py)."""
    from bench.against import against_section, print_against

    if args.only is not None and sections != ("engine",):
        raise SystemExit("predmarket bench: --against compares the engine section only (--only engine)")
    pairs = DEFAULT_PAIRS if args.pairs is None else args.pairs
    if pairs < 1:
        raise SystemExit("predmarket bench: --pairs must be at least 1")
    try:
        result = against_section(get_settings(one_shard=True), args.against, pairs,
                                 7 if args.seed is None else args.seed, args.quick, args.out,
                                 say=lambda line: console.print(line, highlight=False, markup=False))
    except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:  # ValueError: a results file unread
        console.print(f"[red]BENCH FAILED[/red] {escape(str(exc))}", highlight=False)
        return 1
    console.print()
    print_against(console, result)
    return 0
