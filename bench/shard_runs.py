"""Issue 14's figures: the engine over S shards (engine/sharded.py) against one shard, same workload.

One process, 32 tasks, the seed's random trades over ``shards_markets`` markets and
``shards_users`` users, run on: one shard (today's layout) and 8 shards on the same
primary, then on a private 3-master loopback cluster one shard (today's cluster
deployment: one tag, one master) and 8 shards. Before the clock starts,
every sharded user trades once in every shard (its first trade there moves the shortfall
in by the transfer saga: timed, as "first trade in a new shard") and then has its money
spread over its sub-wallets (each transfer timed), so the measured trades find their funds
in their shard. One more row on the primary starts with every user's money at home, as
deposits leave it: the measured trades then pay the transfers that bring it where they trade.
The one-shard row and that one then have their streams drained by one persister into a fresh
database (a loop per shard over 8): its entries/s, transfers' events included.
Each primary's Redis CPU time (``INFO cpu``, user + system) per measured
trade is the scaling figure: flat as shards are added means N primaries on N cores give
N times the rate. (On the shared primary it includes whatever else runs there.)
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import redis as sync_redis
from predmarket.engine.connection import connect, connect_sync
from predmarket.engine.errors import EngineError
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Side
from predmarket.engine.settings import Settings
from predmarket.engine.sharded import ShardedEngine
from predmarket.engine.shards import shard_keys
from predmarket.engine.units import MICRO
from predmarket.persister.lag import group_lag
from predmarket.persister.sharded import ShardedPersister, build
from predmarket.persister.stream import GROUP

from bench import private_cluster
from bench.options import Sizes
from bench.scratch import scratch_database, scratch_prefix
from bench.stats import p50_p99_ms
from predmarket.workload import RandomTrades

TASKS = 32
SHARDS = 8
LIQUIDITY = 1_000 * MICRO
DEPOSIT = 1_000_000 * MICRO


@dataclass
class ShardRow:
    layout: str  # "1 shard, 1 primary", "8 shards, 1 primary", "1 shard, 3-master cluster", ...
    shards: int
    primaries: int
    trades: int
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    #: Redis CPU time per measured trade on each primary, µs
    cpu_us_per_trade: list[float]
    #: a user's first trade in a shard where it has no sub-wallet yet, and one transfer (4 steps),
    #: each timed alone (one at a time), ms
    first_trade_p50_ms: float | None = None
    first_trade_p99_ms: float | None = None
    transfer_p50_ms: float | None = None
    rejected: int = 0
    #: the row's streams (setup included) drained by one ``predmarket persister`` into a fresh
    #: database: entries and seconds until every group caught up (None: not drained)
    drain_entries: int | None = None
    drain_s: float | None = None

    @property
    def drain_entries_per_s(self) -> float | None:
        if self.drain_entries is None or not self.drain_s:
            return None
        return self.drain_entries / self.drain_s

    @property
    def trades_per_s(self) -> float:
        return self.trades / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        rate = self.drain_entries_per_s
        return {**asdict(self), "trades_per_s": round(self.trades_per_s, 1),
                "drain_entries_per_s": None if rate is None else round(rate, 1)}


@dataclass
class ShardsResult:
    rows: list[ShardRow] = field(default_factory=list)
    #: why the cluster row is missing, if it is
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "skipped": self.skipped}


def _cpu_s(client: sync_redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _timed(calls: list[Callable[[], Awaitable[object]]], tasks: int) -> list[float]:
    """Run ``calls`` by ``tasks`` workers; each call's latency, seconds."""
    latencies: list[float] = []
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            call = queue.pop()
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return latencies


