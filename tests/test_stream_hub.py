"""The stream hub in-process on real Redis: slow subscribers catch up from Redis without gap or duplicate,
idle filtered subscribers skip what does not concern them, and the cap holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, cast

import predmarket.api.stream_hub as stream_hub
import pytest
from predmarket.api.stream_hub import Audience, Capacity, StreamHub, Subscriber, raw_value
from predmarket.api.streaming import Item, Session
from predmarket.engine.keys import Keys

from tests.support.redis_data import delete_prefix_async as delete_prefix
from tests.support.services import new_redis

WAIT_S = 10.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def items_of(session: Session) -> AsyncGenerator[Item, None]:
    """``session.items()``: an async generator (annotated as an AsyncIterator), which a test closes."""
    return cast(AsyncGenerator[Item, None], session.items())


@pytest.fixture
async def hub(prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StreamHub]:
    monkeypatch.setattr(stream_hub, "RING_SIZE", 8)  # a tiny ring: falling off it is easy
    monkeypatch.setattr(stream_hub, "READ_COUNT", 4)
    redis, reader = new_redis(), new_redis()
    hub = StreamHub(reader, redis, Keys(prefix), max_subscribers=3)
    hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
        await delete_prefix(redis, prefix)
        await reader.aclose()
        await redis.aclose()


async def add(hub: StreamHub, market_id: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(str(await hub.side.xadd(Keys(hub_prefix(hub)).events, {
            "type": "PriceUpdated", "ts": "1", "market_id": market_id, "price_yes": f"0.{i:06d}"})))
    return ids


def hub_prefix(hub: StreamHub) -> str:
    keys: Keys = hub._keys  # the test's own prefix
    return keys.prefix


async def collect(session: Session, count: int) -> list[str]:
    got: list[str] = []
    items = items_of(session)
    while len(got) < count:
        item = await asyncio.wait_for(anext(items), WAIT_S)
        if item.kind == "entries":
            got += [line[4:] for line in item.sse.decode().splitlines() if line.startswith("id: ")]
    await items.aclose()
    return got


async def test_a_subscriber_that_fell_off_the_ring_catches_up_from_redis_in_order(hub: StreamHub) -> None:
    await add(hub, "m", 1)  # the stream exists: the reader starts after this entry
    session = Session(hub, Audience(), websocket=False)
    await session.open(hub.side, Keys(hub_prefix(hub)), None)
    await until(hub.ready.is_set, "the reader to start (it waits for a first subscriber)")
    expected = await add(hub, "m", 40)
    await until(lambda: hub.head_seq >= 40 and hub.base_seq > 0, "the ring to move past the subscriber")
    pages: list[str] = []
    page_after = hub.page_after

    async def spy(after: str) -> Any:
        pages.append(after)
        return await page_after(after)

    hub.page_after = spy  # type: ignore[method-assign]  # a spy on the reader's page reads
    got = await collect(session, 40)
    session.close()
    assert got == expected  # every entry once, in stream order
    assert pages, "the backlog came from Redis"


async def test_an_idle_filtered_subscriber_skips_other_markets_without_reading_them(hub: StreamHub) -> None:
    await add(hub, "other", 1)
    session = Session(hub, Audience(frozenset({"quiet"})), websocket=False)
    await session.open(hub.side, Keys(hub_prefix(hub)), None)
    await until(hub.ready.is_set, "the reader to start")
    items = items_of(session)
    first = asyncio.ensure_future(anext(items))
    await until(lambda: session.subscriber.waiter is not None, "the subscriber to wait")
    await add(hub, "other", 40)  # far more than the ring holds, none of its business
    await until(lambda: hub.base_seq > 0, "the ring to move on")
    pages: list[str] = []
    page_after = hub.page_after

    async def spy(after: str) -> Any:
        pages.append(after)
        return await page_after(after)

    hub.page_after = spy  # type: ignore[method-assign]  # a spy on the reader's page reads
    (wanted,) = await add(hub, "quiet", 1)
    item = await asyncio.wait_for(first, WAIT_S)
    await items.aclose()
    session.close()
    assert item.kind == "entries" and item.sse.decode().startswith(f"id: {wanted}\n"), item
    assert pages == [], "nothing of the other market was read back from Redis"


async def test_the_cap_refuses_the_next_subscriber_and_frees_a_place_on_leaving(hub: StreamHub) -> None:
    admitted = [Subscriber(Audience(), websocket=False) for _ in range(3)]
    for subscriber in admitted:
        hub.add(subscriber)
    with pytest.raises(Capacity):
        hub.add(Subscriber(Audience(), websocket=False))
    hub.remove(admitted[0])
    hub.add(Subscriber(Audience(), websocket=True))
    assert hub.count == 3


async def test_subscribers_of_one_audience_share_one_encoding(hub: StreamHub) -> None:
    await add(hub, "m", 1)
    sessions = [Session(hub, Audience(frozenset({"m"})), websocket=ws) for ws in (False, False, True)]
    for session in sessions:
        await session.open(hub.side, Keys(hub_prefix(hub)), None)
    await until(hub.ready.is_set, "the reader to start")
    streams = [items_of(session) for session in sessions]
    firsts = [asyncio.ensure_future(anext(items)) for items in streams]
    await until(lambda: all(s.subscriber.waiter is not None for s in sessions), "every subscriber to wait")
    # One XADD pipeline: the reader gets the four entries in one batch.
    async with hub.side.pipeline(transaction=True) as pipe:
        for market_id in ("x", "m", "x", "m"):
            pipe.xadd(Keys(hub_prefix(hub)).events, {"type": "PriceUpdated", "ts": "1", "market_id": market_id})
        ids = [str(i) for i in await pipe.execute()]
    sse_a, sse_b, socket = [await asyncio.wait_for(first, WAIT_S) for first in firsts]
    for items in streams:
        await items.aclose()
    for session in sessions:
        session.close()
    wanted = [ids[1], ids[3]]
    assert [line[4:] for line in sse_a.sse.decode().splitlines() if line.startswith("id: ")] == wanted
    assert sse_b.sse is sse_a.sse, "the second subscriber got the first one's bytes, not a new encoding"
    assert [json.loads(text)["id"] for text in socket.texts] == wanted


@pytest.mark.parametrize(("raw", "value"), [
    ([b"type", b"PriceUpdated", b"market_id", b"m"], b"m"),
    # a value equal to the name comes first: only names are looked at
    ([b"type", b"market_id", b"ts", b"1", b"market_id", b"m"], b"m"),
    ([b"type", b"market_id", b"ts", b"1"], None),
    ([b"type", b"Deposit"], None),
    ([], None),
])
def test_a_raw_field_is_found_among_the_names_only(raw: list[bytes], value: bytes | None) -> None:
    assert raw_value(raw, b"market_id") == value
