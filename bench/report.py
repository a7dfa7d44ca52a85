"""The bench's printed report: machine facts, the table, the persister, ratios against the peers, targets."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bench.engine_runs import HEADLINE_TASKS
from bench.results import ENGINE, HTTP, NAIVE_CAS, PEERS, PG_ONLY, BenchResults, Row
from bench.targets import evaluate
from bench.views_results import CLOSED_LOOP, INGEST_TARGET, P99_TARGET_MS

ORDER = {ENGINE: 0, HTTP: 1, PG_ONLY: 2, NAIVE_CAS: 3}


def _who(row: Row) -> str:
    if row.system == ENGINE:
        return f"engine, {row.processes} proc"
    if row.system == HTTP:
        return f"HTTP, {row.processes} replicas"
    return f"{row.system}, 1 proc"


def machine_table(results: BenchResults) -> Table:
    table = Table(title="machine", show_header=False)
    table.add_column("fact")
    table.add_column("value")
    for name, value in results.machine.items():
        table.add_row(name, value)
    return table


def throughput_table(results: BenchResults) -> Table:
    table = Table(title="trades/s and latency (the seed's random trades)")
    for column in ("system", "markets", "tasks", "trades", "trades/s", "p50 ms", "p99 ms", "retries/trade"):
        table.add_column(column, justify="left" if column in ("system", "markets") else "right")
    rows = sorted(results.rows, key=lambda r: (ORDER[r.system], r.processes, r.markets, r.concurrency))
    for row in rows:
        tasks = f"{row.concurrency} conns" if row.system == HTTP else str(row.concurrency)
        retries = "-" if row.retries_per_trade is None else f"{row.retries_per_trade:.3f}"
        table.add_row(_who(row), row.where, tasks, f"{row.trades:,}", f"{row.trades_per_s:,.0f}",
                      f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", retries)
    return table


def outcomes_table(results: BenchResults) -> Table | None:
    """The labelled rows beside the YES/NO row of the same markets and tasks (one process)."""
    if not results.outcome_rows:
        return None
    table = Table(title="engine, 1 proc, by labels per market (a random label each trade)")
    for column in ("labels", "markets", "tasks", "trades", "trades/s", "p50 ms", "p99 ms", "rate / YES/NO"):
        table.add_column(column, justify="left" if column == "markets" else "right")
    for markets in sorted({r.markets for r in results.outcome_rows}):
        group = sorted((r for r in results.outcome_rows if r.markets == markets), key=lambda r: r.outcomes)
        binary = results.find(ENGINE, markets, group[0].concurrency)
        for row in ([binary] if binary is not None else []) + group:
            base = binary.trades_per_s if binary is not None else 0.0
            ratio = f"{row.trades_per_s / base:.2f}" if base else "-"
            table.add_row(str(row.outcomes), row.where, str(row.concurrency), f"{row.trades:,}",
                          f"{row.trades_per_s:,.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", ratio)
    return table


def persister_table(results: BenchResults) -> Table | None:
    p = results.persister
    if p is None:
        return None
    table = Table(title=f"persister draining a {p.trades:,}-trade burst", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("events drained", f"{p.events:,}"),
        ("events/s written", f"{p.events_per_s:,.0f}"),
        ("seconds until lag 0 (and every trade in PostgreSQL)", f"{p.drain_s:.2f}"),
        ("market row writes per trade (idle flush; 1.0 = every trade)",
         "-" if p.writes_per_trade is None else f"{p.writes_per_trade:.4f}"),
        ("PostgreSQL equals Redis afterwards", "yes" if p.pg_equals_redis else "NO"),
        ("burst made by the engine at (2 procs, 32 tasks)", f"{p.burst_trades_per_s:,.0f} trades/s"),
    ]
    pair = results.persister_pair
    if pair is not None:
        rows.append((f"two persister processes: events/s, seconds until lag 0 ({pair.events:,} events)",
                     f"{pair.events_per_s:,.0f}/s, {pair.drain_s:.2f} s"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def hotset_table(results: BenchResults) -> Table | None:
    h = results.hotset
    if h is None:
        return None
    table = Table(title=f"hot set: {h.users:,} users, {h.markets:,} markets, {h.hot_users:,} of them trading",
                  show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in (
        ("Redis memory, everything resident (no eviction)", f"{h.memory_without_mb:,.1f} MiB"),
        ("Redis memory after the janitor evicted the idle", f"{h.memory_with_mb:,.1f} MiB"),
        ("... and once it has forgotten their eviction marks", f"{h.memory_marks_forgotten_mb:,.1f} MiB"),
        ("users left in Redis", f"{h.users_in_redis_after:,}"),
        ("first request for an evicted user p50 / p99",
         f"{h.evicted_first_p50_ms:.2f} / {h.evicted_first_p99_ms:.2f} ms"),
        ("request for a hot user p50 / p99", f"{h.hot_p50_ms:.2f} / {h.hot_p99_ms:.2f} ms"),
    ):
        table.add_row(name, value)
    return table


def streams_table(results: BenchResults) -> Table | None:
    s = results.streams
    if s is None:
        return None
    table = Table(title=f"live streams: 1 replica, {s.sse:,} SSE + {s.websockets:,} WebSocket idle subscribers, "
                  f"{s.connections} trading connections", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in (
        ("subscribers connected", f"{s.connected:,}" + (f" (refused: {s.connect_errors})" if s.connect_errors else "")),
        (f"HTTP trades/s without subscribers (mean of {len(s.runs_without)} runs, alternating with those with them)",
         f"{s.trades_per_s_without:,.0f}"),
        (f"HTTP trades/s with them (mean of {len(s.runs_with)} runs)", f"{s.trades_per_s_with:,.0f}"),
        ("trade rate with them against without: median of the pairs (each run with them against the runs "
         "without just before and after it)",
         f"{-s.slowdown:+.1%} ({', '.join(f'{-value:+.1%}' for value in s.paired_slowdowns)})"),
        ("replica CPU per trade without / with them (less noisy than the rate on a shared machine; median of the "
         "pairs)", f"{s.cpu_us_without:,.0f} / {s.cpu_us_with:,.0f} µs ({s.cpu_overhead:+.1%})"),
        ("replica memory per subscriber", f"{s.kib_per_subscriber:,.1f} KiB"),
        (f"subscribers that got all {s.marker_entries} entries in order", f"{s.complete:,} of {s.connected:,}"),
    ):
        table.add_row(name, value)
    return table


def shards_table(results: BenchResults) -> Table | None:
    """Issue 14: the engine over 8 shards against one, on one primary and on a 3-master cluster."""
    sh = results.shards
    if sh is None:
        return None
    table = Table(title="the engine over shards: 1 process, 32 tasks, the seed's trades"
                  + (f" ({sh.skipped})" if sh.skipped else ""))
    for column in ("layout", "trades/s", "p50 ms", "p99 ms", "Redis CPU µs/trade (each primary)",
                   "first trade in a new shard p50 / p99 ms", "transfer p50 ms", "persister entries/s"):
        table.add_column(column, justify="left" if column == "layout" else "right")
    for row in sh.rows:
        first = ("–" if row.first_trade_p50_ms is None
                 else f"{row.first_trade_p50_ms:.2f} / {row.first_trade_p99_ms:.2f}")
        table.add_row(row.layout, f"{row.trades_per_s:,.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}",
                      ", ".join(f"{us:.0f}" for us in row.cpu_us_per_trade), first,
                      "–" if row.transfer_p50_ms is None else f"{row.transfer_p50_ms:.2f}",
                      "–" if row.drain_entries_per_s is None else f"{row.drain_entries_per_s:,.0f}")
    return table


def views_tables(results: BenchResults) -> list[Table]:
    """Issue 16: the record's tables, the views' latencies per route, the persister with and without readers."""
    v = results.views
    if v is None:
        return []
    r = v.record
    sizes = Table(title=f"views record: {r.trades:,} trades, {r.markets:,} markets, {r.users:,} users, "
                  f"{r.positions:,} positions; {r.database_bytes / 2**30:.2f} GiB; generated in "
                  f"{r.generated_s:.0f} s ({'kept from an earlier run' if r.reused else 'this run'})")
    for column in ("table", "total (with indexes)", "of which indexes"):
        sizes.add_column(column, justify="left" if column == "table" else "right")
    for table, (total, indexes) in r.sizes.items():
        if total >= 1 << 20:
            sizes.add_row(table, f"{total / 2**20:,.0f} MiB", f"{indexes / 2**20:,.0f} MiB")
    latency = Table(title=f"views: {v.readers} concurrent readers of 1 replica, latency in ms (closed loop: each "
                    "reader sends on its answer; n/s: the readers' total rate, latency from the scheduled send)")
    for column in ("readers", "route", "answers", "p50", "p95", "p99", "max", "items", ""):
        latency.add_column(column, justify="left" if column in ("readers", "route") else "right")
    phases = [(f"alone, {CLOSED_LOOP}", v.alone), *((f"alone, {rate}", p) for rate, p in v.paced.items()),
              *((f"during ingest, {mode}", p) for mode, p in v.during_ingest.items())]
    for name, phase in phases:
        for route, s in phase.routes.items():
            met = "" if results.quick else ("[green]met[/green]" if s.p99_ms <= P99_TARGET_MS else "[red]missed[/red]")
            latency.add_row(name, route, f"{s.requests:,}", f"{s.p50_ms:.2f}", f"{s.p95_ms:.2f}", f"{s.p99_ms:.2f}",
                            f"{s.max_ms:.1f}", f"{s.items_per_answer:.0f}", met)
        latency.add_row(name, "all", f"{phase.requests_per_s:,.0f}/s", "", "", "", "", "", "", end_section=True)
    ingest = Table(title="views: the persister draining bursts into the record (events/s)")
    for column in ("readers", "candle rollup", "trades", "events", "seconds", "events/s"):
        ingest.add_column(column, justify="left" if column in ("readers", "candle rollup") else "right")
    for run in v.ingest:
        ingest.add_row(run.readers, "on" if run.rollup else "off", f"{run.trades:,}",
                       f"{run.events:,}", f"{run.drain_s:.2f}", f"{run.events_per_s:,.0f}")
    notes = []
    for mode in v.reader_modes():
        slowdown = v.ingest_slowdown(mode)
        if slowdown is None:
            continue
        met = "" if results.quick else (" [green]met[/green]" if slowdown <= INGEST_TARGET else " [red]missed[/red]")
        notes.append(f"readers {mode}: {-slowdown:+.1%} against none (target within {INGEST_TARGET:.0%}){met}")
    if v.rollup_cost is not None:
        notes.append(f"candle rollup costs {v.rollup_cost:+.1%} of the rate")
    ingest.caption = "; ".join(notes)
    return [sizes, latency, ingest]


def policy_table(results: BenchResults) -> Table | None:
    if not results.policy:
        return None
    table = Table(title="batch policy: engine, 1 process, 32 tasks")
    for column in ("policy", "markets", "trades/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("policy", "markets") else "right")
    for p in results.policy:
        row = p.row
        table.add_row(p.policy, row.where, f"{row.trades_per_s:,.0f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}")
    return table


def ratios_table(results: BenchResults) -> Table | None:
    ratios = results.ratios()
    if not ratios:
        return None
    table = Table(title="engine (1 process) against the peers, same workload")
    for column in ("markets", "tasks", *(f"engine / {p}" for p in PEERS)):
        table.add_column(column, justify="right")
    cells: dict[tuple[int, int], dict[str, str]] = {}
    for r in ratios:
        cells.setdefault((r.markets, r.concurrency), {})[r.peer] = (
            f"{r.factor:,.1f}x ({r.engine_per_s:,.0f} vs {r.peer_per_s:,.0f})")
    for (markets, tasks), by_peer in sorted(cells.items()):
        table.add_row("1 hot" if markets == 1 else str(markets), str(tasks), *(by_peer.get(p, "-") for p in PEERS))
    return table


def headline(results: BenchResults) -> list[str]:
    """``engine / pg-only = 28x`` lines at 32 tasks, the workload the issue names."""
    lines = []
    for r in results.ratios():
        if r.concurrency == HEADLINE_TASKS:
            where = "1 hot market" if r.markets == 1 else f"{r.markets} markets"
            lines.append(f"engine / {r.peer} = {r.factor:,.1f}x ({where}, {r.concurrency} tasks)")
    return lines


def targets_table(results: BenchResults) -> Table:
    # A --quick run is a smoke test: its runs are too short (warm-up dominates) to judge a target by.
    title = "issue 8 targets (figures, not assertions)"
    if results.quick:
        title += "; --quick: runs too small to judge, no verdicts"
    table = Table(title=title)
    for column in ("workload", "target", "measured", ""):
        table.add_column(column, justify="right" if column == "measured" else "left")
    for target, value, met in evaluate(results):
        shown = "not run" if value is None else f"{value:,.2f}{target.unit}"
        verdict = "" if met is None or results.quick else ("[green]met[/green]" if met else "[red]missed[/red]")
        table.add_row(target.what, target.goal, shown, verdict)
    return table


def print_report(console: Console, results: BenchResults) -> None:
    console.print(machine_table(results))
    if results.rows:
        console.print(throughput_table(results))
    for table in (outcomes_table(results), policy_table(results), persister_table(results), hotset_table(results),
                  streams_table(results), shards_table(results), ratios_table(results)):
        if table is not None:
            console.print(table)
    for table in views_tables(results):
        console.print(table)
    for line in headline(results):
        console.print(line, highlight=False)
    console.print(targets_table(results))
    spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in results.section_seconds.items())
    console.print(f"time per section: {spent}", highlight=False)
