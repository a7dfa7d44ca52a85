"""Live events straight from the Redis stream, for SSE and WebSocket clients.

Each subscriber reads the stream itself with a blocking XREAD of a bounded
COUNT and hands entries on one at a time; the next read happens only after the
client took the previous ones, so a slow client holds at most one read's worth
of entries in memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.keys import Keys

READ_COUNT = 100
HEARTBEAT_S = 15.0


@dataclass(frozen=True, slots=True)
class StreamItem:
    """``kind`` is ``event`` (with id and fields), ``gap`` or ``heartbeat``."""

    kind: str
    entry_id: str = ""
    fields: dict[str, str] | None = None


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def valid_stream_id(value: str) -> bool:
    ms, dash, seq = value.partition("-")
    return ms.isdigit() and len(ms) <= 15 and (not dash or (seq.isdigit() and len(seq) <= 19))


async def start_position(redis: Redis, keys: Keys, after: str | None) -> tuple[str, bool]:
    """Where to start reading and whether entries after ``after`` were trimmed away (a gap).

    Callers resolve it *before* answering the client, so that "newer than the
    connection" holds from the moment the client sees the response, and an
    unreachable Redis is a 503 rather than a stream that fails at once.
    """
    if after is None:
        last = cast(list[Any], await redis.xrevrange(keys.events, count=1))
        return (last[0][0] if last else "0-0"), False
    info: dict[str, Any] | None = None
    try:
        info = await redis.xinfo_stream(keys.events)
    except ResponseError:  # no stream yet
        info = None
    if info is None:
        return after, False
    if _id(after) < _id(str(info.get("max-deleted-entry-id") or "0-0")):  # XDEL
        return "0-0", True
    # XTRIM (how the persister trims) leaves max-deleted-entry-id alone (Redis 7.0): entries
    # were removed from the front when fewer are left than were ever added.
    removed = int(info.get("entries-added", -1)) != int(info.get("length", 0))
    first = info.get("first-entry")
    oldest_kept = str(first[0]) if first else str(info.get("last-generated-id") or "0-0")
    if removed and _id(after) < _id(oldest_kept):
        return "0-0", True
    return after, False


async def events(
    redis: Redis, keys: Keys, after: str | None, market_ids: frozenset[str],
    heartbeat_s: float = HEARTBEAT_S, start: tuple[str, bool] | None = None,
) -> AsyncIterator[StreamItem]:
    """Entries newer than ``after`` (or than now), filtered to ``market_ids`` if given, forever.

    ``start`` is :func:`start_position`'s answer when the caller resolved it already.
    """
    cursor, gap = start if start is not None else await start_position(redis, keys, after)
    if gap:
        yield StreamItem("gap")
    quiet_since = time.monotonic()
    while True:
        reply = cast(list[Any], await redis.xread({keys.events: cursor}, count=READ_COUNT,
                                                  block=int(heartbeat_s * 1000)))
        for entry_id, fields in reply[0][1] if reply else ():
            cursor = entry_id
            if market_ids and fields.get("market_id") not in market_ids:
                continue
            quiet_since = time.monotonic()
            yield StreamItem("event", entry_id, fields)
        # Filtered-out traffic is silence too: keep the connection visibly alive.
        if time.monotonic() - quiet_since >= heartbeat_s:
            quiet_since = time.monotonic()
            yield StreamItem("heartbeat")
