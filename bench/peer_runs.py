"""The two reference peers on the seed's workload, each run from a fresh state and checked afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.settings import Settings
from sqlalchemy.engine import make_url

from bench import pg_peer
from bench.cas_peer import NaiveCas
from bench.invariants import check_redis, require
from bench.options import Sizes
from bench.peer_workload import PeerRun, drive
from bench.results import NAIVE_CAS, PG_ONLY, Row
from bench.scratch import scratch_database, scratch_prefix
from bench.stats import p50_p99_ms
from predmarket.simulate import USER_FUNDS, Plan, setup


async def _cas_run(settings: Settings, plan: Plan, seconds: float, seed: int | None) -> PeerRun:
    engine = MarketEngine.from_settings(settings)
    try:
        users, markets = await setup(engine, plan)  # the engine's own accounts and markets
        peer = NaiveCas(engine.redis, Keys(settings.key_prefix), settings.idempotency_ttl_s)
        return await drive(peer.trade, users, markets, plan.concurrency, seconds, seed)
    finally:
        await engine.close()


async def _pg_run(conninfo: str, plan: Plan, seconds: float, pool_max: int, seed: int | None) -> PeerRun:
    await pg_peer.create_schema(conninfo)
    run = uuid.uuid4().hex[:6]
    users = [f"u-{run}-{i}" for i in range(plan.users)]
    markets = [f"m-{run}-{j}" for j in range(plan.markets)]
    await pg_peer.seed(conninfo, users, USER_FUNDS, markets, plan.liquidity)
    # More connections than PostgreSQL has cores only queue on its locks; tasks
    # beyond the pool wait for a connection, and that wait counts in their latency.
    async with pg_peer.connected(conninfo, min(plan.concurrency, pool_max)) as peer:
        result = await drive(peer.trade, users, markets, plan.concurrency, seconds, seed)
    deposits = pg_peer.deposits(len(users), USER_FUNDS, len(markets), plan.liquidity)
    require(f"{PG_ONLY}, {plan.markets} market(s), {plan.concurrency} tasks",
            await pg_peer.read_state(conninfo, deposits))
    return result


def _row(system: str, plan: Plan, run: PeerRun, retries: bool) -> Row:
    p50, p99 = p50_p99_ms(run.latencies)
    return Row(system, 1, plan.markets, plan.concurrency, run.trades, run.elapsed_s, p50, p99,
               run.retries / run.trades if retries and run.trades else None, run.rejected)


def peers_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> list[Row]:
    rows: list[Row] = []

    def done(row: Row) -> None:
        rows.append(row)
        retries = f", {row.retries_per_trade:.2f} retries/trade" if row.retries_per_trade is not None else ""
        say(f"{row.system}, {row.where}, {row.concurrency} tasks: {row.trades:,} trades in {row.elapsed_s:.2f} s "
            f"= {row.trades_per_s:,.0f}/s, p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms{retries}; "
            "invariants hold")

    with scratch_database(settings, "pgonly", migrated=False) as url:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        for markets in sizes.peer_markets:
            for concurrency in sizes.peer_concurrency:
                plan = Plan(markets=markets, users=sizes.users, concurrency=concurrency)
                run = asyncio.run(_pg_run(conninfo, plan, sizes.peer_seconds, sizes.pg_pool_max, seed))
                done(_row(PG_ONLY, plan, run, retries=False))
    for markets in sizes.peer_markets:
        for concurrency in sizes.peer_concurrency:
            plan = Plan(markets=markets, users=sizes.users, concurrency=concurrency)
            with scratch_prefix(settings, "cas") as scoped:
                run = asyncio.run(_cas_run(scoped, plan, sizes.peer_seconds, seed))
                check_redis(scoped, f"{NAIVE_CAS}, {markets} market(s), {concurrency} tasks")
            done(_row(NAIVE_CAS, plan, run, retries=True))
    return rows
