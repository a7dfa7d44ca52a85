"""Script calls pipelined on one connection per server: sent in order, executed in order, answered in order.

redis-py runs each command on whichever pooled connection is free, so two calls
in flight may reach Redis in either order. The trade path sends a market's next
batch before the previous one is answered (priced against the state the first
one leaves), which only pays off if Redis runs them in the order sent: one
connection, one writer, one reader, a FIFO of waiting callers.

Every :class:`OrderedScript` of one client shares that connection per server
(:class:`Channels`): one to a single primary, one per master of a Redis Cluster, however many
shards' engines (engine/sharded.py) send through it. Orders stay grouped per shard (each
shard's engine batches its own markets) and each master gets one ordered stream of
calls: S shards on M masters hold M connections, not S.

On a Redis Cluster a call goes to the master owning the slot of its keys (every
call's keys share one hash tag: one slot), over a connection taken from the cluster
client's pool for that node. A master answering MOVED has not run the call: the slot
map learns the new owner and the call is sent again there. ASK (the slot
half-migrated) sends that one call through the cluster client, which follows it.
NOSCRIPT reloads the script (a promoted replica's cache is empty). A timeout or a
lost connection is never followed by a re-send: every call in flight on it fails
(its outcome is unknown), and the next call first asks the cluster for its topology
(the master may have changed). A call sent again after MOVED or NOSCRIPT may land
behind calls sent after it; a trade batch's state check turns that into a conflict,
never a wrong price.
"""


from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from predmarket.engine.connection import UNREACHABLE, lost_if_closed
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import AskError, ClusterError, MovedError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


async def _write(conn: AbstractConnection, packed: bytes, check_health: bool) -> None:
    """Write one packed call on ``conn``.

    redis-py's ``send_packed_command`` runs each write under ``asyncio.wait_for``, which on Python
    3.11 makes a task and arms a timer per call: 8 % of the worker's instructions for a lone order
    (docs/PERFORMANCE.md). A write to the socket does not wait; only when the socket's buffer is
    left holding bytes (Redis not reading) is the wait for it to empty bounded by the connection's
    socket timeout, as redis-py bounds it. Errors come out as redis-py's ConnectionError and
    TimeoutError, as from ``send_packed_command``.
    """
    if check_health:
        # A PING once the connection sat idle past its health-check interval (a dead one is replaced).
        await conn.check_health()  # type: ignore[no-untyped-call]  # untyped in redis-py
    writer = getattr(conn, "_writer", None)  # read after the check: a failed PING reconnects
    if writer is None or not conn.is_connected:
        await conn.send_packed_command(packed, check_health=False)  # redis-py's path (it connects)
        return
    try:
        if writer.transport.is_closing():
            raise RedisConnectionError("Connection closed by the server before write")
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
    except TimeoutError:
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
    except RuntimeError as exc:
        lost = lost_if_closed(exc)
        if lost is None:
            raise
        raise lost from exc


def _health_check_due(conn: AbstractConnection) -> bool:
    """Whether redis-py's ``check_health`` would PING ``conn`` now (it sat idle past its interval)."""
    interval = conn.health_check_interval
    return bool(interval) and asyncio.get_running_loop().time() > conn.next_health_check


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


#: Told a call's reply, or the exception it ends with (an error reply, a lost connection), as the
#: reply is read: no future, no callback scheduled for a later turn of the event loop.
OnReply = Callable[[Any, Exception | None], None]


def _settles(future: asyncio.Future[Any]) -> OnReply:
    """The :data:`OnReply` of a caller awaiting ``future``."""
    def settle(reply: Any, error: Exception | None) -> None:
        if future.done():  # the caller gave up
            return
        if error is None:
            future.set_result(reply)
        else:
            future.set_exception(error)
    return settle


