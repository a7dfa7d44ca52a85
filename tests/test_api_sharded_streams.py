"""The API over shards (PM_SHARDS=4 on the shared primary): money summed over sub-wallets, durable answers
on each shard's mark, and live streams merging the shards' streams behind composite event ids.

A merged stream's id is every shard's position after the event (api/merged_streaming.py). These
tests read each shard's Redis stream and check that a stream sends each visible entry exactly once,
that each id moves exactly one shard's position (to that entry), and that resuming after any id on
either replica sends exactly the rest: no gap, no duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from predmarket.api.event_visibility import public_fields, whole_fields
from predmarket.engine.shards import home_of, shard_of
from websockets.asyncio.client import connect as ws_connect

from tests.support.api import Api, Stack, StackFactory, User, assert_error, bearer, dec, stream_id, unique
from tests.support.event_streams import WAIT_S, sse
from tests.support.services import REDIS_URL

SHARDS = 4
Position = tuple[int, str]  # (shard, entry id)


@pytest.fixture(scope="module")
def sharded(stacks: StackFactory) -> Iterator[Api]:
    """Two replicas and a persister over 4 shards of the shared Redis (whatever PM_TEST_LAYOUT says: a
    prefix on a cluster carries one hash tag, which a sharded deployment's may not)."""
    stack = stacks.start("sharded", redis_url=REDIS_URL, PM_SHARDS=str(SHARDS))
    client = Api(stack)
    try:
        yield client
    finally:
        client.close()
        stack.stop()


def markets_in_every_shard(api: Api) -> list[str]:
    """One open market in each shard (market k in shard k)."""
    chosen: dict[int, str] = {}
    while len(chosen) < SHARDS:
        candidate = unique("mkt")
        chosen.setdefault(shard_of(candidate, SHARDS), candidate)
    return [api.create_market(market_id=chosen[k]) for k in range(SHARDS)]


def heads(stack: Stack) -> list[str]:
    """Each shard's newest entry id now."""
    return [stack.last_event_id(k) for k in range(SHARDS)]


def entries_after(stack: Stack, start: list[str], whole: bool = True) -> dict[Position, dict[str, str]]:
    """Every entry after ``start`` in each shard's stream, as a subscriber sees it (admin: whole)."""
    found: dict[Position, dict[str, str]] = {}
    keys = stack.shard_keys()
    with stack.redis() as r:
        for k in range(SHARDS):
            for entry_id, fields in r.xrange(keys[k].events, min=f"({start[k]}", max="+"):
                shown = whole_fields(dict(fields)) if whole else public_fields(dict(fields))
                if shown is not None:
                    found[(k, str(entry_id))] = shown
    return found


def positions_of(ids: list[str], start: list[str]) -> list[Position]:
    """The entry each composite id stands for: the one shard position it moved (exactly one, forward)."""
    previous = start
    moved: list[Position] = []
    for composite in ids:
        current = composite.split(".")
        assert len(current) == SHARDS, composite
        changed = [k for k in range(SHARDS) if current[k] != previous[k]]
        assert len(changed) == 1, (previous, current)
        (k,) = changed
        assert stream_id(current[k]) > stream_id(previous[k]), (previous, current)
        moved.append((k, current[k]))
        previous = current
    return moved


async def test_the_merged_admin_stream_sends_every_shards_entries_once_and_resumes_on_either_replica(
        sharded: Api) -> None:
    api, stack = sharded, sharded.stack
    users = [api.create_user("100") for _ in range(3)]
    markets = markets_in_every_shard(api)
    start = heads(stack)
    async with sse(stack.url, token=api.admin_token) as stream:
        for i in range(8):
            api.buy(users[i % 3], markets[i % SHARDS], "YES", "1", replica=i % 2)
        api.deposit(users[0].user_id, "1")
        expected = entries_after(stack, start)
        messages = await stream.take(len(expected))
    assert {m.event for m in messages} >= {"TradeExecuted", "PriceUpdated", "Deposit", "TransferOut", "TransferIn"}
    ids = [str(m.id) for m in messages]
    moved = positions_of(ids, start)
    assert sorted(moved) == sorted(expected)  # each visible entry once, none other
    assert [m.data for m in messages] == [expected[p] for p in moved]
    for cut in (1, len(messages) // 2, len(messages) - 1):  # resume after a message, on either replica
        async with sse(stack.urls[cut % 2], token=api.admin_token, last_event_id=ids[cut - 1]) as resumed:
            rest = await resumed.take(len(messages) - cut)
        assert sorted(positions_of([str(m.id) for m in rest], ids[cut - 1].split("."))) == sorted(moved[cut:])
    # ``?after=`` resumes the same way.
    async with sse(stack.url, token=api.admin_token, after=ids[2]) as resumed:
        rest = await resumed.take(len(messages) - 3)
    assert sorted(positions_of([str(m.id) for m in rest], ids[2].split("."))) == sorted(moved[3:])


async def test_public_and_own_streams_over_shards_and_the_websocket(sharded: Api) -> None:
    api, stack = sharded, sharded.stack
    me, other = api.create_user("100"), api.create_user("100")
    markets = markets_in_every_shard(api)
    start = heads(stack)
    async with sse(stack.url) as public, sse(stack.urls[1], token=me.api_key, path="/v1/me/events") as mine:
        for market_id in markets:
            api.buy(me, market_id, "YES", "2")
        api.buy(other, markets[0], "NO", "1")
        api.deposit(me.user_id, "5")
        seen_public = await public.take(len(entries_after(stack, start, whole=False)))
        own = await mine.take(len(markets) * 2 + 3)
    # Public: every shard's market events, nobody's money.
    assert sorted(positions_of([str(m.id) for m in seen_public], start)) == sorted(entries_after(stack, start, False))
    assert all("user_id" not in m.data and "available" not in m.data for m in seen_public)
    # Own: my trades in every shard (whole), their price moves, the other's trade in a market I hold
    # (public form), my deposit in my home shard; never a transfer of my money between shards.
    trades = [m.data for m in own if m.event == "TradeExecuted" and m.data.get("user_id") == me.user_id]
    assert sorted(t["market_id"] for t in trades) == sorted(markets)
    theirs = [m.data for m in own if m.event == "TradeExecuted" and "user_id" not in m.data]
    assert [t["market_id"] for t in theirs] == [markets[0]]
    deposits = [m for m in own if m.event == "Deposit"]
    assert len(deposits) == 1 and deposits[0].data["amount"] == "5.000000"
    assert int(str(deposits[0].id).split(".")[home_of(me.user_id, SHARDS)].split("-")[0]) > 0
    assert not any(m.event in ("TransferOut", "TransferIn") for m in own)
    # The WebSocket: the same public entries under the same kind of ids, from the start given.
    after = ".".join(start)
    received: list[dict[str, Any]] = []
    async with ws_connect(f"{stack.ws_url(1)}/v1/ws?after={after}", open_timeout=WAIT_S) as socket:
        while len(received) < len(seen_public):
            message = json.loads(await socket.recv(decode=True))
            if message.get("event") != "heartbeat":
                received.append(message)
    assert sorted(positions_of([m["id"] for m in received], start)) == sorted(
        positions_of([str(m.id) for m in seen_public], start))


async def test_a_market_stream_reads_its_shard_and_a_trimmed_resume_point_is_a_gap(sharded: Api) -> None:
    api, stack = sharded, sharded.stack
    user = api.create_user("100")
    markets = markets_in_every_shard(api)
    start = heads(stack)
    async with sse(stack.url, (markets[1],)) as stream:
        for market_id in markets:
            api.buy(user, market_id, "YES", "1")
        got = await stream.take(2)
    assert [m.event for m in got] == ["TradeExecuted", "PriceUpdated"]
    assert {m.data["market_id"] for m in got} == {markets[1]}
    moved = positions_of([str(m.id) for m in got], start)
    assert {k for k, _ in moved} == {1}
    # Trim shard 1 past the first message (only what the persister committed, as it would).
    stack.wait_persisted()
    with stack.redis() as r:
        r.xtrim(stack.shard_keys()[1].events, minid=moved[1][1], approximate=False)
    async with sse(stack.urls[1], (markets[1],), last_event_id=".".join(start)) as resumed:
        gap = await resumed.next()
        assert gap.event == "gap"
        assert (await resumed.next()).id == got[1].id  # the oldest kept entry follows


async def test_money_durable_answers_and_ids_over_shards(sharded: Api) -> None:
    api = sharded
    user: User = api.create_user("100")
    markets = markets_in_every_shard(api)
    paid = Decimal(0)
    for market_id in markets:
        r = api.trade(user, market_id, "BUY", "YES", shares="3", headers={"Prefer": "durable=postgres"})
        assert r.status_code == 201 and r.headers["Preference-Applied"] == "durable=postgres", r.text
        paid += dec(r.json()["cost"])
    account = api.me(user, replica=1)
    assert dec(account["available"]) == Decimal(100) - paid  # one number over the sub-wallets
    assert sorted(p["market_id"] for p in account["positions"]) == sorted(markets)
    positions = api.request("GET", "/v1/me/positions", token=user.api_key).json()
    assert dec(positions["available"]) == Decimal(100) - paid and len(positions["positions"]) == SHARDS
    listed = api.request("GET", "/v1/me/trades", token=user.api_key).json()["trades"]
    assert sorted(t["market_id"] for t in listed) == sorted(markets)
    # A withdrawal larger than the balance moves nothing; all of it brings every sub-wallet home.
    assert_error(api.admin("POST", f"/v1/users/{user.user_id}/withdrawals",
                           json={"amount": str(Decimal(100) - paid + Decimal("0.000001"))}), 422,
                 "INSUFFICIENT_FUNDS")
    r = api.admin("POST", f"/v1/users/{user.user_id}/withdrawals", json={"amount": account["available"]})
    assert r.status_code == 201 and r.json()["available"] == "0.000000", r.text
    # Event ids: one shard's entry id is refused, as is a composite of another shard count.
    for bad in ("1700000000000-0", ".".join(["1-0"] * (SHARDS + 1))):
        r = api.request("GET", "/v1/events", headers={"Last-Event-ID": bad})
        assert_error(r, 422, "VALIDATION_ERROR")
    assert api.request("GET", "/v1/events", headers={**bearer(api.admin_token), "Last-Event-ID": "x"}
                       ).status_code == 422
