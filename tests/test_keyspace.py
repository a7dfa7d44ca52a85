"""engine.keyspace.PagedScan: every key exactly once per pass, a page at a time, on one primary and on a cluster.

The janitor spreads its user scan over rounds with it; on a cluster a plain SCAN with an int cursor is
refused by redis-py (each master has its own cursor), which stopped the persister there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis as sync_redis
from predmarket.engine.connection import connect_sync
from predmarket.engine.keyspace import PagedScan

from tests.support.cluster import PrivateCluster
from tests.support.services import REAL_REDIS, sync_client

KEYS = 300


def _one_pass(client: sync_redis.Redis, match: str) -> list[str]:
    scan = PagedScan(client, match, count=25)
    seen = list(scan.page())
    pages = 1
    while not scan.at_start:
        seen += scan.page()
        pages += 1
    assert pages > 1  # a page is bounded: 300 keys never come in one
    return seen


def _written(client: sync_redis.Redis, prefix: str) -> Iterator[list[str]]:
    keys = [f"{prefix}:{i}" for i in range(KEYS)]
    for key in keys:
        client.set(key, "1")
    try:
        yield keys
    finally:
        for key in keys:
            client.delete(key)


@pytest.mark.skipif(not REAL_REDIS, reason="needs a real Redis")
def test_one_primary_every_key_once_per_pass() -> None:
    client = sync_client()
    prefix = f"pmtest-keyspace-{uuid.uuid4().hex[:8]}"
    try:
        for keys in _written(client, prefix):
            assert sorted(_one_pass(client, f"{prefix}:*")) == sorted(keys)
            assert sorted(_one_pass(client, f"{prefix}:*")) == sorted(keys)  # the next pass starts over
    finally:
        client.close()


def test_cluster_every_master_scanned_every_key_once(redis_cluster: PrivateCluster) -> None:
    client = connect_sync(redis_cluster.url, 5)
    prefix = f"pmtest-keyspace-{uuid.uuid4().hex[:8]}"  # untagged: the keys spread over every master
    try:
        for keys in _written(client, prefix):
            owners = {redis_cluster.master_for_key(key).port for key in keys}
            assert len(owners) == 3
            assert sorted(_one_pass(client, f"{prefix}:*")) == sorted(keys)
            assert sorted(_one_pass(client, f"{prefix}:*")) == sorted(keys)
    finally:
        client.close()
