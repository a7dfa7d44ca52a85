"""One reader of the event stream per process, fanning out to every live subscriber.

Why: a blocking ``XREAD`` per subscriber holds one Redis connection each, so a
few hundred idle clients exhausted the pool that trades and durable answers
need. Here one task reads ``<prefix>:events`` on a connection of its own and
appends the entries to a bounded in-memory ring; subscribers are cursors into
that ring, woken when an entry they may care about arrives.

* **Memory** is the ring (``RING_SIZE`` entries, shared) plus a few attributes
  per subscriber. The ring keeps each entry as Redis sent it (:data:`Slot`); the
  :class:`Entry` of a slot is made only when a subscriber reads it.
  A subscriber that falls off the ring's start (a slow client, or one resuming
  from an old ``Last-Event-ID``) reads its backlog with paged ``XRANGE`` on the
  small side pool, then joins the ring after the last entry it delivered: no
  gap, no duplicate.
* **Wake-ups**: subscribers are indexed by the markets and the user they
  follow; a batch wakes only the subscribers it may concern. A waiting
  subscriber that was *not* woken for a batch had no interest in it, so it
  skips it without looking (``wake_from``). Subscribers of equal audiences
  (same markets, public or admin) share one encoding of each batch (``span``).
* **Idle**: with no subscriber the reader pauses (a replica serving no stream
  pays nothing for them) and starts again from the newest entry.
* **Capacity**: at most ``max_subscribers`` at once (a new one beyond that is
  refused at once, the caller answers 503), and ``close()`` ends every stream
  cleanly at shutdown.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, cast

from predmarket.api.event_visibility import PUBLIC, WHOLE, public_fields, sse_message, whole_fields, ws_message
from predmarket.engine.channel import cluster_of, owner_of
from predmarket.engine.connection import UNREACHABLE
from predmarket.engine.keys import Keys
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError, MovedError

log = logging.getLogger("predmarket.api")

RING_SIZE = 4_096
READ_COUNT = 1_000
READ_BLOCK_MS = 5_000
PAGE_SIZE = 500
#: After a read that was not full, the reader waits this long so entries arrive in batches: under
#: load, one XREAD per few entries cost the replica more than the entries themselves (a live
#: subscriber sees them at most this much later).
READ_PAUSE_S = 0.02
#: A subscriber silent this long gets a keep-alive (proxies drop idle connections).
HEARTBEAT_S = 15.0
NEVER = math.inf
#: The garbage collector's view of subscribers: see :meth:`StreamHub._follow_population`.
FREEZE_FROM = 256

StreamKey = tuple[int, int]
#: A ring slot: ``[entry id, [name, value, ...]]`` in bytes, as the reply parser made it. A replica
#: reads every entry of the stream whatever its subscribers follow, so nothing is copied or decoded
#: here (that cost more than the parse itself): only the few entries a subscriber reads are.
Slot = list[Any]
#: Field names and values as Redis sent them (names at even positions)
RawFields = Sequence[bytes]


def stream_key(entry_id: str) -> StreamKey:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class Entry:
    """One stream entry and its encoded forms, each made once however many subscribers send it.

    The reader keeps entries as the raw field list Redis sent (``[name, value, ...]`` in
    bytes): decoding every field of every entry into a dict cost the replica more than
    anything else about streams, and most entries are never sent (idle subscribers follow
    other markets). Fields, position key and routing values are worked out when first asked.
    """

    __slots__ = ("_fields", "_forms", "_key", "_market_id", "_raw", "_user_id", "id")

    def __init__(self, entry_id: str, raw: RawFields | None = None,
                 fields: dict[str, str] | None = None) -> None:
        self.id = entry_id
        self._raw = raw  # as Redis sent it, until the fields are decoded
        self._fields = fields
        self._key: StreamKey | None = None
        self._market_id: str | bool | None = False  # False: not looked up yet
        self._user_id: str | bool | None = False
        self._forms: dict[tuple[str, bool], bytes | str | None] | None = None

    @classmethod
    def decoded(cls, entry_id: str, fields: dict[str, str]) -> Entry:
        return cls(entry_id, fields=fields)

    @property
    def key(self) -> StreamKey:
        key = self._key
        if key is None:
            key = self._key = stream_key(self.id)
        return key

    @property
    def fields(self) -> dict[str, str]:
        fields = self._fields
        if fields is None:
            raw = cast(RawFields, self._raw)
            fields = self._fields = dict(zip(map(bytes.decode, raw[0::2]), map(bytes.decode, raw[1::2]), strict=True))
            self._raw = None
        return fields

    @property
    def market_id(self) -> str | None:
        value = self._market_id
        if value is False:
            value = self._market_id = self._field(b"market_id", "market_id")
        return cast(str | None, value)

    @property
    def user_id(self) -> str | None:
        value = self._user_id
        if value is False:
            value = self._user_id = self._field(b"user_id", "user_id")
        return cast(str | None, value)

    def _field(self, raw_name: bytes, name: str) -> str | None:
        """One field's value without decoding the others (names are at even positions)."""
        raw = self._raw
        if raw is None:
            return cast(dict[str, str], self._fields).get(name)
        value = raw_value(raw, raw_name)
        return None if value is None else value.decode()

    def visible_fields(self, view: str) -> dict[str, str] | None:
        """The fields of this entry a subscriber of ``view`` is shown; None if not visible."""
        return public_fields(self.fields) if view == PUBLIC else whole_fields(self.fields)

    def encoded(self, view: str, websocket: bool) -> bytes | str | None:
        """The SSE message (bytes) or WebSocket message (text) of this entry in ``view``; None if not visible."""
        forms = self._forms
        if forms is None:
            forms = self._forms = {}
        form = forms.get((view, websocket), False)
        if form is False:
            fields = self.visible_fields(view)
            form = None if fields is None else (ws_message(self.id, fields) if websocket
                                                else sse_message(self.id, fields))
            forms[(view, websocket)] = form
        return cast(bytes | str | None, form)


