"""One subscriber's stream: where it starts (newest, or after ``Last-Event-ID`` with gap detection),
then its entries from the process's :class:`~api.stream_hub.StreamHub`, keep-alives, and the end.

A session yields :class:`Item` values; the transports (SSE, WebSocket) in
``api.routes.events`` turn them into bytes or frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from predmarket.api.event_visibility import OWN_TYPES, PUBLIC, PUBLIC_TYPES, WHOLE
from predmarket.api.stream_hub import Audience, Entry, StreamHub, Subscriber, stream_key
from predmarket.engine.keys import Keys
from redis.asyncio import Redis
from redis.exceptions import ResponseError

#: How long a subscriber whose ring is not there yet (the reader reconnecting) sleeps between backlog reads.
NO_RING_RETRY_S = 0.5


@dataclass(frozen=True, slots=True)
class Item:
    """``entries`` (SSE bytes, or WebSocket texts), ``gap``, ``heartbeat`` or ``closing``; from a
    session that is one shard's part of a merged stream (api/merged_streaming.py), ``visible``:
    the entries as (entry id, fields shown), for the merge to encode under its own ids."""

    kind: str
    sse: bytes = b""
    texts: tuple[str, ...] = ()
    visible: tuple[tuple[str, dict[str, str]], ...] = ()


GAP = Item("gap")
HEARTBEAT = Item("heartbeat")
CLOSING = Item("closing")


def valid_stream_id(value: str) -> bool:
    ms, dash, seq = value.partition("-")
    return ms.isdigit() and len(ms) <= 15 and (not dash or (seq.isdigit() and len(seq) <= 19))


async def resume_position(redis: Redis, keys: Keys, after: str) -> tuple[str, bool]:
    """Where to resume after ``after`` and whether entries after it were trimmed away (a gap)."""
    info: dict[str, Any] | None = None
    try:
        info = await redis.xinfo_stream(keys.events)
    except ResponseError:  # no stream yet
        info = None
    if info is None:
        return after, False
    first = info.get("first-entry")
    oldest_kept = str(first[0]) if first else str(info.get("last-generated-id") or "0-0")
    # After a gap the stream resumes at the oldest kept entry: the cursor is the id just
    # before it (this process's ring may still hold trimmed entries; they are not sent).
    resume = _just_before(oldest_kept) if first else oldest_kept
    if stream_key(after) < stream_key(str(info.get("max-deleted-entry-id") or "0-0")):  # XDEL
        return resume, True
    # XTRIM (how the persister trims) leaves max-deleted-entry-id alone (Redis 7.0): entries
    # were removed from the front when fewer are left than were ever added.
    removed = int(info.get("entries-added", -1)) != int(info.get("length", 0))
    if removed and stream_key(after) < stream_key(oldest_kept):
        return resume, True
    return after, False


def _just_before(entry_id: str) -> str:
    ms, seq = stream_key(entry_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0-0"


class UserAudience(Audience):
    """``/v1/me/events``: the user's own events whole, and the public events of markets they hold.

    The held markets start from the user's positions hash in Redis and follow the
    ``position`` field of the user's own ``TradeExecuted`` entries as they pass,
    so the filter is the state as of each entry, not a cache that goes stale.
    A market stays followed after a payout: its settlement still concerns the user.
    """

    def __init__(self, user_id: str, held: dict[str, set[str]]) -> None:
        super().__init__()
        self.user_id = user_id
        self.held = held  # market id -> outcomes with shares > 0
        self.markets = None
        self.shared = False  # the view follows the user's positions entry by entry
        self._traded: str | None = None  # market of the own TradeExecuted just seen
        self._hub: StreamHub | None = None
        self._subscriber: Subscriber | None = None

    def bind(self, hub: StreamHub, subscriber: Subscriber) -> None:
        """Register the held markets with the hub (after the subscriber was admitted)."""
        self._hub, self._subscriber = hub, subscriber
        for market_id in self.held:
            hub.watch(subscriber, market_id)

    def view(self, entry: Entry) -> str | None:
        kind = entry.fields.get("type")
        traded, self._traded = self._traded, None
        if entry.user_id == self.user_id and kind in OWN_TYPES:
            if kind == "TradeExecuted":
                self._follow(entry.fields)
                self._traded = entry.market_id
            return WHOLE
        if kind in PUBLIC_TYPES and entry.market_id in self.held:
            return PUBLIC
        if kind == "PriceUpdated" and entry.market_id == traded:
            return PUBLIC  # the price move of the user's own trade, even one that closed the position
        return None

    def _follow(self, fields: dict[str, str]) -> None:
        market_id, outcome = fields.get("market_id", ""), fields.get("outcome", "")
        position = fields.get("position")
        outcomes = self.held.get(market_id)
        if position is None or position.strip("0.") != "":  # shares left (or a stream without the field)
            if outcomes is None:
                self.held[market_id] = {outcome}
                if self._hub is not None and self._subscriber is not None:
                    self._hub.watch(self._subscriber, market_id)
            else:
                outcomes.add(outcome)
        elif outcomes is not None:
            outcomes.discard(outcome)
            if not outcomes:
                del self.held[market_id]
                if self._hub is not None and self._subscriber is not None:
                    self._hub.unwatch(self._subscriber, market_id)


async def held_markets(redis: Redis, keys: Keys, user_id: str) -> dict[str, set[str]]:
    """The user's positions in Redis now: market id -> outcomes with shares."""
    positions = cast(dict[str, str], await redis.hgetall(keys.user_positions(user_id)))
    held: dict[str, set[str]] = {}
    for name, shares in positions.items():
        market_id, _, outcome = name.rpartition(":")
        if int(shares) > 0:
            held.setdefault(market_id, set()).add(outcome)
    return held


