"""Live events over real HTTP: Server-Sent Events at /v1/events and the WebSocket at /v1/ws."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from tests.support.api import DECIMAL, Api, Stack, assert_error, bearer, one_stream, stream_id, unique
from tests.support.event_streams import (
    PERSONAL,
    PRICE_UPDATED_FIELDS,
    TRADE_EXECUTED_FIELDS,
    WAIT_S,
    atrade,
    check_message,
    pairs_in_order,
    sse,
    stream_entries,
)

# --------------------------------------------------------------------------- SSE

@one_stream
async def test_sse_messages_and_start_with_entries_newer_than_the_connection(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "1")  # older than the connection: never delivered
    async with sse(api_stack.urls[1], (market_id,)) as stream:
        first = await atrade(api_stack, user, market_id, "BUY", "NO", "2", replica=0)
        second = await atrade(api_stack, user, market_id, "SELL", "NO", "1", replica=1)
        messages = await stream.take(4)
    for message in messages:
        check_message(message)
    assert pairs_in_order(messages) == [str(first["trade_id"]), str(second["trade_id"])]
    ids = [stream_id(str(m.id)) for m in messages]
    assert ids == sorted(ids) and len(set(ids)) == 4
    executed, updated = messages[0].data, messages[1].data
    # Public: whose trade it was, their balance and holding are nobody else's business.
    assert set(executed) >= TRADE_EXECUTED_FIELDS - PERSONAL and set(updated) >= PRICE_UPDATED_FIELDS
    assert PERSONAL.isdisjoint(executed), executed
    assert (executed["market_id"], executed["side"], executed["outcome"]) == (market_id, "BUY", "NO")
    for key in ("shares", "cost", "price_yes", "price_no"):
        assert executed[key] == first[key]
    for key in ("shares", "cost", "price_yes", "price_no", "yes_shares", "no_shares", "pool"):
        assert DECIMAL.fullmatch(executed[key]), (key, executed[key])
    # The ids are the stream's own entry ids, data its fields (in public form).
    assert [(m.id, m.data) for m in messages] == [
        (i, f) for i, f in stream_entries(api_stack, market_id) if stream_id(i) >= ids[0]]


@one_stream
async def test_sse_without_filter_starts_after_the_connection(api: Api, api_stack: Stack) -> None:
    before = stream_id(api_stack.last_event_id())
    async with sse(api_stack.url, token=api.admin_token) as stream:  # UserCreated is for the admin only
        username = unique("sse")
        r = api.admin("POST", "/v1/users", json={"username": username})
        assert r.status_code == 201
        first = await stream.next()
        assert stream_id(str(first.id)) > before
        message = first
        while message.event != "UserCreated" or message.data["username"] != username:
            message = await stream.next()
        assert message.data["user_id"] == r.json()["user_id"]


@one_stream
async def test_sse_market_filter(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    a, b = api.create_market(), api.create_market()
    async with sse(api_stack.url, (a,)) as only_a, sse(api_stack.url, (a, b)) as both:
        trade_b = await atrade(api_stack, user, b, shares="1")
        trade_a = await atrade(api_stack, user, a, shares="1", replica=1)
        got_a = await only_a.take(2)
        got_both = await both.take(4)
    assert all(m.data["market_id"] == a for m in got_a)
    assert pairs_in_order(got_a) == [str(trade_a["trade_id"])]
    assert pairs_in_order(got_both) == [str(trade_b["trade_id"]), str(trade_a["trade_id"])]


@one_stream
async def test_trade_executed_precedes_price_updated_under_concurrency(api: Api, api_stack: Stack) -> None:
    users = [api.create_user("100") for _ in range(4)]
    market_id = api.create_market()
    async with sse(api_stack.url, (market_id,)) as stream:
        trades = await asyncio.gather(*(
            atrade(api_stack, users[i % 4], market_id, "BUY", "YES" if i % 2 else "NO", "1", replica=i % 2)
            for i in range(12)))
        messages = await stream.take(24)
    trade_ids = pairs_in_order(messages)
    assert sorted(int(t) for t in trade_ids) == sorted(t["trade_id"] for t in trades)
    assert [int(t) for t in trade_ids] == sorted(int(t) for t in trade_ids)  # stream order = execution order


@one_stream
async def test_sse_resume_with_last_event_id_has_no_gap_and_no_duplicate(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    async with sse(api_stack.url, (market_id,)) as stream:
        for i in range(3):
            await atrade(api_stack, user, market_id, "BUY", "YES", "1", replica=i % 2)
        first_part = await stream.take(3)  # stop in the middle of a pair
    for i in range(3):
        await atrade(api_stack, user, market_id, "BUY", "NO", "1", replica=i % 2)
    expected = [(i, f) for i, f in stream_entries(api_stack, market_id, start)]
    assert len(expected) == 12
    async with sse(api_stack.urls[1], (market_id,), last_event_id=str(first_part[-1].id)) as stream:
        second_part = await stream.take(len(expected) - 3)
        # Then the live tail continues on the same connection.
        late = await atrade(api_stack, user, market_id, "SELL", "YES", "1")
        tail = await stream.take(2)
    union = first_part + second_part
    assert [(m.id, m.data) for m in union] == expected
    assert len(pairs_in_order(union)) == 6
    assert pairs_in_order(tail) == [str(late["trade_id"])]
    # The query parameter ``after`` resumes the same way.
    async with sse(api_stack.url, (market_id,), after=str(union[5].id)) as stream:
        again = await stream.take(len(expected) - 6)
    assert [(m.id, m.data) for m in again] == expected[6:]


@one_stream
async def test_last_event_id_older_than_the_trimmed_stream_yields_a_gap(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    for _ in range(3):
        api.buy(user, market_id, "YES", "1")
    entries = stream_entries(api_stack, market_id, start)
    assert len(entries) == 6
    # Trim only what the persister has committed, as the persister itself would.
    api_stack.wait_persisted()
    keep_from = entries[4][0]  # the third TradeExecuted
    with api_stack.redis() as r:
        r.xtrim(api_stack.events_key, minid=keep_from, approximate=False)
        oldest = str(r.xrange(api_stack.events_key, count=1)[0][0])
    assert oldest == keep_from
    async with sse(api_stack.url, (market_id,), last_event_id=entries[0][0]) as stream:
        gap = await stream.next()
        resumed = await stream.take(2)
    assert gap.event == "gap" and gap.id is None
    assert [(m.id, m.data) for m in resumed] == entries[4:]
    # Any id older than the oldest kept entry is a gap, even the newest trimmed one.
    async with sse(api_stack.url, (market_id,), last_event_id=entries[3][0]) as stream:
        gap = await stream.next()
        resumed = await stream.take(2)
    assert gap.event == "gap"
    assert [(m.id, m.data) for m in resumed] == entries[4:]
    # From the oldest kept entry on, nothing is missing: no gap.
    async with sse(api_stack.url, (market_id,), last_event_id=keep_from) as stream:
        resumed = await stream.take(1)
    assert [(m.id, m.data) for m in resumed] == entries[5:]


async def test_bad_event_stream_parameters_are_422(api_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=api_stack.url, timeout=WAIT_S) as client:
        assert_error(await client.get("/v1/events", headers={"Last-Event-ID": "not-an-id"}), 422, "VALIDATION_ERROR")
        assert_error(await client.get("/v1/events", params={"market_id": "bad id"}), 422, "VALIDATION_ERROR")


# --------------------------------------------------------------------------- WebSocket

async def ws_take(uri: str, count: int, action: Callable[[], Any] | None = None) -> list[dict[str, Any]]:
    """``count`` event messages from the WebSocket at ``uri`` (heartbeats skipped), after ``action`` ran."""
    received: list[dict[str, Any]] = []
    async with ws_connect(uri, open_timeout=WAIT_S) as socket:
        if action is not None:
            await action()
        deadline = time.monotonic() + WAIT_S
        while len(received) < count:
            raw = await asyncio.wait_for(socket.recv(), max(0.01, deadline - time.monotonic()))
            message = json.loads(raw)
            if message.get("event") != "heartbeat":
                received.append(message)
    return received


@one_stream
async def test_websocket_delivers_the_same_entries_as_sse(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    for i in range(2):
        api.buy(user, market_id, "YES" if i else "NO", "1", replica=i)
    async with sse(api_stack.url, (market_id,), last_event_id=start) as stream:
        over_sse = await stream.take(4)
    over_ws = await ws_take(f"{api_stack.ws_url(1)}/v1/ws?market_id={market_id}&after={start}", 4)
    assert [(m["id"], m["event"], m["data"]) for m in over_ws] == [(m.id, m.event, m.data) for m in over_sse]
    assert [(m["id"], m["data"]) for m in over_ws] == stream_entries(api_stack, market_id, start)


async def test_websocket_live_entries_start_after_the_connection(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "1")
    trades: list[dict[str, Any]] = []

    async def trade() -> None:
        trades.append(await atrade(api_stack, user, market_id, "BUY", "NO", "1", replica=1))

    received = await ws_take(f"{api_stack.ws_url(0)}/v1/ws?market_id={market_id}", 2, trade)
    assert [m["event"] for m in received] == ["TradeExecuted", "PriceUpdated"]
    assert received[0]["data"]["trade_id"] == str(trades[0]["trade_id"])


@one_stream
async def test_subscribers_do_not_see_other_clients_idempotency_keys(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market = api.create_market()
    async with sse(api_stack.url, (market,)) as stream, httpx.AsyncClient(base_url=api_stack.url) as client:
        r = await client.post(f"/v1/markets/{market}/trades", headers={**bearer(user.api_key),
                              "Idempotency-Key": "secret-key-1"},
                              json={"side": "BUY", "outcome": "YES", "shares": "1"})
        assert r.status_code == 201
        got = await stream.take(2)
    executed = next(m for m in got if m.event == "TradeExecuted")
    assert "idempotency_key" not in executed.data and "request_hash" not in executed.data
    # The stream itself keeps them (the persister records them so recovery can restore replays).
    with api_stack.redis() as r:
        (entry,) = [f for _, f in r.xrange(api_stack.events_key)
                    if f.get("market_id") == market and f["type"] == "TradeExecuted"]
    assert entry["idempotency_key"] == "secret-key-1"
