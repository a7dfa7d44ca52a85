"""Every Redis client the product makes sends a write once: a timeout is UNAVAILABLE, never a re-send.

A script that INCRs a counter and then runs longer than the client's socket timeout
is called once through each client (engine.connection's factories, and the trade
path's ordered channel), on a private redis-server and on a private 3-master cluster:
the caller gets Unavailable and the counter is exactly 1 once the server is idle.
The same call through redis-py's default RedisCluster runs the script several times
(the witness that the test can fail). On the cluster, what may be re-sent still is:
MOVED is followed (the slot moved; the refusing master ran nothing), NOSCRIPT reloads.
The slot-moving tests move one slot of the session's cluster between two masters (a
resharding, which leaves every slot covered), as redis_cluster's no-fault rule allows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis as sync_redis
from predmarket.engine.channel import OrderedScript
from predmarket.engine.connection import _Connection, connect, connect_sync, seed_nodes, unavailable_on_disconnect
from predmarket.engine.errors import Unavailable
from predmarket.engine.market_engine import MarketEngine
from predmarket.engine.models import Order, Outcome, Side
from predmarket.engine.settings import Settings
from predmarket.engine.units import MICRO
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from tests.support import wait_until
from tests.support.cluster import PrivateCluster, async_cluster_nodes_from_url
from tests.support.redis_server import RedisServer

#: The client's socket timeout and how long the script runs: well past it, well below Redis's
#: busy-reply-threshold (5 s by default), so the server runs it to the end and answers nothing else meanwhile.
TIMEOUT_S = 0.3
RUN_S = 0.8
SLOW = """
local n = redis.call('INCR', KEYS[1])
local function now() local t = redis.call('TIME') return tonumber(t[1]) + tonumber(t[2]) / 1e6 end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return n
"""
FAST = "return redis.call('INCR', KEYS[1])"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path_factory.mktemp("slow-redis"))
    redis_server.start()
    try:
        yield redis_server
    finally:
        redis_server.stop()


def _key(prefix: str) -> str:
    return f"{{{prefix}}}:runs:{uuid.uuid4().hex[:8]}"


def _port_of(target: RedisServer | PrivateCluster, key: str) -> int:
    return target.port if isinstance(target, RedisServer) else target.master_for_key(key).port


def runs(port: int, key: str, timeout_s: float = 30.0) -> int:
    """The counter once no EVAL is left anywhere on the server (the client under test is closed first).

    A closed connection stays in CLIENT LIST until Redis has read it to its end, so every
    re-send a client made before closing has run by the time none is listed.
    """
    checker = sync_redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout_s, decode_responses=True)
    try:
        me = checker.client_id()

        def idle() -> bool:
            return not [c for c in checker.client_list()
                        if int(c["id"]) != me and c["cmd"] in ("eval", "evalsha", "NULL")]

        wait_until(idle, timeout_s, f"no script call left on port {port}")
        return int(checker.get(key) or 0)
    finally:
        checker.close()


def _call_sync(client: Any, key: str) -> BaseException:
    with pytest.raises(Unavailable) as caught, unavailable_on_disconnect():
        client.eval(SLOW, 1, key, RUN_S)
    return caught.value


async def _call_async(client: Any, key: str) -> BaseException:
    with pytest.raises(Unavailable) as caught, unavailable_on_disconnect():
        await client.eval(SLOW, 1, key, RUN_S)
    return caught.value


# ----------------------------------------------------------------------------- the product's clients


@pytest.mark.parametrize("layout", ["server", "redis_cluster"])
def test_sync_client_sends_a_slow_write_once(layout: str, request: pytest.FixtureRequest) -> None:
    target: RedisServer | PrivateCluster = request.getfixturevalue(layout)
    key = _key("sync")
    client = connect_sync(target.url, TIMEOUT_S)
    started = time.monotonic()
    try:
        error = _call_sync(client, key)
        waited = time.monotonic() - started
    finally:
        client.close()
    assert runs(_port_of(target, key), key) == 1
    assert waited < RUN_S, "the caller waited for a re-send"
    assert "Timeout" in str(error)


@pytest.mark.parametrize("layout", ["server", "redis_cluster"])
async def test_async_client_sends_a_slow_write_once(layout: str, request: pytest.FixtureRequest) -> None:
    target: RedisServer | PrivateCluster = request.getfixturevalue(layout)
    key = _key("async")
    client = connect(target.url, TIMEOUT_S)
    started = time.monotonic()
    try:
        error = await _call_async(client, key)
        waited = time.monotonic() - started
    finally:
        await client.aclose()
    assert runs(_port_of(target, key), key) == 1
    assert waited < RUN_S, "the caller waited for a re-send"
    assert "Timeout" in str(error)


@pytest.mark.parametrize("layout", ["server", "redis_cluster"])
async def test_ordered_channel_sends_a_slow_write_once(layout: str, request: pytest.FixtureRequest) -> None:
    """The trade path's channel: its first call meets NOSCRIPT (not run), loads, sends again, times out."""
    target: RedisServer | PrivateCluster = request.getfixturevalue(layout)
    key = _key("channel")
    client = connect(target.url, TIMEOUT_S)
    channel = OrderedScript(client, SLOW)
    try:
        with pytest.raises(Unavailable), unavailable_on_disconnect():
            await channel([key], [str(RUN_S)])
    finally:
        await channel.close()
        await client.aclose()
    assert runs(_port_of(target, key), key) == 1


