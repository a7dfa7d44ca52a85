"""Where the suite's shared services are, and whether they answer.

Set ``PM_TEST_REDIS_URL`` / ``PM_TEST_PG_URL`` to point the suite at other servers.
When Redis is unreachable the fast tests fall back to fakeredis (with Lua), unless
``PM_REQUIRE_REAL_SERVICES=1`` (set by CI), which turns any fallback into a failure.
"""

from __future__ import annotations

import os

import pytest
import redis as sync_redis
from predmarket.engine.connection import connect, connect_sync, is_cluster_url
from predmarket.engine.settings import Settings
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

REDIS_URL = os.environ.get("PM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_SERVER_URL = os.environ.get("PM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_REAL = os.environ.get("PM_REQUIRE_REAL_SERVICES") == "1"


def _redis_reachable() -> bool:
    try:
        return bool(sync_redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except sync_redis.exceptions.ConnectionError:
        return False


REAL_REDIS = _redis_reachable()


def real_services() -> Settings:
    """Settings for the real Redis and PostgreSQL, for code that runs in other processes (no fakeredis
    there); skips (or fails under ``PM_REQUIRE_REAL_SERVICES=1``) without a real Redis."""
    if not REAL_REDIS:
        if REQUIRE_REAL:
            pytest.fail(f"PM_REQUIRE_REAL_SERVICES=1 but Redis at {REDIS_URL} is unreachable")
        pytest.skip("needs a real Redis (the work runs in separate processes)")
    return Settings(redis_url=REDIS_URL, database_url=PG_SERVER_URL)


def new_redis() -> Redis:
    """An asyncio client of the test Redis (or fakeredis where allowed); the caller closes it."""
    if REAL_REDIS:
        return connect(REDIS_URL)
    if REQUIRE_REAL:
        pytest.fail(f"PM_REQUIRE_REAL_SERVICES=1 but Redis at {REDIS_URL} is unreachable")
    import fakeredis

    return fakeredis.FakeAsyncRedis(decode_responses=True, lua_modules=set())


def sync_client(redis_url: str = REDIS_URL) -> sync_redis.Redis:
    """A synchronous client (strings decoded) of ``redis_url``; the caller closes it.

    A ``redis+cluster://`` URL gives the product's cluster client (typed as Redis): the
    same commands, each routed to its slot's master, SCAN over every master.
    """
    if is_cluster_url(redis_url):
        return connect_sync(redis_url, 30)
    return sync_redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=30)


def pg_url(database: str) -> str:
    """The URL of ``database`` on the test PostgreSQL server."""
    return make_url(PG_SERVER_URL).set(database=database).render_as_string(hide_password=False)
