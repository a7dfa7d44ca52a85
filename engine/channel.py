"""Script calls pipelined on one connection: sent in order, executed in order, answered in order.

redis-py runs each command on whichever pooled connection is free, so two calls
in flight may reach Redis in either order. The trade path sends a market's next
batch before the previous one is answered (priced against the state the first
one leaves), which only pays off if Redis runs them in the order sent: one
connection, one writer, one reader, a FIFO of waiting callers.

On a Redis Cluster the connection goes to the master owning the slot of the keys
sent (every call's keys share the key prefix's hash tag: one slot), taken from the
cluster client's pool for that node. A master answering MOVED has not run the call:
the channel learns the new owner, moves its connection there once the calls already
sent are answered, and sends the call again. ASK (the slot half-migrated) sends that
one call through the cluster client, which follows it. NOSCRIPT reloads the script
(a promoted replica's cache is empty). A timeout or a lost connection is never
followed by a re-send: every call in flight fails (its outcome is unknown), and the
next call first asks the cluster for its topology (the master may have changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from predmarket.engine.connection import UNREACHABLE
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import AskError, ClusterError, MovedError, NoScriptError, ResponseError

#: MOVED replies one call follows before it fails as unavailable (a slot moving again and again).
MAX_REDIRECTS = 5
#: At most one warning this often about calls the replicas did not confirm in time.
SHORTFALL_LOG_EVERY_S = 10.0
log = logging.getLogger("predmarket.engine")


def _closed_by_peer(conn: AbstractConnection) -> bool:
    # redis-py keeps the stream pair private; tests/test_channel.py fails the day they move
    # (and pyproject.toml pins the redis-py major versions this was checked against).
    reader = getattr(conn, "_reader", None)
    writer = getattr(conn, "_writer", None)
    return reader is None or reader.at_eof() or writer is None or writer.is_closing()


def cluster_of(redis: Redis) -> RedisCluster | None:
    """The cluster client behind ``redis``, or None on one primary.

    engine.connection.connect types its cluster client as Redis: told apart here.
    """
    client: object = redis
    return client if isinstance(client, RedisCluster) else None


async def owner_of(cluster: RedisCluster, key: str, refresh: bool = False) -> ClusterNode:
    """The master owning ``key``'s slot, as the cluster client knows it.

    ``refresh`` asks the cluster for its topology first: after a lost connection or a
    MOVED the slot may have another master (a failover). Every client that talks to one
    node directly (the ordered channel, the live-stream reader, the committed-mark
    listener) finds its node here.
    """
    await cluster.initialize()  # the client's first topology (it returns at once once it has one)
    if refresh:
        await cluster.nodes_manager.initialize()
    node = cluster.get_node_from_key(key)
    if node is None:
        raise ClusterError(f"no master serves the slot of {key!r}")
    return node


class OrderedScript:
    """EVALSHA of one script over a dedicated connection, many calls in flight."""

    def __init__(self, redis: Redis, source: str, replicas: int = 0, replica_wait_ms: int = 100,
                 on_shortfall: Callable[[], None] | None = None) -> None:
        """``replicas``: each call is answered once that many replicas have its writes (``WAIT``
        right behind it on the connection; see engine.replication), or after ``replica_wait_ms``
        without them: the call ran, so its reply stands; :attr:`replica_shortfalls` counts it and
        ``on_shortfall`` is told."""
        self._redis = redis
        wait: Any = ("WAIT", replicas, replica_wait_ms)  # hiredis's stub types the argument as a 1-tuple
        self._wait = hiredis.pack_command(wait) if replicas else b""
        self._replicas = replicas
        #: calls answered without the replicas' confirmation (``WAIT`` timed out short)
        self.replica_shortfalls = 0
        self._on_shortfall = on_shortfall
        self._shortfall_logged = 0.0
        self._cluster = cluster_of(redis)
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._conn: AbstractConnection | None = None
        self._node: ClusterNode | None = None  # on a cluster: the master self._conn belongs to
        self._refresh = False  # on a cluster: ask for the topology before the next connection
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        redirects = 0
        while True:
            try:
                return await self._call(keys, args)
            except NoScriptError:
                # After a Redis restart, SCRIPT FLUSH or a failover: load it and send again.
                # (Calls sent behind this one fail the same way and are resent too; if that
                # changes their order, a trade batch's state check turns it into a conflict,
                # never a wrong price.)
                await self._redis.script_load(self._source)
            except MovedError as exc:  # before AskError, its base class
                # Refused, not run: the slot has a new master (a failover, a resharding).
                redirects += 1
                if self._cluster is None or redirects > MAX_REDIRECTS:
                    raise ClusterError(f"{redirects} MOVED replies to one call: {exc}") from exc
                await self._moved(self._cluster, exc)
            except AskError:
                # The slot is migrating and the keys may be on the importing node: this one
                # call goes through the cluster client, which sends ASKING there first. (The
                # script may be missing there: redis-py's evalsha does not load it, so load it.)
                if self._cluster is None:
                    raise
                await self._cluster.script_load(self._source)
                return await self._cluster.evalsha(self._sha, len(keys), *keys, *args)

    async def _call(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            if not self._waiting and self._conn is not None and _closed_by_peer(self._conn):
                # Redis closed it while idle (a restart): nothing of ours was on it, so a
                # fresh connection is safe, where a write to the dead one would fail a trade.
                self._broken(ConnectionError("closed by the server"))
            conn = self._conn or await self._connect(keys)
            # The health check (a PING after a second idle, replacing a dead connection)
            # reads its own reply: only safe when no other call's reply is still to come.
            idle = not self._waiting
            self._waiting.append(future)
            try:
                # hiredis packs the ~40 arguments of a trade call in 2.8 µs, against 7.9 µs for
                # a hand-written Python encoder and about 20 µs for redis-py's general one. (Its
                # stub types the argument as a 1-tuple, hence Any.)
                command: Any = ("EVALSHA", self._sha, len(keys), *keys, *args)
                await conn.send_packed_command(hiredis.pack_command(command) + self._wait, check_health=idle)
            except BaseException as exc:
                self._broken(exc)
                raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(conn))
        return await future

    async def _connect(self, keys: Sequence[str]) -> AbstractConnection:
        if self._cluster is None:
            self._conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        else:
            self._conn = await self._cluster_connection(self._cluster, keys[0])
        return self._conn

    async def _cluster_connection(self, cluster: RedisCluster, key: str) -> AbstractConnection:
        """A connection of the cluster client's own pool to the master owning ``key``'s slot."""
        # After a failed connection the slot may have another master now (a failover).
        node = await owner_of(cluster, key, refresh=self._refresh)
        self._refresh = False
        conn = node.acquire_connection()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        except BaseException:
            self._refresh = True
            await conn.disconnect()
            node.release(conn)
            raise
        self._node = node
        return conn

    async def _moved(self, cluster: RedisCluster, exc: MovedError) -> None:
        """Learn the slot's new master; leave the old one once the calls sent to it are answered."""
        async with self._send_lock:  # no call is sent meanwhile, to either master
            if not exc.host and self._node is not None:
                exc.host = self._node.host  # "MOVED <slot> :<port>": the same host as the refusing node
            await cluster.nodes_manager.move_slot(exc)
            if self._conn is None or self._node is cluster.nodes_manager.get_node_from_slot(exc.slot_id):
                return  # no connection yet, or another caller already moved it
            if self._reader is not None and not self._reader.done():
                # The calls sent after this one are refused the same way; their callers send them again.
                await asyncio.wait([self._reader])
            if self._conn is not None and not self._waiting:
                conn, node, self._conn, self._node = self._conn, self._node, None, None
                await self._release(conn, node)

    async def _release(self, conn: AbstractConnection, node: ClusterNode | None) -> None:
        if node is None:
            await self._redis.connection_pool.release(conn)
        else:
            assert isinstance(conn, Connection)  # what a cluster node's pool hands out
            node.release(conn)

    async def _read(self, conn: AbstractConnection) -> None:
        """Hand replies to the waiting callers in the order their calls were sent."""
        while self._waiting:
            reply: Any
            try:
                try:
                    reply = await conn.read_response(disconnect_on_error=True)
                except ResponseError as exc:
                    # One call's error reply (NOSCRIPT, MOVED, OOM, ...): the connection is still good.
                    reply = exc
                if self._wait:
                    try:
                        confirmed = await conn.read_response(disconnect_on_error=True)
                    except ResponseError:  # e.g. WAIT refused by a node that is no longer a master
                        confirmed = 0
                    self._confirmed(int(confirmed))
            except (*UNREACHABLE, asyncio.CancelledError) as exc:
                self._broken(exc)
                return
            future = self._waiting.popleft()
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _confirmed(self, replicas: int) -> None:
        """WAIT's answer for the call just read: fewer replicas than wanted is counted and logged."""
        if replicas >= self._replicas:
            return
        self.replica_shortfalls += 1
        if self._on_shortfall is not None:
            self._on_shortfall()
        now = time.monotonic()
        if now - self._shortfall_logged >= SHORTFALL_LOG_EVERY_S:
            self._shortfall_logged = now
            log.warning("a trade call was confirmed by %d of %d replicas in time (%d such calls so far): "
                        "a failover now could lose it", replicas, self._replicas, self.replica_shortfalls)

    def _broken(self, exc: BaseException) -> None:
        """The connection failed: every call on it has an unknown outcome; start afresh."""
        error = exc if isinstance(exc, Exception) else ConnectionError("connection closed")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self._refresh = self._cluster is not None
        if self._conn is not None:
            conn, node, self._conn, self._node = self._conn, self._node, None, None
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(self._discard(conn, node))

    async def _discard(self, conn: AbstractConnection, node: ClusterNode | None) -> None:
        await conn.disconnect()
        await self._release(conn, node)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._conn is not None:
            conn, node, self._conn, self._node = self._conn, self._node, None, None
            await self._release(conn, node)