class _Layout:
    """The calls the workload needs, on one engine (one shard) or a sharded one."""

    def __init__(self, engine: MarketEngine | ShardedEngine) -> None:
        self.engine = engine

    async def setup(self, users: int, markets: int) -> tuple[list[str], list[str]]:
        e = self.engine
        if isinstance(e, ShardedEngine):
            await e.start()
            await e.deposit(HOUSE, markets * LIQUIDITY)
            user_ids = [(await e.create_user(f"bench{i}")).user_id for i in range(users)]
            for user in user_ids:
                await e.deposit(user, DEPOSIT)
            market_ids = []
            for _ in range(markets):
                market = await e.create_market("bench", LIQUIDITY)
                await e.market_engine(market.market_id).markets.open(market.market_id)
                market_ids.append(market.market_id)
            return user_ids, market_ids
        await e.start()
        await e.accounts.deposit(HOUSE, markets * LIQUIDITY)
        user_ids = [(await e.accounts.create(f"bench{i}")).user_id for i in range(users)]
        for user in user_ids:
            await e.accounts.deposit(user, DEPOSIT)
        market_ids = []
        for _ in range(markets):
            market = await e.markets.create("bench", LIQUIDITY)
            await e.markets.open(market.market_id)
            market_ids.append(market.market_id)
        return user_ids, market_ids

    async def trade(self, order: Order) -> None:
        await self.engine.execute_trade(order)


async def _spread(engine: ShardedEngine, users: list[str], markets: list[str], row: ShardRow) -> None:
    """Every user's first trade in every shard, then its money spread evenly over its sub-wallets."""
    by_shard: dict[int, str] = {}
    for market in markets:
        by_shard.setdefault(engine.market_shard(market), market)
    firsts: list[Callable[[], Awaitable[object]]] = [
        partial(engine.execute_trade, Order(user, market, Side.BUY, "YES", shares=MICRO))
        for user in users for shard, market in by_shard.items() if shard != engine.home(user)]
    # One at a time: what a first trade in a new shard costs by itself, not behind 31 others.
    row.first_trade_p50_ms, row.first_trade_p99_ms = p50_p99_ms(await _timed(firsts, 1))
    moves: list[Callable[[], Awaitable[object]]] = []
    for user in users:
        home = engine.home(user)
        share = (await engine.balances(user))[home] // engine.count
        moves += [partial(engine.transfers.move, user, home, k, share) for k in range(engine.count) if k != home]
    row.transfer_p50_ms = p50_p99_ms(await _timed(moves, 1))[0]


async def _measure(settings: Settings, engine: MarketEngine | ShardedEngine, primaries: list[sync_redis.Redis],
                   sizes: Sizes, layout: str, seed: int | None, spread: bool = True) -> ShardRow:
    shards = engine.count if isinstance(engine, ShardedEngine) else 1
    row = ShardRow(layout, shards, len(primaries), 0, 0.0, 0.0, 0.0, [])
    wrapped = _Layout(engine)
    users, markets = await wrapped.setup(sizes.shards_users, sizes.shards_markets)
    if isinstance(engine, ShardedEngine) and spread:
        await _spread(engine, users, markets, row)
    workload = RandomTrades(random.Random(seed), users, markets)
    rejected = 0

    async def one() -> None:
        nonlocal rejected
        order = workload.next()
        try:
            await wrapped.trade(Order(order.user, order.market, order.side, order.outcome, shares=order.shares))
        except EngineError:
            rejected += 1
            workload.done(order, False)
        else:
            workload.done(order, True)

    cpu_before = [_cpu_s(p) for p in primaries]
    started = time.perf_counter()
    latencies = await _timed([one] * sizes.shards_trades, TASKS)
    row.elapsed_s = time.perf_counter() - started
    row.cpu_us_per_trade = [(_cpu_s(p) - before) * 1e6 / sizes.shards_trades
                            for p, before in zip(primaries, cpu_before, strict=True)]
    row.trades, row.rejected = sizes.shards_trades - rejected, rejected
    row.p50_ms, row.p99_ms = p50_p99_ms(latencies)
    if isinstance(engine, ShardedEngine):
        breaches = await engine.invariants()
        if breaches:
            raise RuntimeError(f"{layout}: invariants broken: {[str(b) for b in breaches[:5]]}")
    return row


def _run(settings: Settings, make: Callable[[Settings], MarketEngine | ShardedEngine],
         primaries: list[sync_redis.Redis], sizes: Sizes, layout: str, seed: int | None,
         spread: bool = True) -> ShardRow:
    async def go() -> ShardRow:
        engine = make(settings)
        try:
            return await _measure(settings, engine, primaries, sizes, layout, seed, spread)
        finally:
            await engine.close()

    return asyncio.run(go())