# ----------------------------------------------------------------------------- redis-py's defaults


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_redis_py_default_cluster_client_runs_a_slow_write_again(flavour: str,
                                                                       redis_cluster: PrivateCluster) -> None:
    """Why the product turns retries off: redis-py 8.x's RedisCluster re-sends after a timeout.

    Measured with redis-py 8.2.0: 7 runs of one call (up to 11 attempts, 10 retries by default).
    """
    key = _key("default")
    if flavour == "sync":
        sync_client = RedisCluster(startup_nodes=redis_cluster.startup_nodes, socket_timeout=TIMEOUT_S)
        try:
            with pytest.raises(sync_redis.TimeoutError):
                sync_client.eval(SLOW, 1, key, RUN_S)
        finally:
            sync_client.close()
    else:
        async_client = AsyncRedisCluster(startup_nodes=async_cluster_nodes_from_url(redis_cluster.url),
                                         socket_timeout=TIMEOUT_S)
        try:
            with pytest.raises(sync_redis.TimeoutError):
                await async_client.eval(SLOW, 1, key, RUN_S)
        finally:
            await async_client.aclose()
    assert runs(_port_of(redis_cluster, key), key) > 1


# ----------------------------------------------------------------------------- what is still followed


def _move_slot(cluster: PrivateCluster, key: str) -> int:
    """Move ``key``'s slot (and its keys) to another master, as a resharding does; return the new port."""
    source = cluster.master_for_key(key)
    target = next(node for node in cluster.masters if node.port != source.port)
    slot = int(source.command("CLUSTER", "KEYSLOT", key))
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    while keys := source.command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.masters:
        node.command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
    wait_until(lambda: cluster.master_for_key(key).port == target.port, 10, f"slot {slot} on port {target.port}")
    return target.port


async def test_channel_follows_moved_and_reloads_its_script(redis_cluster: PrivateCluster) -> None:
    """A slot that moved: the channel's master answers MOVED (ran nothing); the call is sent to the
    new master once, where the script is loaded first (NOSCRIPT): every call counted exactly once."""
    key = _key("moved")
    client = connect(redis_cluster.url, 2.0)
    channel = OrderedScript(client, FAST)
    try:
        assert await channel([key], []) == 1
        new_port = _move_slot(redis_cluster, key)
        redis_cluster.master_for_key(key).command("SCRIPT", "FLUSH")  # the new master has never seen it
        replies = await asyncio.gather(*(channel([key], []) for _ in range(20)))
        # Each run once. (Not necessarily in order: calls refused together are sent again as their
        # callers finish reloading the script; engine.channel says why the trade path accepts that.)
        assert sorted(replies) == list(range(2, 22))
        assert await client.get(key) == "21"
    finally:
        await channel.close()
        await client.aclose()
    assert runs(new_port, key) == 21


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_client_without_retries_still_follows_moved(flavour: str, redis_cluster: PrivateCluster) -> None:
    """Retries off is not redirects off: MOVED is followed within one attempt."""
    key = _key("follow")
    make: Callable[[], Any] = (lambda: connect_sync(redis_cluster.url, 2.0)) if flavour == "sync" else (
        lambda: connect(redis_cluster.url, 2.0))
    client = make()
    try:
        if flavour == "sync":
            client.incr(key)
        else:
            await client.incr(key)
        new_port = _move_slot(redis_cluster, key)  # the client's slot table still names the old master
        reply = client.eval(FAST, 1, key) if flavour == "sync" else await client.eval(FAST, 1, key)
        assert reply == 2
    finally:
        if flavour == "sync":
            client.close()
        else:
            await client.aclose()
    assert runs(new_port, key) == 2


