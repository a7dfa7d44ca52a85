"""The private Redis Cluster the cluster tests run on (tests/support/cluster.py), checked on real nodes.

What the product must live with on a cluster: slots spread over the masters by hash tag, CROSSSLOT for a
command (or script) whose keys are in different slots, and a SIGKILLed master replaced by its replica
without losing a write a replica acknowledged.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from tests.support.cluster import (
    SLOTS,
    PrivateCluster,
    async_cluster_nodes_from_url,
    cluster_nodes_from_url,
    require_binaries,
    seeds_from_url,
)

#: Tags as the product spells shards ({s:<k>}): 16 of them cover all three masters of an even split.
SHARD_TAGS = [f"{{s:{k}}}" for k in range(16)]


def test_the_url_form_gives_the_seeds() -> None:
    url = "redis+cluster://127.0.0.1:7000,redis-b.internal:7001,[::1]:7002"
    seeds = [("127.0.0.1", 7000), ("redis-b.internal", 7001), ("::1", 7002)]
    assert seeds_from_url(url) == seeds
    assert [(n.host, n.port) for n in cluster_nodes_from_url(url)] == seeds
    for bad in ("redis://127.0.0.1:7000", "redis+cluster://", "redis+cluster://127.0.0.1",
                "redis+cluster://127.0.0.1:7000,:7001", "redis+cluster://127.0.0.1:70000"):
        with pytest.raises(ValueError):
            seeds_from_url(bad)


def test_three_masters_cover_every_slot(redis_cluster: PrivateCluster) -> None:
    masters = redis_cluster.masters
    assert len(masters) == 3 and redis_cluster.replicas == []
    for node in redis_cluster.nodes:  # every node sees the same map: contiguous, all slots, three owners
        slot_map = redis_cluster.slot_map(node)
        assert [first for first, _, _ in slot_map] == [0] + [last + 1 for _, last, _ in slot_map[:-1]]
        assert slot_map[-1][1] == SLOTS - 1
        assert {port for *_, port in slot_map} == {m.port for m in masters}
    assert seeds_from_url(redis_cluster.url) == [("127.0.0.1", node.port) for node in redis_cluster.nodes]


def test_hash_tags_place_keys_on_different_masters(redis_cluster: PrivateCluster) -> None:
    client = redis_cluster.client()
    try:
        placed = {}
        for tag in SHARD_TAGS:
            key = f"pmtest:{tag}:probe"
            client.set(key, tag)
            placed[tag] = redis_cluster.master_for_key(key)
            # master_for_key names the node that really holds the key (asked directly, no redirection)
            with placed[tag].client() as direct:
                assert direct.get(key) == tag
            client.delete(key)
        assert {node.port for node in placed.values()} == {m.port for m in redis_cluster.masters}
        # every key of one tag is on its tag's master, whatever the rest of the name
        assert redis_cluster.master_for_key(f"pmtest:{SHARD_TAGS[0]}:other") is placed[SHARD_TAGS[0]]
    finally:
        client.close()


def _two_tags_on_one_master(cluster: PrivateCluster) -> tuple[str, str]:
    """Two different tags (different slots) that one master serves: CROSSSLOT is about slots, not nodes."""
    by_master: dict[int, list[str]] = {}
    for tag in SHARD_TAGS:
        by_master.setdefault(cluster.master_for_key(tag).port, []).append(tag)
    first, second = next(tags for tags in by_master.values() if len(tags) >= 2)[:2]
    return first, second


def test_keys_in_different_slots_get_crossslot(redis_cluster: PrivateCluster) -> None:
    tag_a, tag_b = _two_tags_on_one_master(redis_cluster)
    key_a, key_b = f"pmtest:{tag_a}:a", f"pmtest:{tag_b}:b"
    with redis_cluster.master_for_key(key_a).client() as node:
        with pytest.raises(ClusterCrossSlotError):  # the server's CROSSSLOT reply
            node.mget(key_a, key_b)
        # the same for a script: every declared key must be in one slot (the product's trade scripts)
        with pytest.raises(ClusterCrossSlotError):
            node.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, key_a, key_b)
        same_slot = (f"pmtest:{tag_a}:x", f"pmtest:{tag_a}:y")
        assert node.eval("redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[2], 2); "
                         "return redis.call('MGET', KEYS[1], KEYS[2])", 2, *same_slot) == ["1", "2"]
        assert node.delete(*same_slot) == 2
    client = redis_cluster.client()
    try:  # redis-py's cluster client refuses before sending
        with pytest.raises(RedisClusterException, match="same key slot"):
            client.execute_command("MGET", key_a, key_b)  # type: ignore[no-untyped-call]  # untyped in redis-py
    finally:
        client.close()


@pytest.mark.slow
async def test_a_replica_takes_over_a_killed_master_with_acknowledged_writes(
        redis_cluster_with_replicas: PrivateCluster) -> None:
    cluster = redis_cluster_with_replicas
    assert len(cluster.masters) == 3 and len(cluster.replicas) == 3
    key = f"pmtest:{SHARD_TAGS[0]}:survivor"
    master = cluster.master_for_key(key)
    (replica,) = cluster.replicas_of(master)
    with master.client() as direct:
        pipe = direct.pipeline(transaction=False)  # one connection: WAIT covers this SET
        pipe.set(key, "acknowledged").execute_command("WAIT", 1, 1000)
        assert pipe.execute() == [True, 1]
    before = cluster.client()  # a client that knew the old topology
    try:
        assert before.get(key) == "acknowledged"
        started = time.monotonic()
        cluster.kill(master)
        promoted = cluster.wait_promoted(master)
        failover_s = time.monotonic() - started
        assert promoted is replica and cluster.master_for_key(key) is replica
        assert master.port not in {m.port for m in cluster.masters}
        assert before.get(key) == "acknowledged"  # MOVED / connection error -> redis-py refreshes its map
        assert before.set(key, "after") is True
    finally:
        before.close()
    fresh = AsyncRedisCluster(startup_nodes=async_cluster_nodes_from_url(cluster.url), decode_responses=True)
    try:  # seeds include the dead node: a client started now skips it
        assert await fresh.get(key) == "after"
    finally:
        await fresh.aclose()
    print(f"failover in {failover_s:.2f} s")  # the figure the report quotes (pytest -s shows it)


def test_stop_leaves_no_process_and_no_directory() -> None:
    require_binaries()
    cluster = PrivateCluster(masters=3)
    cluster.start()
    processes = [node.process for node in cluster.nodes]
    assert all(p is not None and p.poll() is None for p in processes) and cluster.root.is_dir()
    cluster.stop()
    for process in processes:
        assert process is not None and process.returncode is not None  # reaped by stop()
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)  # nor anything left in its process group
    assert not cluster.root.exists()
    for node in cluster.nodes:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
    cluster.stop()  # twice is harmless