def _drain(settings: Settings, row: ShardRow, timeout_s: float = 300.0) -> None:
    """Copy the row's streams into a fresh database with one persister (``persister.sharded.build``,
    its production loop in a thread: a loop per shard when there are several); time it."""
    shards = [shard_keys(settings.key_prefix, k, row.shards) for k in range(row.shards)]
    with scratch_database(settings, "shards", migrated=True) as pg_url:
        scoped = settings.model_copy(update={"database_url": pg_url})
        client = connect_sync(scoped.redis_url, 30.0)
        persister = build(scoped, consumer="bench")
        thread = threading.Thread(target=persister.run, name="bench-shards-persister", daemon=True)
        try:
            entries = sum(int(client.xlen(keys.events)) for keys in shards)
            started = time.perf_counter()
            thread.start()
            while not all((lag := group_lag(client, keys.events, GROUP)) is not None and lag.entries == 0
                          for keys in shards):
                if time.perf_counter() - started > timeout_s or not thread.is_alive():
                    raise RuntimeError(f"{row.layout}: the persister did not catch up")
                time.sleep(0.02)  # polling the groups' lag, as bench/persister_runs.py does
            row.drain_entries, row.drain_s = entries, time.perf_counter() - started
        finally:
            for loop in persister.parts:
                loop.stopping = True
            if isinstance(persister, ShardedPersister):
                persister.stop()
            thread.join(timeout=30)
            persister.close()
            client.close()


def _sharded(settings: Settings) -> ShardedEngine:
    return ShardedEngine(connect(settings.redis_url, settings.redis_timeout_s), settings)


def shards_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> ShardsResult:
    result = ShardsResult()
    primary = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        with scratch_prefix(settings, "shards1") as one:
            result.rows.append(_run(one, MarketEngine.from_settings, [primary], sizes, "1 shard, 1 primary", seed))
            _drain(one, result.rows[-1])
        with scratch_prefix(settings, "shards8") as scoped:
            # The shards' keys (<p>:{s<k>}:...) are under the scratch prefix: removed with it.
            eight = scoped.model_copy(update={"shards": SHARDS})
            result.rows.append(_run(eight, _sharded, [primary], sizes, f"{SHARDS} shards, 1 primary", seed))
        with scratch_prefix(settings, "shards8home") as scoped:
            # The same with every user's money at home when the clock starts: its trades in other
            # shards bring it there (transfers timed with the trades: what a deployment meets).
            eight = scoped.model_copy(update={"shards": SHARDS})
            result.rows.append(_run(eight, _sharded, [primary], sizes, f"{SHARDS} shards, 1 primary, money at home",
                                    seed, spread=False))
            _drain(eight, result.rows[-1])
    finally:
        primary.close()
    if not private_cluster.available():
        result.skipped = "redis-server or redis-cli not installed: no cluster row"
    else:
        with private_cluster.private_cluster() as (url, masters):
            # Today's cluster deployment first: one shard, every key under one tag, so one master.
            one_tag = settings.model_copy(update={"redis_url": url, "key_prefix": "{bench}"})
            result.rows.append(_run(one_tag, MarketEngine.from_settings, masters, sizes,
                                    "1 shard, 3-master cluster", seed))
            on_cluster = settings.model_copy(update={"redis_url": url, "key_prefix": "bench", "shards": SHARDS})
            result.rows.append(_run(on_cluster, _sharded, masters, sizes,
                                    f"{SHARDS} shards, 3-master cluster", seed))
    for row in result.rows:
        drained = ("" if row.drain_entries_per_s is None else
                   f"; a persister drained its {row.drain_entries:,} entries in {row.drain_s:.2f} s = "
                   f"{row.drain_entries_per_s:,.0f}/s")
        first = drained + ("" if row.first_trade_p50_ms is None else
                 f"; first trade in a new shard p50 {row.first_trade_p50_ms:.2f} ms, p99 "
                 f"{row.first_trade_p99_ms:.2f} ms; a transfer p50 {row.transfer_p50_ms:.2f} ms")
        say(f"{row.layout}: {row.trades:,} trades in {row.elapsed_s:.2f} s = {row.trades_per_s:,.0f}/s, "
            f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms; Redis CPU per trade "
            + ", ".join(f"{us:.1f}" for us in row.cpu_us_per_trade) + " µs" + first)
    return result
