"""Live events over real HTTP: Server-Sent Events at /v1/events and the WebSocket at /v1/ws."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from tests.support.api import DECIMAL, STREAM_ID, Api, Stack, User, assert_error, bearer, stream_id, unique

WAIT_S = 10.0
TRADE_EXECUTED_FIELDS = {"type", "ts", "trade_id", "market_id", "user_id", "side", "outcome", "shares", "cost",
                         "price_yes", "price_no", "yes_shares", "no_shares", "pool", "available"}
#: What the public streams leave out of a TradeExecuted: whose trade it was and their money and holding.
PERSONAL = {"user_id", "available", "position"}
PUBLIC_TYPES = {"MarketCreated", "MarketOpened", "MarketClosed", "MarketResolved", "MarketSettled", "PriceUpdated",
                "TradeExecuted"}
INTERNAL = {"idempotency_key", "request_hash"}
PRICE_UPDATED_FIELDS = {"type", "ts", "market_id", "price_yes", "price_no", "yes_shares", "no_shares"}


@dataclass(frozen=True)
class Message:
    """One SSE message: ``id:``, ``event:`` and the ``data:`` JSON."""

    id: str | None
    event: str | None
    data: Any


class SseStream:
    """An open ``GET /v1/events``: read messages one by one, each with a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def _message(self) -> Message | None:
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            line = await anext(self._lines)
            if line == "":
                if not fields and not data:
                    return None  # a comment-only block (": connected", ": keep-alive")
                raw = "\n".join(data)
                return Message(fields.get("id"), fields.get("event"), json.loads(raw) if raw else None)
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value

    async def next(self, timeout_s: float = WAIT_S) -> Message:
        """The next message that is not a comment."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no SSE message within {timeout_s} s")
            message = await asyncio.wait_for(self._message(), remaining)
            if message is not None:
                return message

    async def take(self, count: int, timeout_s: float = WAIT_S) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        return [await self.next(max(0.01, deadline - time.monotonic())) for _ in range(count)]

    async def connected(self) -> None:
        """Wait for the stream's opening comment: from here on, every new entry is delivered."""
        message = await asyncio.wait_for(self._message(), WAIT_S)
        assert message is None and self.comments, message


@asynccontextmanager
async def sse(base_url: str, market_ids: tuple[str, ...] = (), last_event_id: str | None = None,
              token: str | None = None, path: str = "/v1/events", **params: str) -> AsyncIterator[SseStream]:
    query: list[tuple[str, str | int | float | bool | None]] = [("market_id", m) for m in market_ids]
    query += list(params.items())
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    if token is not None:
        headers.update(bearer(token))
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(WAIT_S)) as client, \
            client.stream("GET", path, params=query, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = SseStream(response)
        await stream.connected()
        yield stream


def stream_entries(stack: Stack, market_id: str | None, after: str = "-",
                   public: bool = True) -> list[tuple[str, dict[str, str]]]:
    """The market's entries (every entry for None) in the Redis stream itself (strictly after ``after``).

    ``public``: as the public streams show them (public types only, personal fields left out);
    otherwise whole (as the admin sees them). Internal fields are left out of both.
    """
    start = "-" if after == "-" else f"({after}"
    with stack.redis() as r:
        entries = r.xrange(stack.events_key, min=start, max="+")
    chosen = [(str(i), dict(f)) for i, f in entries if market_id is None or f.get("market_id") == market_id]
    if public:
        return [(i, public_form(f)) for i, f in chosen if f["type"] in PUBLIC_TYPES]
    return [(i, {k: v for k, v in f.items() if k not in INTERNAL}) for i, f in chosen]


def public_form(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in PERSONAL | INTERNAL}


async def atrade(stack: Stack, user: User, market_id: str, side: str = "BUY", outcome: str = "YES",
                 shares: str = "1", replica: int = 0) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.urls[replica], timeout=10) as client:
        r = await client.post(f"/v1/markets/{market_id}/trades", headers=bearer(user.api_key),
                              json={"side": side, "outcome": outcome, "shares": shares})
    assert r.status_code == 201, r.text
    return dict(r.json())


def check_message(message: Message) -> None:
    assert message.id is not None and STREAM_ID.fullmatch(message.id), message
    assert isinstance(message.data, dict) and message.data.get("type") == message.event, message
    assert all(isinstance(v, str) for v in message.data.values()), message
    assert message.data["ts"].isdigit()


def pairs_in_order(messages: list[Message]) -> list[str]:
    """The trade ids of TradeExecuted/PriceUpdated pairs, checking each pair's order and agreement."""
    assert len(messages) % 2 == 0, [m.event for m in messages]
    trade_ids = []
    for executed, updated in zip(messages[::2], messages[1::2], strict=True):
        assert (executed.event, updated.event) == ("TradeExecuted", "PriceUpdated"), (executed, updated)
        assert stream_id(str(executed.id)) < stream_id(str(updated.id))
        for key in ("market_id", "price_yes", "price_no", "yes_shares", "no_shares"):
            assert executed.data[key] == updated.data[key], key
        trade_ids.append(executed.data["trade_id"])
    return trade_ids


# --------------------------------------------------------------------------- SSE

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