class Audience:
    """Which entries one subscriber gets and in which view; the base class is the public stream."""

    #: None: every market (the subscriber is woken for every batch)
    markets: frozenset[str] | None = None
    user_id: str | None = None
    #: the view of an entry depends only on the entry and ``markets`` (not on what came before),
    #: so subscribers of equal audiences can share one encoding of a batch
    shared = True

    def __init__(self, markets: frozenset[str] = frozenset()) -> None:
        self.markets = markets or None

    def view(self, entry: Entry) -> str | None:
        if self.markets is not None and entry.market_id not in self.markets:
            return None
        return PUBLIC


class AdminAudience(Audience):
    def view(self, entry: Entry) -> str | None:
        if self.markets is not None and entry.market_id not in self.markets:
            return None
        return WHOLE


class Subscriber:
    """A cursor into the ring plus what the hub needs to wake it."""

    __slots__ = (
        "audience",
        "behind",
        "closed",
        "cursor",
        "cursor_id",
        "last_sent",
        "seq",
        "waiter",
        "wake_from",
        "websocket",
    )

    def __init__(self, audience: Audience, websocket: bool) -> None:
        self.audience = audience
        self.websocket = websocket
        self.seq = 0  # the next ring position to read
        self.cursor: StreamKey = (0, 0)  # entries up to here are never delivered (already sent, or older)
        self.cursor_id = "0-0"
        self.wake_from = NEVER
        self.waiter: asyncio.Future[None] | None = None
        self.last_sent = time.monotonic()
        self.closed = False  # the client went away
        self.behind = False  # reading its backlog from Redis, not the ring

    def advance(self, entry: Entry) -> None:
        self.cursor, self.cursor_id = entry.key, entry.id


class Capacity(Exception):
    """The replica holds its configured number of subscribers already."""


