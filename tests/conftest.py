"""Shared fixtures: real Redis (own key prefix per test), factories for users and markets.

Set ``PM_TEST_REDIS_URL`` to point the suite at another Redis. When Redis is
unreachable the fast tests fall back to fakeredis (with Lua), unless
``PM_REQUIRE_REAL_SERVICES=1`` (set by CI), which turns any fallback into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis as sync_redis
from predmarket.engine.connection import connect
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import HOUSE, Account, Market
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from redis.asyncio import Redis

from tests.support.cluster import PrivateCluster, require_binaries

REDIS_URL = os.environ.get("PM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REAL = os.environ.get("PM_REQUIRE_REAL_SERVICES") == "1"


def _redis_reachable() -> bool:
    try:
        return bool(sync_redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except sync_redis.exceptions.ConnectionError:
        return False


REAL_REDIS = _redis_reachable()


def new_redis() -> Redis:
    """A client of the test Redis (or fakeredis where allowed)."""
    if REAL_REDIS:
        return connect(REDIS_URL)
    if REQUIRE_REAL:
        pytest.fail(f"PM_REQUIRE_REAL_SERVICES=1 but Redis at {REDIS_URL} is unreachable")
    import fakeredis

    return fakeredis.FakeAsyncRedis(decode_responses=True, lua_modules=set())


def pytest_report_header() -> str:
    return f"redis: {REDIS_URL if REAL_REDIS else 'fakeredis fallback'}"


@pytest.fixture
def prefix() -> str:
    return f"pmtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(prefix: str) -> Settings:
    return Settings(key_prefix=prefix, redis_url=REDIS_URL)


async def delete_prefix(redis: Redis, prefix: str) -> None:
    """Remove one test's keys (never a FLUSHDB of the shared Redis)."""
    batch: list[str] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await redis.delete(*batch)
            batch.clear()
    if batch:
        await redis.delete(*batch)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[MarketEngine]:
    eng = MarketEngine(new_redis(), settings)
    await eng.start()
    try:
        yield eng
    finally:
        await delete_prefix(eng.redis, settings.key_prefix)
        await eng.close()


UserFactory = Callable[..., Awaitable[Account]]
MarketFactory = Callable[..., Awaitable[Market]]


@pytest.fixture
def make_user(engine: MarketEngine) -> UserFactory:
    """``await make_user(balance_units=1000)`` -> a funded account."""
    counter = iter(range(1_000_000))

    async def make(balance_units: int = 1_000, username: str | None = None) -> Account:
        account = await engine.accounts.create(username or f"user-{next(counter)}")
        if balance_units:
            await engine.accounts.deposit(account.user_id, balance_units * MICRO)
        return await engine.accounts.get(account.user_id)

    return make


@pytest.fixture
def make_market(engine: MarketEngine) -> MarketFactory:
    """``await make_market(b_units=100, open=True)`` -> a market; house is funded for the subsidy."""

    async def make(b_units: int = 100, open: bool = True, name: str = "Test market") -> Market:
        await engine.accounts.deposit(HOUSE, b_units * MICRO)
        market = await engine.markets.create(name, b_units * MICRO)
        if open:
            market = await engine.markets.open(market.market_id)
        return market

    return make


async def snapshot(redis: Redis, prefix: str) -> dict[str, object]:
    """Every key of ``prefix`` with its full contents, to prove a rejection changed nothing."""
    out: dict[str, object] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        kind = await redis.type(key)
        if kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "string":
            out[key] = (await redis.get(key), await redis.ttl(key) > 0)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            out[key] = await redis.xrange(key)
        elif kind == "set":
            out[key] = sorted(await redis.smembers(key))
        elif kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        else:
            out[key] = kind
    return out


# --------------------------------------------------------------------------- PostgreSQL

PG_SERVER_URL = os.environ.get("PM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_url(database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(PG_SERVER_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per run; each test clones it (CREATE DATABASE ... TEMPLATE)."""
    from predmarket.record.database import drop_database, migrate

    name = f"pmtest_tmpl_{uuid.uuid4().hex[:10]}"
    url = _pg_url(name)
    try:
        migrate(url)
    except Exception as exc:  # any failure here means "no PostgreSQL"
        if REQUIRE_REAL:
            pytest.fail(f"PostgreSQL unreachable at {PG_SERVER_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield name
    finally:
        drop_database(url)


@pytest.fixture
def database_url(pg_template: str) -> Iterator[str]:
    """A throwaway database with the schema, dropped after the test."""
    from predmarket.record.database import drop_database
    from sqlalchemy import create_engine, text

    name = f"pmtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    finally:
        admin.dispose()
    url = _pg_url(name)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_settings(prefix: str, database_url: str) -> Settings:
    """Settings with both an own Redis prefix and an own database."""
    return Settings(key_prefix=prefix, redis_url=REDIS_URL, database_url=database_url)


# --------------------------------------------------------------------------- Redis Cluster (tests/support/cluster.py)

@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[PrivateCluster]:
    """3 masters without replicas on loopback, started once per run (~2 s). Do not fault it (a killed
    master takes its slots down for the rest of the run): failover tests use redis_cluster_with_replicas."""
    require_binaries()
    with PrivateCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_with_replicas() -> Iterator[PrivateCluster]:
    """3 masters with one replica each, cluster-node-timeout 1 s (failover in ~2.5 s); a fresh one per
    test (~2 s), since a failover test leaves it changed."""
    require_binaries()
    with PrivateCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        yield cluster
