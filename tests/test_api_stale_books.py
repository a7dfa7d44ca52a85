"""No rejection on a stale book: every replica answers against the *current* state.

Each API replica keeps a book per market with the state its last script reply
returned. Another replica's trades make that copy stale. A rejection the book
can produce (shares outstanding, slippage, the outstanding bound) must be
confirmed against the current state before it is final, so these tests warm
one replica's book, change the market through the other, and then send the
order that the stale book would refuse to the first. Each order is valid
against the current state (checked with a fresh read just before), so a
rejection is false; each test then sends an order that is invalid against the
current state, which must still be refused (a true rejection).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx

from tests.support.api import Api, Stack, User, assert_error, bearer, dec

STALE, FRESH = 1, 0  # the replica whose book goes stale, the one that moves the market


def quote(api: Api, market_id: str, **params: str) -> dict[str, str]:
    r = api.quote(market_id, **params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sell_of_shares_bought_on_the_other_replica(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market(b="100")
    api.buy(user, market_id, "NO", "1", replica=STALE)  # STALE's book: 0 YES outstanding
    api.buy(user, market_id, "YES", "10", replica=FRESH)
    for _ in range(3):  # the false rejection repeated until STALE traded the market itself
        r = api.trade(user, market_id, "SELL", "YES", shares="2", replica=STALE)
        assert r.status_code == 201, r.text
    assert api.market(market_id)["yes_shares"] == "4.000000"
    # True rejection, from either replica: more than is outstanding.
    api.buy(user, market_id, "YES", "1", replica=FRESH)
    for replica in (STALE, FRESH):
        r = api.trade(user, market_id, "SELL", "YES", shares="6", replica=replica)
        assert_error(r, 422, "INSUFFICIENT_SHARES")
    assert api.market(market_id)["yes_shares"] == "5.000000"


def test_max_cost_is_checked_against_the_current_price(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market(b="10")
    api.buy(user, market_id, "YES", "30", replica=STALE)  # STALE's book: YES is dear
    r = api.trade(user, market_id, "SELL", "YES", shares="30", replica=FRESH)  # now it is cheap
    assert r.status_code == 201, r.text
    cost = quote(api, market_id, side="BUY", outcome="YES", shares="1")["cost"]
    r = api.trade(user, market_id, "BUY", "YES", shares="1", max_cost=cost, replica=STALE)
    assert r.status_code == 201, r.text
    assert r.json()["cost"] == cost
    # True rejection: a limit below the current cost.
    cost = quote(api, market_id, side="BUY", outcome="YES", shares="1")["cost"]
    below = str(dec(cost) - Decimal("0.000001"))
    for replica in (FRESH, STALE):
        assert_error(api.trade(user, market_id, "BUY", "YES", shares="1", max_cost=below, replica=replica),
                     422, "SLIPPAGE_EXCEEDED")


def test_min_proceeds_is_checked_against_the_current_price(api: Api) -> None:
    user = api.create_user("1000")
    market_id = api.create_market(b="10")
    api.buy(user, market_id, "YES", "1", replica=STALE)  # STALE's book: YES is cheap
    api.buy(user, market_id, "YES", "30", replica=FRESH)  # now it is dear
    proceeds = quote(api, market_id, side="SELL", outcome="YES", shares="1")["cost"]
    r = api.trade(user, market_id, "SELL", "YES", shares="1", min_proceeds=proceeds, replica=STALE)
    assert r.status_code == 201, r.text
    assert r.json()["cost"] == proceeds
    proceeds = quote(api, market_id, side="SELL", outcome="YES", shares="1")["cost"]
    above = str(dec(proceeds) + Decimal("0.000001"))
    for replica in (FRESH, STALE):
        assert_error(api.trade(user, market_id, "SELL", "YES", shares="1", min_proceeds=above, replica=replica),
                     422, "SLIPPAGE_EXCEEDED")


def test_outstanding_bound_is_checked_against_the_current_total(api: Api) -> None:
    """9,000,000,000 outstanding at most: STALE sees 8.5e9, the market holds 7.5e9."""
    user = api.create_user(None)
    for _ in range(9):
        api.deposit(user.user_id, "1000000000")
    market_id = api.create_market(b="1")
    for _ in range(8):
        api.buy(user, market_id, "YES", "1000000000", replica=STALE)
    api.buy(user, market_id, "YES", "500000000", replica=STALE)
    r = api.trade(user, market_id, "SELL", "YES", shares="1000000000", replica=FRESH)
    assert r.status_code == 201, r.text
    assert api.market(market_id)["yes_shares"] == "7500000000.000000"
    r = api.trade(user, market_id, "BUY", "YES", shares="1000000000", replica=STALE)
    assert r.status_code == 201, r.text
    # True rejection: past the bound now (8.5e9 + 0.5e9 + one micro-share).
    for replica in (FRESH, STALE):
        r = api.trade(user, market_id, "BUY", "YES", shares="500000000.000001", replica=replica)
        assert_error(r, 422, "VALIDATION_ERROR")
        assert "9000000000" in r.json()["error"]["message"]
    assert api.market(market_id)["yes_shares"] == "8500000000.000000"


async def test_round_trips_alternating_replicas_are_never_refused(api: Api, api_stack: Stack) -> None:
    """Each user buys on one replica and sells the same shares on the other, over shared markets.

    Every user has ample funds and sells only what they just bought, so no order
    here can be refused against the current state: any rejection is false.
    """
    users = [api.create_user("1000") for _ in range(8)]
    markets = [api.create_market(b="50") for _ in range(3)]
    rounds = 12

    async def trader(index: int, user: User, client: httpx.AsyncClient) -> list[str]:
        refusals: list[str] = []
        for i in range(rounds):
            market_id = markets[(index + i) % len(markets)]
            outcome = "YES" if (index + i) % 2 else "NO"
            shares = str(1 + (index * 7 + i) % 9)
            for side, replica in (("BUY", (index + i) % 2), ("SELL", (index + i + 1) % 2)):
                r = await client.post(f"{api_stack.urls[replica]}/v1/markets/{market_id}/trades",
                                      headers=bearer(user.api_key),
                                      json={"side": side, "outcome": outcome, "shares": shares})
                if r.status_code != 201:
                    refusals.append(f"{side} {shares} {outcome} on replica {replica}: {r.status_code} {r.text}")
        return refusals

    async with httpx.AsyncClient(timeout=10) as client:
        refusals = await asyncio.gather(*(trader(i, u, client) for i, u in enumerate(users)))
    assert [r for rs in refusals for r in rs] == []
    for market_id in markets:  # every share bought was sold again
        market = api.market(market_id)
        assert (market["yes_shares"], market["no_shares"]) == ("0.000000", "0.000000")
    for user in users:
        assert api.me(user)["positions"] == []
