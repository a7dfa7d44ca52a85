"""The hot set under a large, mostly idle population: Redis memory with and without eviction.

On a private redis-server (so INFO memory measures this workload alone) and a
scratch database: create many funded users and many open markets, persist
them, trade with a small hot set, then let the janitor evict everyone idle
since the setup. Reports Redis memory before and after eviction, and the
latency of a first request for an evicted user (a PostgreSQL load) against a
request for a hot one.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import uvloop
from predmarket.engine.clock import redis_now_ms
from predmarket.engine.connection import connect_sync
from predmarket.engine.hotset import EVICTED_MARK_KEEP_MS
from predmarket.engine.keys import Keys
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Order, Outcome, Side
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from predmarket.persister.lag import group_lag
from predmarket.persister.stream import GROUP
from predmarket.persister.worker import Persister, build
from predmarket.record.loader import PgLoader
from sqlalchemy.ext.asyncio import create_async_engine

from bench.options import Sizes
from bench.scratch import scratch_database
from bench.stats import p50_p99_ms
from predmarket.services import private_redis

CHUNK = 500


@dataclass
class HotsetResult:
    users: int
    markets: int
    hot_users: int
    trades: int
    memory_without_mb: float
    memory_with_mb: float
    #: once the janitor has forgotten the eviction marks (EVICTED_MARK_KEEP_MS after the evictions)
    memory_marks_forgotten_mb: float
    users_in_redis_after: int
    evicted_first_p50_ms: float
    evicted_first_p99_ms: float
    hot_p50_ms: float
    hot_p99_ms: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _used_mb(client: redis.Redis) -> float:
    return float(client.info("memory")["used_memory"]) / 2**20


async def _populate(engine: MarketEngine, sizes: Sizes, say: Callable[[str], None]) -> tuple[list[str], list[str]]:
    await engine.start()
    await engine.accounts.deposit(HOUSE, sizes.hotset_markets * 100 * MICRO)
    markets = [f"hm{j}" for j in range(sizes.hotset_markets)]
    users = [f"hu{i}" for i in range(sizes.hotset_users)]
    for start in range(0, len(markets), CHUNK):
        chunk = markets[start:start + CHUNK]
        await asyncio.gather(*(engine.markets.create(f"market {m}", 100 * MICRO, m) for m in chunk))
        await asyncio.gather(*(engine.markets.open(m) for m in chunk))
    for start in range(0, len(users), CHUNK):
        chunk = users[start:start + CHUNK]
        await asyncio.gather(*(engine.accounts.create(u, u) for u in chunk))
        await asyncio.gather(*(engine.accounts.deposit(u, 1_000 * MICRO) for u in chunk))
        if start % 50_000 == 0:
            say(f"hot set: {start + len(chunk):,} of {len(users):,} users created")
    return users, markets


async def _trade(engine: MarketEngine, hot: list[str], markets: list[str], trades: int) -> None:
    rng = random.Random(1)
    left = trades

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            # Buy then sell back: hot users trade, yet end without positions (holders are never evicted,
            # and the point here is the idle population).
            user, market, outcome = rng.choice(hot), rng.choice(markets[:100]), rng.choice((Outcome.YES, Outcome.NO))
            await engine.execute_trade(Order(user, market, Side.BUY, outcome, shares=10 * MICRO))
            await engine.execute_trade(Order(user, market, Side.SELL, outcome, shares=10 * MICRO))

    await asyncio.gather(*(worker() for _ in range(32)))


async def _latencies(engine: MarketEngine, evicted: list[str], hot: list[str]) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    for user in evicted:
        started = time.perf_counter()
        await engine.accounts.get(user)  # not in Redis: loaded from PostgreSQL first
        cold.append(time.perf_counter() - started)
    for user in hot:
        started = time.perf_counter()
        await engine.accounts.get(user)
        warm.append(time.perf_counter() - started)
    return cold, warm


def _drain(p: Persister, client: redis.Redis, stream: str) -> None:
    thread = threading.Thread(target=p.run, daemon=True)
    thread.start()
    try:
        while True:
            lag = group_lag(client, stream, GROUP)
            if lag is not None and lag.entries == 0:
                return
            time.sleep(0.05)
    finally:
        p.stopping = True
        thread.join(60)


def hotset_section(settings: Settings, sizes: Sizes, say: Callable[[str], None], seed: int | None) -> HotsetResult:
    workdir = tempfile.mkdtemp(prefix="predbench-hotset-")
    server = private_redis(workdir, appendonly=False)
    try:
        with scratch_database(settings, "hotset", migrated=True) as db:
            scoped = settings.model_copy(update={"redis_url": server.url, "database_url": db, "key_prefix": "hot",
                                                 "user_idle_ttl_s": 0.0, "market_archive_after_s": 0.0})
            return _run(scoped, sizes, say)
    finally:
        assert server.stop is not None
        server.stop()


def _run(settings: Settings, sizes: Sizes, say: Callable[[str], None]) -> HotsetResult:
    client = connect_sync(settings.redis_url, 30.0)

    async def setup() -> tuple[list[str], list[str], int]:
        engine = MarketEngine.from_settings(settings)
        try:
            users, markets = await _populate(engine, sizes, say)
            created_ms = int(time.time() * 1000)
            await _trade(engine, users[:sizes.hotset_hot], markets, sizes.hotset_trades)
            return users, markets, created_ms
        finally:
            await engine.close()

    users, markets, created_ms = uvloop.run(setup())
    say("hot set: draining the setup into PostgreSQL")
    _drain(build(settings, consumer="hotset"), client, Keys(settings.key_prefix).events)
    without = _used_mb(client)
    # Evict everyone idle since the setup (the cold population), not the hot set that traded after it:
    # idleness measured at the end of the setup, with a 1 ms TTL.
    janitor = build(settings.model_copy(update={"user_idle_ttl_s": 0.001}), consumer="hotset-janitor")
    janitor.janitor.sweep(janitor.stream.committed(), now_ms=created_ms)
    with_eviction = _used_mb(client)
    janitor.janitor.forget_old_marks(redis_now_ms(client) + EVICTED_MARK_KEEP_MS)
    janitor.close()
    marks_forgotten = _used_mb(client)
    keys = Keys(settings.key_prefix)
    in_redis = sum(1 for k in client.scan_iter(match=keys.user("*"), count=5000) if keys.is_user_key(k))
    say(f"hot set: Redis {without:,.1f} MiB before eviction, {with_eviction:,.1f} MiB after, "
        f"{marks_forgotten:,.1f} MiB once the eviction marks are forgotten; {in_redis:,} users left in Redis")

    async def measure() -> tuple[list[float], list[float]]:
        engine = MarketEngine.from_settings(settings)
        pg = create_async_engine(settings.database_url, pool_size=4)
        engine.loader = PgLoader(pg, engine.scripts, engine.keys)
        try:
            sample = users[sizes.hotset_hot:][:200]
            return await _latencies(engine, sample, users[:200])
        finally:
            await engine.close()
            await pg.dispose()

    cold, warm = uvloop.run(measure())
    client.close()
    cold_p50, cold_p99 = p50_p99_ms(cold)
    warm_p50, warm_p99 = p50_p99_ms(warm)
    return HotsetResult(
        users=len(users), markets=len(markets), hot_users=sizes.hotset_hot, trades=2 * sizes.hotset_trades,
        memory_without_mb=without, memory_with_mb=with_eviction, memory_marks_forgotten_mb=marks_forgotten,
        users_in_redis_after=in_redis,
        evicted_first_p50_ms=cold_p50, evicted_first_p99_ms=cold_p99, hot_p50_ms=warm_p50, hot_p99_ms=warm_p99,
    )