class StreamHub:
    def __init__(self, reader: Redis, side: Redis, keys: Keys, max_subscribers: int,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.heartbeat_s = heartbeat_s
        #: how often idle subscribers are looked at for a keep-alive
        self.tick_s = heartbeat_s / 3
        self._reader = reader  # a client of its own: the blocking XREAD never waits for, or holds, another's
        self._cluster = cluster_of(reader)
        self._refresh = False  # on a cluster: ask for the topology before the next read (the last one failed)
        self.side = side  # small pool: start positions, backlogs, positions of /v1/me subscribers
        self._keys = keys
        self.max_subscribers = max_subscribers
        self._entries: list[Slot] = []
        #: the Entry of each slot, made when first read (None until then): shared by every subscriber
        self._views: list[Entry | None] = []
        self.base_seq = 0  # ring position of _entries[0]
        #: every entry after this one is in the ring (None until the reader has started)
        self.floor: StreamKey | None = None
        self._subscribers: set[Subscriber] = set()
        self._everything: set[Subscriber] = set()
        self._by_market: dict[str, set[Subscriber]] = {}
        self._by_user: dict[str, set[Subscriber]] = {}
        #: encodings of a batch shared by subscribers of equal audiences (see :meth:`span`)
        self._spans: dict[tuple[Any, ...], Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._latest: asyncio.Future[str] | None = None
        self._latest_task: asyncio.Task[None] | None = None
        self.closing = False
        #: set while the ring is current (the reader is reading)
        self.ready = asyncio.Event()
        #: set while anyone subscribes: with nobody to serve, the reader pauses and costs nothing
        self._wanted = asyncio.Event()
        self._frozen_at = 0  # subscribers when their objects were last frozen for the collector

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read_forever()), asyncio.create_task(self._tick_forever())]

    def close(self) -> None:
        """End every stream: each subscriber sends its closing message and returns."""
        self.closing = True
        for subscriber in self._subscribers:
            self._wake(subscriber, NEVER)

    async def stop(self) -> None:
        self.close()
        for task in (*self._tasks, *([self._latest_task] if self._latest_task else [])):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def count(self) -> int:
        return len(self._subscribers)

    @property
    def head_seq(self) -> int:
        return self.base_seq + len(self._entries)

    # ------------------------------------------------------------------ subscribers

    def add(self, subscriber: Subscriber) -> None:
        if self.closing or len(self._subscribers) >= self.max_subscribers:
            raise Capacity
        self._subscribers.add(subscriber)
        self._wanted.set()
        audience = subscriber.audience
        if audience.user_id is not None:
            self._by_user.setdefault(audience.user_id, set()).add(subscriber)
        if audience.markets is None:
            if audience.user_id is None:
                self._everything.add(subscriber)
        else:
            for market_id in audience.markets:
                self.watch(subscriber, market_id)

    def remove(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._everything.discard(subscriber)
        audience = subscriber.audience
        for market_id in audience.markets or ():
            self.unwatch(subscriber, market_id)
        if audience.user_id is not None:
            _discard(self._by_user, audience.user_id, subscriber)

    def watch(self, subscriber: Subscriber, market_id: str) -> None:
        self._by_market.setdefault(market_id, set()).add(subscriber)

    def unwatch(self, subscriber: Subscriber, market_id: str) -> None:
        _discard(self._by_market, market_id, subscriber)

    def join_after(self, subscriber: Subscriber, key: StreamKey) -> bool:
        """Point ``subscriber`` at the first ring entry after ``key``; False if the ring does not reach back."""
        if self.floor is None or key < self.floor:
            return False
        subscriber.seq = self.base_seq + bisect.bisect_right(self._entries, key, key=_slot_key)
        subscriber.behind = False
        return True

    def take(self, subscriber: Subscriber) -> tuple[int, list[Entry]] | None:
        """(ring position, entries) ``subscriber`` has not read yet; None if they left the ring (read the backlog)."""
        seq = subscriber.seq
        start = seq - self.base_seq
        if start < 0:
            return None
        subscriber.seq = self.head_seq
        views = self._views[start:]
        if None in views:  # first read of these slots: their entries are made once, for every subscriber
            slots = self._entries
            for offset, view in enumerate(views):
                if view is None:
                    index = start + offset
                    entry_id, raw = slots[index]
                    views[offset] = self._views[index] = Entry(entry_id.decode(), raw)
        return seq, cast(list[Entry], views)

    def span(self, start_seq: int, entries: list[Entry], audience: Audience, websocket: bool
             ) -> bytes | tuple[str, ...]:
        """The messages of ``entries`` (the ring from ``start_seq``) for ``audience``, encoded once for all.

        Every subscriber of an equal shared audience (same kind, same markets) woken for a batch
        gets the same bytes (SSE) or texts (WebSocket): the per-entry filtering and encoding is
        done by the first of them, not once per subscriber.
        """
        key = (start_seq, start_seq + len(entries), type(audience), audience.markets, websocket)
        chunk = self._spans.get(key)
        if chunk is None:
            forms = [form for e in entries if (view := audience.view(e)) is not None
                     and (form := e.encoded(view, websocket)) is not None]
            chunk = self._spans[key] = (tuple(cast(list[str], forms)) if websocket
                                        else b"".join(cast(list[bytes], forms)))
        return cast(bytes | tuple[str, ...], chunk)

    async def wait(self, subscriber: Subscriber) -> None:
        """Sleep until something for ``subscriber`` arrives, a keep-alive is due, or the hub closes.

        Call only when the subscriber has read the whole ring: what arrives while it
        sleeps and does not wake it was of no interest, and is skipped.
        """
        subscriber.wake_from = NEVER
        waiter = subscriber.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            subscriber.waiter = None
        if subscriber.seq < subscriber.wake_from < NEVER:
            subscriber.seq = int(subscriber.wake_from)

    def wake(self, subscriber: Subscriber) -> None:
        """Wake ``subscriber`` without skipping anything (its client went away)."""
        self._wake(subscriber, subscriber.seq)

    @staticmethod
    def _wake(subscriber: Subscriber, from_seq: float) -> None:
        if from_seq < subscriber.wake_from:
            subscriber.wake_from = from_seq
        waiter = subscriber.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ Redis reads on the side pool

    async def latest_id(self) -> str:
        """The newest entry id in Redis now (``0-0`` for none): one query serves every caller that asked meanwhile.

        A caller joins the *next* query, never one already sent, so the answer is at
        least as new as the moment it asked.
        """
        if self._latest is None:
            self._latest = asyncio.get_running_loop().create_future()
            if self._latest_task is None or self._latest_task.done():
                self._latest_task = asyncio.create_task(self._query_latest())
        return await asyncio.shield(self._latest)

    async def _query_latest(self) -> None:
        while self._latest is not None:
            answer, self._latest = self._latest, None
            try:
                last = cast(list[Any], await self.side.xrevrange(self._keys.events, count=1))
            except BaseException as exc:
                answer.set_exception(exc)
                answer.exception()  # retrieved here: callers re-raise it, an unawaited one is not logged
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            answer.set_result(str(last[0][0]) if last else "0-0")

    async def page_after(self, after: str) -> list[Entry]:
        """Up to PAGE_SIZE entries after ``after``, from Redis (a subscriber's backlog)."""
        reply = cast(list[Any], await self.side.xrange(self._keys.events, min=f"({after}", max="+",
                                                       count=PAGE_SIZE))
        return [Entry.decoded(entry_id, fields) for entry_id, fields in reply]

    # ------------------------------------------------------------------ the reader

    async def _read_forever(self) -> None:
        backoff = 0.1
        cursor: str | bytes | None = None
        while True:
            try:
                if not self._subscribers:
                    cursor = None
                    self._pause()
                    await self._wanted.wait()
                if cursor is None:
                    last = cast(list[Any], await self._reader.xrevrange(self._keys.events, count=1))
                    cursor = str(last[0][0]) if last else "0-0"
                    self.floor = stream_key(cursor)
                    self.ready.set()
                entries = await self._read_after(cursor)
                backoff = 0.1
                if entries:
                    cursor = entries[-1][0]
                    self._append(entries)
                    if len(entries) < READ_COUNT:
                        await asyncio.sleep(READ_PAUSE_S)
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                log.warning("event stream reader lost Redis (%s); reconnecting", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("event stream reader failed; restarting it")
                await asyncio.sleep(1.0)

    async def _read_after(self, cursor: str | bytes) -> list[Slot]:
        """The next entries after ``cursor`` (waiting up to READ_BLOCK_MS for one), fields left undecoded.

        The command goes straight to the reader's connection: redis-py's XREAD reply
        callback would decode every field into a dict, which is the cost avoided here.
        """
        if self._cluster is not None:
            return await self._read_after_on_cluster(self._cluster, cursor)
        pool = self._reader.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_command("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS,
                                          "STREAMS", self._keys.events, cursor)
            reply = await connection.read_response(disable_decoding=True)
        except BaseException:
            # A reply left half read would be taken as the next command's answer.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return _slots(reply)

    async def _read_after_on_cluster(self, cluster: RedisCluster, cursor: str | bytes) -> list[Slot]:
        """:meth:`_read_after` on a cluster: the same XREAD, on a connection to the stream's master.

        The cluster client has no single pool; the connection comes from its pool for the
        node owning the stream's slot (built with the client's options). A failure (MOVED
        after a failover, a lost connection) makes the next read ask for the topology again.
        """
        node = await owner_of(cluster, self._keys.events, refresh=self._refresh)
        self._refresh = False
        connection = node.acquire_connection()
        try:
            await connection.send_command("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS,
                                          "STREAMS", self._keys.events, cursor)
            reply = await connection.read_response(disable_decoding=True)
        except BaseException as exc:
            await connection.disconnect()
            self._refresh = True
            if isinstance(exc, MovedError):
                # The slot has another master: "Redis unavailable" for the reader's loop, which retries.
                raise ClusterError(f"the event stream moved: {exc}") from exc
            raise
        finally:
            node.release(connection)
        return _slots(reply)

    def _pause(self) -> None:
        """Forget the ring: it resumes from the newest entry when someone subscribes again."""
        self.ready.clear()
        self._wanted.clear()
        self.floor = None
        self.base_seq = self.head_seq
        self._entries.clear()
        self._views.clear()
        self._spans.clear()

    def _append(self, entries: list[Slot]) -> None:
        start = self.head_seq
        self._entries.extend(entries)
        self._views.extend([None] * len(entries))
        self._spans.clear()
        excess = len(self._entries) - RING_SIZE
        if excess >= RING_SIZE // 4:  # trimmed in steps, not per entry
            self.floor = _slot_key(self._entries[excess - 1])
            del self._entries[:excess]
            del self._views[:excess]
            self.base_seq += excess
        for subscriber in self._everything:
            self._wake(subscriber, start)
        # Routing values are looked up only while someone follows markets or a user, and
        # decoded once per distinct value of the batch.
        for index, raw_name in ((self._by_market, b"market_id"), (self._by_user, b"user_id")):
            if index:
                for value in {raw_value(raw, raw_name) for _, raw in entries}:
                    for subscriber in index.get(value.decode(), ()) if value is not None else ():
                        self._wake(subscriber, start)

    def keepalive_due(self, subscriber: Subscriber) -> bool:
        # Within a tick of the deadline: the next tick would come too late.
        return time.monotonic() - subscriber.last_sent >= self.heartbeat_s - self.tick_s

    def _follow_population(self) -> None:
        """Keep long-lived subscribers out of the cyclic garbage collector's full passes.

        Each connection is a graph of some hundred objects (transport, protocol, tasks,
        futures); with thousands of them, every full collection walked them all, and the
        bench measured that as two thirds more replica CPU per trade. Freezing moves every
        object alive now to a generation the collector skips (as the app does for its
        start-up objects). When most of the frozen subscribers have left, one full collection
        reclaims them (a pause of some 100 ms, as rare as such a drop) and the rest is frozen again.
        """
        count = len(self._subscribers)
        if count >= FREEZE_FROM and count * 10 > self._frozen_at * 11:
            gc.freeze()
            self._frozen_at = count
        elif self._frozen_at and count * 2 < self._frozen_at:
            # One full collection reclaims those that left; what survives is frozen again.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._frozen_at = count

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self._follow_population()
            head = self.head_seq
            for subscriber in self._subscribers:
                if self.keepalive_due(subscriber):
                    self._wake(subscriber, head)


def _slots(reply: Any) -> list[Slot]:
    """An undecoded XREAD reply of one stream as ring slots."""
    if not reply:
        return []
    # RESP3 answers a map {stream: entries}, RESP2 a list of [stream, entries].
    (entries,) = reply.values() if isinstance(reply, dict) else (stream[1] for stream in reply)
    return cast(list[Slot], entries)


def raw_value(raw: RawFields, name: bytes) -> bytes | None:
    """One field's value in a raw field list, without decoding the others (names are at even positions)."""
    try:
        index = raw.index(name)
    except ValueError:
        return None
    if index % 2 == 0:
        return raw[index + 1]
    try:  # that was a value equal to the name: look among the names only
        return raw[2 * raw[0::2].index(name) + 1]
    except ValueError:
        return None


def _slot_key(slot: Slot) -> StreamKey:
    ms, _, seq = slot[0].partition(b"-")
    return int(ms), int(seq or 0)


def _discard(index: dict[str, set[Subscriber]], name: str, subscriber: Subscriber) -> None:
    members = index.get(name)
    if members is not None:
        members.discard(subscriber)
        if not members:
            del index[name]