async def test_cluster_nodes_use_the_products_connection_class(redis_cluster: PrivateCluster) -> None:
    """engine.connection sets _Connection (uvloop's closed transport -> ConnectionError) in the cluster
    client's connection_kwargs after building it; the nodes it discovers must be built from them."""
    client = connect(redis_cluster.url, 2.0)
    try:
        await client.ping()
        nodes = cast(AsyncRedisCluster, client).get_nodes()
        assert nodes and {node.connection_class for node in nodes} == {_Connection}
    finally:
        await client.aclose()


def test_seed_list_of_the_cluster_url() -> None:
    assert seed_nodes("redis+cluster://10.0.0.1:7000,10.0.0.2:7001, redis-3") == [
        ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("redis-3", 6379)]
    with pytest.raises(ValueError, match="host:port"):
        seed_nodes("redis+cluster://10.0.0.1:port")


async def test_channel_after_a_failover_sends_to_the_promoted_replica(
        redis_cluster_with_replicas: PrivateCluster) -> None:
    """A master killed: the call meanwhile is Unavailable (not re-sent); once a replica is promoted the
    channel asks for the topology, connects to it, loads the script if its cache lacks it, and goes on."""
    cluster = redis_cluster_with_replicas
    key = _key("failover")
    client = connect(cluster.url, 2.0)
    channel = OrderedScript(client, FAST)
    try:
        assert await channel([key], []) == 1
        master = cluster.master_for_key(key)
        assert master.command("WAIT", 1, 5000) == 1, "the replica holds the first run"
        cluster.kill(master)
        # Promotion takes at least cluster-node-timeout (1 s): this call meets the dead master.
        with pytest.raises(Unavailable), unavailable_on_disconnect():
            await channel([key], [])
        promoted = cluster.wait_promoted(master)
        assert await channel([key], []) == 2
        assert await channel([key], []) == 3
    finally:
        await channel.close()
        await client.aclose()
    assert runs(promoted.port, key) == 3


async def test_engine_trades_on_the_cluster_through_its_ordered_channel(redis_cluster: PrivateCluster) -> None:
    """The trade path end to end on 3 masters: every key under the prefix's tag, one master, calls pipelined."""
    settings = Settings(redis_url=redis_cluster.url, key_prefix=f"{{pm{uuid.uuid4().hex[:8]}}}")
    engine = MarketEngine.from_settings(settings)
    try:
        await engine.start()
        user = await engine.accounts.create("alice")
        await engine.accounts.deposit(user.user_id, 1_000 * MICRO)
        await engine.accounts.deposit("house", 1_000 * MICRO)
        market = await engine.markets.create("rain tomorrow", 100 * MICRO)
        await engine.markets.open(market.market_id)
        trades = await asyncio.gather(*(engine.execute_trade(Order(user.user_id, market.market_id, Side.BUY,
                                                                   Outcome.YES, shares=MICRO))
                                        for _ in range(40)))
        assert sorted(trade.trade_id for trade in trades) == list(range(1, 41))
        account = await engine.accounts.get(user.user_id)
        assert [position.shares for position in account.positions] == [40 * MICRO]
        assert account.available == 1_000 * MICRO - sum(trade.cost for trade in trades)
    finally:
        await engine.close()
