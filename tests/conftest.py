"""The suite's fixtures, and nothing else: helpers live in ``tests/support/``.

Real Redis (own key prefix per test), a throwaway PostgreSQL database per test
(cloned from one migrated per run), factories for users and markets, and the API
contract suite's stacks of ``predmarket`` processes. Where the services are and
the fakeredis fallback: ``tests/support/services.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

# Before importing it: assertions in the helpers report the values compared.
pytest.register_assert_rewrite("tests.support")

import redis as sync_redis  # noqa: E402
from predmarket.engine.market_engine import MarketEngine  # noqa: E402
from predmarket.engine.models import HOUSE, Account, Market  # noqa: E402
from predmarket.engine.settings import Settings  # noqa: E402
from predmarket.engine.units import MICRO  # noqa: E402

from tests.support.api import Api, Stack, StackFactory  # noqa: E402
from tests.support.cluster import PrivateCluster, require_binaries  # noqa: E402
from tests.support.database import clone_database, drop_database, migrated_template  # noqa: E402
from tests.support.factories import EngineFactory, MarketFactory, UserFactory  # noqa: E402
from tests.support.network import free_port  # noqa: E402
from tests.support.redis_data import delete_prefix, delete_prefix_async  # noqa: E402
from tests.support.services import (  # noqa: E402
    PG_SERVER_URL,
    REAL_REDIS,
    REDIS_URL,
    REQUIRE_REAL,
    new_redis,
    pg_url,
    sync_client,
)


def pytest_report_header() -> str:
    return f"redis: {REDIS_URL if REAL_REDIS else 'fakeredis fallback'}"


#: every key prefix handed out by the ``prefix`` fixture (see :func:`pytest_sessionfinish`)
_PREFIXES: set[str] = set()


@pytest.fixture
def prefix() -> str:
    value = f"pmtest-{uuid.uuid4().hex[:12]}"
    _PREFIXES.add(value)
    return value


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test left keys under its prefix in the shared Redis.

    Every CI run had left four keys behind (a ``serve`` test without a cleanup): the
    shared Redis is other runs' and sessions' too, so what a test writes there it removes.
    """
    if not REAL_REDIS or not _PREFIXES:
        return
    client = sync_client()
    try:
        left = sorted({key.partition(":")[0] for key in client.scan_iter(match="pmtest-*", count=10_000)} & _PREFIXES)
    finally:
        client.close()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"keys left in the shared Redis under test prefixes ({len(left)}): "
                                f"{', '.join(left[:10])}; each test removes what it writes there", red=True)
        if session.exitstatus == pytest.ExitCode.OK:  # an interrupted or failed run keeps its own status
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def settings(prefix: str) -> Settings:
    return Settings(key_prefix=prefix, redis_url=REDIS_URL)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[MarketEngine]:
    eng = MarketEngine(new_redis(), settings)
    await eng.start()
    try:
        yield eng
    finally:
        await delete_prefix_async(eng.redis, settings.key_prefix)
        await eng.close()


@pytest.fixture
async def engines(engine: MarketEngine, settings: Settings) -> AsyncIterator[EngineFactory]:
    """``engines(**overrides)`` -> another engine on its own Redis client, same prefix (another process)."""
    made: list[MarketEngine] = []

    def make(**overrides: Any) -> MarketEngine:
        eng = MarketEngine(new_redis(), Settings(key_prefix=settings.key_prefix, redis_url=REDIS_URL, **overrides))
        made.append(eng)
        return eng

    try:
        yield make
    finally:  # before `engine` deletes the prefix
        for eng in made:
            await eng.close()


@pytest.fixture
def redis_client(prefix: str) -> Iterator[sync_redis.Redis]:
    """A synchronous client (strings decoded) of the test Redis; the prefix's keys are deleted afterwards."""
    client = sync_client()
    try:
        yield client
    finally:
        delete_prefix(prefix)
        client.close()


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


# --------------------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per run; each test clones it (CREATE DATABASE ... TEMPLATE)."""
    try:
        name = migrated_template()
    except Exception as exc:  # any failure here means "no PostgreSQL"
        if REQUIRE_REAL:
            pytest.fail(f"PostgreSQL unreachable at {PG_SERVER_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield name
    finally:
        drop_database(pg_url(name))


@pytest.fixture
def database_url(pg_template: str) -> Iterator[str]:
    """A throwaway database with the schema, dropped after the test."""
    url = clone_database(pg_template)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_settings(prefix: str, database_url: str) -> Settings:
    """Settings with both an own Redis prefix and an own database."""
    return Settings(key_prefix=prefix, redis_url=REDIS_URL, database_url=database_url)


# --------------------------------------------------------------------------- API stacks (tests/support/api.py)

@pytest.fixture(scope="session")
def stacks(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Stacks on the shared Redis; with ``PM_TEST_LAYOUT=cluster`` on a private 3-master cluster instead
    (``make suite-cluster``: the HTTP contract on Redis Cluster, each stack under a tagged prefix)."""
    with ExitStack() as context:
        redis_url = REDIS_URL
        if os.environ.get("PM_TEST_LAYOUT", "").startswith("cluster"):
            require_binaries()
            redis_url = context.enter_context(PrivateCluster(masters=3)).url
        factory = StackFactory(pg_template, tmp_path_factory.mktemp("api-stacks"), redis_url)
        context.callback(factory.close)  # stacks stop before their cluster does
        yield factory


@pytest.fixture(scope="session")
def api_stack(stacks: StackFactory) -> Stack:
    """Two ``predmarket serve`` replicas and one persister on one prefix and one database, started once per
    session; every test creates its own users and markets with unique ids."""
    return stacks.start("main")


@pytest.fixture(scope="session")
def api(api_stack: Stack) -> Iterator[Api]:
    client = Api(api_stack)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def nopersist_stack(stacks: StackFactory) -> Stack:
    """Two replicas without a persister, durable answers bounded at 1 s."""
    return stacks.start("nopersist", persister=False, PM_DURABLE_WAIT_S="1")


@pytest.fixture(scope="session")
def ratelimited_stack(stacks: StackFactory, api_stack: Stack) -> Stack:
    """One server allowing 2 requests per second per user (bursts of 4)."""
    return stacks.start("ratelimited", replicas=1, persister=False, database_url=api_stack.database_url,
                        PM_RATE_LIMIT_PER_S="2")


@pytest.fixture(scope="session")
def dead_redis_stack(stacks: StackFactory, api_stack: Stack) -> Stack:
    """One server whose Redis is a closed port (PostgreSQL is up)."""
    return stacks.start("deadredis", replicas=1, persister=False, database_url=api_stack.database_url,
                        redis_url=f"redis://127.0.0.1:{free_port()}/0", wait_house=False)


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
