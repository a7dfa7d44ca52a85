"""Waiting for replicas (``WAIT``): what makes a write survive a failover.

Redis replicates asynchronously: a master that dies right after a write may be
replaced by a replica that never received it. ``WAIT n ms`` blocks the client
until ``n`` replicas have every write *that client* made (it answers how many
did, after at most ``ms``); the most up-to-date replica is the one promoted, so
a write confirmed by one replica survives the master's loss.

``WAIT`` counts the calling connection's own writes only. The persister reads
entries other clients wrote, so :func:`fence` first makes a write of its own
(``INCR`` of a counter) on the same connection: the ``WAIT`` that follows then
covers every write the master had made before, among them the entries read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import hiredis
import redis
from predmarket.engine.channel import cluster_of, owner_of
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection
from redis.cluster import RedisCluster

log = logging.getLogger("predmarket.engine")


def fence(client: redis.Redis, key: str, replicas: int, timeout_ms: int) -> int:
    """INCR ``key`` then WAIT on one connection; how many replicas have every write made before it.

    On a cluster the two go to the master owning ``key``'s slot (the deployment's
    one slot, whose stream the persister reads).
    """
    target: object = client
    if isinstance(target, RedisCluster):
        node = target.get_node_from_key(key)  # type: ignore[no-untyped-call]  # untyped in redis-py
        if node is None or node.redis_connection is None:
            raise redis.ConnectionError(f"no master known for the slot of {key!r}")
        client = node.redis_connection
    with client.pipeline(transaction=False) as pipe:  # one connection for both
        pipe.incr(key)
        pipe.execute_command("WAIT", replicas, timeout_ms)  # type: ignore[no-untyped-call]  # untyped in redis-py
        _, acknowledged = pipe.execute()
    return cast(int, acknowledged)


class ReplicasBehind(redis.ConnectionError):
    """Fewer replicas than ``PM_REPLICA_ACKS`` confirmed in time: a store outage for the persister."""


async def fence_async(client: Redis, key: str, replicas: int, timeout_ms: int) -> int:
    """:func:`fence` for an asyncio client (one Redis or a cluster): INCR ``key`` then WAIT on one
    connection of the master owning ``key``; how many replicas have every write it made before."""
    cluster = cluster_of(client)
    node = await owner_of(cluster, key) if cluster is not None else None
    conn: AbstractConnection = (node.acquire_connection() if node is not None
                                else await client.connection_pool.get_connection())  # type: ignore[no-untyped-call]
    healthy = False
    try:
        await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        incr: Any = ("INCR", key)  # hiredis's stub types the argument as a 1-tuple
        wait: Any = ("WAIT", replicas, timeout_ms)
        await conn.send_packed_command(hiredis.pack_command(incr) + hiredis.pack_command(wait))
        await conn.read_response()
        acknowledged = await conn.read_response()
        healthy = True
    finally:
        if not healthy:  # a reply may still be on its way: never hand this connection to another call
            await conn.disconnect()
        if node is not None:
            node.release(cast(Connection, conn))  # acquired from the node: one of its own
        else:
            await client.connection_pool.release(conn)
    return int(cast(int, acknowledged))


class ReplicaFence:
    """What an acknowledged admin write waits for (``PM_REPLICA_ACKS``): its replicas have it.

    Deposits, withdrawals, market creation and lifecycle changes and settlement run through
    the registry's scripts on the shared pool, so the ``WAIT`` cannot ride on their own
    connection; :func:`fence_async` covers them all the same (a WAIT counts every write the
    master made before the fence's own). A shortfall leaves the answer as it is (the write
    ran), and is counted and logged, as for trades.
    """

    def __init__(self, client: Redis, key: str, replicas: int, timeout_ms: int,
                 on_shortfall: Callable[[], None] | None = None) -> None:
        self._client = client
        self._key = key
        self.replicas = replicas
        self._timeout_ms = timeout_ms
        self._on_shortfall = on_shortfall
        self.shortfalls = 0
        self._logged = 0.0

    async def __call__(self) -> None:
        if not self.replicas:
            return
        try:
            confirmed = await fence_async(self._client, self._key, self.replicas, self._timeout_ms)
        except redis.ResponseError:
            confirmed = 0  # a node no longer a master refuses WAIT: no confirmation
        if confirmed >= self.replicas:
            return
        self.shortfalls += 1
        if self._on_shortfall is not None:
            self._on_shortfall()
        if time.monotonic() - self._logged > 10:
            self._logged = time.monotonic()
            log.warning("an admin write was answered with %d of %d replica confirmations (PM_REPLICA_ACKS) "
                        "after %d ms", confirmed, self.replicas, self._timeout_ms)
