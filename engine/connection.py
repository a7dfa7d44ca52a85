"""The Redis client and the translation of connection failures into ``Unavailable``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from predmarket.engine.errors import Unavailable
from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.exceptions import BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: Failures that mean "Redis cannot answer now", as opposed to a bad command.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError)


class _Connection(Connection):
    """redis-py's TCP connection, translating uvloop's way of saying "the socket is gone".

    Writing on a transport that closed under it (a Redis that just died) makes uvloop
    raise RuntimeError, which redis-py passes through; it is a lost connection like any
    other, and must become UNAVAILABLE (503), not a 500.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:
            if "closed" not in str(exc):
                raise
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"connection lost: {exc}") from exc


def connect(url: str, timeout_s: float = 2.0, max_connections: int = 256) -> Redis:
    """An asyncio Redis client whose calls fail within ``timeout_s`` instead of hanging.

    At most ``max_connections`` connections; a burst beyond that waits (up to
    ``timeout_s``) for a free one instead of failing at once.
    """
    options: dict[str, Any] = {"connection_class": _Connection} if url.startswith("redis://") else {}
    pool = BlockingConnectionPool.from_url(
        url,
        **options,
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
