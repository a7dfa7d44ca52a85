"""Trading over real HTTP: request validation, business errors, idempotency, durable answers, trade history."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.api import Api, Stack, User, assert_error, assert_trade, bearer, dec, unique


@pytest.fixture
def trader(api: Api) -> tuple[User, str]:
    """A user with 1000 and 5 YES shares, on a fresh OPEN market."""
    user = api.create_user("1000")
    market_id = api.create_market(b="100")
    api.buy(user, market_id, "YES", "5")
    return user, market_id


def state(api: Api, user: User, market_id: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """What a rejected request must leave unchanged: the account, the market, the event streams' ends
    (every shard's: a rejected order moves no money between the user's sub-wallets)."""
    return api.me(user), api.market(market_id), ".".join(api.stack.last_event_id(k) for k in range(api.stack.shards))


# --------------------------------------------------------------------------- validation of trade requests

BAD_TRADE_BODIES: list[tuple[str, Any]] = [
    ("missing side", {"outcome": "YES", "shares": "1"}),
    ("missing outcome", {"side": "BUY", "shares": "1"}),
    ("neither shares nor amount", {"side": "BUY", "outcome": "YES"}),
    ("both shares and amount", {"side": "BUY", "outcome": "YES", "shares": "1", "amount": "1"}),
    ("amount with SELL", {"side": "SELL", "outcome": "YES", "amount": "1"}),
    ("unknown field", {"side": "BUY", "outcome": "YES", "shares": "1", "limit_price": "0.5"}),
    ("lowercase side", {"side": "buy", "outcome": "YES", "shares": "1"}),
    ("unknown outcome", {"side": "BUY", "outcome": "MAYBE", "shares": "1"}),
    ("null side", {"side": None, "outcome": "YES", "shares": "1"}),
    ("7 decimals", {"side": "BUY", "outcome": "YES", "shares": "1.1234567"}),
    ("7 decimals number", {"side": "BUY", "outcome": "YES", "shares": 1.1234567}),
    ("trailing zeros past 6", {"side": "BUY", "outcome": "YES", "shares": "1.0000000"}),
    ("NaN string", {"side": "BUY", "outcome": "YES", "shares": "NaN"}),
    ("Infinity string", {"side": "BUY", "outcome": "YES", "shares": "Infinity"}),
    ("exponent string", {"side": "BUY", "outcome": "YES", "shares": "1e3"}),
    ("tiny exponent number", {"side": "BUY", "outcome": "YES", "shares": 1e-7}),
    ("huge exponent number", {"side": "BUY", "outcome": "YES", "shares": 1e300}),
    ("negative string", {"side": "BUY", "outcome": "YES", "shares": "-1"}),
    ("negative number", {"side": "BUY", "outcome": "YES", "shares": -1}),
    ("plus sign", {"side": "BUY", "outcome": "YES", "shares": "+1"}),
    ("zero shares", {"side": "BUY", "outcome": "YES", "shares": "0"}),
    ("zero shares decimal", {"side": "SELL", "outcome": "YES", "shares": "0.000000"}),
    ("zero amount", {"side": "BUY", "outcome": "YES", "amount": 0}),
    ("above 1e9", {"side": "BUY", "outcome": "YES", "shares": "1000000000.000001"}),
    ("above 1e9 number", {"side": "BUY", "outcome": "YES", "amount": 1000000001}),
    ("boolean shares", {"side": "BUY", "outcome": "YES", "shares": True}),
    ("boolean amount", {"side": "BUY", "outcome": "YES", "amount": False}),
    ("empty string", {"side": "BUY", "outcome": "YES", "shares": ""}),
    ("spaces", {"side": "BUY", "outcome": "YES", "shares": " 1"}),
    ("separator", {"side": "BUY", "outcome": "YES", "shares": "1,000"}),
    ("leading dot", {"side": "BUY", "outcome": "YES", "shares": ".5"}),
    ("trailing dot", {"side": "BUY", "outcome": "YES", "shares": "1."}),
    ("unicode digits", {"side": "BUY", "outcome": "YES", "shares": "١٢"}),
    ("fullwidth digits", {"side": "BUY", "outcome": "YES", "shares": "１"}),
    ("object", {"side": "BUY", "outcome": "YES", "shares": {"value": "1"}}),
    ("array", {"side": "BUY", "outcome": "YES", "shares": ["1"]}),
    ("null shares", {"side": "BUY", "outcome": "YES", "shares": None, "amount": None}),
    ("negative max_cost", {"side": "BUY", "outcome": "YES", "shares": "1", "max_cost": "-1"}),
    ("bad min_proceeds", {"side": "SELL", "outcome": "YES", "shares": "1", "min_proceeds": "abc"}),
    ("array body", [{"side": "BUY", "outcome": "YES", "shares": "1"}]),
    ("string body", "BUY"),
    ("null body", None),
    ("empty object", {}),
]


@pytest.mark.parametrize(("case", "body"), BAD_TRADE_BODIES, ids=[c for c, _ in BAD_TRADE_BODIES])
def test_bad_trade_body_is_422_and_changes_nothing(api: Api, trader: tuple[User, str], case: str, body: Any) -> None:
    user, market_id = trader
    before = state(api, user, market_id)
    r = api.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key, json=body)
    assert_error(r, 422, "VALIDATION_ERROR")
    assert state(api, user, market_id) == before


@pytest.mark.parametrize(("content", "content_type"), [
    (b'{"side": "BUY", "outcome": "YES", "shares": "1"', "application/json"),
    (b'{"side": "BUY", "outcome": "YES", "shares": NaN}', "application/json"),
    (b'{"side": "BUY", "outcome": "YES", "shares": Infinity}', "application/json"),
    (b"", "application/json"),
    (b'{"side": "BUY", "outcome": "YES", "shares": "1"}', "text/plain"),
    (b'{"side": "BUY", "outcome": "YES", "shares": "1"}', "application/x-www-form-urlencoded"),
    (b'{"side": "BUY", "outcome": "YES", "shares": "1"}', ""),
    (b"side=BUY&outcome=YES&shares=1", "application/x-www-form-urlencoded"),
])
def test_malformed_or_non_json_body_is_422(api: Api, trader: tuple[User, str], content: bytes,
                                           content_type: str) -> None:
    user, market_id = trader
    before = state(api, user, market_id)
    headers = {**bearer(user.api_key), "Content-Type": content_type}
    r = api.clients[0].post(f"/v1/markets/{market_id}/trades", content=content, headers=headers)
    assert_error(r, 422, "VALIDATION_ERROR")
    assert state(api, user, market_id) == before


def test_json_numbers_and_strings_are_both_accepted(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    for shares, expected in ((1, "1.000000"), (0.25, "0.250000"), ("2.5", "2.500000"), ("007", "7.000000"),
                             (1e2, "100.000000"), ("0.000001", "0.000001")):
        if expected == "100.000000":
            api.deposit(user.user_id, "100")
        r = api.trade(user, market_id, "BUY", "NO", shares=shares)  # type: ignore[arg-type]  # JSON numbers too
        assert r.status_code == 201, (shares, r.text)
        assert r.json()["shares"] == expected


# --------------------------------------------------------------------------- business errors

def test_market_not_open_for_trades_and_quotes(api: Api) -> None:
    user = api.create_user("100")
    created = api.create_market(open=False)
    resolved = api.create_market()
    api.buy(user, resolved, "YES", "2")
    api.resolve(resolved, "YES")
    settled = api.create_market()
    api.resolve(settled, "NO")
    assert api.admin("POST", f"/v1/markets/{settled}/settle").status_code == 200
    for market_id in (created, resolved, settled):
        before = state(api, user, market_id)
        assert_error(api.trade(user, market_id, "BUY", "YES", shares="1"), 409, "MARKET_NOT_OPEN")
        assert_error(api.trade(user, market_id, "SELL", "YES", shares="1"), 409, "MARKET_NOT_OPEN")
        assert_error(api.quote(market_id, side="BUY", outcome="YES", shares="1"), 409, "MARKET_NOT_OPEN")
        assert state(api, user, market_id) == before


def test_insufficient_funds(api: Api) -> None:
    user = api.create_user("1")
    market_id = api.create_market()
    before = state(api, user, market_id)
    assert_error(api.trade(user, market_id, "BUY", "YES", shares="10"), 422, "INSUFFICIENT_FUNDS")
    assert state(api, user, market_id) == before
    broke = api.create_user(balance=None)
    before = state(api, broke, market_id)
    assert_error(api.trade(broke, market_id, "BUY", "NO", amount="0.000001"), 422, "INSUFFICIENT_FUNDS")
    assert_error(api.trade(broke, market_id, "BUY", "NO", shares="0.000001"), 422, "INSUFFICIENT_FUNDS")
    assert state(api, broke, market_id) == before


def test_insufficient_shares(api: Api, trader: tuple[User, str]) -> None:
    user, market_id = trader
    before = state(api, user, market_id)
    assert_error(api.trade(user, market_id, "SELL", "YES", shares="5.000001"), 422, "INSUFFICIENT_SHARES")
    assert_error(api.trade(user, market_id, "SELL", "NO", shares="0.000001"), 422, "INSUFFICIENT_SHARES")
    assert state(api, user, market_id) == before
    # A SELL quote (no user) for more than the outcome's outstanding shares.
    assert_error(api.quote(market_id, side="SELL", outcome="YES", shares="5.000001"), 422, "INSUFFICIENT_SHARES")
    assert_error(api.quote(market_id, side="SELL", outcome="NO", shares="1"), 422, "INSUFFICIENT_SHARES")
    assert api.quote(market_id, side="SELL", outcome="YES", shares="5").status_code == 200


def test_slippage_limits(api: Api, trader: tuple[User, str]) -> None:
    user, market_id = trader
    buy_quote = api.quote(market_id, side="BUY", outcome="NO", shares="3").json()
    sell_quote = api.quote(market_id, side="SELL", outcome="YES", shares="2").json()
    cost, proceeds = dec(buy_quote["cost"]), dec(sell_quote["cost"])
    before = state(api, user, market_id)
    micro = Decimal("0.000001")
    assert_error(api.trade(user, market_id, "BUY", "NO", shares="3", max_cost=str(cost - micro)), 422,
                 "SLIPPAGE_EXCEEDED")
    assert_error(api.trade(user, market_id, "BUY", "NO", shares="3", max_cost="0"), 422, "SLIPPAGE_EXCEEDED")
    assert_error(api.trade(user, market_id, "BUY", "NO", amount="1", max_cost=0), 422, "SLIPPAGE_EXCEEDED")
    assert_error(api.trade(user, market_id, "SELL", "YES", shares="2", min_proceeds=str(proceeds + micro)), 422,
                 "SLIPPAGE_EXCEEDED")
    assert state(api, user, market_id) == before
    # At the limit exactly, and min_proceeds 0, both pass.
    r = api.trade(user, market_id, "BUY", "NO", shares="3", max_cost=str(cost))
    assert r.status_code == 201 and r.json()["cost"] == buy_quote["cost"], r.text
    r = api.trade(user, market_id, "SELL", "YES", shares="1", min_proceeds="0")
    assert r.status_code == 201, r.text
    r = api.trade(user, market_id, "SELL", "YES", shares="1", min_proceeds=0)
    assert r.status_code == 201, r.text


def test_sell_whose_proceeds_round_to_zero_is_allowed(api: Api, trader: tuple[User, str]) -> None:
    user, market_id = trader
    before = dec(api.me(user)["available"])
    r = api.trade(user, market_id, "SELL", "YES", shares="0.000001", min_proceeds="0")
    assert r.status_code == 201, r.text
    trade = r.json()
    assert_trade(trade)
    assert trade["cost"] == "0.000000" and trade["avg_price"] == "0.000000"
    assert dec(api.me(user)["available"]) == before
    positions = {p["outcome"]: p["shares"] for p in api.me(user)["positions"] if p["market_id"] == market_id}
    assert positions == {"YES": "4.999999"}


# --------------------------------------------------------------------------- idempotency

def test_idempotent_retry_returns_the_first_response(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    key = {"Idempotency-Key": unique("key")}
    first = api.trade(user, market_id, "BUY", "YES", shares="4", headers=key)
    assert first.status_code == 201, first.text
    balance = api.me(user)["available"]
    market = api.market(market_id)
    for replica in (0, 1, 0):
        again = api.trade(user, market_id, "BUY", "YES", shares="4", headers=key, replica=replica)
        assert again.status_code == 201
        assert again.content == first.content
    # The same numbers written differently are the same request.
    again = api.trade(user, market_id, "BUY", "YES", shares=4, headers=key)  # type: ignore[arg-type]  # a JSON number
    assert again.status_code == 201 and again.content == first.content
    assert api.me(user)["available"] == balance
    assert api.market(market_id) == market
    # Exactly one trade executed: the history shows it once, behind a later marker trade.
    marker = api.buy(user, market_id, "NO", "1")
    history = api.wait_history(market_id, {marker["trade_id"]})
    assert [t["trade_id"] for t in history] == [marker["trade_id"], first.json()["trade_id"]]
    assert history[1] == first.json()


def test_idempotency_key_with_a_different_body_is_409(api: Api) -> None:
    user = api.create_user("100")
    market_id, other_market = api.create_market(), api.create_market()
    key = {"Idempotency-Key": unique("key")}
    first = api.trade(user, market_id, "BUY", "YES", shares="4", headers=key)
    assert first.status_code == 201
    before = state(api, user, market_id)
    for body in ({"outcome": "NO", "shares": "4"}, {"outcome": "YES", "shares": "5"},
                 {"outcome": "YES", "shares": "4", "max_cost": "100"}, {"outcome": "YES", "amount": "4"}):
        r = api.request("POST", f"/v1/markets/{market_id}/trades", token=user.api_key, headers=key,
                        json={"side": "BUY", **body})
        assert_error(r, 409, "IDEMPOTENCY_KEY_REUSED")
    assert_error(api.trade(user, other_market, "BUY", "YES", shares="4", headers=key), 409,
                 "IDEMPOTENCY_KEY_REUSED")
    assert state(api, user, market_id) == before
    # Keys belong to their user: another user's trade with the same key executes.
    other = api.create_user("100")
    r = api.trade(other, market_id, "BUY", "YES", shares="4", headers=key)
    assert r.status_code == 201 and r.json()["trade_id"] != first.json()["trade_id"]


async def test_concurrent_requests_with_one_key_across_both_replicas(api: Api, api_stack: Stack) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    headers = {**bearer(user.api_key), "Idempotency-Key": unique("race")}
    body = {"side": "BUY", "outcome": "YES", "shares": "3"}
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post(f"{api_stack.urls[i % 2]}/v1/markets/{market_id}/trades", json=body, headers=headers)
            for i in range(20)))
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    assert len({r.content for r in responses}) == 1
    trade = responses[0].json()
    assert_trade(trade)
    assert api.market(market_id)["yes_shares"] == "3.000000"
    assert dec(api.me(user)["available"]) == 100 - dec(trade["cost"])
    marker = api.buy(user, market_id, "NO", "1")
    history = api.wait_history(market_id, {marker["trade_id"]})
    assert [t["trade_id"] for t in history] == [marker["trade_id"], trade["trade_id"]]


async def test_concurrent_distinct_keys_all_execute(api: Api, api_stack: Stack) -> None:
    user = api.create_user("1000")
    market_id = api.create_market()
    body = {"side": "BUY", "outcome": "NO", "shares": "1"}
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post(f"{api_stack.urls[i % 2]}/v1/markets/{market_id}/trades", json=body,
                        headers={**bearer(user.api_key), "Idempotency-Key": f"k{i}"})
            for i in range(10)))
    assert [r.status_code for r in responses] == [201] * 10
    assert len({r.json()["trade_id"] for r in responses}) == 10
    assert api.market(market_id)["no_shares"] == "10.000000"


async def test_concurrent_trades_never_overdraw(api: Api, api_stack: Stack) -> None:
    user = api.create_user("20")
    markets = [api.create_market(b="10") for _ in range(3)]
    body = {"side": "BUY", "outcome": "YES", "shares": "3"}
    async with httpx.AsyncClient(timeout=10, headers=bearer(user.api_key)) as client:
        responses = await asyncio.gather(*(
            client.post(f"{api_stack.urls[i % 2]}/v1/markets/{markets[i % 3]}/trades", json=body)
            for i in range(18)))
    executed = [r.json() for r in responses if r.status_code == 201]
    for r in responses:
        if r.status_code != 201:
            assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert executed and len(executed) < 18
    spent = sum(dec(t["cost"]) for t in executed)
    assert dec(api.me(user)["available"]) == 20 - spent >= 0
    held = {p["market_id"]: dec(p["shares"]) for p in api.me(user)["positions"]}
    for market_id in markets:
        bought = sum(dec(t["shares"]) for t in executed if t["market_id"] == market_id)
        assert dec(api.market(market_id)["yes_shares"]) == bought == held.get(market_id, 0)


# --------------------------------------------------------------------------- durable answers

def test_durable_answer_after_the_persister_committed(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    for replica in (0, 1):
        r = api.trade(user, market_id, "BUY", "YES", shares="2", replica=replica,
                      headers={"Prefer": "durable=postgres"})
        assert r.status_code == 201, r.text
        assert r.headers.get("Preference-Applied") == "durable=postgres"
        trade = r.json()
        assert_trade(trade)
        # In PostgreSQL already: the very next history read has it.
        history = api.history(market_id, replica=1 - replica)
        assert history[0] == trade


def test_durable_idempotent_retry_is_the_first_response(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    headers = {"Prefer": "durable=postgres", "Idempotency-Key": unique("durable")}
    first = api.trade(user, market_id, "BUY", "NO", shares="2", headers=headers)
    assert first.status_code == 201 and first.headers.get("Preference-Applied") == "durable=postgres", first.text
    for replica in (1, 0):
        again = api.trade(user, market_id, "BUY", "NO", shares="2", headers=headers, replica=replica)
        assert again.status_code == 201, again.text
        assert again.headers.get("Preference-Applied") == "durable=postgres"
        assert again.content == first.content
    assert api.market(market_id)["no_shares"] == "2.000000"


def test_no_preference_applied_without_prefer(api: Api) -> None:
    user = api.create_user("10")
    market_id = api.create_market()
    r = api.trade(user, market_id, "BUY", "YES", shares="1")
    assert r.status_code == 201 and "Preference-Applied" not in r.headers


def test_durable_answer_times_out_with_202_without_persister(nopersist_stack: Stack) -> None:
    api = Api(nopersist_stack)
    try:
        user = api.create_user("100")
        market_id = api.create_market()
        trades = []
        for replica in (0, 1):
            started = time.monotonic()
            r = api.trade(user, market_id, "BUY", "NO", shares="2", replica=replica,
                          headers={"Prefer": "durable=postgres"})
            elapsed = time.monotonic() - started
            assert r.status_code == 202, r.text
            assert "Preference-Applied" not in r.headers
            assert 0.9 <= elapsed < 3.0, elapsed
            assert_trade(r.json())
            trades.append(r.json())
        # The trade executed...
        assert api.market(market_id)["no_shares"] == "4.000000"
        assert dec(api.me(user)["available"]) == 100 - sum(dec(t["cost"]) for t in trades)
        # ... and is persisted once a persister runs.
        nopersist_stack.start_persister()
        history = api.wait_history(market_id, {t["trade_id"] for t in trades})
        assert history == trades[::-1]
    finally:
        api.close()


# --------------------------------------------------------------------------- trade history

def test_history_newest_first_with_limit_and_every_trade(api: Api) -> None:
    alice, bob = api.create_user("1000"), api.create_user("1000")
    market_id = api.create_market()
    acknowledged = []
    for i in range(12):
        user = alice if i % 2 else bob
        side = "SELL" if i % 4 == 3 else "BUY"
        r = api.trade(user, market_id, side, "YES" if i % 3 else "NO", shares="0.5", replica=i % 2)
        if r.status_code == 201:
            acknowledged.append(r.json())
        else:
            assert_error(r, 422, "INSUFFICIENT_SHARES")
    assert len(acknowledged) >= 8
    history = api.wait_history(market_id, {t["trade_id"] for t in acknowledged})
    assert history == sorted(acknowledged, key=lambda t: t["trade_id"], reverse=True)
    for trade in history:
        assert_trade(trade)
    assert api.history(market_id, limit=3) == history[:3]
    assert api.history(market_id, limit=1, replica=1) == history[:1]
    assert api.history(market_id, limit=1000) == history
    r = api.request("GET", f"/v1/markets/{market_id}/trades")
    assert r.status_code == 200 and set(r.json()) == {"trades", "next_cursor"}


def test_history_of_a_market_without_trades_is_empty(api: Api) -> None:
    assert api.history(api.create_market(open=False)) == []


@pytest.mark.parametrize("limit", ["0", "1001", "abc", "-1", "1.5", "", "1e2", "١"])
def test_history_limit_outside_range_is_422(api: Api, limit: str) -> None:
    market_id = api.create_market()
    r = api.request("GET", f"/v1/markets/{market_id}/trades", params={"limit": limit})
    assert_error(r, 422, "VALIDATION_ERROR")
