"""Every Redis client of the product, and the translation of connection failures into ``Unavailable``.

``PM_REDIS_URL=redis://...`` gives redis-py's ``Redis``; ``redis+cluster://h1:p1,h2:p2,...``
gives its ``RedisCluster`` with those seed nodes. Both with the same timeouts and
decoding, and both configured never to send a command twice (see :func:`no_resend`).

Why retries are off. What redis-py 8.2.0 does by default when a reply does not come
within the socket timeout (measured: a script that INCRs a counter, then runs 1.5 s,
called once with a 0.5 s timeout; ``tests/test_redis_clients.py`` keeps a witness):

- ``Redis(host=..., port=...)``, sync and asyncio: ``retry=Retry(ExponentialWithJitterBackoff,
  10)`` on ConnectionError and TimeoutError: it re-sends the command up to 10 times;
  the script ran 7 times (the caller waited 10 s for a TimeoutError); 8 or 9 times
  with a 0.3 s timeout and a 0.8 s script.
- ``Redis.from_url`` / ``ConnectionPool.from_url`` without ``retry``: the connection's
  own default, ``Retry(NoBackoff(), 0)``: sent once (counter 1). The product relied
  on that default; it is now explicit.
- ``RedisCluster``, sync and asyncio: the cluster client retries ConnectionError,
  TimeoutError, ClusterDownError and SlotNotCoveredError ``cluster_error_retry_attempts``
  (default 10) times, re-sending the command to the slot's node after a topology
  refresh: the script ran 7 times (8 in the issue's measurement; 8 or 9 with a
  0.3 s timeout and a 0.8 s script). A lost connection (ConnectionError) is re-sent the same way, though the
  command may have run before the connection dropped.

A timeout says nothing about whether the command ran, so a write re-sent after one may
run twice (a trade, a deposit). Every client here has ``retry=Retry(NoBackoff(), 0)``:
a timeout or a lost connection surfaces to the caller, as :class:`Unavailable` (503),
and the client decides (an ``Idempotency-Key`` makes its retry safe). What stays
automatic is what cannot run a command twice: RedisCluster follows MOVED, ASK and
TRYAGAIN replies inside one attempt (the node refused the command; that loop is not
governed by ``retry``), scripts reload on NOSCRIPT (refused too), and the connection's
connect and idle health check (no command of ours is on the wire). CLUSTERDOWN is not
re-sent either: it surfaces as Unavailable, the cluster is failing over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
from predmarket.engine.errors import Unavailable
from predmarket.engine.settings import CLUSTER_SCHEME
from redis.asyncio import BlockingConnectionPool, Connection, Redis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    BusyLoadingError,
    ClusterError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

#: Failures that mean "Redis cannot answer now", as opposed to a bad command. The cluster's:
#: CLUSTERDOWN (a ClusterError), redis-py's redirect budget spent (ClusterError "TTL exhausted"),
#: a slot no node serves, and no seed node reachable.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError, ClusterError,
               SlotNotCoveredError, RedisClusterUnreachableError)

log = logging.getLogger("predmarket.redis")


def no_resend() -> Retry:
    """One attempt per command (see the module's docstring); a new object per client, as redis-py mutates it."""
    return Retry(NoBackoff(), 0)


def no_resend_async() -> AsyncRetry:
    """:func:`no_resend` for the asyncio clients (which take redis.asyncio's Retry)."""
    return AsyncRetry(NoBackoff(), 0)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def seed_nodes(url: str) -> list[tuple[str, int]]:
    """``redis+cluster://h1:p1,h2:p2`` -> ``[("h1", p1), ("h2", p2)]`` (the port defaults to 6379)."""
    if not is_cluster_url(url):
        raise ValueError(f"not a {CLUSTER_SCHEME} URL: {url!r}")
    rest = url[len(CLUSTER_SCHEME):].split("/", 1)[0].split("?", 1)[0]
    seeds = []
    for item in (part.strip() for part in rest.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, "6379"
        if not host or not port.isdigit():
            raise ValueError(f"{CLUSTER_SCHEME} takes host:port seeds separated by commas, not {item!r}")
        seeds.append((host, int(port)))
    return seeds


def lost_if_closed(exc: RuntimeError) -> RedisConnectionError | None:
    """uvloop's RuntimeError for a write on a transport that closed under it (a Redis that just
    died), as the lost connection it is; None for any other RuntimeError (a bug: let it through)."""
    return RedisConnectionError(f"connection lost: {exc}") if "closed" in str(exc) else None


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
            lost = lost_if_closed(exc)
            if lost is None:
                raise
            await self.disconnect(nowait=True)
            raise lost from exc


def connect(url: str, timeout_s: float = 2.0, max_connections: int = 256) -> Redis:
    """An asyncio client whose calls fail within ``timeout_s`` instead of hanging, never re-sent.

    At most ``max_connections`` connections (per node on a cluster); on one primary a
    burst beyond that waits (up to ``timeout_s``) for a free one instead of failing at
    once. On a cluster the client is redis-py's asyncio ``RedisCluster``, typed as
    ``Redis`` for the product's callers: it answers the same command methods they call
    (the ordered channel, which works on a connection, checks for it).
    """
    if is_cluster_url(url):
        cluster = AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(host, port) for host, port in seed_nodes(url)],
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=1,
            max_connections=max_connections,
            retry=no_resend_async(),
        )
        # The cluster client takes no connection_class, but builds each node it discovers from
        # connection_kwargs: its nodes translate uvloop's "closed" too (tests/test_redis_clients.py checks).
        cluster.connection_kwargs["connection_class"] = _Connection
        return cast(Redis, cluster)
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
        retry=no_resend_async(),
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def connect_sync(url: str, timeout_s: float, *, connect_timeout_s: float | None = None,
                 decode_responses: bool = True, encoding_errors: str = "strict") -> redis.Redis:
    """A synchronous client (the persister, the commands), never re-sending a command.

    On a cluster, redis-py's ``RedisCluster``, typed as ``redis.Redis`` for the callers
    (same command methods); building it asks a seed node for the topology.
    """
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "encoding_errors": encoding_errors,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s if connect_timeout_s is None else connect_timeout_s,
        "retry": no_resend(),
    }
    if is_cluster_url(url):
        seeds = [ClusterNode(host, port) for host, port in seed_nodes(url)]  # type: ignore[no-untyped-call]  # untyped in redis-py
        return cast(redis.Redis, _start_cluster_client(seeds, options))
    return redis.Redis.from_url(url, **options)


