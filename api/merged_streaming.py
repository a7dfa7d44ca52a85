"""A live stream over several shards: each shard's stream read by its own hub, merged per subscriber.

Each shard has its own event stream (engine/shards.py), so no single entry id orders the
deployment's events. A merged stream's event id is instead the **position in every shard**
after that event: the last entry id delivered from each, joined by ``.`` (shard 0 first).
Resuming with it (``Last-Event-ID`` or ``?after=``, on any replica) reads each shard after
its own position: no gap and no duplicate, whatever order the shards' entries were
interleaved in before. Within a shard entries arrive in stream order; between shards,
in the order the replica read them.

One :class:`~api.streaming.Session` per shard read (a ``?market_id=`` stream reads only
its markets' shards), each a subscriber of that shard's :class:`~api.stream_hub.StreamHub`
giving its visible entries unencoded; the merge gives each its composite id and encodes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from predmarket.api.event_visibility import sse_message, ws_message
from predmarket.api.stream_hub import HEARTBEAT_S, Audience, StreamHub
from predmarket.api.streaming import CLOSING, GAP, HEARTBEAT, Item, Session, valid_stream_id
from predmarket.engine.keys import Keys
from redis.asyncio import Redis

SEPARATOR = "."
#: Batches one shard's part may hold ready before it waits for the merge (then it falls behind its
#: hub's ring, and reads its backlog from Redis when it goes on: a slow client costs no memory).
QUEUED = 4


def valid_composite_id(value: str, shards: int) -> bool:
    """Whether ``value`` is a merged stream's event id of ``shards`` shards."""
    parts = value.split(SEPARATOR)
    return len(parts) == shards and all(valid_stream_id(part) for part in parts)


def composite_id(positions: list[str]) -> str:
    return SEPARATOR.join(positions)


class MergedSession:
    """One subscriber over several shards, from admission to its last message (an async context manager,
    with :class:`~api.streaming.Session`'s interface)."""

    def __init__(self, hubs: list[StreamHub], audience_of: Callable[[int], Audience], websocket: bool,
                 shards_read: set[int] | None = None) -> None:
        """``audience_of(k)``: the subscriber's audience in shard k; ``shards_read``: the shards whose
        entries it can want (None: every shard)."""
        self.hubs = hubs
        read = range(len(hubs)) if shards_read is None else sorted(shards_read)
        self.parts = {k: Session(hubs[k], audience_of(k), websocket, part=True) for k in read}
        self.websocket = websocket
        self.positions = ["0-0"] * len(hubs)
        self.hub = hubs[0]  # what a caller refused at capacity is told about
        self.closed = False
        self._queue: asyncio.Queue[tuple[int, Item | BaseException] | None] = asyncio.Queue(QUEUED)
        self._last_sent = time.monotonic()

    async def open(self, redis: Redis, keys: list[Keys], after: str | None) -> None:
        """Admit a part in each shard read (Capacity if a hub is full) and fix every shard's start:
        after ``after``'s position in it, or its newest entry now."""
        given = after.split(SEPARATOR) if after is not None else None
        for k, part in self.parts.items():
            await part.open(redis, keys[k], given[k] if given is not None else None)
            self.positions[k] = given[k] if given is not None else part.subscriber.cursor_id
        for k in range(len(self.hubs)):
            if k not in self.parts:
                # A shard this stream does not read keeps its position: resuming the id without the
                # filter later reads that shard from where this stream began.
                self.positions[k] = given[k] if given is not None else await self.hubs[k].latest_id()

    def close(self) -> None:
        for part in self.parts.values():
            part.close()

    def client_gone(self) -> None:
        self.closed = True
        for part in self.parts.values():
            part.client_gone()
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)  # wakes the merge (a full queue wakes it anyway)

    async def __aenter__(self) -> MergedSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _pump(self, shard: int, part: Session) -> None:
        """Feed one shard's items to the merge; its heart-beats are the merge's business."""
        try:
            async for item in part.items():
                if item.kind != "heartbeat":
                    await self._queue.put((shard, item))
                if item.kind == "closing":
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # Redis lost: the merged stream ends as a one-shard one would
            await self._queue.put((shard, exc))

    async def items(self) -> AsyncIterator[Item]:
        """Every message for this subscriber, each entry under its composite id, until the client
        leaves or the hubs close."""
        pumps = [asyncio.create_task(self._pump(k, part)) for k, part in self.parts.items()]
        # One get() outlives a heart-beat: cancelling it on a timeout (wait_for) could drop an item
        # taken from the queue at that very moment, a hole in the stream.
        getter: asyncio.Future[tuple[int, Item | BaseException] | None] | None = None
        try:
            while not self.closed:
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                timeout = HEARTBEAT_S - (time.monotonic() - self._last_sent)
                await asyncio.wait({getter}, timeout=max(timeout, 0))
                if not getter.done():
                    yield self._sent(HEARTBEAT)
                    continue
                got, getter = getter.result(), None
                if got is None:
                    continue
                shard, item = got
                if isinstance(item, BaseException):
                    raise item
                if item.kind == "closing":
                    yield CLOSING
                    return
                if item.kind == "gap":
                    yield GAP
                    continue
                yield self._sent(self._encoded(shard, item))
        finally:
            waiting: list[asyncio.Future[Any]] = [*pumps, *([getter] if getter is not None else [])]
            for task in waiting:
                task.cancel()
            for task in waiting:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _encoded(self, shard: int, item: Item) -> Item:
        positions = self.positions
        messages: list[bytes] = []
        texts: list[str] = []
        for entry_id, fields in item.visible:
            positions[shard] = entry_id
            if self.websocket:
                texts.append(ws_message(composite_id(positions), fields))
            else:
                messages.append(sse_message(composite_id(positions), fields))
        return Item("entries", sse=b"".join(messages), texts=tuple(texts))

    def _sent(self, item: Item) -> Item:
        self._last_sent = time.monotonic()
        return item