@dataclass(slots=True)
class _Waiter:
    """A call sent and not yet answered: who is told its reply, and whether a WAIT reply follows its own
    (``confirmed`` then takes the number of replicas that WAIT counted)."""

    on_reply: OnReply
    confirmed: Callable[[int], None] | None

    def answer(self, reply: Any, error: Exception | None) -> None:
        try:
            self.on_reply(reply, error)
        except Exception:  # the caller's bug: the reader goes on with the next reply
            log.exception("a reply's handler failed")


class Channel:
    """One connection to one server (a single primary, or one master of a cluster): calls from any
    number of scripts, sent in order and answered in order."""

    def __init__(self, redis: Redis, node: ClusterNode | None, on_broken: Callable[[Channel], None]) -> None:
        self._redis = redis
        #: the cluster master this channel talks to (None on a single primary)
        self.node = node
        self._on_broken = on_broken
        self._conn: AbstractConnection | None = None
        self._waiting: deque[_Waiter] = deque()
        self._send_lock = asyncio.Lock()
        #: calls in :meth:`call`'s slow path (waiting for the lock, connecting, writing): a call
        #: written at once (:meth:`call_now`) must not overtake them
        self._sending = 0
        self._reader: asyncio.Task[None] | None = None

    def call_now(self, packed: bytes, on_reply: OnReply, confirmed: Callable[[int], None] | None = None) -> bool:
        """Write the call at once, without a coroutine, if it can be: ``on_reply`` is then told its reply.

        False when it cannot, and then nothing was sent: no connection yet, another call being
        connected or written, a health check due, a connection the server closed while idle,
        or bytes the server has not taken yet (the slow path, :meth:`call`, waits for them,
        bounded by the socket timeout). So a lone order's trade call costs no task of its own,
        and its reply is handled as it is read, not a turn of the event loop later.
        """
        conn = self._conn
        if conn is None or self._sending:
            return False
        idle = not self._waiting
        if idle and (_health_check_due(conn) or _closed_by_peer(conn)):
            return False
        writer = getattr(conn, "_writer", None)
        if writer is None or writer.transport.is_closing() or writer.transport.get_write_buffer_size():
            return False
        self._waiting.append(_Waiter(on_reply, confirmed))
        try:
            writer.write(packed)
        except Exception as exc:  # told to on_reply, as to every other call on the connection
            self._broken(exc)
            return True
        self._start_reader(conn)
        return True

    async def call(self, packed: bytes, confirmed: Callable[[int], None] | None = None) -> Any:
        """Send one packed command (with a packed ``WAIT`` right behind it when ``confirmed`` is given);
        its reply, or its error raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        on_reply = _settles(future)
        if self.call_now(packed, on_reply, confirmed):
            return await future
        self._sending += 1
        try:
            async with self._send_lock:
                if not self._waiting and self._conn is not None and _closed_by_peer(self._conn):
                    # Redis closed it while idle (a restart): nothing of ours was on it, so a
                    # fresh connection is safe, where a write to the dead one would fail a trade.
                    self._broken(ConnectionError("closed by the server"))
                conn = self._conn or await self._connect()
                # The health check (a PING after a second idle, replacing a dead connection)
                # reads its own reply: only safe when no other call's reply is still to come.
                idle = not self._waiting
                self._waiting.append(_Waiter(on_reply, confirmed))
                try:
                    await _write(conn, packed, check_health=idle)
                except BaseException as exc:
                    self._broken(exc)
                    raise
                self._start_reader(conn)
        finally:
            self._sending -= 1
        return await future

    def _start_reader(self, conn: AbstractConnection) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(conn))

    async def _connect(self) -> AbstractConnection:
        if self.node is None:
            self._conn = await self._redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
            return self._conn
        conn = self.node.acquire_connection()
        try:
            await conn.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        except BaseException:
            await conn.disconnect()
            self.node.release(conn)
            self._on_broken(self)  # the master may be gone (a failover): ask for the topology next
            raise
        self._conn = conn
        return conn

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
                confirmed = self._waiting[0].confirmed
                if confirmed is not None:
                    try:
                        replicas = int(await conn.read_response(disconnect_on_error=True))
                    except ResponseError:  # e.g. WAIT refused by a node that is no longer a master
                        replicas = 0
                    confirmed(replicas)
            except (*UNREACHABLE, asyncio.CancelledError) as exc:
                self._broken(exc)
                return
            if isinstance(reply, ResponseError):
                self._waiting.popleft().answer(None, reply)
            else:
                self._waiting.popleft().answer(reply, None)

    def _broken(self, exc: BaseException) -> None:
        """The connection failed: every call on it has an unknown outcome; start afresh."""
        error = exc if isinstance(exc, Exception) else ConnectionError("connection closed")
        while self._waiting:
            self._waiting.popleft().answer(None, error)
        self._on_broken(self)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().create_task(self._discard(conn))

    async def _discard(self, conn: AbstractConnection) -> None:
        await conn.disconnect()
        await self._release(conn)

    async def _release(self, conn: AbstractConnection) -> None:
        if self.node is None:
            await self._redis.connection_pool.release(conn)
        else:
            assert isinstance(conn, Connection)  # what a cluster node's pool hands out
            self.node.release(conn)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._release(conn)


#: Each client's channels (:meth:`Channels.of`), dropped with the client.
_SHARED: weakref.WeakKeyDictionary[Redis, Channels] = weakref.WeakKeyDictionary()


class Channels:
    """A client's channels: one to a single primary, or one per cluster master, shared by every
    :class:`OrderedScript` of the client (:meth:`of`) and closed when the last of them closes."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.cluster = cluster_of(redis)
        self._single: Channel | None = None
        #: cluster: the channel of each master, by node name (host:port)
        self._by_node: dict[str, Channel] = {}
        self._refresh = False  # cluster: ask for the topology before choosing the next channel
        self._users = 0

    @classmethod
    def of(cls, redis: Redis) -> Channels:
        """The shared channels of ``redis``, counting one more user (see :meth:`release`)."""
        channels = _SHARED.get(redis)
        if channels is None:
            channels = _SHARED[redis] = cls(redis)
        channels._users += 1
        return channels

    @classmethod
    def shared(cls, redis: Redis) -> Channels | None:
        """The channels of ``redis`` if a script uses them (without counting a user)."""
        return _SHARED.get(redis)

    @property
    def open(self) -> list[Channel]:
        """Every channel made so far (on a cluster, one per master it has sent to)."""
        return [self._single] if self._single is not None else list(self._by_node.values())

    def single(self) -> Channel:
        """The one channel of a single primary: no coroutine, as every trade call takes it."""
        if self._single is None:
            self._single = Channel(self._redis, None, self._broken)
        return self._single

    async def channel_for(self, key: str) -> Channel:
        """The channel to the server holding ``key`` (any key on a single primary)."""
        if self.cluster is None:
            return self.single()
        node = await owner_of(self.cluster, key, refresh=self._refresh)
        self._refresh = False
        channel = self._by_node.get(node.name)
        if channel is None:
            channel = self._by_node[node.name] = Channel(self._redis, node, self._broken)
        return channel

    def _broken(self, _channel: Channel) -> None:
        """A channel's connection failed: on a cluster its master may be gone (a failover), so the next
        call asks for the topology first. (The channel holds no connection until it is used again.)"""
        self._refresh = self.cluster is not None

    async def moved(self, exc: MovedError, refused_by: Channel) -> None:
        """A master refused a call with MOVED (ran nothing): learn the slot's new master, where the
        caller sends it again. The channel stays, for the other slots its master still serves."""
        assert self.cluster is not None
        if not exc.host and refused_by.node is not None:
            exc.host = refused_by.node.host  # "MOVED <slot> :<port>": the same host as the refusing node
        await self.cluster.nodes_manager.move_slot(exc)

    async def release(self) -> None:
        """One user fewer; the last one closes every channel."""
        self._users -= 1
        if self._users > 0:
            return
        if _SHARED.get(self._redis) is self:
            del _SHARED[self._redis]
        channels, self._single, self._by_node = self.open, None, {}
        for channel in channels:
            await channel.close()