class Session:
    """One subscriber from admission to its last message; use as an async context manager."""

    def __init__(self, hub: StreamHub, audience: Audience, websocket: bool, *, part: bool = False) -> None:
        """``part``: one shard's part of a merged stream, giving its entries as ``visible`` items."""
        self.hub = hub
        self.subscriber = Subscriber(audience, websocket)
        self._gap = False
        self._admitted = False
        self._part = part

    async def open(self, redis: Redis, keys: Keys, after: str | None) -> None:
        """Admit the subscriber (:class:`~api.stream_hub.Capacity` if full) and fix its start.

        Called *before* answering the client, so that "newer than the connection"
        holds from the moment the client sees the response, and an unreachable
        Redis is a 503 rather than a stream that fails at once.
        """
        hub, subscriber = self.hub, self.subscriber
        hub.add(subscriber)
        self._admitted = True
        if isinstance(subscriber.audience, UserAudience):
            subscriber.audience.bind(hub, subscriber)
        if after is None:
            start = await hub.latest_id()
        else:
            start, self._gap = await resume_position(redis, keys, after)
        subscriber.cursor, subscriber.cursor_id = stream_key(start), start
        subscriber.behind = not hub.join_after(subscriber, subscriber.cursor)

    def close(self) -> None:
        if self._admitted:
            self._admitted = False
            self.hub.remove(self.subscriber)

    def client_gone(self) -> None:
        self.subscriber.closed = True
        self.hub.wake(self.subscriber)

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def items(self) -> AsyncIterator[Item]:
        """Every message for this subscriber until the client leaves or the hub closes."""
        hub, subscriber = self.hub, self.subscriber
        if self._gap:
            yield GAP
        while not subscriber.closed:
            if hub.closing:
                yield CLOSING
                return
            if hub.keepalive_due(subscriber):
                yield self._sent(HEARTBEAT)
            taken = None if subscriber.behind else hub.take(subscriber)
            if taken is None:
                item = await self._from_backlog()
                if item is not None:
                    yield item
                continue
            start_seq, entries = taken
            if entries:
                item = self._render(entries, start_seq)
                if item is not None:
                    yield item
                continue
            if subscriber.seq < hub.head_seq:
                continue
            await hub.wait(subscriber)

    async def _from_backlog(self) -> Item | None:
        """The next page after the cursor from Redis, or None once the ring reaches back to it."""
        hub, subscriber = self.hub, self.subscriber
        subscriber.behind = True
        if hub.join_after(subscriber, subscriber.cursor):
            return None
        page = await hub.page_after(subscriber.cursor_id)
        if page:
            return self._render(page, None)
        # Nothing newer in Redis, and the ring is not there (the reader is (re)connecting).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.ready.wait(), NO_RING_RETRY_S)
        return None

    def _render(self, entries: list[Entry], start_seq: int | None) -> Item | None:
        subscriber = self.subscriber
        cursor = subscriber.cursor
        fresh = entries if entries[0].key > cursor else [e for e in entries if e.key > cursor]
        if not fresh:
            return None
        subscriber.advance(fresh[-1])
        audience, websocket = subscriber.audience, subscriber.websocket
        if self._part:
            visible = tuple((e.id, fields) for e in fresh if (view := audience.view(e)) is not None
                            and (fields := e.visible_fields(view)) is not None)
            return self._sent(Item("visible", visible=visible)) if visible else None
        if start_seq is not None and fresh is entries and audience.shared:
            # The common case: caught up on the ring. One encoding serves every subscriber of an equal audience.
            chunk = self.hub.span(start_seq, fresh, audience, websocket)
            if not chunk:
                return None
            if websocket:
                return self._sent(Item("entries", texts=cast(tuple[str, ...], chunk)))
            return self._sent(Item("entries", sse=cast(bytes, chunk)))
        forms = [form for e in fresh if (view := audience.view(e)) is not None
                 and (form := e.encoded(view, websocket)) is not None]
        if not forms:
            return None
        if websocket:  # encoded() gives text for a WebSocket, bytes for SSE
            return self._sent(Item("entries", texts=tuple(cast(list[str], forms))))
        return self._sent(Item("entries", sse=b"".join(cast(list[bytes], forms))))

    def _sent(self, item: Item) -> Item:
        self.subscriber.last_sent = time.monotonic()
        return item
