"""Who sees which event (public, admin, /v1/me/events), resume on every stream, and the WebSocket forms.

Real ``predmarket serve`` replicas over real HTTP (see tests/api_harness.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from tests.support.api import Api, Stack, User, assert_error, bearer, one_stream, stream_id
from tests.support.event_streams import (
    INTERNAL,
    PERSONAL,
    WAIT_S,
    Message,
    SseStream,
    atrade,
    public_form,
    sse,
    stream_entries,
)

PRIVATE_TYPES = {"Deposit", "Withdrawal", "Payout", "Refund", "UserCreated"}


def whole_form(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k not in INTERNAL}


async def take_until(stream: SseStream, entry_id: str) -> list[Message]:
    """Messages up to and including the one with ``entry_id``."""
    got = [await stream.next()]
    while stream_id(str(got[-1].id)) < stream_id(entry_id):
        got.append(await stream.next())
    assert got[-1].id == entry_id, (got[-1], entry_id)
    return got


def entries_between(stack: Stack, after: str, last: str, public: bool) -> list[tuple[str, dict[str, str]]]:
    return [(i, f) for i, f in stream_entries(stack, None, after, public=public)
            if stream_id(i) <= stream_id(last)]


def admin(api: Api, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    r = api.admin(method, path, **kwargs)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


# --------------------------------------------------------------------------- /v1/events

@one_stream
async def test_public_stream_hides_users_money_and_the_admin_sees_every_event_whole(
        api: Api, api_stack: Stack) -> None:
    watcher = api.create_user(None)  # a user's token on /v1/events gets the public stream too
    start = api_stack.last_event_id()
    async with sse(api_stack.url) as anonymous, sse(api_stack.urls[1], token=watcher.api_key) as as_user, \
            sse(api_stack.url, token=api.admin_token) as as_admin:
        trader = api.create_user("100")  # UserCreated, Deposit
        admin(api, "POST", f"/v1/users/{trader.user_id}/withdrawals", json={"amount": "10"})
        market_id = api.create_market()  # Deposit (house), MarketCreated, MarketOpened
        await atrade(api_stack, trader, market_id, "BUY", "YES", "5")
        api.resolve(market_id, "YES")
        admin(api, "POST", f"/v1/markets/{market_id}/settle")  # Payout, MarketSettled
        last = api_stack.last_event_id()
        public_got = await take_until(anonymous, last)
        user_got = await take_until(as_user, last)
        admin_got = await take_until(as_admin, last)
    public = entries_between(api_stack, start, last, public=True)
    whole = entries_between(api_stack, start, last, public=False)
    assert [(m.id, m.data) for m in public_got] == public
    assert [(m.id, m.data) for m in user_got] == public
    assert [(m.id, m.data) for m in admin_got] == whole
    # What that means, spelled out:
    public_types = [m.event for m in public_got]
    assert public_types == ["MarketCreated", "MarketOpened", "TradeExecuted", "PriceUpdated", "MarketResolved",
                            "MarketSettled"]
    assert all(PERSONAL.isdisjoint(m.data) for m in public_got)
    assert not PRIVATE_TYPES & set(public_types)
    admin_types = {m.event for m in admin_got}
    assert {"UserCreated", "Deposit", "Withdrawal", "Payout"} <= admin_types
    executed = next(m.data for m in admin_got if m.event == "TradeExecuted")
    assert executed["user_id"] == trader.user_id
    assert {"user_id", "available", "position"} <= set(executed)


async def test_bad_token_on_the_public_stream_is_401(api_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=api_stack.url, timeout=WAIT_S) as client:
        assert_error(await client.get("/v1/events", headers=bearer("pmk_nobody")), 401, "UNAUTHENTICATED")


# --------------------------------------------------------------------------- /v1/me/events

@one_stream
async def test_my_events_are_my_own_whole_and_the_public_events_of_markets_i_hold(
        api: Api, api_stack: Stack) -> None:
    me, other = api.create_user("100"), api.create_user("100")
    held, elsewhere, later = api.create_market(), api.create_market(), api.create_market()
    api.buy(me, held, "YES", "2")
    start = api_stack.last_event_id()
    async with sse(api_stack.urls[1], token=me.api_key, path="/v1/me/events") as stream:
        theirs = await atrade(api_stack, other, held, "BUY", "NO", "1")  # public form + its price
        await atrade(api_stack, other, elsewhere, "BUY", "YES", "1")  # a market I do not hold: nothing
        api.deposit(other.user_id, "5")  # someone else's money: nothing
        api.deposit(me.user_id, "5")  # mine, whole
        mine = await atrade(api_stack, me, later, "BUY", "YES", "1")  # now I hold `later` too
        await atrade(api_stack, other, later, "BUY", "NO", "1")  # ... so its public events reach me
        sold = await atrade(api_stack, me, held, "SELL", "YES", "2")  # position closed
        await atrade(api_stack, other, held, "BUY", "YES", "1")  # no longer mine: nothing
        admin(api, "POST", f"/v1/users/{me.user_id}/withdrawals", json={"amount": "1"})
        last_trade = await atrade(api_stack, me, later, "BUY", "NO", "1")
        got = await stream.take(12)
    assert [m.event for m in got] == [
        "TradeExecuted", "PriceUpdated",  # other's trade in `held`
        "Deposit",
        "TradeExecuted", "PriceUpdated",  # my buy in `later`
        "TradeExecuted", "PriceUpdated",  # other's trade in `later`
        "TradeExecuted", "PriceUpdated",  # my sell in `held` (and the price it made)
        "Withdrawal",
        "TradeExecuted", "PriceUpdated",  # my last buy
    ], [m.event for m in got]
    raw = dict(stream_entries(api_stack, None, start, public=False))
    for message in got:
        entry = raw[str(message.id)]
        if entry.get("user_id") == me.user_id:
            assert message.data == whole_form(entry), message
            assert "available" in message.data
        else:
            assert message.data == public_form(entry), message
            assert PERSONAL.isdisjoint(message.data)
    assert got[0].data["trade_id"] == str(theirs["trade_id"]) and "user_id" not in got[0].data
    assert got[3].data["trade_id"] == str(mine["trade_id"]) and got[3].data["user_id"] == me.user_id
    assert got[5].data["market_id"] == later and "user_id" not in got[5].data
    assert got[7].data["trade_id"] == str(sold["trade_id"])
    assert got[10].data["trade_id"] == str(last_trade["trade_id"])
    assert all(m.data.get("market_id") != elsewhere for m in got)
    assert got[2].data["user_id"] == me.user_id and got[2].data["amount"] == "5.000000"


async def test_my_events_need_a_user_token(api: Api, api_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=api_stack.url, timeout=WAIT_S) as client:
        assert_error(await client.get("/v1/me/events"), 401, "UNAUTHENTICATED")
        assert_error(await client.get("/v1/me/events", headers=bearer(api.admin_token)), 403, "FORBIDDEN")
        user = api.create_user(None)
        assert_error(await client.get("/v1/me/events", headers={**bearer(user.api_key), "Last-Event-ID": "x"}),
                     422, "VALIDATION_ERROR")


@one_stream
async def test_resume_on_my_events_and_the_admin_stream_has_no_gap_and_no_duplicate(
        api: Api, api_stack: Stack) -> None:
    me = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    api.buy(me, market_id, "YES", "1")
    api.deposit(me.user_id, "3")
    api.buy(me, market_id, "NO", "1", replica=1)
    last = api_stack.last_event_id()
    mine = [(i, f) for i, f in entries_between(api_stack, start, last, public=False)
            if f.get("user_id") == me.user_id or f.get("market_id") == market_id]
    assert [f["type"] for _, f in mine] == ["TradeExecuted", "PriceUpdated", "Deposit", "TradeExecuted",
                                            "PriceUpdated"]
    for index in range(len(mine) - 1):  # resume after each message, on either replica
        async with sse(api_stack.urls[index % 2], token=me.api_key, path="/v1/me/events",
                       last_event_id=mine[index][0]) as stream:
            rest = await stream.take(len(mine) - index - 1)
        assert [m.id for m in rest] == [i for i, _ in mine[index + 1:]]
    everything = entries_between(api_stack, start, last, public=False)
    async with sse(api_stack.urls[1], token=api.admin_token, last_event_id=everything[1][0]) as stream:
        rest = await stream.take(len(everything) - 2)
    assert [(m.id, m.data) for m in rest] == everything[2:]


@one_stream
async def test_resume_older_than_the_trimmed_stream_gives_a_gap_on_my_events_and_the_admin_stream(
        api: Api, api_stack: Stack) -> None:
    me = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    for _ in range(3):
        api.buy(me, market_id, "YES", "1")
    mine = [(i, f) for i, f in stream_entries(api_stack, market_id, start, public=False)]
    assert len(mine) == 6
    api_stack.wait_persisted()
    keep_from = mine[4][0]
    with api_stack.redis() as r:
        r.xtrim(api_stack.events_key, minid=keep_from, approximate=False)
    for token, path in ((me.api_key, "/v1/me/events"), (api.admin_token, "/v1/events")):
        async with sse(api_stack.url, token=token, path=path, last_event_id=mine[0][0]) as stream:
            gap = await stream.next()
            resumed = await stream.take(2)
        assert gap.event == "gap" and gap.id is None, (path, gap)
        assert [(m.id, m.data) for m in resumed] == [(i, whole_form(f)) for i, f in mine[4:]], path


# --------------------------------------------------------------------------- WebSocket

async def ws_messages(uri: str, count: int, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with ws_connect(uri, open_timeout=WAIT_S, additional_headers=headers) as socket:
        while len(received) < count:
            message = json.loads(await socket.recv(decode=True))
            if message.get("event") != "heartbeat":
                received.append(message)
    return received


@one_stream
async def test_websocket_is_public_and_whole_with_the_admin_token(api: Api, api_stack: Stack) -> None:
    user: User = api.create_user("100")
    market_id = api.create_market()
    start = api_stack.last_event_id()
    api.buy(user, market_id, "YES", "1")
    api.deposit(user.user_id, "1")
    anonymous = await ws_messages(f"{api_stack.ws_url(0)}/v1/ws?after={start}", 2)
    assert [(m["id"], m["data"]) for m in anonymous] == stream_entries(api_stack, market_id, start)
    assert "user_id" not in anonymous[0]["data"]
    whole = stream_entries(api_stack, None, start, public=False)[:3]
    as_admin = await ws_messages(f"{api_stack.ws_url(1)}/v1/ws?after={start}", 3, bearer(api.admin_token))
    assert [(m["id"], m["data"]) for m in as_admin] == whole
    assert as_admin[2]["event"] == "Deposit" and as_admin[0]["data"]["user_id"] == user.user_id