#: How long building a synchronous cluster client keeps trying while a node is unreachable: about
#: the time Redis Cluster takes to promote a replica (twice cluster-node-timeout, 15 s by default).
CLUSTER_START_WAIT_S = 40.0


def _start_cluster_client(seeds: list[ClusterNode], options: dict[str, Any]) -> RedisCluster:
    """``RedisCluster(seeds)``, tried again while a node is unreachable.

    Building it sends ``COMMAND`` to one master of the slot map; during a failover that can
    be the dead master, and a persister or command started then would exit instead of
    waiting the few seconds until its replica is promoted (seen in tests/test_cluster_chaos.py).
    """
    deadline = time.monotonic() + CLUSTER_START_WAIT_S
    pause = 0.1
    while True:
        try:
            return RedisCluster(startup_nodes=seeds, **options)
        except RedisClusterUnreachableError:
            raise  # no seed answered at all: a wrong URL or a cluster down, not a failover under way
        except UNREACHABLE as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("Redis Cluster not ready (%s: %s); trying again in %.1fs", exc.__class__.__name__, exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


@contextmanager
def unavailable_on_disconnect() -> Iterator[None]:
    """Turn 'Redis unreachable' into :class:`Unavailable` (an HTTP 503, never a 500)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise Unavailable(f"Redis is unreachable: {exc.__class__.__name__}") from exc
