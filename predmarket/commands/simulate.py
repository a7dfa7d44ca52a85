"""``predmarket simulate``: the seed's random trades, then a summary and the invariants.

Against the engine directly (the default: Redis under ``PM_KEY_PREFIX``), or against
a running API with ``--api URL`` (over HTTP, with the admin token ``PM_ADMIN_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from predmarket.commands import Subcommands
from predmarket.engine.connection import connect_sync
from predmarket.engine.deployment import engine_for
from predmarket.engine.labels import MAX_OUTCOMES, MIN_OUTCOMES
from predmarket.engine.settings import Settings, get_settings
from predmarket.engine.state import Breach
from predmarket.engine.units import MICRO, format_micro
from predmarket.http_simulate import HttpSummary, run_over_api
from predmarket.sim_settle import resolve_and_settle
from predmarket.simulate import Plan, Summary, live_deployment, run


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "simulate", help="random trades against the engine, then a summary and an invariant check",
        description="Random trades (10-100 whole shares, random BUY/SELL of YES/NO, or of O1..ON with "
        "--outcomes N) against the "
        "engine directly, from one or several processes, or against a running API (--api); prints "
        "trades/s, latency percentiles and final prices, then checks the contract's invariants (exit 1 on a "
        "breach). Against the engine it refuses a PM_KEY_PREFIX that holds a live deployment (a user or "
        "market it did not make) unless --into-live.",
    )
    p.add_argument("--markets", type=int, default=10, help="markets to create (default 10)")
    p.add_argument("--users", type=int, default=100, help="users to create and fund (default 100)")
    p.add_argument("--trades", type=int, default=10_000, help="trades to execute (default 10000)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent tasks per process (default 32)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--liquidity", type=int, default=1000, help="liquidity_b of each market, units")
    p.add_argument("--seed", type=int, default=None, help="random seed for a repeatable run")
    p.add_argument("--outcomes", type=_outcomes, default=2, metavar="N",
                   help="labels per market, 2-16 (default 2: YES/NO markets; otherwise O1..ON)")
    p.add_argument("--settle", action="store_true",
                   help="then resolve and settle every simulated market, each kind of resolution in turn (a label, "
                        "another label, PROB over every label, CANCEL; every other market closed first), and check "
                        "the invariants again")
    p.add_argument("--api", action="append", metavar="URL", default=None,
                   help="trade through the running API at URL instead of the engine (repeat for several "
                   "replicas); uses PM_ADMIN_TOKEN to create the simulation's users and markets")
    p.add_argument("--into-live", action="store_true",
                   help="simulate into a PM_KEY_PREFIX that holds users or markets simulate did not make")
    p.set_defaults(handler=main)


def _outcomes(text: str) -> int:
    """``--outcomes``: a whole number of labels the engine allows (argparse exits 2 on anything else)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not MIN_OUTCOMES <= n <= MAX_OUTCOMES:
        raise argparse.ArgumentTypeError(f"a market has {MIN_OUTCOMES} to {MAX_OUTCOMES} outcomes, not {n}")
    return n


