"""An incremental SCAN that works on one primary and on a Redis Cluster alike.

SCAN's cursor belongs to one server: on a cluster each master has its own
keyspace and cursor (redis-py's cluster client answers a plain ``scan()`` with a
dict of per-node cursors, and sends an int cursor nowhere useful). A
:class:`PagedScan` walks the masters one after another in a fixed order, one
bounded page per call, so a caller that spreads its work over rounds (the
janitor) keeps that shape on a cluster. ``scan_iter`` (used for whole passes by
recovery and tests) already iterates every node in redis-py's cluster client.
"""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.cluster import ClusterNode, RedisCluster


class PagedScan:
    """SCAN ``match`` a page at a time over every master; :attr:`at_start` after each full pass."""

    def __init__(self, client: redis.Redis, match: str, count: int) -> None:
        self._client = client
        self._match = match
        self._count = count
        self._node = 0  # index into the masters, in name order (0 on one primary)
        self._cursor = 0

    @property
    def at_start(self) -> bool:
        """True before the first page and whenever a page ended a pass over the whole keyspace."""
        return self._node == 0 and self._cursor == 0

    def page(self) -> list[str]:
        """The next page of keys (possibly empty: SCAN may answer none and still move on)."""
        cluster: object = self._client
        if not isinstance(cluster, RedisCluster):
            self._cursor, keys = cast(tuple[int, list[str]], self._client.scan(
                self._cursor, match=self._match, count=self._count))
            return keys
        masters = _masters(cluster)
        if self._node >= len(masters):  # the cluster lost a master since the last page
            self._node, self._cursor = 0, 0
        node = masters[self._node]
        cursors, keys = cast(tuple[dict[str, int], list[str]], cluster.scan(
            self._cursor, match=self._match, count=self._count, target_nodes=node))
        self._cursor = int(cursors[node.name])
        if self._cursor == 0:
            self._node = (self._node + 1) % len(masters)
        return keys


def _masters(cluster: RedisCluster) -> list[ClusterNode]:
    nodes: list[Any] = cluster.get_primaries()  # type: ignore[no-untyped-call]  # untyped in redis-py
    return sorted(nodes, key=lambda node: str(node.name))