class OrderedScript:
    """EVALSHA of one script over its client's shared ordered channels, many calls in flight."""

    def __init__(self, redis: Redis, source: str, replicas: int = 0, replica_wait_ms: int = 100,
                 on_shortfall: Callable[[], None] | None = None) -> None:
        """``replicas``: each call is answered once that many replicas have its writes (``WAIT``
        right behind it on the connection; see engine.replication), or after ``replica_wait_ms``
        without them: the call ran, so its reply stands; :attr:`replica_shortfalls` counts it and
        ``on_shortfall`` is told."""
        self._redis = redis
        self._channels = Channels.of(redis)
        wait: Any = ("WAIT", replicas, replica_wait_ms)  # hiredis's stub types the argument as a 1-tuple
        self._wait = hiredis.pack_command(wait) if replicas else b""
        self._replicas = replicas
        #: calls answered without the replicas' confirmation (``WAIT`` timed out short)
        self.replica_shortfalls = 0
        self._on_shortfall = on_shortfall
        self._shortfall_logged = 0.0
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()
        self._closed = False

    def _packed(self, keys: Sequence[str], args: Sequence[str | int]) -> bytes:
        # hiredis packs the ~40 arguments of a trade call in 2.8 µs, against 7.9 µs for a hand-written
        # Python encoder and about 20 µs for redis-py's general one. (Its stub types the argument as a
        # 1-tuple, hence Any.)
        command: Any = ("EVALSHA", self._sha, len(keys), *keys, *args)
        packed: bytes = hiredis.pack_command(command) + self._wait
        return packed

    def call_now(self, keys: Sequence[str], args: Sequence[str | int], on_reply: OnReply) -> bool:
        """The call written at once on a single primary (:meth:`Channel.call_now`); False if not sent.

        ``on_reply`` is told the reply as Redis sent it: an error reply (NOSCRIPT after a
        restart among them) is its exception, which the caller hands to :meth:`__call__` to
        send again. When it returns False the caller awaits :meth:`__call__` instead. On a
        Redis Cluster always False (choosing the master may need the topology).
        """
        channels = self._channels
        if channels.cluster is not None:
            return False
        return channels.single().call_now(self._packed(keys, args), on_reply, self._confirmed if self._wait else None)

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        packed = self._packed(keys, args)
        confirmed = self._confirmed if self._wait else None
        channels, redirects = self._channels, 0
        while True:
            channel = (channels.single() if channels.cluster is None
                       else await channels.channel_for(keys[0] if keys else ""))
            try:
                return await channel.call(packed, confirmed)
            except NoScriptError:
                # After a Redis restart, SCRIPT FLUSH or a failover: load it and send again.
                await self._redis.script_load(self._source)
            except MovedError as exc:  # before AskError, its base class
                # Refused, not run: the slot has a new master (a failover, a resharding).
                redirects += 1
                if channels.cluster is None or redirects > MAX_REDIRECTS:
                    raise ClusterError(f"{redirects} MOVED replies to one call: {exc}") from exc
                await channels.moved(exc, channel)
            except AskError:
                # The slot is migrating and the keys may be on the importing node: this one
                # call goes through the cluster client, which sends ASKING there first. (The
                # script may be missing there: redis-py's evalsha does not load it, so load it.)
                if channels.cluster is None:
                    raise
                await channels.cluster.script_load(self._source)
                return await channels.cluster.evalsha(self._sha, len(keys), *keys, *args)

    def _confirmed(self, replicas: int) -> None:
        """WAIT's answer for a call of this script: fewer replicas than wanted is counted and logged."""
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

    async def close(self) -> None:
        """This script is done with its client's channels (the last one to close closes them)."""
        if not self._closed:
            self._closed = True
            await self._channels.release()