def main(args: argparse.Namespace) -> int:
    for name in ("markets", "users", "trades", "concurrency", "processes", "liquidity"):
        if getattr(args, name) < 1:
            raise SystemExit(f"predmarket simulate: --{name} must be at least 1")
    settings = get_settings()
    if args.api:
        return _main_over_api(args, settings)
    if not args.into_live:
        client = connect_sync(settings.redis_url, 10.0)
        try:
            found = live_deployment(client, settings.key_prefix, settings.shards)
        finally:
            client.close()
        if found:
            print(f"predmarket simulate: refused: prefix {settings.key_prefix!r} holds a live deployment ({found}, "
                  "not made by simulate); use another PM_KEY_PREFIX, or --into-live to add the simulation's "
                  "users, markets and trades to it", file=sys.stderr)
            return 2
    plan = Plan(
        markets=args.markets, users=args.users, trades=args.trades, concurrency=args.concurrency,
        processes=args.processes, liquidity=args.liquidity * MICRO, seed=args.seed, outcomes=args.outcomes,
    )
    console = Console()
    with Progress(
        TextColumn("trading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("trades", total=plan.trades)
        summary = run(settings, plan, on_progress=lambda done: progress.update(task, completed=done))
    breaches = asyncio.run(_final_check(settings, summary, console))
    if not breaches and args.settle:
        breaches = asyncio.run(_settle_all(settings, summary, args.seed, console))
    if breaches:
        for breach in breaches:
            console.print(f"[red]INVARIANT BREACH[/red] {breach}")
        return 1
    console.print("[green]all invariants hold[/green]")
    return 0


async def _settle_all(settings: Settings, summary: Summary, seed: int | None, console: Console) -> list[Breach]:
    engine = engine_for(settings)
    try:
        settled = await resolve_and_settle(engine, summary.market_ids, seed)
        breaches = await engine.invariants()
    finally:
        await engine.close()
    table = Table(title="settlements")
    for column in ("market", "resolution", "closed first", "paid to users", "users paid", "house return"):
        table.add_column(column, justify="left" if column in ("market", "resolution") else "right")
    for row in settled:
        table.add_row(row.market_id, row.resolution, "yes" if row.closed_first else "no",
                      format_micro(row.payouts_total), str(row.holders_paid), format_micro(row.house_return))
    console.print(table)
    return breaches


async def _final_check(settings: Settings, summary: Summary, console: Console) -> list[Breach]:
    engine = engine_for(settings)
    try:
        markets = [await engine.markets.get(m) for m in summary.market_ids]
        breaches = await engine.invariants()
    finally:
        await engine.close()
    table = Table(title="simulation")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rejected = ", ".join(f"{code} {n}" for code, n in sorted(summary.rejected.items())) or "none"
    for name, value in (
        ("trades", f"{summary.trades}"),
        ("trading time (slowest process)", f"{summary.elapsed_s:.2f} s"),
        ("trades/s", f"{summary.trades_per_s:,.0f}"),
        ("latency p50", f"{summary.p50_ms:.2f} ms"),
        ("latency p99", f"{summary.p99_ms:.2f} ms"),
        ("script calls", f"{summary.script_calls} ({summary.trades / max(summary.script_calls, 1):.1f} trades each)"),
        ("conflicts (retries) per trade", f"{summary.retries_per_trade:.4f}"),
        ("rejected", rejected),
    ):
        table.add_row(name, value)
    console.print(table)
    if all(m.is_yes_no for m in markets):
        console.print(_prices_table([
            (m.market_id, format_micro(m.price_yes), format_micro(m.price_no), format_micro(m.yes_shares),
             format_micro(m.no_shares), format_micro(m.pool)) for m in markets]))
    else:
        console.print(_label_prices_table(markets[0].outcomes, [
            (m.market_id, [format_micro(p) for p in m.prices], [format_micro(q) for q in m.totals],
             format_micro(m.pool)) for m in markets]))
    return breaches


def _label_prices_table(labels: Sequence[str], rows: list[tuple[str, Sequence[str], Sequence[str], str]],
                        shown: int = 20) -> Table:
    """Each market's (id, price of each label, outstanding shares of each label, pool) of the first
    ``shown`` markets, the shares below the prices."""
    prices = Table(title="final prices (outstanding shares below)")
    prices.add_column("market")
    for label in labels:
        prices.add_column(label, justify="right")
    prices.add_column("pool", justify="right")
    for market_id, label_prices, shares, pool in rows[:shown]:
        prices.add_row(market_id, *(f"{p}\n{q}" for p, q in zip(label_prices, shares, strict=True)), pool)
    if len(rows) > shown:
        prices.add_row(f"... {len(rows) - shown} more", *("" for _ in labels), "")
    return prices


def _main_over_api(args: argparse.Namespace, settings: Settings) -> int:
    if args.processes != 1 or args.seed is not None:
        raise SystemExit("predmarket simulate: --processes and --seed apply to the engine, not to --api")
    if args.settle:
        print("predmarket simulate: --settle applies to the engine, not to --api (settling pays the rest of "
              "each pool to house, outside the simulation's closed world the HTTP check counts)", file=sys.stderr)
        return 2
    urls = [url.rstrip("/") for url in args.api]
    console = Console()
    with Progress(
        TextColumn("trading over HTTP"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
    ) as progress:
        task = progress.add_task("trades", total=args.trades)
        summary = asyncio.run(run_over_api(
            urls, settings.admin_token, markets=args.markets, users=args.users, trades=args.trades,
            concurrency=args.concurrency, liquidity_units=args.liquidity, outcomes=args.outcomes,
            on_progress=lambda done: progress.update(task, completed=done)))
        progress.update(task, completed=args.trades)
    _print_http_summary(console, urls, summary)
    if summary.breaches:
        for breach in summary.breaches:
            console.print(f"[red]INVARIANT BREACH[/red] {breach}", markup=True, highlight=False)
        return 1
    console.print("[green]all invariants hold[/green] (checked through the API on the simulation's users and markets)")
    return 0


def _print_http_summary(console: Console, urls: list[str], summary: HttpSummary) -> None:
    table = Table(title=f"simulation over HTTP ({', '.join(urls)})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rejected = ", ".join(f"{code} {n}" for code, n in sorted(summary.rejected.items())) or "none"
    for name, value in (
        ("trades executed", f"{summary.trades} of {summary.attempted}"),
        ("trading time", f"{summary.elapsed_s:.2f} s"),
        ("trades/s", f"{summary.trades_per_s:,.0f}"),
        ("latency p50", f"{summary.p50_ms:.2f} ms"),
        ("latency p99", f"{summary.p99_ms:.2f} ms"),
        ("rejected", rejected),
    ):
        table.add_row(name, value)
    console.print(table)
    if all(m["price_yes"] is not None for m in summary.markets):
        console.print(_prices_table([
            (m["market_id"], m["price_yes"], m["price_no"], m["yes_shares"], m["no_shares"], m["pool"])
            for m in summary.markets]))
    elif summary.markets:
        console.print(_label_prices_table([label["outcome"] for label in summary.markets[0]["outcomes"]], [
            (m["market_id"], [o["price"] for o in m["outcomes"]], [o["shares"] for o in m["outcomes"]], m["pool"])
            for m in summary.markets]))


def _prices_table(rows: list[tuple[str, str, str, str, str, str]], shown: int = 20) -> Table:
    """The final prices of the first ``shown`` markets, and how many more there are."""
    prices = Table(title="final prices")
    for column in ("market", "price_yes", "price_no", "yes_shares", "no_shares", "pool"):
        prices.add_column(column, justify="right" if column != "market" else "left")
    for row in rows[:shown]:
        prices.add_row(*row)
    if len(rows) > shown:
        prices.add_row(f"... {len(rows) - shown} more", "", "", "", "", "")
    return prices
