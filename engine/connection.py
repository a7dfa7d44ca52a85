"""The Redis client and the translation of connection failures into ``Unavailable``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import Unavailable

#: Failures that mean "Redis cannot answer now", as opposed to a bad command.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)


def connect(url: str, timeout_s: float = 2.0, max_connections: int = 256) -> Redis:
    """An asyncio Redis client whose calls fail within ``timeout_s`` instead of hanging.

    At most ``max_connections`` connections; a burst beyond that waits (up to
    ``timeout_s``) for a free one instead of failing at once.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # A connection idle for a second is PINGed before use, so one left dead by a
        # Redis restart is replaced instead of failing the next request.
        health_check_interval=1,
        max_connections=max_connections,
        timeout=timeout_s,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


@contextmanager
def unavailable_on_disconnect() -> Iterator[None]:
    """Turn 'Redis unreachable' into :class:`Unavailable` (an HTTP 503, never a 500)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise Unavailable(f"Redis is unreachable: {exc.__class__.__name__}") from exc
