"""The HTTP contract over real HTTP: every route's success status and object shapes, lifecycle errors, ops.

Runs against two ``predmarket serve`` replicas and a persister (see ``tests/support/api.py``).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.api import (
    DECIMAL,
    ID_RE,
    SHARDED,
    Api,
    Stack,
    assert_account,
    assert_error,
    assert_market,
    assert_quote,
    assert_timestamp,
    assert_trade,
    bearer,
    dec,
    fmt,
    subsidy,
    unique,
)


def money_values(obj: Any) -> list[str]:
    """Every money/share/price value in a response object (recursively)."""
    keys = {"available", "locked", "shares", "liquidity_b", "yes_shares", "no_shares", "price_yes", "price_no",
            "pool", "cost", "avg_price", "payouts_total"}
    found: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in keys:
                found.append(value)
            else:
                found.extend(money_values(value))
    elif isinstance(obj, list):
        for item in obj:
            found.extend(money_values(item))
    return found


def assert_all_decimal_strings(obj: Any) -> None:
    values = money_values(obj)
    assert values
    for value in values:
        assert isinstance(value, str) and DECIMAL.fullmatch(value), value


# --------------------------------------------------------------------------- users and accounts

def test_create_user_returns_account_and_api_key_once(api: Api) -> None:
    username = unique("alice")
    r = api.admin("POST", "/v1/users", json={"username": username})
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    api_key = body.pop("api_key")
    assert isinstance(api_key, str) and len(api_key) >= 20
    assert_account(body)
    assert body["username"] == username
    assert ID_RE.fullmatch(body["user_id"])
    assert (body["available"], body["locked"], body["positions"]) == ("0.000000", "0.000000", [])
    # The key works, and is never shown again.
    me = api.request("GET", "/v1/me", token=api_key)
    assert me.status_code == 200 and me.json() == body
    assert "api_key" not in api.account(body["user_id"])
    assert "api_key" not in api.request("GET", f"/v1/users/{body['user_id']}", token=api_key).json()


def test_create_user_with_given_id(api: Api) -> None:
    user_id = unique("U_x")
    r = api.admin("POST", "/v1/users", json={"username": unique("bob"), "user_id": user_id})
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == user_id
    assert api.account(user_id)["user_id"] == user_id


def test_generated_ids_are_distinct(api: Api) -> None:
    ids = {api.create_user(balance=None).user_id for _ in range(3)}
    assert len(ids) == 3 and all(ID_RE.fullmatch(i) for i in ids)


def test_get_user_by_admin_and_self_on_both_replicas(api: Api) -> None:
    user = api.create_user("12.5")
    for replica in (0, 1):
        by_admin = api.admin("GET", f"/v1/users/{user.user_id}", replica=replica)
        by_self = api.request("GET", f"/v1/users/{user.user_id}", token=user.api_key, replica=replica)
        me = api.request("GET", "/v1/me", token=user.api_key, replica=replica)
        for r in (by_admin, by_self, me):
            assert r.status_code == 200, r.text
            assert_account(r.json(), user.user_id)
            assert r.json()["available"] == "12.500000"
        assert by_admin.json() == by_self.json() == me.json()


def test_deposit_and_withdrawal_return_the_account(api: Api) -> None:
    user = api.create_user(balance=None)
    r = api.admin("POST", f"/v1/users/{user.user_id}/deposits", json={"amount": "100.123456"})
    assert r.status_code == 201, r.text
    assert_account(r.json(), user.user_id)
    assert r.json()["available"] == "100.123456"
    r = api.admin("POST", f"/v1/users/{user.user_id}/deposits", json={"amount": 0.5})
    assert r.status_code == 201 and r.json()["available"] == "100.623456"
    r = api.admin("POST", f"/v1/users/{user.user_id}/withdrawals", json={"amount": 100})
    assert r.status_code == 201, r.text
    assert_account(r.json(), user.user_id)
    assert r.json()["available"] == "0.623456"
    assert api.me(user)["available"] == "0.623456"


def test_withdrawal_beyond_balance_is_insufficient_funds(api: Api) -> None:
    user = api.create_user("5")
    r = api.admin("POST", f"/v1/users/{user.user_id}/withdrawals", json={"amount": "5.000001"})
    assert_error(r, 422, "INSUFFICIENT_FUNDS")
    assert api.me(user)["available"] == "5.000000"
    r = api.admin("POST", f"/v1/users/{user.user_id}/withdrawals", json={"amount": "5"})
    assert r.status_code == 201 and r.json()["available"] == "0.000000"


@pytest.mark.parametrize("amount", [
    "1.1234567", "NaN", "Infinity", "1e3", "-1", "0", "0.000000", 0, -0.5, "1000000000.000001", 1000000001,
    True, None, "", " 1", "1,5", "١", {"v": 1}, [1], 1e-7, 0.1 + 0.2,
])
def test_bad_amounts_are_validation_errors(api: Api, amount: Any) -> None:
    user = api.create_user("10")
    for route in ("deposits", "withdrawals"):
        r = api.admin("POST", f"/v1/users/{user.user_id}/{route}", json={"amount": amount})
        assert_error(r, 422, "VALIDATION_ERROR")
    market_id = unique("mkt")
    r = api.admin("POST", "/v1/markets", json={"name": "bad b", "liquidity_b": amount, "market_id": market_id})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert api.me(user)["available"] == "10.000000"
    assert_error(api.request("GET", f"/v1/markets/{market_id}"), 404, "NOT_FOUND")


def test_no_balance_may_pass_nine_billion(api: Api) -> None:
    user = api.create_user(balance=None)
    for _ in range(9):
        api.deposit(user.user_id, "1000000000")
    assert api.me(user)["available"] == "9000000000.000000"
    last = api.stack.last_event_id()
    r = api.admin("POST", f"/v1/users/{user.user_id}/deposits", json={"amount": "0.000001"})
    assert_error(r, 422, "VALIDATION_ERROR")
    assert api.me(user)["available"] == "9000000000.000000"
    assert api.stack.last_event_id() == last


def test_house_exists_and_can_be_funded(api: Api) -> None:
    house = api.account("house")
    assert_account(house, "house")
    assert house["username"] == "house"
    r = api.admin("POST", "/v1/users/house/deposits", json={"amount": "3.25"})
    assert r.status_code == 201, r.text
    assert dec(r.json()["available"]) == dec(house["available"]) + Decimal("3.25")
    r = api.admin("POST", "/v1/users/house/withdrawals", json={"amount": "3.25"})
    assert r.status_code == 201 and r.json()["available"] == house["available"]


def test_positions_with_zero_shares_are_left_out(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    api.buy(user, market_id, "YES", "3")
    no_cost = api.buy(user, market_id, "NO", "2")["cost"]
    positions = api.me(user)["positions"]
    assert sorted((p["market_id"], p["outcome"], p["shares"]) for p in positions) == [
        (market_id, "NO", "2.000000"), (market_id, "YES", "3.000000")]
    r = api.trade(user, market_id, "SELL", "YES", shares="3")
    assert r.status_code == 201, r.text
    account = api.me(user)
    assert_account(account)
    assert account["positions"] == [{"market_id": market_id, "outcome": "NO", "shares": "2.000000",
                                     "net_cost": no_cost}]


# --------------------------------------------------------------------------- markets

@pytest.mark.parametrize("b", ["1", "1.000001", "3.5", "100", "1000000", "1000000000"])
def test_market_creation_takes_the_subsidy_from_house(api: Api, b: str) -> None:
    expected = subsidy(b)
    api.deposit("house", fmt(expected))
    house_before = dec(api.account("house")["available"])
    market_id = unique("mkt")
    r = api.admin("POST", "/v1/markets", json={"name": "Subsidy", "liquidity_b": b, "market_id": market_id})
    assert r.status_code == 201, r.text
    market = r.json()
    assert_market(market)
    assert market["market_id"] == market_id
    assert market["status"] == "CREATED" and market["outcome"] is None
    assert market["liquidity_b"] == fmt(Decimal(b))
    assert (market["yes_shares"], market["no_shares"]) == ("0.000000", "0.000000")
    assert (market["price_yes"], market["price_no"]) == ("0.500000", "0.500000")
    assert dec(market["pool"]) == expected
    assert dec(api.account("house")["available"]) == house_before - expected


def test_market_creation_fails_when_house_cannot_pay(api: Api) -> None:
    house = api.account("house")
    available = house["available"]
    if dec(available) > 0:
        assert api.admin("POST", "/v1/users/house/withdrawals", json={"amount": available}).status_code == 201
    try:
        market_id = unique("mkt")
        r = api.admin("POST", "/v1/markets", json={"name": "Poor", "liquidity_b": "1", "market_id": market_id})
        assert_error(r, 422, "INSUFFICIENT_FUNDS")
        assert_error(api.request("GET", f"/v1/markets/{market_id}"), 404, "NOT_FOUND")
        assert api.account("house")["available"] == "0.000000"
        # One micro-unit short is still short.
        api.deposit("house", fmt(subsidy("1") - Decimal("0.000001")))
        r = api.admin("POST", "/v1/markets", json={"name": "Poor", "liquidity_b": "1", "market_id": market_id})
        assert_error(r, 422, "INSUFFICIENT_FUNDS")
        api.deposit("house", "0.000001")
        r = api.admin("POST", "/v1/markets", json={"name": "Rich", "liquidity_b": "1", "market_id": market_id})
        assert r.status_code == 201, r.text
        assert api.account("house")["available"] == "0.000000"
    finally:
        if dec(available) > 0:
            api.deposit("house", available)


def test_market_with_generated_id_and_reads_on_both_replicas(api: Api) -> None:
    api.deposit("house", fmt(subsidy("10")))
    r = api.admin("POST", "/v1/markets", json={"name": "Generated", "liquidity_b": 10})
    assert r.status_code == 201, r.text
    market = r.json()
    assert ID_RE.fullmatch(market["market_id"])
    for replica in (0, 1):
        assert api.market(market["market_id"], replica) == market


def test_list_markets_and_status_filter(api: Api) -> None:
    created = api.create_market(open=False)
    opened = api.create_market()
    r = api.request("GET", "/v1/markets")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"markets"}
    listed = {m["market_id"]: m for m in r.json()["markets"]}
    for market in listed.values():
        assert_market(market)
    assert listed[created]["status"] == "CREATED" and listed[opened]["status"] == "OPEN"
    only_open = api.request("GET", "/v1/markets", params={"status": "OPEN"}).json()["markets"]
    assert only_open and all(m["status"] == "OPEN" for m in only_open)
    assert opened in {m["market_id"] for m in only_open}
    assert created not in {m["market_id"] for m in only_open}
    only_created = api.request("GET", "/v1/markets", params={"status": "CREATED"}).json()["markets"]
    assert created in {m["market_id"] for m in only_created}
    assert all(m["status"] == "CREATED" for m in only_created)


@pytest.mark.parametrize("status", ["BOGUS", "open", "", "OPEN,CREATED", "ÖPEN"])
def test_unknown_status_filter_is_a_validation_error(api: Api, status: str) -> None:
    assert_error(api.request("GET", "/v1/markets", params={"status": status}), 422, "VALIDATION_ERROR")


def test_full_lifecycle_and_settle_response(api: Api) -> None:
    winner, loser, small = api.create_user("1000"), api.create_user("1000"), api.create_user("1000")
    market_id = api.create_market(b="50", open=False)
    r = api.admin("POST", f"/v1/markets/{market_id}/open")
    assert r.status_code == 200, r.text
    assert_market(r.json())
    assert r.json()["status"] == "OPEN"
    api.buy(winner, market_id, "YES", "20")
    api.buy(small, market_id, "YES", "0.5")
    api.buy(loser, market_id, "NO", "30")
    before = api.market(market_id)
    house_before = dec(api.account("house")["available"])
    balances = {u.user_id: dec(api.me(u)["available"]) for u in (winner, loser, small)}

    r = api.admin("POST", f"/v1/markets/{market_id}/resolve", json={"outcome": "YES"})
    assert r.status_code == 200, r.text
    assert_market(r.json())
    assert (r.json()["status"], r.json()["outcome"]) == ("RESOLVED", "YES")

    r = api.admin("POST", f"/v1/markets/{market_id}/settle")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"market", "payouts_total", "holders_paid"}
    assert_market(body["market"])
    assert (body["market"]["status"], body["market"]["outcome"]) == ("SETTLED", "YES")
    assert body["payouts_total"] == "20.500000"
    assert body["holders_paid"] == 2 and isinstance(body["holders_paid"], int)
    # A settled market keeps its final shares and prices as a record.
    for key in ("yes_shares", "no_shares", "price_yes", "price_no", "liquidity_b"):
        assert body["market"][key] == before[key]
    assert dec(api.me(winner)["available"]) == balances[winner.user_id] + 20
    assert dec(api.me(small)["available"]) == balances[small.user_id] + Decimal("0.5")
    assert dec(api.me(loser)["available"]) == balances[loser.user_id]
    for user in (winner, loser, small):
        assert [p for p in api.me(user)["positions"] if p["market_id"] == market_id] == []
    # The rest of the pool went back to house.
    remainder = dec(before["pool"]) - Decimal("20.5")
    assert dec(api.account("house")["available"]) == house_before + remainder
    assert api.market(market_id) == body["market"]


def test_every_money_value_is_a_six_decimal_string(api: Api) -> None:
    user = api.create_user("77.7")
    market_id = api.create_market(b="33.3")
    trade = api.buy(user, market_id, "NO", "1.234567")
    assert_all_decimal_strings(trade)
    assert_all_decimal_strings(api.me(user))
    assert_all_decimal_strings(api.market(market_id))
    assert_all_decimal_strings(api.quote(market_id, side="BUY", outcome="YES", shares="1").json())
    assert_all_decimal_strings(api.request("GET", "/v1/markets").json())


# --------------------------------------------------------------------------- trades and quotes (shapes)

def test_trade_object(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market(b="100")
    before = time.time()
    r = api.trade(user, market_id, "BUY", "YES", shares="10")
    assert r.status_code == 201, r.text
    trade = r.json()
    assert_trade(trade)
    assert (trade["market_id"], trade["user_id"], trade["side"], trade["outcome"]) == (
        market_id, user.user_id, "BUY", "YES")
    assert trade["shares"] == "10.000000"
    # LMSR: C(10, 0) - C(0, 0) with b = 100, rounded up; the prices after the trade.
    assert trade["cost"] == "5.124948"
    assert (trade["price_yes"], trade["price_no"]) == ("0.524979", "0.475021")
    assert trade["avg_price"] == "0.512495"
    assert abs(assert_timestamp(trade["created_at"]).timestamp() - before) < 60
    market = api.market(market_id)
    assert (market["yes_shares"], market["price_yes"], market["price_no"]) == ("10.000000", "0.524979", "0.475021")
    assert api.me(user)["available"] == "94.875052"


def test_trade_ids_strictly_increase_across_replicas(api: Api) -> None:
    user = api.create_user("1000")
    markets = [api.create_market(), api.create_market()]
    ids = [api.buy(user, markets[i % 2], "YES" if i % 3 else "NO", "1", replica=i % 2)["trade_id"]
           for i in range(8)]
    assert len(set(ids)) == len(ids)
    # Over shards ids rise within a market, not across markets (the contract's exception for that layout).
    for increasing in ([ids[0::2], ids[1::2]] if SHARDED else [ids]):
        assert increasing == sorted(increasing)


def test_sell_trade_object(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market()
    bought = api.buy(user, market_id, "NO", "10")
    r = api.trade(user, market_id, "SELL", "NO", shares="4")
    assert r.status_code == 201, r.text
    sold = r.json()
    assert_trade(sold)
    assert (sold["side"], sold["outcome"], sold["shares"]) == ("SELL", "NO", "4.000000")
    assert sold["trade_id"] > bought["trade_id"]
    assert dec(sold["cost"]) > 0
    assert dec(api.me(user)["available"]) == 100 - dec(bought["cost"]) + dec(sold["cost"])


def test_quote_object_matches_the_trade_and_changes_nothing(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market(b="20")
    api.buy(user, market_id, "YES", "5")
    before = api.market(market_id)
    for params in ({"side": "BUY", "outcome": "NO", "shares": "7.5"}, {"side": "BUY", "outcome": "YES", "amount": "3"},
                   {"side": "SELL", "outcome": "YES", "shares": "2"}):
        r = api.quote(market_id, **params)
        assert r.status_code == 200, r.text
        assert_quote(r.json())
        assert (r.json()["side"], r.json()["outcome"]) == (params["side"], params["outcome"])
    assert api.market(market_id) == before
    quote = api.quote(market_id, side="BUY", outcome="NO", shares="7.5").json()
    trade = api.buy(user, market_id, "NO", "7.5")
    assert {k: trade[k] for k in quote} == quote


def test_buy_by_amount_buys_the_most_shares_within_the_amount(api: Api) -> None:
    user = api.create_user("100")
    market_id = api.create_market(b="10")
    quote = api.quote(market_id, side="BUY", outcome="YES", amount="3").json()
    shares = dec(quote["shares"])
    assert shares > 0 and dec(quote["cost"]) <= 3
    exact = api.quote(market_id, side="BUY", outcome="YES", shares=fmt(shares)).json()
    assert exact == quote
    # One more micro-share would cost more than the amount.
    more = api.quote(market_id, side="BUY", outcome="YES", shares=fmt(shares + Decimal("0.000001"))).json()
    assert dec(more["cost"]) > 3
    r = api.trade(user, market_id, "BUY", "YES", amount="3")
    assert r.status_code == 201, r.text
    trade = r.json()
    assert_trade(trade)
    assert {k: trade[k] for k in quote} == quote
    assert api.market(market_id)["yes_shares"] == trade["shares"]


# --------------------------------------------------------------------------- lifecycle errors

def test_lifecycle_steps_from_the_wrong_state_are_invalid_state(api: Api) -> None:
    market_id = api.create_market(open=False)

    def step(action: str) -> httpx.Response:
        body = {"outcome": "NO"} if action == "resolve" else None
        return api.admin("POST", f"/v1/markets/{market_id}/{action}", json=body)

    assert_error(step("resolve"), 409, "INVALID_STATE")
    assert_error(step("settle"), 409, "INVALID_STATE")
    assert step("open").status_code == 200
    assert_error(step("open"), 409, "INVALID_STATE")
    assert_error(step("settle"), 409, "INVALID_STATE")
    assert step("resolve").status_code == 200
    assert_error(step("resolve"), 409, "INVALID_STATE")
    assert_error(step("open"), 409, "INVALID_STATE")
    assert step("settle").status_code == 200
    settled = api.market(market_id)
    assert_error(step("settle"), 409, "INVALID_STATE")
    assert_error(step("open"), 409, "INVALID_STATE")
    assert_error(step("resolve"), 409, "INVALID_STATE")
    assert api.market(market_id) == settled


def test_already_exists(api: Api) -> None:
    username, user_id = unique("dup"), unique("dupid")
    assert api.admin("POST", "/v1/users", json={"username": username, "user_id": user_id}).status_code == 201
    assert_error(api.admin("POST", "/v1/users", json={"username": username}), 409, "ALREADY_EXISTS")
    assert_error(api.admin("POST", "/v1/users", json={"username": unique("x"), "user_id": user_id}),
                 409, "ALREADY_EXISTS")
    assert_error(api.admin("POST", "/v1/users", json={"username": "house"}), 409, "ALREADY_EXISTS")
    assert_error(api.admin("POST", "/v1/users", json={"username": unique("h"), "user_id": "house"}),
                 409, "ALREADY_EXISTS")
    assert api.account(user_id)["username"] == username
    market_id = api.create_market(open=False)
    api.deposit("house", "1")
    house = api.account("house")
    r = api.admin("POST", "/v1/markets", json={"name": "again", "liquidity_b": "1", "market_id": market_id})
    assert_error(r, 409, "ALREADY_EXISTS")
    assert api.account("house") == house
    assert api.market(market_id)["name"] == "Will it rain?"


@pytest.mark.parametrize("bad_id", ["nobody-" + "x" * 8, "bad%20id", "x" * 65, "bad.id", "%C3%A9t%C3%A9"])
def test_unknown_or_invalid_ids_are_not_found(api: Api, bad_id: str) -> None:
    if bad_id.startswith("nobody"):
        bad_id = unique("nobody")
    admin_calls = [
        ("GET", f"/v1/users/{bad_id}", None),
        ("POST", f"/v1/users/{bad_id}/deposits", {"amount": "1"}),
        ("POST", f"/v1/users/{bad_id}/withdrawals", {"amount": "1"}),
        ("POST", f"/v1/markets/{bad_id}/open", None),
        ("POST", f"/v1/markets/{bad_id}/resolve", {"outcome": "YES"}),
        ("POST", f"/v1/markets/{bad_id}/settle", None),
    ]
    for method, path, body in admin_calls:
        assert_error(api.admin(method, path, json=body), 404, "NOT_FOUND")
    for path in (f"/v1/markets/{bad_id}", f"/v1/markets/{bad_id}/quote?side=BUY&outcome=YES&shares=1",
                 f"/v1/markets/{bad_id}/trades"):
        assert_error(api.request("GET", path), 404, "NOT_FOUND")
    user = api.create_user("10")
    r = api.request("POST", f"/v1/markets/{bad_id}/trades", token=user.api_key,
                    json={"side": "BUY", "outcome": "YES", "shares": "1"})
    assert_error(r, 404, "NOT_FOUND")
    assert api.me(user)["available"] == "10.000000"


def test_unknown_route_is_a_contract_error(api: Api) -> None:
    assert_error(api.request("GET", "/v1/nothing-here"), 404, "NOT_FOUND")


# --------------------------------------------------------------------------- operations

def test_healthz_and_readyz(api: Api) -> None:
    for replica in (0, 1):
        assert api.request("GET", "/healthz", replica=replica).status_code == 200
        r = api.request("GET", "/readyz", replica=replica)
        assert r.status_code == 200, r.text


def test_metrics_is_prometheus_text(api: Api) -> None:
    user = api.create_user("10")
    market_id = api.create_market()
    api.buy(user, market_id, shares="1")
    api.request("GET", "/v1/me")  # one error, counted
    r = api.request("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("predmarket_request_seconds", "predmarket_trades_total", "predmarket_errors_total"):
        assert f"# TYPE {name}" in text or f"# TYPE {name.removesuffix('_total')}" in text, name
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert 'predmarket_errors_total{code="UNAUTHENTICATED"}' in text
    trades = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("predmarket_trades_total ")]
    assert trades and trades[0] >= 1


CONTRACT_ROUTES = {
    ("post", "/v1/users"), ("get", "/v1/users/{user_id}"), ("get", "/v1/me"),
    ("post", "/v1/users/{user_id}/deposits"), ("post", "/v1/users/{user_id}/withdrawals"),
    ("post", "/v1/markets"), ("get", "/v1/markets"), ("get", "/v1/markets/{market_id}"),
    ("post", "/v1/markets/{market_id}/open"), ("post", "/v1/markets/{market_id}/resolve"),
    ("post", "/v1/markets/{market_id}/settle"), ("get", "/v1/markets/{market_id}/quote"),
    ("post", "/v1/markets/{market_id}/trades"), ("get", "/v1/markets/{market_id}/trades"),
    ("get", "/v1/events"), ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"),
}


def test_openapi_lists_every_contract_route(api: Api) -> None:
    r = api.request("GET", "/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    listed = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert listed >= CONTRACT_ROUTES, CONTRACT_ROUTES - listed


# --------------------------------------------------------------------------- outage

def test_redis_unreachable_is_503_never_500(dead_redis_stack: Stack) -> None:
    token = dead_redis_stack.admin_token
    calls: list[tuple[str, str, str | None, Any]] = [
        ("GET", "/v1/me", "pmk_some-user-key", None),
        ("POST", "/v1/markets/m1/trades", "pmk_some-user-key", {"side": "BUY", "outcome": "YES", "shares": "1"}),
        ("GET", "/v1/users/house", token, None),
        ("POST", "/v1/users", token, {"username": "nobody"}),
        ("POST", "/v1/users/house/deposits", token, {"amount": "1"}),
        ("POST", "/v1/users/house/withdrawals", token, {"amount": "1"}),
        ("POST", "/v1/markets", token, {"name": "x", "liquidity_b": "1"}),
        ("GET", "/v1/markets", None, None),
        ("GET", "/v1/markets/m1", None, None),
        ("POST", "/v1/markets/m1/open", token, None),
        ("POST", "/v1/markets/m1/resolve", token, {"outcome": "YES"}),
        ("POST", "/v1/markets/m1/settle", token, None),
        ("GET", "/v1/markets/m1/quote?side=BUY&outcome=YES&shares=1", None, None),
        ("GET", "/v1/markets/m1/trades", None, None),
        ("GET", "/v1/events", None, None),
    ]
    with httpx.Client(base_url=dead_redis_stack.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        started = time.monotonic()
        r = client.get("/readyz")
        assert r.status_code == 503 and time.monotonic() - started < 3.5
        for method, path, who, body in calls:
            headers = bearer(who) if who else {}
            started = time.monotonic()
            r = client.request(method, path, json=body, headers=headers)
            elapsed = time.monotonic() - started
            assert_error(r, 503, "UNAVAILABLE")
            assert elapsed < 3.5, (method, path, elapsed)
        # Authentication still comes first: no token is 401 without asking Redis.
        assert_error(client.get("/v1/me"), 401, "UNAUTHENTICATED")
