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

from typing import cast

import redis
from redis.cluster import RedisCluster


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
